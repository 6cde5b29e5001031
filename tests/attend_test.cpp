// sa_attend against the double-precision reference: dense and sparse, GQA, causal with
// positions, strided layouts, f16/bf16, long key counts (split over keys), LSE, empty rows,
// every instruction-set path and thread counts. Every output sits between canaries.
#include <gtest/gtest.h>

#include <thread>

#include "reference_attention.hpp"
#include "test_util.hpp"

namespace {

using sat::Rng;
using sat::Tensor;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Tolerance on max|diff| / max|ref| for an output dtype, given f32 accumulation.
double out_tolerance(sa_dtype out_dtype) {
  switch (out_dtype) {
    case SA_DTYPE_F16: return 2e-3;   // one f16 rounding (2^-11) of each output plus slack
    case SA_DTYPE_BF16: return 1.6e-2;  // one bf16 rounding (2^-8)
    default: return 1e-5;
  }
}

::testing::AssertionResult lse_close(const std::vector<double> &got, const std::vector<double> &ref, double tol) {
  for (size_t i = 0; i < ref.size(); ++i) {
    bool ok = std::isinf(ref[i]) ? (got[i] == ref[i]) : std::fabs(got[i] - ref[i]) <= tol * std::max(1.0, std::fabs(ref[i]));
    if (!ok) return ::testing::AssertionFailure() << "lse[" << i << "] = " << got[i] << ", reference " << ref[i];
  }
  return ::testing::AssertionSuccess();
}

// Everything one sa_attend call needs, with outputs poisoned so stray writes show.
struct Problem {
  Tensor q, k, v, indices, out, lse;
  bool has_indices = false, has_lse = true;
  sa_attend_options opt = SA_ATTEND_OPTIONS_INIT;
  std::vector<int64_t> qpos, kpos;

  void make_outputs(sa_dtype out_dtype, std::vector<int64_t> out_strides = {}, std::vector<int64_t> lse_strides = {}) {
    out = Tensor(out_dtype, {q.dim(0), q.dim(1), q.dim(2)}, std::move(out_strides));
    lse = Tensor(SA_DTYPE_F32, {q.dim(0), q.dim(1)}, std::move(lse_strides));
    out.poison();
    lse.poison();
  }
  sa_status run(sa_context *ctx) {
    opt.query_positions = qpos.empty() ? nullptr : qpos.data();
    opt.key_positions = kpos.empty() ? nullptr : kpos.data();
    return sa_attend(ctx, q.t(), k.t(), v.t(), has_indices ? indices.t() : nullptr, &opt, out.t(),
                     has_lse ? lse.t() : nullptr);
  }
  ref::AttendResult reference() const {
    ref::AttendArgs a;
    a.q = q.t();
    a.k = k.t();
    a.v = v.t();
    a.indices = has_indices ? indices.t() : nullptr;
    a.scale = opt.scale;
    a.causal = opt.causal != 0;
    a.query_positions = qpos.empty() ? nullptr : qpos.data();
    a.key_positions = kpos.empty() ? nullptr : kpos.data();
    return ref::attend(a);
  }
};

Problem random_problem(Rng &rng, int64_t n_q, int64_t h_q, int64_t h_kv, int64_t d, int64_t n_kv,
                       sa_dtype kv_dtype = SA_DTYPE_F32, sa_dtype q_dtype = SA_DTYPE_F32) {
  Problem p;
  p.q = sat::random_tensor(rng, q_dtype, {n_q, h_q, d});
  p.k = sat::random_tensor(rng, kv_dtype, {n_kv, h_kv, d});
  p.v = sat::random_tensor(rng, kv_dtype, {n_kv, h_kv, d});
  p.make_outputs(q_dtype == SA_DTYPE_F32 ? SA_DTYPE_F32 : q_dtype);
  return p;
}

// Runs the call and compares out (and lse) with the reference; checks the canaries.
void run_and_check(sa_context *ctx, Problem &p, double rel = -1) {
  ASSERT_SA_OK(p.run(ctx));
  EXPECT_TRUE(p.out.only_elements_written());
  EXPECT_TRUE(p.lse.only_elements_written());
  if (!p.has_lse) {
    EXPECT_TRUE(p.lse.untouched());
  }
  ref::AttendResult r = p.reference();
  EXPECT_TRUE(sat::close_rel(p.out.values(), r.out, rel >= 0 ? rel : out_tolerance(p.out.dtype())));
  if (p.has_lse) {
    EXPECT_TRUE(lse_close(p.lse.values(), r.lse, p.k.dtype() == SA_DTYPE_F32 ? 1e-5 : 1e-4));
  }
}

// indices [n_q, H, width], each row filled by fn(i, h, w).
template <class F>
Tensor make_indices(int64_t n_q, int64_t h, int64_t width, F fn, std::vector<int64_t> strides = {}) {
  Tensor t(SA_DTYPE_I32, {n_q, h, width}, std::move(strides));
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t j = 0; j < h; ++j)
      for (int64_t w = 0; w < width; ++w) t.set({i, j, w}, double(fn(i, j, w)));
  return t;
}

