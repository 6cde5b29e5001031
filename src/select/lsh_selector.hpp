// Multi-round SimHash selection. Per KV head, `rounds` tables each hash a key by the signs of
// `bits` projections; a query probes its own bucket and the `probes` buckets nearest to it
// (flipping its least certain bits) in every table, for each of its query heads, and the union
// is rescored exactly (candidate_rescore).
//
// Buckets hold every key of the index, also those a query cannot see (later positions when
// a prefill passes query positions, other segments), and may hold few keys (many bits, no
// probes). A list short of visible candidates (fewer than top_k, more when top_k is a large
// share of the selectable keys, or than 3/4 of what the
// same query would get with nothing hidden) probes more buckets per table, doubling, while
// that costs less than scoring every selectable key, and else scores them all: every list
// holds min(top_k, selectable keys) besides the window and sinks.
//
// Attention is not nearest-neighbour search: a trained model's keys share a large common
// component, and a query's top keys are only slightly better aligned with it than the rest (on
// tinylm-qkv, cosine 0.2 to 0.3 against -0.04), so isotropic SimHash separates them poorly. Two
// changes fix most of that: keys are centred by their mean mu (softmax is invariant to the
// per-query constant q . mu), and the hyperplanes are drawn like the centred keys, N(0, C) with
// C their covariance (random combinations of sampled keys), so the bits cut where keys differ.
// On tinylm-qkv that lifts the top-128 mass of 8 rounds x 7 bits from 0.75-0.90 to within 1-4%
// of exact. mu, the hyperplanes and (with bits = 0) the number of bits are refreshed, and every
// key rehashed, each time the index grows by 5/4 (kRebuildGrowth): amortised O(1) hashing per
// key, and tables that fit the keys whatever the build order (one append, a prompt then single
// keys, one key per append). Where the bits chosen at the last rebuild leave buckets emptier
// than kBucketKeys, a query probes more buckets: it reads at least (probes + 1) x kBucketKeys
// keys per table in every build order, and a list per query head as many as its group's
// shared list (its group size times that). Updates (refilled slots) are hashed with the mu and
// hyperplanes in use; a cache held at a fixed size by eviction keeps those of its last rebuild.
//
// Borrowing the host's keys (borrow_keys), it keeps the tables (mean, hyperplanes, codes,
// buckets) and positions only. Appended and refilled keys are hashed from the call's tensor; a
// rebuild, which reads every key, waits for the next selection's host keys (deferred_work.hpp),
// which builds the tables an owning index built at that append and hashes the batches appended
// or refilled since in the same order and batches (so the same GEMM or kernel path hashes
// them): the same codes, unless a refill changed a slot the rebuild reads before it ran.
// Truncation returns to the tables the same appends would have built without the dropped
// slots: those are unbucketed and, when the cut fell inside an append, the kept part of it is
// hashed again as one batch (as an append of just those keys would have been). When a rebuild
// ran past the cut, the hyperplanes of the last rebuild before it (or of one at the cut, when
// the index had doubled there) are drawn again from the kept keys and the later appends hashed
// again batch by batch.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "select/deferred_work.hpp"
#include "select/key_store.hpp"
#include "select/native_rows.hpp"
#include "select/selector.hpp"

namespace sa {

struct LshLimits {
  static constexpr int kMaxRounds = 64;
  static constexpr int kMaxBits = 24;
  static constexpr int kMaxProbes = 64;
};

// One hash table: bucket code -> slots. A dense directory while 2^bits is small (the adapted
// sizes), a hash map for larger fixed bit counts.
class LshBuckets {
 public:
  static constexpr int kDenseBits = 16;
  void reset(int bits);
  std::vector<int32_t> &at(uint32_t code) { return dense_on_ ? dense_[code] : sparse_[code]; }
  const std::vector<int32_t> *find(uint32_t code) const;
  void remove(uint32_t code, int32_t slot);  // slot must be in the bucket
  size_t memory_bytes() const;

 private:
  bool dense_on_ = true;
  std::vector<std::vector<int32_t>> dense_;
  std::unordered_map<uint32_t, std::vector<int32_t>> sparse_;
};

class LshSelector final : public Selector {
 public:
  // rounds in [1, kMaxRounds], bits in [0, kMaxBits] (0: adapted to N), probes in
  // [0, kMaxProbes] (validated by the caller). kernels hash keys; threads parallelise rebuilds.
  // borrow: keep no copy of the keys (see above).
  LshSelector(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, const sa_lsh_options &opt,
              const sa_context &ctx, bool borrow = false);
  void append(const TensorView &keys) override;
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override;
  void truncate(int64_t keep) override;
  std::unique_ptr<Selector> clone() const override { return std::make_unique<LshSelector>(*this); }
  void select(const sa_context &ctx, const SelectRequest &req) const override;
  int64_t size() const override { return keys_.size(); }
  int64_t max_position() const override { return keys_.max_position(); }
  size_t memory_bytes() const override;
  const KeyStore &slots() const override { return keys_; }

 private:
  // Writes key j of a batch (D values as the index dtype holds them) to out.
  using RowLoader = std::function<void(int h, int64_t j, float *out)>;
  struct ReplayBatch {
    bool refill;                  // an update (slots unbucketed first) or an append
    std::vector<int32_t> slots;
  };
  struct HeadTables {
    std::vector<float> mean;    // mu, [D]
    std::vector<float> planes;  // [round * bits + bit][padded dim]
    std::vector<uint32_t> codes;  // [slot][round]
    std::vector<LshBuckets> buckets;  // [round]
  };

  static bool rebuilds_at(int64_t n, int64_t built);  // n keys, tables built over `built`
  int bits_for(int64_t n) const;
  // Probes per table for an index of n keys (adapted bits): probes_, or more while the tables
  // (bits fixed at the last rebuild, for fewer keys) hold fewer keys a bucket than
  // kBucketKeys. share: the list reads `share` times that (a query head's list: its group size).
  int probes_for_size(int64_t n, int64_t share) const;
  // New mean, hyperplanes and bits from the keys of slots [0, n) (rows); rehash those slots.
  void rebuild(int64_t n, const NativeRows &rows);
  void rebuild_deferred(const NativeRows &rows);  // borrowed: the pending rebuild, then replay_
  void hash_range(int64_t first, int64_t last);  // stored slots [first, last) as one batch
  // Codes of slots of head h, computed and put in their buckets: by GEMM (large batches) or
  // by the score kernel. load_row(h, j, out) gives the key of slots[j].
  void hash_slots(int h, const int32_t *slots, int64_t n, bool gemm, const RowLoader &load_row);
  void hash_all_heads(const int32_t *slots, int64_t n, const RowLoader &load_row);
  void hash_stored(const int32_t *slots, int64_t n, const NativeRows &rows);  // keys from rows
  void hash_tensor(const int32_t *slots, int64_t n, const TensorView &keys);  // slots[j]: row j
  void unbucket(int h, int32_t slot);

  KeyStore keys_;
  const sa_context &ctx_;
  int rounds_, fixed_bits_, probes_;
  uint64_t seed_;
  int bits_ = 0;
  int64_t padded_dim_;   // D rounded up to the kernels' block
  int64_t built_size_ = 0;
  std::vector<int64_t> rebuilds_;  // index sizes at which rebuild ran, ascending (at most ~100)
  std::vector<HeadTables> heads_;
  // Borrowed keys: a rebuild from slots [0, rebuild_size_) waiting for a selection, and the
  // batches appended or refilled since.
  DeferredWork rebuild_;
  int64_t rebuild_size_ = 0;
  std::vector<ReplayBatch> replay_;
};

}  // namespace sa
