// An index under test and everything the fuzzer knows about it: the keys and position of every
// slot as the scenario passed them (the mirror the references read), and the host's K/V cache
// that an engine keeps beside the index (row s = slot s), which borrow_keys indexes read and
// sa_attend attends over.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "reference_select.hpp"
#include "test_util.hpp"

namespace apifuzz {

constexpr int64_t kMaxSlots = 320;  // host cache rows; appends stop there
// A few exact and page indexes grow past top_k + 2048 keys, where page selection bounds pages
// with refine too (and a prefill's queries that see more than twice that are not scored exactly).
constexpr int64_t kMaxSlotsLarge = 4700;

struct FuzzIndex {
  sat::IndexPtr handle;
  // A borrow_keys index whose dtype is the host cache's: an owning index (borrow_keys 0) given the
  // same calls, which must select exactly the same (the header); null otherwise.
  sat::IndexPtr owning;
  bool refilled = false;  // an update happened: LSH tables may then differ from the owning twin's
  sa_index_options opt = SA_INDEX_OPTIONS_INIT;
  std::vector<double> keys;  // [slot][H_kv][D], the values passed (exact in the dtype they came in)
  std::vector<int64_t> pos;  // position of each slot (every KV head's until a per-head refill)
  // After sa_index_update_heads: [H_kv][slot], the position each head's slot holds (empty before).
  std::vector<std::vector<int64_t>> head_pos;
  int64_t max_slots = kMaxSlots;  // rows of the host cache
  sat::Tensor host_k, host_v;  // [max_slots, H_kv, D] in the host's dtype and layout

  sa_index *ix() const { return handle.get(); }
  int64_t h_kv() const { return opt.num_kv_heads; }
  int64_t d() const { return opt.head_dim; }
  int64_t size() const { return int64_t(pos.size()); }
  bool per_head() const { return !head_pos.empty(); }
  // The positions KV head h's slots hold.
  const std::vector<int64_t> &pos_of(int64_t h) const { return per_head() ? head_pos[size_t(h)] : pos; }
  // The largest position any head holds.
  int64_t max_pos() const {
    int64_t m = -1;
    for (int64_t h = 0; h < (per_head() ? h_kv() : 1); ++h)
      for (int64_t p : pos_of(h)) m = std::max(m, p);
    return m;
  }
  // Exact and page indexes take per-KV-head refills; the other kinds refuse them.
  bool takes_head_updates() const { return opt.kind == SA_SELECTOR_EXACT || opt.kind == SA_SELECTOR_PAGE; }
  bool borrows() const { return opt.borrow_keys != 0; }
  // The position defaults count from: the largest one held (the header).
  int64_t top() const { return max_pos(); }

  // The first `rows` rows of the host cache, as a descriptor (shape[0] = rows).
  sa_tensor host_view(const sat::Tensor &t, int64_t rows) const {
    sa_tensor v = *t.t();
    v.shape[0] = rows;
    return v;
  }
  sa_tensor host_keys(int64_t rows) const { return host_view(host_k, rows); }
  sa_tensor host_values(int64_t rows) const { return host_view(host_v, rows); }

  // Keys as the selector scores them: the index's own copy in its dtype, or with borrow_keys
  // the host's K in the host's dtype.
  // host_dtype: the dtype of the host keys passed to sa_select (the paged cache's for a batch).
  // h: the KV head whose positions the slots hold (they differ per head after a per-head refill).
  ref::KeyCache scoring_cache(sa_dtype host_dtype, int64_t h = 0) const {
    const sa_dtype dt = borrows() ? host_dtype : opt.dtype;
    ref::KeyCache c(h_kv(), d(), dt);
    c.keys.resize(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) c.keys[i] = sat::round_to(dt, keys[i]);
    c.pos = pos_of(h);
    return c;
  }

  // Mirror of a successful sa_index_append / sa_index_update / sa_index_truncate. The host
  // cache gets the same keys (rounded to its dtype); values are refilled at random.
  // only_head >= 0: that KV head's part of the row alone (a per-head refill).
  void store_row(int64_t slot, const sat::Tensor &k, int64_t r, sat::Rng &rng, int64_t only_head = -1) {
    for (int64_t h = 0; h < h_kv(); ++h)
      for (int64_t x = 0; x < d(); ++x) {
        if (only_head >= 0 && h != only_head) continue;
        const double v = k.get({r, h, x});
        keys[size_t((slot * h_kv() + h) * d() + x)] = v;
        host_k.set({slot, h, x}, v);
        host_v.set({slot, h, x}, rng.normal());
      }
  }
  void mirror_append(const sat::Tensor &k, sat::Rng &rng) {
    for (int64_t r = 0; r < k.dim(0); ++r) {
      const int64_t s = size(), p = top() + 1;
      pos.push_back(p);
      for (std::vector<int64_t> &hp : head_pos) hp.push_back(p);
      keys.resize(size_t((s + 1) * h_kv() * d()));
      store_row(s, k, r, rng);
    }
  }
  void mirror_update(const std::vector<int32_t> &slots, const sat::Tensor &k, const int64_t *positions,
                     sat::Rng &rng) {
    int64_t next = top() + 1;
    for (size_t n = 0; n < slots.size(); ++n) {
      store_row(slots[n], k, int64_t(n), rng);
      pos[size_t(slots[n])] = positions ? positions[n] : next++;
      for (std::vector<int64_t> &hp : head_pos) hp[size_t(slots[n])] = pos[size_t(slots[n])];
    }
  }
  // slots and positions: [H_kv][n], key row i of head h into head h's slot slots[h * n + i].
  void mirror_update_heads(const std::vector<int32_t> &slots, int64_t n, const sat::Tensor &k,
                           const std::vector<int64_t> &positions, sat::Rng &rng) {
    if (!per_head()) head_pos.assign(size_t(h_kv()), pos);
    for (int64_t h = 0; h < h_kv(); ++h)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t s = slots[size_t(h * n + i)];
        store_row(s, k, i, rng, h);
        head_pos[size_t(h)][size_t(s)] = positions[size_t(h * n + i)];
      }
  }
  // The slots sa_index_truncate(position) keeps, or -1 when it must refuse (a slot at or past
  // the position is followed by one that stays).
  // With per-head positions every head must drop the same run of last slots.
  int64_t truncate_keep(int64_t position) const {
    int64_t keep = -1;
    for (int64_t h = 0; h < (per_head() ? h_kv() : 1); ++h) {
      const std::vector<int64_t> &hp = pos_of(h);
      int64_t dropped = 0;
      for (int64_t p : hp) dropped += p >= position;
      for (int64_t s = size() - dropped; s < size(); ++s)
        if (hp[size_t(s)] < position) return -1;
      if (h > 0 && size() - dropped != keep) return -1;
      keep = size() - dropped;
    }
    return keep;
  }
  void mirror_truncate(int64_t keep) {
    if (keep == size()) return;  // nothing dropped: the library changes nothing
    pos.resize(size_t(keep));
    for (std::vector<int64_t> &hp : head_pos) hp.resize(size_t(keep));
    keys.resize(size_t(keep * h_kv() * d()));
  }
};

}  // namespace apifuzz
