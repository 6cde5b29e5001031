#include "select/lsh_selector.hpp"

#include <algorithm>
#include <cmath>
#include <queue>

#include "core/half.hpp"
#include "core/threading.hpp"
#include "select/block_rescore.hpp"
#include "select/candidate_rescore.hpp"
#include "select/score_matmul.hpp"

namespace sa {
namespace {

// bits = 0: buckets of about this many keys per table. On tinylm-qkv (N = 4K, 8 rounds, 2
// probes) 16 keys per bucket left layer 5 7% short of the exact top-128 mass, 32 keys 4%.
constexpr double kBucketKeys = 32;
// The tables are rebuilt (mean, hyperplanes, bits) each time the index grows by this factor.
// Doubling left a decode-ordered index hashing keys 2048..4095 with planes drawn from keys
// 0..2047: on tinylm-qkv layer 1 (per query head, K = 256) 5.2% short of exact mass against
// 0.1% built in one append; at 5/4, 0.4%. Rehashing stays amortised O(1) per key (5 per key).
constexpr struct {
  int64_t num, den;
} kRebuildGrowth = {5, 4};
// Multi-probe perturbs only the least certain bits (more would never be reached).
constexpr int kProbeBits = 16;
constexpr int64_t kHashChunk = 1024;    // keys hashed at a time by the score kernel
constexpr int64_t kGemmMinKeys = 512;   // batches this large are hashed by GEMM (oneDNN)
constexpr int64_t kGemmChunk = 8192;
constexpr int64_t kPlaneSample = 2048;  // centred keys the hyperplanes are drawn from
// A list short of visible candidates (select) probes more buckets while it has read fewer
// than this many bucket entries per selectable key; then it scores every selectable key.
constexpr int64_t kRefillVisitsPerKey = 4;
// A prefill query sees only part of its buckets' keys. Refilled up to 1/2 of the full pool,
// tinylm-qkv layer 5 (queries 64..4095, K = 256) stayed 1.9% short of exact mass; up to 3/4,
// 1.0% (decode order: 0.85%); and a query seeing 3/4 of its buckets' keys or more costs what
// it did (bench_select's prefill4k at 32K keys: 7/8 or more).
constexpr struct {
  int64_t num, den;
} kVisibleShare = {3, 4};
// When top_k is a large share of the S selectable keys, its last keys score little above the
// rest and hashing tells them apart poorly: a list gets top_k + kTopKShareMargin * top_k^2 / S
// visible candidates (2 top_k when top_k = S/4). tests/data (K = 256 of ~900, per query
// head): 1.1-1.3% short of exact mass with top_k candidates at least, 0.3-0.4% with this. Costs
// nothing where top_k is a small share (32K keys, top_k 2048: the probes already give more).
constexpr int64_t kTopKShareMargin = 4;
// Bucket membership is a coarse test: a query's top keys are only slightly better aligned with
// it than the rest, so its buckets hold many keys it does not want and miss some it does
// (tinylm-qkv layer 5, 4K keys, K = 128: 2120 candidates, recall 0.93, 2.4% short of exact
// mass; 7 of 12 order and list-mode rows over 2%). The codes say more than membership: each bit
// is the key's side of a hyperplane whose signed projection of the query is known, so the
// sketch score sum_b (+-) proj_b (the query heads of the list summed) ranks keys by alignment
// far better. A list reads kSketchWiden times the buckets and rescores exactly only the best
// kSketchKeep of the union by sketch score (never fewer than top_k and its margin): same
// layer, every row 0.5-1.6% short. A sketch score is rounds x ceil(bits / 8) reads of one
// table set per list (16 KB at 12 bits), cheap beside an exact score (D x group
// multiply-adds and a row gathered). Taking the best of the query heads' own scores instead of
// summing them was 0.4 points better and cost twice the selection time at 128K keys.
constexpr struct {
  int64_t num, den;
} kSketchWiden = {5, 3}, kSketchKeep = {5, 7};

// In a call of many queries (prefill), a query that sees at most this many times top_k keys is
// scored exactly: every key it sees by GEMM (block_rescore.hpp, or the exact selector's path
// when the whole call is). Measured (bench_select select/{lsh,exact}/prefill4k_k128: 4096
// queries over their own 4096 random f16 keys, H_kv 8, K = 128, one thread, 2-core EPYC; its
// queries see up to 32 x top_k keys): hashing, probing and sketch-ranking a list cost about
// 0.12 ms, scoring every key it sees by GEMM 0.07 ms (LSH 6.3 s, exact 2.25 s for the call),
// and a list's candidates were half the keys it saw, rescored by GEMM over all of them anyway.
// The decode path (one query a call, the quality gate's) keeps hashing.
constexpr int64_t kPrefillExactFactor = 32;

// splitmix64: a fixed, portable stream for the hyperplanes.
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0, 1)
  double normal() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }
};

