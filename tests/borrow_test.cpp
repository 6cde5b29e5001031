// Indexes created with borrow_keys read the host's K (sa_select_options.keys) instead of a copy
// of their own: through the C ABI, every kind selects exactly what an owning index of the same
// dtype selects (f16, bf16, f32), with the host's K contiguous token-major, padded, head-major
// or with a strided head dimension (packed by the library), through appends, batches across an
// LSH doubling and eviction refills; the host's keys are validated; older struct sizes default
// to owning and to no keys.
#include <gtest/gtest.h>

#include <cstddef>
#include <thread>

#include "borrow_fixture.hpp"

namespace {

using bt::Layout;
using sat::Tensor;

struct Param {
  size_t kind;
  Layout layout;
  sa_dtype dtype;
};

std::string param_name(const ::testing::TestParamInfo<Param> &info) {
  const char *dt = info.param.dtype == SA_DTYPE_F16 ? "f16" : info.param.dtype == SA_DTYPE_BF16 ? "bf16" : "f32";
  return bt::kinds()[info.param.kind].name + "_" + bt::layout_name(info.param.layout) + "_" + dt;
}

// Every kind with the host's K contiguous (token-major) and with other strides (padded rows);
// the exact and page kinds (whose scoring reads rows in place when they are contiguous) also
// head-major, with a strided head dimension, and in bf16 and f32.
std::vector<Param> params() {
  std::vector<Param> p;
  const std::vector<bt::Kind> kinds = bt::kinds();
  for (size_t k = 0; k < kinds.size(); ++k) {
    p.push_back({k, Layout::token_major, SA_DTYPE_F16});
    p.push_back({k, Layout::padded, SA_DTYPE_F16});
    if (kinds[k].name == "exact" || kinds[k].name == "page_refine") {
      p.push_back({k, Layout::head_major, SA_DTYPE_F16});
      p.push_back({k, Layout::dim_strided, SA_DTYPE_F16});
      p.push_back({k, Layout::token_major, SA_DTYPE_BF16});
      p.push_back({k, Layout::padded, SA_DTYPE_F32});
    }
  }
  return p;
}

class Borrowed : public ::testing::TestWithParam<Param> {};

TEST_P(Borrowed, SelectsLikeAnOwningIndex) {
  const Param &param = GetParam();
  const bt::Kind kind = bt::kinds()[param.kind];
  bt::Pair p(kind.options(param.dtype), param.layout, 2200, 2);
  ASSERT_TRUE(p.ok());
  sat::Rng rng(1000 + param.kind);
  bt::run_scenario(p, rng, kind.mass, bt::compare_c_api);
}

INSTANTIATE_TEST_SUITE_P(Kinds, Borrowed, ::testing::ValuesIn(params()), param_name);

TEST(BorrowedKeys, AreValidated) {
  bt::Pair p(bt::base_options(SA_SELECTOR_PAGE, SA_DTYPE_F16), Layout::token_major, 100, 1);
  ASSERT_TRUE(p.ok());
  sat::Rng rng(5);
  p.append(sat::random_tensor(rng, SA_DTYPE_F16, {60, bt::kHkv, bt::kD}));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, bt::kHq, bt::kD});
  Tensor out(SA_DTYPE_I32, {1, bt::kHkv, 20});
  out.poison();
  sa_select_options so = sat::select_options(8, 4, 2);
  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_select(p.borrowed.get(), q.t(), &so, out.t()));  // no keys
  EXPECT_NE(std::string(sa_last_error()).find("opt->keys"), std::string::npos) << sa_last_error();
  sa_tensor short_keys = p.host.view(59);  // one slot short
  so.keys = &short_keys;
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_select(p.borrowed.get(), q.t(), &so, out.t()));
  Tensor other_heads(SA_DTYPE_F16, {60, bt::kHkv + 1, bt::kD}), other_dim(SA_DTYPE_F16, {60, bt::kHkv, bt::kD / 2});
  so.keys = other_heads.t();
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_select(p.borrowed.get(), q.t(), &so, out.t()));
  so.keys = other_dim.t();
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_select(p.borrowed.get(), q.t(), &so, out.t()));
  Tensor ints(SA_DTYPE_I32, {60, bt::kHkv, bt::kD});
  so.keys = ints.t();
  EXPECT_SA_ERR(SA_ERR_DTYPE, sa_select(p.borrowed.get(), q.t(), &so, out.t()));
  EXPECT_TRUE(out.untouched());
  // A longer cache (capacity beyond the index's slots) is fine.
  sa_tensor all = p.host.view(100);
  so.keys = &all;
  EXPECT_SA_OK(sa_select(p.borrowed.get(), q.t(), &so, out.t()));
  // A host built before the field existed passes a smaller struct: keys read as NULL.
  sa_select_options old = so;
  old.struct_size = offsetof(sa_select_options, keys);
  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_select(p.borrowed.get(), q.t(), &old, out.t()));
}