// A random subset of [0, n_kv) of size `count` per row, shuffled, padded with -1 to width.
Tensor random_subset_indices(Rng &rng, int64_t n_q, int64_t h, int64_t n_kv, int64_t count, int64_t width) {
  Tensor t(SA_DTYPE_I32, {n_q, h, width});
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t j = 0; j < h; ++j) {
      std::vector<int64_t> all(static_cast<size_t>(n_kv));
      for (int64_t x = 0; x < n_kv; ++x) all[size_t(x)] = x;
      for (int64_t x = n_kv - 1; x > 0; --x) std::swap(all[size_t(x)], all[size_t(rng.below(x + 1))]);
      std::vector<int64_t> row(all.begin(), all.begin() + count);
      row.resize(size_t(width), -1);
      for (int64_t x = width - 1; x > 0; --x) std::swap(row[size_t(x)], row[size_t(rng.below(x + 1))]);
      for (int64_t w = 0; w < width; ++w) t.set({i, j, w}, double(row[size_t(w)]));
    }
  return t;
}

class Attend : public sat::ContextTest {};

TEST_F(Attend, DenseF32MatchesReference) {
  Rng rng(1);
  Problem p = random_problem(rng, 3, 4, 4, 64, 100);
  run_and_check(ctx(), p);
}

TEST_F(Attend, ExplicitScale) {
  Rng rng(2);
  Problem p = random_problem(rng, 2, 2, 2, 32, 77);
  p.opt.scale = 0.37f;
  run_and_check(ctx(), p);
}

TEST_F(Attend, NullOptionsMeansDefaults) {
  Rng rng(3);
  Problem p = random_problem(rng, 2, 4, 2, 16, 50);
  ASSERT_SA_OK(sa_attend(ctx(), p.q.t(), p.k.t(), p.v.t(), nullptr, nullptr, p.out.t(), p.lse.t()));
  ref::AttendResult r = p.reference();
  EXPECT_TRUE(sat::close_rel(p.out.values(), r.out, 1e-5));
  EXPECT_TRUE(lse_close(p.lse.values(), r.lse, 1e-5));
}

TEST_F(Attend, LseIsOptional) {
  Rng rng(4);
  Problem p = random_problem(rng, 2, 4, 4, 32, 60);
  p.has_lse = false;
  run_and_check(ctx(), p);
}

// Scores around +-200 would overflow a naive exp; the softmax must stay exact.
TEST_F(Attend, LargeScoresAreStable) {
  Rng rng(5);
  Problem p = random_problem(rng, 2, 2, 2, 64, 300);
  p.opt.scale = 4.0f;
  run_and_check(ctx(), p, 1e-5);
}

TEST_F(Attend, OddHeadDimsAndKeyCounts) {
  Rng rng(6);
  for (int64_t d : {1, 3, 7, 17, 33, 80, 129})
    for (int64_t n_kv : {1, 2, 15, 31, 65}) {
      SCOPED_TRACE(testing::Message() << "D=" << d << " n_kv=" << n_kv);
      Problem p = random_problem(rng, 2, 2, 1, d, n_kv);
      run_and_check(ctx(), p);
    }
}

TEST_F(Attend, SparseWithAllIndicesEqualsDense) {
  Rng rng(7);
  Problem p = random_problem(rng, 3, 8, 2, 64, 257);
  // Each row lists every key once, in a scrambled order.
  p.indices = make_indices(3, 2, 257, [](int64_t i, int64_t h, int64_t w) { return (w * 101 + i * 7 + h) % 257; });
  p.has_indices = true;
  run_and_check(ctx(), p);
  std::vector<double> sparse = p.out.values(), sparse_lse = p.lse.values();
  p.has_indices = false;
  p.make_outputs(SA_DTYPE_F32);
  run_and_check(ctx(), p);
  EXPECT_TRUE(sat::close_rel(sparse, p.out.values(), 1e-5));
  EXPECT_TRUE(lse_close(sparse_lse, p.lse.values(), 1e-5));
}

TEST_F(Attend, SparseSubsetMatchesReference) {
  Rng rng(8);
  Problem p = random_problem(rng, 4, 4, 4, 64, 500);
  p.indices = random_subset_indices(rng, 4, 4, 500, 37, 64);  // -1 padding scattered in the row
  p.has_indices = true;
  run_and_check(ctx(), p);
}

TEST_F(Attend, SparseSubsetDiffersFromDense) {
  // Guards against an implementation that ignores the indices.
  Rng rng(9);
  Problem p = random_problem(rng, 1, 2, 2, 32, 200);
  p.indices = random_subset_indices(rng, 1, 2, 200, 10, 16);
  p.has_indices = true;
  run_and_check(ctx(), p);
  p.has_indices = false;
  ref::AttendResult dense = p.reference();
  EXPECT_FALSE(sat::close_rel(p.out.values(), dense.out, 1e-2));
}