// The probe sequence of one table: bucket codes in increasing order of the summed squared
// margins of the flipped bits (Lv et al., multi-probe LSH: shift/expand over sorted margins).
void probe_codes(uint32_t code, const float *margin, int bits, int probes, std::vector<uint32_t> &out) {
  out.clear();
  out.push_back(code);
  if (probes == 0) return;
  const int L = std::min(bits, kProbeBits);
  int order[LshLimits::kMaxBits];
  for (int b = 0; b < bits; ++b) order[b] = b;
  std::partial_sort(order, order + L, order + bits,
                    [&](int a, int b) { return margin[a] < margin[b] || (margin[a] == margin[b] && a < b); });
  float z[LshLimits::kMaxBits];
  for (int j = 0; j < L; ++j) z[j] = margin[order[j]] * margin[order[j]];
  struct Set {
    float score;
    uint32_t mask;  // positions in `order`
    int last;       // highest position in mask
    bool operator>(const Set &o) const { return score > o.score || (score == o.score && mask > o.mask); }
  };
  std::priority_queue<Set, std::vector<Set>, std::greater<Set>> heap;
  heap.push({z[0], 1u, 0});
  while (!heap.empty() && int(out.size()) <= probes) {
    const Set s = heap.top();
    heap.pop();
    uint32_t c = code;
    for (int j = 0; j <= s.last; ++j)
      if (s.mask >> j & 1u) c ^= 1u << order[j];
    out.push_back(c);
    if (s.last + 1 < L) {
      const int n = s.last + 1;
      heap.push({s.score - z[s.last] + z[n], (s.mask & ~(1u << s.last)) | (1u << n), n});  // shift
      heap.push({s.score + z[n], s.mask | (1u << n), n});                                  // expand
    }
  }
}

struct LshScratch {
  RescoreScratch rescore;
  std::vector<float> query, proj, margin;  // margin: [q_head][round][bit]
  std::vector<float> sketch;               // [round][byte of the code][256] (sketch_tables)
  std::vector<float> summed;               // the list's query heads' projections summed, [R]
  std::vector<int32_t> choosable;          // visible, choosable candidates, ascending
  std::vector<float> sketch_scores, cut;   // their sketch scores; a copy for the threshold
  std::vector<uint32_t> codes, probes;     // codes: the query's own bucket, [q_head][round]
  std::vector<uint64_t> seen;  // one bit per slot: the union without sorting duplicates
  std::vector<int32_t> selectable;  // slots at positions the query may choose (the fallback)
};

// Sketch tables of one list, from its query's projections proj [R] (the list's query heads
// summed): for round r and byte c of a code, the entry of byte value v is the sum over the
// byte's bits b of +proj_b where v has bit b, else -proj_b. A key's sketch score is the sum of
// its codes' entries over rounds and bytes.
int sketch_bytes(int bits) { return (bits + 7) / 8; }
void sketch_tables(const float *proj, int rounds, int bits, std::vector<float> &out) {
  const int C = sketch_bytes(bits);
  out.resize(size_t(rounds * C * 256));
  for (int r = 0; r < rounds; ++r)
    for (int c = 0; c < C; ++c) {
      const float *p = proj + int64_t(r) * bits + 8 * c;
      const int nb = std::min(8, bits - 8 * c);
      float *t = &out[size_t((r * C + c) * 256)];
      t[0] = 0.f;
      for (int b = 0; b < nb; ++b) t[0] -= p[b];
      for (uint32_t v = 1; v < (1u << nb); ++v) t[v] = t[v & (v - 1)] + 2.f * p[__builtin_ctz(v)];
    }
}
float sketch_score(const std::vector<float> &tables, const uint32_t *codes, int rounds, int bits) {
  const int C = sketch_bytes(bits);
  const float *t = tables.data();
  float a = 0.f;
  for (int r = 0; r < rounds; ++r)
    for (int c = 0; c < C; ++c, t += 256) a += t[(codes[r] >> (8 * c)) & 255u];
  return a;
}