// A host built before borrow_keys existed gets an owning index: it selects without opt->keys.
TEST(BorrowedKeys, OlderIndexStructSizeOwnsItsKeys) {
  auto ctx = sat::make_context(1);
  sa_index_options o = bt::base_options(SA_SELECTOR_EXACT, SA_DTYPE_F32);
  o.borrow_keys = 1;  // not read: beyond the struct_size passed
  o.struct_size = offsetof(sa_index_options, borrow_keys);
  sa_index *raw = nullptr;
  ASSERT_SA_OK(sa_index_create(ctx.get(), &o, &raw));
  sat::IndexPtr ix(raw);
  sat::Rng rng(6);
  Tensor k = sat::random_tensor(rng, SA_DTYPE_F32, {30, bt::kHkv, bt::kD});
  ASSERT_SA_OK(sa_index_append(ix.get(), k.t()));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, bt::kHq, bt::kD});
  Tensor out(SA_DTYPE_I32, {1, bt::kHkv, 14});
  sa_select_options so = sat::select_options(8, 4, 2);
  EXPECT_SA_OK(sa_select(ix.get(), q.t(), &so, out.t()));
}

// Exact scores come from the host's K in its own dtype: a borrowing exact index of any dtype
// over an f32 K selects like an owning f32 index.
TEST(BorrowedKeys, ExactScoresTheHostsDtype) {
  auto ctx = sat::make_context(1);
  sa_index_options o = bt::base_options(SA_SELECTOR_EXACT, SA_DTYPE_F32);
  sa_index *raw = nullptr;
  ASSERT_SA_OK(sa_index_create(ctx.get(), &o, &raw));
  sat::IndexPtr owned(raw);
  o.dtype = SA_DTYPE_BF16;
  o.borrow_keys = 1;
  ASSERT_SA_OK(sa_index_create(ctx.get(), &o, &raw));
  sat::IndexPtr borrowed(raw);
  sat::Rng rng(8);
  Tensor k = sat::random_tensor(rng, SA_DTYPE_F32, {300, bt::kHkv, bt::kD});
  ASSERT_SA_OK(sa_index_append(owned.get(), k.t()));
  ASSERT_SA_OK(sa_index_append(borrowed.get(), k.t()));
  for (int64_t n_q : {1, 9}) {
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, bt::kHq, bt::kD});
    Tensor want(SA_DTYPE_I32, {n_q, bt::kHkv, 26}), got(SA_DTYPE_I32, {n_q, bt::kHkv, 26});
    sa_select_options so = sat::select_options(16, 8, 2);
    ASSERT_SA_OK(sa_select(owned.get(), q.t(), &so, want.t()));
    so.keys = k.t();
    ASSERT_SA_OK(sa_select(borrowed.get(), q.t(), &so, got.t()));
    EXPECT_EQ(got.values(), want.values()) << n_q << " queries";
  }
}

TEST(BorrowedKeys, DefaultsAreOff) {
  EXPECT_EQ(sa_index_options_default().borrow_keys, 0);
  const sa_index_options o = SA_INDEX_OPTIONS_INIT;
  EXPECT_EQ(o.borrow_keys, 0);
  EXPECT_EQ(sa_select_options_default().keys, nullptr);
  const sa_select_options s = SA_SELECT_OPTIONS_INIT;
  EXPECT_EQ(s.keys, nullptr);
}

// Concurrent selections on a borrowed index that has deferred work (page bounds, LSH tables)
// agree with one another and with an owning index.
TEST(BorrowedKeys, ConcurrentSelectionsFinishDeferredWorkOnce) {
  for (sa_selector_kind kind : {SA_SELECTOR_PAGE, SA_SELECTOR_LSH}) {
    bt::Pair p(bt::base_options(kind, SA_DTYPE_F16), Layout::token_major, 3000, 1);
    ASSERT_TRUE(p.ok());
    sat::Rng rng(9);
    p.append(sat::random_tensor(rng, SA_DTYPE_F16, {1000, bt::kHkv, bt::kD}));
    p.append(sat::random_tensor(rng, SA_DTYPE_F16, {1100, bt::kHkv, bt::kD}));  // LSH doubles
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, bt::kHq, bt::kD});
    const sa_select_options so = sat::select_options(16, 8, 2);
    const Tensor want = p.select_owned(q, so, bt::kHkv, 26);
    std::vector<Tensor> got(4, Tensor(SA_DTYPE_I32, {1, bt::kHkv, 26}));
    std::vector<sa_status> st(4, SA_OK);
    const sa_tensor keys = p.host.view(p.size);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < got.size(); ++t)
      threads.emplace_back([&, t] {
        sa_select_options o = so;
        o.keys = &keys;
        st[t] = sa_select(p.borrowed.get(), q.t(), &o, got[t].t());
      });
    for (auto &t : threads) t.join();
    for (size_t t = 0; t < got.size(); ++t) {
      EXPECT_EQ(st[t], SA_OK);
      EXPECT_EQ(got[t].values(), want.values()) << "kind " << kind << " thread " << t;
    }
  }
}

}  // namespace