TEST_F(Attend, DuplicateIndicesCountTwice) {
  Rng rng(10);
  Problem p = random_problem(rng, 1, 1, 1, 16, 8);
  p.indices = make_indices(1, 1, 4, [](int64_t, int64_t, int64_t w) { return std::vector<int>{3, 3, 5, -1}[size_t(w)]; });
  p.has_indices = true;
  run_and_check(ctx(), p);
  // The reference counts the duplicate; check that it matters for this input.
  Problem once = p;
  once.indices = make_indices(1, 1, 2, [](int64_t, int64_t, int64_t w) { return w == 0 ? 3 : 5; });
  EXPECT_FALSE(sat::close_rel(p.out.values(), once.reference().out, 1e-3));
}

struct GqaShape {
  int64_t h_q, h_kv;
};
class AttendGqa : public Attend, public ::testing::WithParamInterface<GqaShape> {};

TEST_P(AttendGqa, Dense) {
  Rng rng(11);
  Problem p = random_problem(rng, 2, GetParam().h_q, GetParam().h_kv, 64, 150);
  run_and_check(ctx(), p);
}

TEST_P(AttendGqa, PerKvHeadLists) {
  Rng rng(12);
  auto [h_q, h_kv] = GetParam();
  Problem p = random_problem(rng, 2, h_q, h_kv, 64, 300);
  p.indices = random_subset_indices(rng, 2, h_kv, 300, 40, 48);
  p.has_indices = true;
  run_and_check(ctx(), p);
}

TEST_P(AttendGqa, PerQueryHeadLists) {
  Rng rng(13);
  auto [h_q, h_kv] = GetParam();
  Problem p = random_problem(rng, 2, h_q, h_kv, 64, 300);
  p.indices = random_subset_indices(rng, 2, h_q, 300, 40, 48);
  p.has_indices = true;
  run_and_check(ctx(), p);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttendGqa, ::testing::Values(GqaShape{8, 2}, GqaShape{32, 8}, GqaShape{6, 1}),
                         [](const auto &info) {
                           return "Hq" + std::to_string(info.param.h_q) + "_Hkv" + std::to_string(info.param.h_kv);
                         });

TEST_F(Attend, CausalDefaultPositions) {
  Rng rng(14);
  Problem p = random_problem(rng, 6, 4, 2, 32, 40);  // queries at positions 34..39
  p.opt.causal = 1;
  run_and_check(ctx(), p);
  // Causality must matter here: the first query sees fewer keys than a non-causal call.
  p.opt.causal = 0;
  EXPECT_FALSE(sat::close_rel(p.out.values(), p.reference().out, 1e-3));
}

TEST_F(Attend, CausalPrefillAllQueries) {
  Rng rng(15);
  Problem p = random_problem(rng, 33, 2, 2, 16, 33);  // query i at position i
  p.opt.causal = 1;
  run_and_check(ctx(), p);
  // Query 0 sees exactly key 0: its output is v[0].
  for (int64_t d = 0; d < 16; ++d) EXPECT_NEAR(p.out.get({0, 0, d}), p.v.get({0, 0, d}), 1e-6);
}

TEST_F(Attend, CausalExplicitQueryPositions) {
  Rng rng(16);
  Problem p = random_problem(rng, 4, 4, 4, 32, 64);
  p.opt.causal = 1;
  p.qpos = {3, 60, 10, 63};
  run_and_check(ctx(), p);
}

TEST_F(Attend, CausalExplicitKeyPositions) {
  Rng rng(17);
  Problem p = random_problem(rng, 3, 4, 2, 32, 50);
  p.opt.causal = 1;
  // The cache rows hold positions in a scrambled order (as after eviction), with gaps.
  for (int64_t r = 0; r < 50; ++r) p.kpos.push_back((r * 37) % 50 * 2);
  run_and_check(ctx(), p);  // default query positions: relative to the largest key position
  p.qpos = {5, 51, 90};
  p.make_outputs(SA_DTYPE_F32);
  run_and_check(ctx(), p);
}

TEST_F(Attend, CausalWithSparseIndices) {
  Rng rng(18);
  Problem p = random_problem(rng, 3, 8, 2, 32, 120);
  p.opt.causal = 1;
  p.qpos = {20, 70, 119};
  p.indices = random_subset_indices(rng, 3, 2, 120, 60, 64);
  p.has_indices = true;
  run_and_check(ctx(), p);
}

TEST_F(Attend, NoVisibleKeyGivesZeroAndMinusInf) {
  Rng rng(19);
  // Query 0 is before every key; query 1 sees some.
  Problem p = random_problem(rng, 2, 2, 2, 16, 10);
  p.opt.causal = 1;
  p.kpos = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  p.qpos = {2, 9};
  run_and_check(ctx(), p);
  for (int64_t h = 0; h < 2; ++h) {
    EXPECT_EQ(p.lse.get({0, h}), -kInf);
    for (int64_t d = 0; d < 16; ++d) EXPECT_EQ(p.out.get({0, h, d}), 0.0);
    EXPECT_TRUE(std::isfinite(p.lse.get({1, h})));
  }
}