// The union marked in `seen`, ascending, into out (cleared first).
void collect_union(const std::vector<uint64_t> &seen, std::vector<int32_t> &out) {
  out.clear();
  for (size_t w = 0; w < seen.size(); ++w)
    for (uint64_t bitsleft = seen[w]; bitsleft; bitsleft &= bitsleft - 1)
      out.push_back(int32_t(w * 64 + size_t(__builtin_ctzll(bitsleft))));
}

// Of the slots, those the query can see: the ones it may choose (neither sink nor window),
// and the forced ones (sinks, window).
struct VisibleCount {
  int64_t selectable = 0, forced = 0;
};
VisibleCount count_visible(const std::vector<int32_t> &slots, const int64_t *pos, const QueryVisibility &vis,
                           const KeepRule &rule) {
  VisibleCount n;
  for (int32_t slot : slots)
    if (vis(slot, pos[slot])) ++(always_kept(pos[slot], rule) ? n.forced : n.selectable);
  return n;
}

}  // namespace

void LshBuckets::reset(int bits) {
  dense_on_ = bits <= kDenseBits;
  dense_.clear();
  sparse_.clear();
  if (dense_on_) dense_.resize(size_t(1) << bits);
}

const std::vector<int32_t> *LshBuckets::find(uint32_t code) const {
  if (dense_on_) return code < dense_.size() && !dense_[code].empty() ? &dense_[code] : nullptr;
  auto it = sparse_.find(code);
  return it == sparse_.end() ? nullptr : &it->second;
}

size_t LshBuckets::memory_bytes() const {
  size_t bytes = dense_.capacity() * sizeof(std::vector<int32_t>);
  for (const auto &b : dense_) bytes += b.capacity() * sizeof(int32_t);
  // Node-based map: per entry the key, the vector and a next pointer and cached hash (libstdc++).
  bytes += sparse_.bucket_count() * sizeof(void *) +
           sparse_.size() * (sizeof(std::pair<const uint32_t, std::vector<int32_t>>) + 2 * sizeof(void *));
  for (const auto &e : sparse_) bytes += e.second.capacity() * sizeof(int32_t);
  return bytes;
}

void LshBuckets::remove(uint32_t code, int32_t slot) {
  std::vector<int32_t> &v = at(code);
  *std::find(v.begin(), v.end(), slot) = v.back();
  v.pop_back();
  if (!dense_on_ && v.empty()) sparse_.erase(code);
}

LshSelector::LshSelector(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, const sa_lsh_options &opt,
                         const sa_context &ctx, bool borrow)
    : keys_(heads, dim, dtype, capacity_hint, !borrow), ctx_(ctx), rounds_(opt.rounds), fixed_bits_(opt.bits),
      probes_(opt.probes), seed_(opt.seed), padded_dim_((int64_t(dim) + 15) / 16 * 16), heads_(size_t(heads)) {
  for (HeadTables &t : heads_) t.buckets.resize(size_t(rounds_));
}

bool LshSelector::rebuilds_at(int64_t n, int64_t built) {
  return n * kRebuildGrowth.den >= built * kRebuildGrowth.num;
}

int LshSelector::probes_for_size(int64_t n, int64_t share) const {
  if (fixed_bits_ > 0 || bits_ == 0) return probes_;
  // Probe until the buckets read hold about (probes + 1) x kBucketKeys keys per table.
  const double per_bucket = double(n) / double(int64_t(1) << bits_);
  const double buckets = double(probes_ + 1) * double(share) * kBucketKeys / per_bucket;
  return std::clamp(int(std::ceil(buckets - 1e-9)) - 1, probes_, LshLimits::kMaxProbes);
}

int LshSelector::bits_for(int64_t n) const {
  if (fixed_bits_ > 0) return fixed_bits_;
  const int b = int(std::lround(std::log2(std::max(1.0, double(n) / kBucketKeys))));
  return std::clamp(b, 1, LshLimits::kMaxBits);
}

