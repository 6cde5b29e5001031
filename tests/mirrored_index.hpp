// The selector tests' fixture: an index and its mirror in the brute-force oracle
// (reference_select.hpp), fed the same keys, with sa_select run into a poisoned output.
#pragma once

#include <vector>

#include "reference_select.hpp"
#include "test_util.hpp"

namespace sat {

// Options for an index of `kind` over h_kv heads of d dims stored as dtype; the rest default.
inline sa_index_options index_options(sa_selector_kind kind, int64_t h_kv, int64_t d, sa_dtype dtype) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = kind;
  o.num_kv_heads = int32_t(h_kv);
  o.head_dim = int32_t(d);
  o.dtype = dtype;
  return o;
}

// Row i of a [n, H, D] tensor as a [1, H, D] tensor of the same dtype: one query of a batch,
// to select alone.
inline Tensor row_tensor(const Tensor &t, int64_t i) {
  Tensor r(t.dtype(), {1, t.dim(1), t.dim(2)});
  for (int64_t h = 0; h < t.dim(1); ++h)
    for (int64_t d = 0; d < t.dim(2); ++d) r.set({0, h, d}, t.get({i, h, d}));
  return r;
}

struct MirroredIndex {
  ContextPtr ctx;
  IndexPtr ix;
  ref::KeyCache cache;

  explicit MirroredIndex(const sa_index_options &o, int32_t threads = 1)
      : ctx(make_context(threads)), cache(o.num_kv_heads, o.head_dim, o.dtype) {
    if (!ctx) return;
    sa_index *raw = nullptr;
    sa_status s = sa_index_create(ctx.get(), &o, &raw);
    EXPECT_EQ(s, SA_OK) << sa_last_error();
    if (s == SA_OK) ix.reset(raw);
  }
  sa_index *get() { return ix.get(); }
  void append(const Tensor &keys) {
    ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
    cache.append(keys);
  }
  void update(const std::vector<int32_t> &slots, const Tensor &keys, const int64_t *positions) {
    ASSERT_SA_OK(sa_index_update(ix.get(), slots.data(), int64_t(slots.size()), keys.t(), positions));
    cache.update(slots, keys, positions);
  }
  // n random keys (times scale) whose values are exact in the index dtype (no rounding questions).
  Tensor random_keys(Rng &rng, int64_t n, double scale = 1.0) const {
    Tensor k(SA_DTYPE_F32, {n, cache.h_kv, cache.d});
    k.randomize(rng);
    std::vector<double> v = k.values();
    for (double &x : v) x = round_to(cache.dtype, x * scale);
    k.set_values(v);
    return k;
  }
  // sa_select into [n_q, H_kv (or H_q per query head), width], poisoned first: the call must
  // succeed and write nothing but the output's elements.
  Tensor select(const Tensor &q, const sa_select_options &o, int64_t width) {
    Tensor out(SA_DTYPE_I32, {q.dim(0), o.per_query_head ? q.dim(1) : cache.h_kv, width});
    out.poison();
    sa_status s = sa_select(ix.get(), q.t(), &o, out.t());
    EXPECT_EQ(s, SA_OK) << sa_status_name(s) << ": " << sa_last_error();
    if (s == SA_OK) {
      EXPECT_TRUE(out.only_elements_written());
    }
    return out;
  }
};

}  // namespace sat