// Issue 18: a key position of -1 (sa_cache_evict's empty slot) is a row never attended, causal
// or not, dense or gathered, with or without slot mass: the result equals the reference over
// the cache with those rows removed (and no mass on them). Below -1 is refused.
TEST_F(Attend, EmptySlotsAreNeverAttended) {
  Rng rng(23);
  const int64_t n_kv = 40, D = 16;
  std::vector<int64_t> kpos;
  for (int64_t r = 0; r < n_kv; ++r) kpos.push_back(r % 4 == 1 ? -1 : (r * 7) % n_kv);  // scrambled, 10 empty
  for (int causal : {0, 1})
    for (bool sparse : {false, true}) {
      SCOPED_TRACE(std::string(causal ? "causal" : "not causal") + (sparse ? ", gathered" : ", dense"));
      Problem p = random_problem(rng, 3, 4, 2, D, n_kv);
      p.opt.causal = causal;
      p.kpos = kpos;
      p.qpos = {3, 20, 39};
      if (sparse) {  // every row, the empty ones included, plus padding
        p.indices = make_indices(3, 2, n_kv + 3, [&](int64_t i, int64_t h, int64_t w) {
          return w >= n_kv ? -1 : int((w * 3 + i + h) % n_kv); });
        p.has_indices = true;
      }
      Tensor mass(SA_DTYPE_F32, {2, n_kv});
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t r = 0; r < n_kv; ++r) mass.set({h, r}, 0.0);
      p.opt.slot_mass = mass.t();
      ASSERT_SA_OK(p.run(ctx()));
      // The reference over the occupied rows only (its own copy, renumbered).
      std::vector<int64_t> kept, new_row(size_t(n_kv), -1);
      for (int64_t r = 0; r < n_kv; ++r)
        if (kpos[size_t(r)] >= 0) new_row[size_t(r)] = int64_t(kept.size()), kept.push_back(r);
      const int64_t n = int64_t(kept.size());
      Tensor k(SA_DTYPE_F32, {n, 2, D}), v(SA_DTYPE_F32, {n, 2, D});
      std::vector<int64_t> kp;
      for (int64_t j = 0; j < n; ++j) {
        kp.push_back(kpos[size_t(kept[size_t(j)])]);
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t d = 0; d < D; ++d) {
            k.set({j, h, d}, p.k.get({kept[size_t(j)], h, d}));
            v.set({j, h, d}, p.v.get({kept[size_t(j)], h, d}));
          }
      }
      Tensor idx;
      if (sparse)
        idx = make_indices(3, 2, n_kv + 3, [&](int64_t i, int64_t h, int64_t w) {
          const int64_t e = int64_t(p.indices.get({i, h, w}));
          return int(e < 0 ? -1 : new_row[size_t(e)]);  // an empty row's entry becomes padding
        });
      ref::AttendArgs a;
      a.q = p.q.t();
      a.k = k.t();
      a.v = v.t();
      a.indices = sparse ? idx.t() : nullptr;
      a.causal = causal != 0;
      a.query_positions = p.qpos.data();
      a.key_positions = kp.data();
      const ref::AttendResult r = ref::attend(a);
      EXPECT_TRUE(sat::close_rel(p.out.values(), r.out, 1e-5));
      EXPECT_TRUE(lse_close(p.lse.values(), r.lse, 1e-5));
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t row = 0; row < n_kv; ++row) {
          const double want = kpos[size_t(row)] < 0 ? 0.0 : r.mass[size_t(h * n + new_row[size_t(row)])];
          EXPECT_NEAR(mass.get({h, row}), want, 1e-5) << "slot_mass head " << h << " row " << row;
        }
    }
  // Below -1 is no position: refused, nothing written.
  Problem p = random_problem(rng, 1, 4, 2, D, n_kv);
  p.kpos = kpos;
  p.kpos[5] = -2;
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, p.run(ctx()));
  EXPECT_NE(std::string(sa_last_error()).find("key_positions[5]"), std::string::npos) << sa_last_error();
  EXPECT_TRUE(p.out.untouched());
}

TEST_F(Attend, AllPaddingIndicesGiveZeroAndMinusInf) {
  Rng rng(20);
  Problem p = random_problem(rng, 1, 4, 2, 16, 10);
  p.indices = make_indices(1, 2, 5, [](int64_t, int64_t h, int64_t w) { return h == 0 ? -1 : int(w); });
  p.has_indices = true;
  run_and_check(ctx(), p);
  for (int64_t h = 0; h < 2; ++h) {  // query heads 0, 1 use KV head 0, whose list is empty
    EXPECT_EQ(p.lse.get({0, h}), -kInf);
    for (int64_t d = 0; d < 16; ++d) EXPECT_EQ(p.out.get({0, h, d}), 0.0);
  }
}

TEST_F(Attend, NoKeysAtAll) {
  Rng rng(21);
  Problem p = random_problem(rng, 2, 2, 2, 8, 0);
  run_and_check(ctx(), p);
  for (double x : p.lse.values()) EXPECT_EQ(x, -kInf);
  for (double x : p.out.values()) EXPECT_EQ(x, 0.0);
}