void LshSelector::hash_slots(int h, const int32_t *slots, int64_t n, bool gemm, const RowLoader &load_row) {
  HeadTables &t = heads_[size_t(h)];
  const int64_t D = keys_.dim(), P = padded_dim_, R = int64_t(rounds_) * bits_;
  const int64_t chunk = gemm ? kGemmChunk : kHashChunk;
  std::vector<float> x(size_t(std::min(n, chunk) * P), 0.f), proj(size_t(R * std::min(n, chunk)));
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t cn = std::min(chunk, n - c0);
    for (int64_t j = 0; j < cn; ++j) {
      float *xr = &x[size_t(j * P)];
      load_row(h, c0 + j, xr);
      for (int64_t d = 0; d < D; ++d) xr[d] -= t.mean[size_t(d)];
    }
    // proj: [key][plane] from the GEMM, [plane][key] from the score kernel.
    if (gemm) matmul_abt(x.data(), cn, t.planes.data(), R, P, proj.data(), R);
    else score_rows_grouped(ctx_.kernels->f32, t.planes.data(), R, P, x.data(), cn, proj.data(), cn);
    const int64_t key_step = gemm ? R : 1, plane_step = gemm ? 1 : cn;
    for (int64_t j = 0; j < cn; ++j) {
      const int32_t slot = slots[c0 + j];
      for (int r = 0; r < rounds_; ++r) {
        uint32_t code = 0;
        for (int b = 0; b < bits_; ++b) code |= uint32_t(proj[size_t(j * key_step + (r * bits_ + b) * plane_step)] > 0.f) << b;
        t.codes[size_t(slot) * size_t(rounds_) + size_t(r)] = code;
        t.buckets[size_t(r)].at(code).push_back(slot);
      }
    }
  }
}

void LshSelector::hash_all_heads(const int32_t *slots, int64_t n, const RowLoader &load_row) {
  if (n >= kGemmMinKeys) {  // one GEMM per head, threaded inside
    OmpThreadLimit limit(ctx_.threads);
    for (int h = 0; h < keys_.heads(); ++h) hash_slots(h, slots, n, true, load_row);
  } else {
    parallel_for(ctx_.threads, keys_.heads(), [&](int64_t h) { hash_slots(int(h), slots, n, false, load_row); });
  }
}

void LshSelector::hash_stored(const int32_t *slots, int64_t n, const NativeRows &rows) {
  const sa_dtype dt = keys_.dtype();
  hash_all_heads(slots, n, [&](int h, int64_t j, float *out) { rows.load(h, slots[j], dt, out); });
}

void LshSelector::hash_tensor(const int32_t *slots, int64_t n, const TensorView &keys) {
  const sa_dtype dt = keys_.dtype();
  hash_all_heads(slots, n, [&](int h, int64_t j, float *out) { load_tensor_row(keys, j, h, dt, out); });
}

void LshSelector::unbucket(int h, int32_t slot) {
  HeadTables &t = heads_[size_t(h)];
  for (int r = 0; r < rounds_; ++r) t.buckets[size_t(r)].remove(t.codes[size_t(slot) * size_t(rounds_) + size_t(r)], slot);
}

void LshSelector::hash_range(int64_t first, int64_t last) {
  if (last <= first) return;
  std::vector<int32_t> slots(size_t(last - first));
  for (int64_t s = first; s < last; ++s) slots[size_t(s - first)] = int32_t(s);
  hash_stored(slots.data(), last - first, NativeRows(keys_));
}

