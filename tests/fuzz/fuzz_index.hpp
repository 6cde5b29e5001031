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

struct FuzzIndex {
  sat::IndexPtr handle;
  sa_index_options opt = SA_INDEX_OPTIONS_INIT;
  std::vector<double> keys;  // [slot][H_kv][D], the values passed (exact in the dtype they came in)
  std::vector<int64_t> pos;  // position of each slot
  sat::Tensor host_k, host_v;  // [kMaxSlots, H_kv, D] in the host's dtype and layout

  sa_index *ix() const { return handle.get(); }
  int64_t h_kv() const { return opt.num_kv_heads; }
  int64_t d() const { return opt.head_dim; }
  int64_t size() const { return int64_t(pos.size()); }
  int64_t max_pos() const {
    int64_t m = -1;
    for (int64_t p : pos) m = std::max(m, p);
    return m;
  }
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
  ref::KeyCache scoring_cache(sa_dtype host_dtype) const {
    const sa_dtype dt = borrows() ? host_dtype : opt.dtype;
    ref::KeyCache c(h_kv(), d(), dt);
    c.keys.resize(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) c.keys[i] = sat::round_to(dt, keys[i]);
    c.pos = pos;
    return c;
  }

  // Mirror of a successful sa_index_append / sa_index_update / sa_index_truncate. The host
  // cache gets the same keys (rounded to its dtype); values are refilled at random.
  void store_row(int64_t slot, const sat::Tensor &k, int64_t r, sat::Rng &rng) {
    for (int64_t h = 0; h < h_kv(); ++h)
      for (int64_t x = 0; x < d(); ++x) {
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
    }
  }
  // The slots sa_index_truncate(position) keeps, or -1 when it must refuse (a slot at or past
  // the position is followed by one that stays).
  int64_t truncate_keep(int64_t position) const {
    int64_t dropped = 0;
    for (int64_t p : pos) dropped += p >= position;
    for (int64_t s = size() - dropped; s < size(); ++s)
      if (pos[size_t(s)] < position) return -1;
    return size() - dropped;
  }
  void mirror_truncate(int64_t keep) {
    if (keep == size()) return;  // nothing dropped: the library changes nothing
    pos.resize(size_t(keep));
    keys.resize(size_t(keep * h_kv() * d()));
  }
};

}  // namespace apifuzz