TEST_F(Attend, NoQueriesWritesNothing) {
  Rng rng(22);
  Problem p = random_problem(rng, 0, 2, 2, 8, 5);
  ASSERT_SA_OK(p.run(ctx()));
  EXPECT_TRUE(p.out.untouched());
  EXPECT_TRUE(p.lse.untouched());
}

// ------------------------------------------------------------------ strided layouts

TEST_F(Attend, KeysInsidePaddedBuffer) {
  Rng rng(23);
  Problem p;
  p.q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 4, 48}, sat::padded_strides(5, 50));
  p.k = sat::random_tensor(rng, SA_DTYPE_F32, {90, 2, 48}, sat::padded_strides(3, 64));
  p.v = sat::random_tensor(rng, SA_DTYPE_F32, {90, 2, 48}, sat::padded_strides(2, 56));
  p.make_outputs(SA_DTYPE_F32, sat::padded_strides(4, 52), {7, 1});
  run_and_check(ctx(), p);
}

TEST_F(Attend, HeadMajorLayouts) {
  Rng rng(24);
  Problem p;
  p.q = sat::random_tensor(rng, SA_DTYPE_F32, {3, 8, 32}, sat::head_major_strides(3, 32));
  p.k = sat::random_tensor(rng, SA_DTYPE_F32, {70, 2, 32}, sat::head_major_strides(70, 32));
  p.v = sat::random_tensor(rng, SA_DTYPE_F32, {70, 2, 32}, sat::head_major_strides(70, 32));
  p.make_outputs(SA_DTYPE_F32, sat::head_major_strides(3, 32), {1, 3});
  p.indices = random_subset_indices(rng, 3, 2, 70, 30, 32);
  p.has_indices = true;
  run_and_check(ctx(), p);
}

TEST_F(Attend, ExplicitContiguousStridesMatchZeroStrides) {
  Rng rng(25);
  Problem p = random_problem(rng, 2, 4, 2, 16, 40);
  run_and_check(ctx(), p);
  std::vector<double> zero_strides = p.out.values();
  Problem e = p;
  e.k = Tensor(SA_DTYPE_F32, {40, 2, 16}, {32, 16, 1});
  e.k.set_values(p.k.values());
  e.make_outputs(SA_DTYPE_F32, {64, 16, 1}, {4, 1});
  run_and_check(ctx(), e);
  EXPECT_TRUE(sat::close_rel(e.out.values(), zero_strides, 1e-6));
}

TEST_F(Attend, StridedIndicesAndDimensionOrder) {
  Rng rng(26);
  Problem p = random_problem(rng, 2, 4, 4, 16, 50);
  // indices live in a [H][n_q][64] buffer of which the first 20 columns are used.
  Tensor dense = random_subset_indices(rng, 2, 4, 50, 12, 20);
  p.indices = Tensor(SA_DTYPE_I32, {2, 4, 20}, {64, 128, 1});
  p.indices.set_values(dense.values());
  p.has_indices = true;
  run_and_check(ctx(), p);
}

TEST_F(Attend, BroadcastKeyStrideZeroHeads) {
  // A zero stride on one dim (with others nonzero) is an explicit layout: every KV head
  // reads the same row. The reference reads it the same way.
  Rng rng(27);
  Problem p;
  p.q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 4, 8});
  p.k = sat::random_tensor(rng, SA_DTYPE_F32, {20, 2, 8}, {8, 0, 1});
  p.v = sat::random_tensor(rng, SA_DTYPE_F32, {20, 2, 8}, {8, 0, 1});
  p.make_outputs(SA_DTYPE_F32);
  run_and_check(ctx(), p);
}

// Inputs that start one element past an aligned address (as a slice of a larger buffer
// would): kernels must not assume vector alignment.
TEST_F(Attend, MisalignedInputs) {
  Rng rng(33);
  for (sa_dtype dt : {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}) {
    SCOPED_TRACE(testing::Message() << "dtype=" << int(dt));
    Problem p;
    p.q = sat::random_tensor(rng, dt, {2, 4, 64}, sat::padded_strides(4, 65));
    p.k = sat::random_tensor(rng, dt, {300, 2, 64}, sat::padded_strides(2, 65));
    p.v = sat::random_tensor(rng, dt, {300, 2, 64}, sat::padded_strides(2, 65));
    for (Tensor *t : {&p.q, &p.k, &p.v})  // shift each view by one element (into its own padding)
      t->t()->data = static_cast<char *>(t->t()->data) + sat::dtype_bytes(dt);
    p.make_outputs(SA_DTYPE_F32);
    run_and_check(ctx(), p, dt == SA_DTYPE_F32 ? 1e-5 : 1e-4);
  }
}

// ------------------------------------------------------------------ 16-bit dtypes

struct DtypeCase {
  sa_dtype kv, q, out;
};
class AttendDtype : public Attend, public ::testing::WithParamInterface<DtypeCase> {};