void LshSelector::rebuild(int64_t n, const NativeRows &rows) {
  const int64_t D = keys_.dim(), P = padded_dim_;
  bits_ = bits_for(n);
  std::vector<int32_t> all(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) all[size_t(s)] = int32_t(s);
  parallel_for(ctx_.threads, keys_.heads(), [&](int64_t h) {
    HeadTables &t = heads_[size_t(h)];
    const sa_dtype dt = keys_.dtype();
    std::vector<double> sum(size_t(D), 0.0);
    std::vector<float> x(static_cast<size_t>(D));
    for (int64_t s = 0; s < n; ++s) {
      rows.load(int(h), s, dt, x.data());
      for (int64_t d = 0; d < D; ++d) sum[size_t(d)] += x[size_t(d)];
    }
    t.mean.resize(size_t(D));
    for (int64_t d = 0; d < D; ++d) t.mean[size_t(d)] = float(sum[size_t(d)] / double(n));
    // Hyperplanes distributed like the centred keys, N(0, C): random combinations of a strided
    // sample of them. Normalised, so margins compare across bits.
    const int64_t step = (n + kPlaneSample - 1) / kPlaneSample, m = (n + step - 1) / step;
    std::vector<float> sample(size_t(m * D));
    for (int64_t j = 0; j < m; ++j) {
      rows.load(int(h), j * step, dt, &sample[size_t(j * D)]);
      for (int64_t d = 0; d < D; ++d) sample[size_t(j * D + d)] -= t.mean[size_t(d)];
    }
    const int64_t R = int64_t(rounds_) * bits_;
    t.planes.assign(size_t(R * P), 0.f);
    std::vector<double> r(static_cast<size_t>(D));
    for (int64_t p = 0; p < R; ++p) {
      SplitMix rng{seed_ ^ (0x9e3779b97f4a7c15ull * uint64_t(h * R + p + 1))};
      std::fill(r.begin(), r.end(), 0.0);
      for (int64_t j = 0; j < m; ++j) {
        const double w = rng.normal();
        for (int64_t d = 0; d < D; ++d) r[size_t(d)] += w * sample[size_t(j * D + d)];
      }
      double norm2 = 0;
      for (double v : r) norm2 += v * v;
      const double inv = norm2 > 0 ? 1.0 / std::sqrt(norm2) : 0.0;
      for (int64_t d = 0; d < D; ++d) t.planes[size_t(p * P + d)] = float(r[size_t(d)] * inv);
    }
    t.codes.assign(size_t(keys_.size()) * size_t(rounds_), 0);
    for (LshBuckets &b : t.buckets) b.reset(bits_);
  });
  hash_stored(all.data(), n, rows);
  built_size_ = n;
}

void LshSelector::append(const TensorView &keys) {
  const int64_t old_size = keys_.size();
  keys_.append(keys);
  const int64_t n = keys_.size();
  if (n == old_size) return;
  if (rebuilds_at(n, built_size_)) {
    rebuilds_.push_back(n);
    if (keys_.has_rows()) {
      rebuild(n, NativeRows(keys_));
      return;
    }
    // Borrowed keys: the next selection builds the tables from the host's keys of these n slots.
    built_size_ = rebuild_size_ = n;
    replay_.clear();
    rebuild_.set_pending();
    return;
  }
  std::vector<int32_t> fresh;
  fresh.reserve(size_t(n - old_size));
  for (int64_t s = old_size; s < n; ++s) fresh.push_back(int32_t(s));
  for (HeadTables &t : heads_) t.codes.resize(size_t(n) * size_t(rounds_));
  if (rebuild_.pending()) {
    replay_.push_back({false, std::move(fresh)});  // hashed after the deferred rebuild, as a batch
    return;
  }
  if (keys_.has_rows()) hash_stored(fresh.data(), int64_t(fresh.size()), NativeRows(keys_));
  else hash_tensor(fresh.data(), int64_t(fresh.size()), keys);
}

void LshSelector::update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) {
  keys_.update(slots, n, keys, positions);
  if (rebuild_.pending()) {
    replay_.push_back({true, std::vector<int32_t>(slots, slots + n)});
    return;
  }
  parallel_for(ctx_.threads, keys_.heads(), [&](int64_t h) {
    for (int64_t i = 0; i < n; ++i) unbucket(int(h), slots[i]);
  });
  if (keys_.has_rows()) hash_stored(slots, n, NativeRows(keys_));
  else hash_tensor(slots, n, keys);
}

void LshSelector::rebuild_deferred(const NativeRows &rows) {
  rebuild(rebuild_size_, rows);
  // The batches appended or refilled since, in order, as an owning index hashed them.
  for (const ReplayBatch &batch : replay_) {
    if (batch.refill)
      parallel_for(ctx_.threads, keys_.heads(), [&](int64_t h) {
        for (int32_t slot : batch.slots) unbucket(int(h), slot);
      });
    hash_stored(batch.slots.data(), int64_t(batch.slots.size()), rows);
  }
  replay_.clear();
}

size_t LshSelector::memory_bytes() const {
  size_t bytes = keys_.memory_bytes() + heads_.capacity() * sizeof(HeadTables);
  bytes += replay_.capacity() * sizeof(ReplayBatch);
  for (const ReplayBatch &b : replay_) bytes += b.slots.capacity() * sizeof(int32_t);
  for (const HeadTables &t : heads_) {
    bytes += (t.mean.capacity() + t.planes.capacity()) * sizeof(float) + t.codes.capacity() * sizeof(uint32_t);
    for (const LshBuckets &b : t.buckets) bytes += b.memory_bytes();
  }
  return bytes;
}

void LshSelector::truncate(int64_t keep) {
  const int64_t size = keys_.size();
  if (keep >= size) return;
  // The appends between the last rebuild an index of `keep` slots would have made and keep,
  // each [start, end), the last one cut at keep.
  const std::vector<int32_t> &starts = keys_.append_starts();
  while (!rebuilds_.empty() && rebuilds_.back() >= keep) rebuilds_.pop_back();
  const int64_t before = rebuilds_.empty() ? 0 : rebuilds_.back();
  // The append that ends at keep rebuilds when keep has grown enough past the last rebuild.
  const int64_t target = keep > 0 && rebuilds_at(keep, before) ? keep : before;
  if (keep == 0) {
    keys_.truncate(0);
    bits_ = 0;
    built_size_ = 0;
    for (HeadTables &t : heads_) t = HeadTables{{}, {}, {}, std::vector<LshBuckets>(size_t(rounds_))};
    return;
  }
  std::vector<int64_t> batches;  // starts of the appends after target, then keep
  for (auto it = std::lower_bound(starts.begin(), starts.end(), int32_t(target)); it != starts.end() && *it < keep; ++it)
    batches.push_back(*it);
  batches.push_back(keep);
  if (target == built_size_) {
    // The hyperplanes stay. Unbucket the dropped slots and the kept part of a cut append,
    // which is hashed again as a batch of its own (GEMM or kernel, as its size decides).
    const bool cut = !std::binary_search(starts.begin(), starts.end(), int32_t(keep));
    const int64_t rehash_from = cut && batches.size() > 1 ? batches[batches.size() - 2] : keep;
    parallel_for(ctx_.threads, keys_.heads(), [&](int64_t h) {
      for (int64_t s = rehash_from; s < size; ++s) unbucket(int(h), int32_t(s));
    });
    for (HeadTables &t : heads_) t.codes.resize(size_t(keep) * size_t(rounds_));
    keys_.truncate(keep);
    hash_range(rehash_from, keep);
  } else {
    // A rebuild past keep replaced the tables: draw those of target again from its keys, then
    // hash the later appends batch by batch.
    keys_.truncate(keep);
    rebuild(target, NativeRows(keys_));
    for (size_t b = 0; b + 1 < batches.size(); ++b) hash_range(batches[b], batches[b + 1]);
  }
  if (target == keep) rebuilds_.push_back(keep);
}