TEST_P(AttendDtype, DenseAndSparseMatchReference) {
  auto [kv, qd, od] = GetParam();
  Rng rng(28);
  Problem p = random_problem(rng, 3, 8, 2, 64, 333, kv, qd);
  p.make_outputs(od);
  run_and_check(ctx(), p, od == SA_DTYPE_F32 ? 1e-4 : -1);
  p.indices = random_subset_indices(rng, 3, 8, 333, 100, 128);
  p.has_indices = true;
  p.make_outputs(od);
  run_and_check(ctx(), p, od == SA_DTYPE_F32 ? 1e-4 : -1);
}

TEST_P(AttendDtype, CausalStrided) {
  auto [kv, qd, od] = GetParam();
  Rng rng(29);
  Problem p;
  p.q = sat::random_tensor(rng, qd, {4, 4, 40}, sat::padded_strides(4, 41));
  p.k = sat::random_tensor(rng, kv, {64, 2, 40}, sat::head_major_strides(64, 40));
  p.v = sat::random_tensor(rng, kv, {64, 2, 40}, sat::padded_strides(3, 40));
  p.make_outputs(od, sat::padded_strides(5, 43));
  p.opt.causal = 1;
  run_and_check(ctx(), p, od == SA_DTYPE_F32 ? 1e-4 : -1);
}

INSTANTIATE_TEST_SUITE_P(
    Types, AttendDtype,
    ::testing::Values(DtypeCase{SA_DTYPE_F16, SA_DTYPE_F32, SA_DTYPE_F32}, DtypeCase{SA_DTYPE_F16, SA_DTYPE_F16, SA_DTYPE_F32},
                      DtypeCase{SA_DTYPE_F16, SA_DTYPE_F16, SA_DTYPE_F16}, DtypeCase{SA_DTYPE_BF16, SA_DTYPE_F32, SA_DTYPE_F32},
                      DtypeCase{SA_DTYPE_BF16, SA_DTYPE_BF16, SA_DTYPE_F32},
                      DtypeCase{SA_DTYPE_BF16, SA_DTYPE_BF16, SA_DTYPE_BF16}),
    [](const auto &info) {
      auto name = [](sa_dtype d) { return d == SA_DTYPE_F32 ? "f32" : d == SA_DTYPE_F16 ? "f16" : "bf16"; };
      return std::string("kv_") + name(info.param.kv) + "_q_" + name(info.param.q) + "_out_" + name(info.param.out);
    });

// ------------------------------------------------------------------ long key counts

// 5000 keys for one query: implementations split the keys across threads and merge the
// partial softmaxes; the merge must be exact.
TEST(AttendLong, SplitOverKeysMatchesReference) {
  Rng rng(30);
  for (int32_t threads : {1, 2}) {
    SCOPED_TRACE(testing::Message() << "threads=" << threads);
    auto ctx = sat::make_context(threads);
    ASSERT_NE(ctx, nullptr);
    for (sa_dtype dt : {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}) {
      SCOPED_TRACE(testing::Message() << "dtype=" << int(dt));
      Problem p = random_problem(rng, 1, 8, 2, 64, 5000, dt);
      p.make_outputs(SA_DTYPE_F32);
      run_and_check(ctx.get(), p, dt == SA_DTYPE_F32 ? 1e-5 : 1e-4);
      p.indices = random_subset_indices(rng, 1, 2, 5000, 3000, 3001);
      p.has_indices = true;
      p.make_outputs(SA_DTYPE_F32);
      run_and_check(ctx.get(), p, dt == SA_DTYPE_F32 ? 1e-5 : 1e-4);
    }
  }
}

// One dominant key deep in a long cache: a wrong merge of partial maxima shows at once.
TEST(AttendLong, PeakedKeyInLongCache) {
  Rng rng(31);
  auto ctx = sat::make_context(2);
  ASSERT_NE(ctx, nullptr);
  Problem p = random_problem(rng, 1, 2, 1, 32, 4097);
  for (int64_t d = 0; d < 32; ++d) p.k.set({3333, 0, d}, 3.0 * p.q.get({0, 0, d}));
  run_and_check(ctx.get(), p, 1e-5);
}

TEST(AttendLong, CausalLongPrefillChunk) {
  Rng rng(32);
  auto ctx = sat::make_context(2);
  ASSERT_NE(ctx, nullptr);
  Problem p = random_problem(rng, 16, 4, 2, 32, 2000);
  p.opt.causal = 1;
  run_and_check(ctx.get(), p, 1e-5);
}

// ------------------------------------------------------------------ one decode query split over keys
// A decode step has one query, so its keys are cut into chunks that run on all threads
// (flash-decoding split-K) and are merged exactly. The chunks depend on the shapes only: any
// thread count gives the same bits, and the merge must hold for chunks that see nothing.

// Runs p on contexts of 1, 2, 3, 7 and 16 threads: the one-thread run matches the reference
// (out, LSE and, with_mass, slot mass) and every other run has its bits.
void check_any_thread_count(Problem &p, double rel, int64_t h_kv, bool with_mass) {
  const int64_t n_kv = p.k.dim(0);
  Tensor mass(SA_DTYPE_F32, {h_kv, n_kv});
  const ref::AttendResult r = p.reference();
  std::vector<double> first_out, first_lse, first_mass;
  for (int32_t threads : {1, 2, 3, 7, 16}) {
    SCOPED_TRACE(testing::Message() << "threads=" << threads);
    auto ctx = sat::make_context(threads);
    ASSERT_NE(ctx, nullptr);
    if (with_mass) {
      mass.set_values(std::vector<double>(size_t(h_kv * n_kv), 0.0));
      p.opt.slot_mass = mass.t();
      p.opt.mass_decay = 1.f;
    }
    p.make_outputs(SA_DTYPE_F32);
    ASSERT_SA_OK(p.run(ctx.get()));
    EXPECT_TRUE(p.out.only_elements_written());
    EXPECT_TRUE(p.lse.only_elements_written());
    if (threads == 1) {
      EXPECT_TRUE(sat::close_rel(p.out.values(), r.out, rel));
      EXPECT_TRUE(lse_close(p.lse.values(), r.lse, p.k.dtype() == SA_DTYPE_F32 ? 1e-5 : 1e-4));
      if (with_mass) EXPECT_TRUE(sat::close_rel(mass.values(), r.mass, 2e-5));
      first_out = p.out.values(), first_lse = p.lse.values(), first_mass = mass.values();
      continue;
    }
    EXPECT_EQ(p.out.values(), first_out);
    EXPECT_EQ(p.lse.values(), first_lse);
    if (with_mass) EXPECT_EQ(mass.values(), first_mass);
  }
  p.opt.slot_mass = nullptr;
}

TEST(AttendSplit, DenseDecodeQuerySameBitsOnAnyThreadCount) {
  Rng rng(60);
  Problem p = random_problem(rng, 1, 8, 2, 64, 6000, SA_DTYPE_F16);
  check_any_thread_count(p, 1e-4, 2, true);
  p.opt.causal = 1;  // the causal limit of the last query is the last key: nothing cut
  check_any_thread_count(p, 1e-4, 2, true);
}

// A decode step's lists: 2116 entries per KV head with -1 padding scattered through them.
TEST(AttendSplit, SparseDecodeListsSameBitsOnAnyThreadCount) {
  Rng rng(61);
  Problem p = random_problem(rng, 1, 16, 4, 128, 6000, SA_DTYPE_F16);
  p.indices = random_subset_indices(rng, 1, 4, 6000, 2000, 2116);
  p.has_indices = true;
  check_any_thread_count(p, 1e-4, 4, true);
}

// Key positions put most keys after the query: most chunks of the split range see nothing
// (their state stays m = -inf, l = 0) and the merge must skip them, not turn them into NaN.
TEST(AttendSplit, ChunksPastTheCausalLimitAreEmpty) {
  Rng rng(62);
  const int64_t n = 5000;
  Problem p = random_problem(rng, 1, 4, 2, 32, n);
  p.opt.causal = 1;
  p.qpos = {700};
  for (int64_t j = 0; j < n; ++j) p.kpos.push_back(j);
  check_any_thread_count(p, 1e-5, 2, true);
  // Sparse lists ascending over all keys: only their first chunk sees anything.
  p.indices = make_indices(1, 2, 3000, [&](int64_t, int64_t h, int64_t w) { return w % 9 == h ? -1 : w; });
  p.has_indices = true;
  check_any_thread_count(p, 1e-5, 2, true);
  // A query before every key: every chunk is empty, the output 0 and the LSE -inf.
  p.qpos = {-5};
  check_any_thread_count(p, 1e-5, 2, true);
  for (double x : p.out.values()) EXPECT_EQ(x, 0.0);
  for (double x : p.lse.values()) EXPECT_EQ(x, -kInf);
}

// Fewer keys than the split would make chunks of: no chunk may be empty by construction, or
// out of range.
TEST(AttendSplit, FewerKeysThanChunks) {
  Rng rng(63);
  for (int64_t n : {1, 5, 31, 513}) {
    SCOPED_TRACE(testing::Message() << "n_kv=" << n);
    Problem p = random_problem(rng, 1, 4, 1, 16, n);
    check_any_thread_count(p, 1e-5, 1, true);
    p.indices = random_subset_indices(rng, 1, 1, n, std::max<int64_t>(1, n / 2), n);
    p.has_indices = true;
    check_any_thread_count(p, 1e-5, 1, true);
  }
}

// One key far above the others in a late chunk: a merge that mixes maxima wrongly shows.
TEST(AttendSplit, DominantKeyInTheLastChunk) {
  Rng rng(64);
  Problem p = random_problem(rng, 1, 4, 1, 32, 7000);
  for (int64_t d = 0; d < 32; ++d) p.k.set({6900, 0, d}, 4.0 * p.q.get({0, 1, d}));
  check_any_thread_count(p, 1e-5, 1, true);
}

// ------------------------------------------------------------------ instruction sets, threads

class AttendIsa : public ::testing::TestWithParam<sa_isa> {};