void LshSelector::select(const sa_context &ctx, const SelectRequest &req) const {
  // Borrowed keys: tables the last doubling left to build, first.
  rebuild_.run_if_pending(
      [&] { const_cast<LshSelector *>(this)->rebuild_deferred(host_rows(req, keys_.dim())); });
  const int64_t n_q = req.queries.shape[0], D = keys_.dim(), P = padded_dim_, R = int64_t(rounds_) * bits_;
  const int64_t lists = selection_list_count(req, keys_.heads());
  // The candidates of list l of query i, into rs.candidates.
  auto propose = [&](int64_t i, const SelectionList &l, LshScratch &s, RescoreScratch &rs) {
    const HeadTables &t = heads_[size_t(l.kv_head)];
    rs.candidates.clear();
    if (keys_.size() > 0) {
      s.seen.assign(size_t((keys_.size() + 63) / 64), 0);
      // Queries are not centred: q . mu is the same for every key, so the order of q . (k - mu)
      // is that of q . k.
      s.query.assign(size_t(l.q_heads * P), 0.f);
      rs.queries.resize(size_t(l.q_heads * D));
      load_list_queries(req, i, l, rs.queries.data());
      for (int64_t g = 0; g < l.q_heads; ++g) std::copy_n(&rs.queries[size_t(g * D)], D, &s.query[size_t(g * P)]);
      s.proj.resize(size_t(l.q_heads * R));
      score_rows_grouped(ctx_.kernels->f32, s.query.data(), l.q_heads, P, t.planes.data(), R, s.proj.data(), R);
      s.margin.resize(size_t(l.q_heads * R));
      s.codes.resize(size_t(l.q_heads * rounds_));
      for (int64_t g = 0; g < l.q_heads; ++g)
        for (int r = 0; r < rounds_; ++r) {
          const float *p = &s.proj[size_t(g * R + r * bits_)];
          uint32_t code = 0;
          for (int b = 0; b < bits_; ++b) {
            code |= uint32_t(p[b] > 0.f) << b;
            s.margin[size_t(g * R + r * bits_ + b)] = std::fabs(p[b]);
          }
          s.codes[size_t(g * rounds_ + r)] = code;
        }
      // Marks the slots of probes [first, last] of every table's probe sequence (0: the
      // query's own bucket). Returns the buckets and entries read, or -1 once every sequence
      // ended before `last` (nothing more to probe).
      auto probe = [&](int first, int last) {
        int64_t visited = 0;
        bool more = false;
        for (int64_t g = 0; g < l.q_heads; ++g)
          for (int r = 0; r < rounds_; ++r) {
            probe_codes(s.codes[size_t(g * rounds_ + r)], &s.margin[size_t(g * R + r * bits_)], bits_, last, s.probes);
            more |= int(s.probes.size()) > last;
            for (size_t j = size_t(first); j < s.probes.size(); ++j) {
              const std::vector<int32_t> *bucket = t.buckets[size_t(r)].find(s.probes[j]);
              ++visited;  // the look-up itself: empty buckets are not free either
              if (!bucket) continue;
              visited += int64_t(bucket->size());
              for (int32_t slot : *bucket) s.seen[size_t(slot) >> 6] |= uint64_t(1) << (slot & 63);
            }
          }
        return more ? visited : -1;
      };
      // A list per query head reads one head's buckets where the group's shared list reads
      // every head's: it probes more, to read as many (its rescoring costs the same: one head
      // per candidate, not the group). tinylm-qkv layer 3, decode order, K = 256: 2.7% short
      // of exact mass, 1.1% with this (the shared list: 0.6%).
      const int64_t group = req.queries.shape[1] / keys_.heads();
      const int64_t read = probes_for_size(keys_.size(), std::max<int64_t>(1, group / l.q_heads)) + 1;
      const int probes0 = int(std::min<int64_t>(
          LshLimits::kMaxProbes, (read * kSketchWiden.num + kSketchWiden.den / 2) / kSketchWiden.den - 1));
      int64_t visited = probe(0, probes0);
      collect_union(s.seen, rs.candidates);
      // Buckets also hold keys the query cannot see (later positions in prefill, other
      // segments) and may hold few keys. A query gets at least top_k visible candidates, and
      // kVisibleShare of those a query with nothing hidden would get (the union less the forced
      // slots in it): else more probes, doubling, while reading buckets stays cheaper than
      // scoring every selectable key (an entry costs a bit set, a key D x group multiply-adds);
      // then all of them.
      const QueryVisibility vis = query_visibility(req, i);
      const KeepRule rule = keep_rule(req, i);
      const int64_t *pos = keys_.positions();
      const VisibleCount first = count_visible(rs.candidates, pos, vis, rule);
      const int64_t pool = int64_t(rs.candidates.size()) - first.forced;
      // S estimated from positions (exact for a contiguous cache, high with segments).
      const int64_t shown = std::min<int64_t>(keys_.size(), vis.query_pos + 1) - req.window - req.sinks;
      const int64_t top_k = req.top_k, s_est = std::max<int64_t>(shown, top_k);
      const int64_t want = std::max<int64_t>(top_k + kTopKShareMargin * top_k * top_k / std::max<int64_t>(s_est, 1),
                                             pool * kVisibleShare.num / kVisibleShare.den);
      if (first.selectable < want) {
        s.selectable.clear();
        const PositionRange scored = scored_positions(vis.query_pos, req.window, req.sinks);
        keys_.slots_at_positions(scored.lo, scored.hi, s.selectable);
        const int64_t budget = kRefillVisitsPerKey * int64_t(s.selectable.size());
        bool enough = false;
        for (int last = probes0; !enough && visited >= 0 && visited < budget && int64_t(s.selectable.size()) > want;) {
          const int next = 2 * last + 2;
          const int64_t more = probe(last + 1, next);
          visited = more < 0 ? -1 : visited + more;
          last = next;
          collect_union(s.seen, rs.candidates);
          enough = count_visible(rs.candidates, pos, vis, rule).selectable >= want;
        }
        if (!enough) rs.candidates.swap(s.selectable);
      }
      // The best kSketchKeep of the visible, choosable candidates by sketch score (at least
      // top_k and its margin), kept ascending; forced and hidden ones are dropped by the
      // rescoring anyway. Equal scores at the cut: the lower slots.
      s.choosable.clear();
      for (int32_t slot : rs.candidates)
        if (vis(slot, pos[slot]) && !always_kept(pos[slot], rule)) s.choosable.push_back(slot);
      const int64_t n_choosable = int64_t(s.choosable.size());
      const int64_t keep = std::max<int64_t>(top_k + kTopKShareMargin * top_k * top_k / std::max<int64_t>(s_est, 1),
                                             n_choosable * kSketchKeep.num / kSketchKeep.den);
      if (keep >= 1 && keep < n_choosable) {
        s.summed.assign(size_t(R), 0.f);
        for (int64_t g = 0; g < l.q_heads; ++g)
          for (int64_t x = 0; x < R; ++x) s.summed[size_t(x)] += s.proj[size_t(g * R + x)];
        sketch_tables(s.summed.data(), rounds_, bits_, s.sketch);
        s.sketch_scores.resize(size_t(n_choosable));
        for (int64_t j = 0; j < n_choosable; ++j) {
          const float x = sketch_score(s.sketch, &t.codes[size_t(s.choosable[size_t(j)]) * size_t(rounds_)], rounds_, bits_);
          s.sketch_scores[size_t(j)] = x == x ? x : -INFINITY;  // a NaN query: no order for nth_element to break on
        }
        s.cut = s.sketch_scores;
        std::nth_element(s.cut.begin(), s.cut.begin() + long(keep - 1), s.cut.end(), std::greater<float>());
        const float threshold = s.cut[size_t(keep - 1)];
        int64_t above = 0;
        for (float x : s.sketch_scores) above += x > threshold;
        int64_t ties = keep - above;
        rs.candidates.clear();
        for (int64_t j = 0; j < n_choosable; ++j) {
          const float x = s.sketch_scores[size_t(j)];
          if (x > threshold || (x == threshold && ties-- > 0)) rs.candidates.push_back(s.choosable[size_t(j)]);
        }
      }
    }
  };
  if (n_q >= kBlockRescoreMinQueries) {
    // Prefill: a query that sees few keys is scored exactly (kPrefillExactFactor); when every
    // query of the call is, by the exact selector's own path. Else every list's candidates by
    // blocks of queries, then one block rescoring (block_rescore.hpp: one GEMM when they are
    // dense in the keys the block sees).
    const VisibleCounts visible(keys_, req);
    const int64_t exact_below = kPrefillExactFactor * int64_t(req.top_k);
    if (visible.select_exactly_if_all_within(ctx, exact_below)) return;
    std::vector<LshScratch> scratch(static_cast<size_t>(block_task_slots(ctx, req, keys_.heads())));
    select_by_blocks(ctx, keys_, req, [&](int64_t i, const SelectionList &l, int slot, RescoreScratch &rs) {
      if (visible(i) > exact_below) return propose(i, l, scratch[size_t(slot)], rs);
      rs.candidates.clear();  // every key it sees
      keys_.slots_at_positions(0, req.positions[size_t(i)], rs.candidates);
    });
    return;
  }
  const int slots = loop_slots(ctx.threads, n_q * lists);
  std::vector<LshScratch> scratch(static_cast<size_t>(slots));  // the call's own: one per task running at once
  parallel_for_slots(slots, n_q * lists, [&](int64_t task, int slot) {
    LshScratch &s = scratch[size_t(slot)];
    const int64_t i = task / lists;
    const SelectionList l = selection_list(req, keys_.heads(), task % lists);
    propose(i, l, s, s.rescore);
    rescore_candidates(ctx, keys_, req, i, l, s.rescore);
  });
}

}  // namespace sa