TEST_P(AttendIsa, MatchesReference) {
  sa_isa want = GetParam();
  auto ctx = sat::make_context(1, want);
  ASSERT_NE(ctx, nullptr);
  sa_isa got = sa_context_isa(ctx.get());
  EXPECT_LE(sat::isa_rank(got), sat::isa_rank(want)) << sa_isa_name(got);
  sa_isa cap = sat::env_isa_cap();
  bool allowed = cap == SA_ISA_AUTO || sat::isa_rank(want) <= sat::isa_rank(cap);
  if (got != want) {
    if (sat::cpu_has(want) && allowed) FAIL() << "asked for " << sa_isa_name(want) << ", got " << sa_isa_name(got);
    GTEST_SKIP() << sa_isa_name(want) << " not available here (got " << sa_isa_name(got) << ")";
  }
  Rng rng(40 + int(want));
  for (sa_dtype dt : {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16})
    for (int64_t d : {1, 5, 16, 40, 64, 128}) {
      SCOPED_TRACE(testing::Message() << "dtype=" << int(dt) << " D=" << d);
      double tol = dt == SA_DTYPE_F32 ? 1e-5 : 1e-4;
      Problem p = random_problem(rng, 2, 8, 2, d, 123, dt);
      p.make_outputs(SA_DTYPE_F32);
      run_and_check(ctx.get(), p, tol);
      p.indices = random_subset_indices(rng, 2, 8, 123, 50, 61);
      p.has_indices = true;
      p.opt.causal = 1;
      p.make_outputs(SA_DTYPE_F32);
      run_and_check(ctx.get(), p, tol);
      if (dt != SA_DTYPE_F32) {  // q and out in the 16-bit dtype
        Problem h = random_problem(rng, 2, 4, 4, d, 77, dt, dt);
        h.k = sat::random_tensor(rng, dt, {77, 4, d}, sat::head_major_strides(77, d));
        run_and_check(ctx.get(), h);
      }
    }
  Problem l = random_problem(rng, 1, 4, 1, 64, 3000, SA_DTYPE_BF16);
  l.make_outputs(SA_DTYPE_F32);
  run_and_check(ctx.get(), l, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Paths, AttendIsa, ::testing::Values(SA_ISA_SCALAR, SA_ISA_AVX2, SA_ISA_AVX512),
                         [](const auto &info) { return std::string(sa_isa_name(info.param)); });

TEST(AttendThreads, OneAndTwoThreadsAgree) {
  Rng rng(50);
  auto one = sat::make_context(1), two = sat::make_context(2), all = sat::make_context(0);
  ASSERT_TRUE(one && two && all);
  for (int64_t n_kv : {100, 4000}) {
    Problem p = random_problem(rng, 3, 8, 2, 64, n_kv, SA_DTYPE_F16);
    p.make_outputs(SA_DTYPE_F32);
    run_and_check(one.get(), p, 1e-4);
    std::vector<double> a = p.out.values(), la = p.lse.values();
    for (sa_context *c : {two.get(), all.get()}) {
      p.make_outputs(SA_DTYPE_F32);
      run_and_check(c, p, 1e-4);
      EXPECT_TRUE(sat::close_rel(p.out.values(), a, 1e-6));
      EXPECT_TRUE(lse_close(p.lse.values(), la, 1e-6));
    }
  }
}

// Host threads each entering the context's OpenMP region at once.
TEST(AttendThreads, ConcurrentCallsOnMultiThreadedContext) {
  Rng rng(52);
  auto ctx = sat::make_context(2);
  ASSERT_NE(ctx, nullptr);
  Problem p = random_problem(rng, 1, 8, 2, 64, 3000, SA_DTYPE_F16);
  p.make_outputs(SA_DTYPE_F32);
  run_and_check(ctx.get(), p, 1e-4);
  std::vector<double> serial = p.out.values();
  std::vector<Problem> ps(3, p);
  std::vector<int> ok(3, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      int good = 1;
      for (int rep = 0; rep < 5; ++rep) {
        good &= ps[size_t(t)].run(ctx.get()) == SA_OK;
        good &= sat::close_rel(ps[size_t(t)].out.values(), serial, 1e-6) ? 1 : 0;
      }
      ok[size_t(t)] = good;
    });
  for (auto &th : threads) th.join();
  for (int t = 0; t < 3; ++t) EXPECT_EQ(ok[size_t(t)], 1) << "thread " << t;
}

TEST(AttendThreads, ConcurrentCallsOnOneContext) {
  Rng rng(51);
  auto ctx = sat::make_context(1);
  ASSERT_NE(ctx, nullptr);
  Problem p = random_problem(rng, 2, 8, 2, 64, 700);
  ASSERT_SA_OK(p.run(ctx.get()));
  std::vector<double> serial = p.out.values();
  std::vector<Problem> ps(4, p);
  std::vector<sa_status> st(4, SA_ERR_INTERNAL);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5 && (rep == 0 || st[size_t(t)] == SA_OK); ++rep) st[size_t(t)] = ps[size_t(t)].run(ctx.get());
    });
  for (auto &th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(st[size_t(t)], SA_OK);
    EXPECT_EQ(ps[size_t(t)].out.values(), serial) << "thread " << t;
  }
}

}  // namespace
