// sa_attend_options.slot_mass against the double-precision reference (reference_attention.hpp
// sums each key row's softmax probability over the queries and the KV head's query heads):
// dense and sparse, GQA, per-query-head lists, duplicates, causal with scrambled positions,
// per-head and shared buffers, strided buffers, decay and thread counts, on the CPU's best
// instruction set (tests/checkasm checks every table's mass_rows against the scalar one).
#include <gtest/gtest.h>

#include "reference_attention.hpp"
#include "test_util.hpp"

namespace {

using sat::Rng;
using sat::Tensor;

struct MassCase {
  int64_t n_q = 2, h_q = 4, h_kv = 2, d = 32, n_kv = 100;
  sa_dtype kv = SA_DTYPE_F32;
  bool shared = false;             // [n_kv] instead of [H_kv, n_kv]
  std::vector<int64_t> mass_strides;  // empty: contiguous
  float decay = 1.f;
  bool causal = false;
  bool scramble_positions = false;  // key_positions a permutation, queries at explicit positions
  int64_t lists = 0;                // 0: dense; else H of the index lists (H_kv or H_q)
  int64_t width = 0;
};

struct MassRun {
  Tensor q, k, v, indices, out, mass;
  std::vector<int64_t> kpos, qpos;
  sa_attend_options opt = SA_ATTEND_OPTIONS_INIT;
  std::vector<double> before;  // the buffer's values before the call
};

MassRun make_run(Rng &rng, const MassCase &c) {
  MassRun r;
  r.q = sat::random_tensor(rng, SA_DTYPE_F32, {c.n_q, c.h_q, c.d});
  r.k = sat::random_tensor(rng, c.kv, {c.n_kv, c.h_kv, c.d});
  r.v = sat::random_tensor(rng, c.kv, {c.n_kv, c.h_kv, c.d});
  r.out = Tensor(SA_DTYPE_F32, {c.n_q, c.h_q, c.d});
  std::vector<int64_t> mass_shape = c.shared ? std::vector<int64_t>{c.n_kv} : std::vector<int64_t>{c.h_kv, c.n_kv};
  r.mass = Tensor(SA_DTYPE_F32, mass_shape, c.mass_strides);
  r.mass.poison();
  std::vector<double> init(size_t(r.mass.numel()));
  for (double &x : init) x = double(rng.below(100)) / 8;  // earlier steps' sums
  r.mass.set_values(init);
  r.mass.snapshot();
  r.before = init;
  if (c.lists > 0) {
    r.indices = Tensor(SA_DTYPE_I32, {c.n_q, c.lists, c.width});
    for (int64_t i = 0; i < c.n_q; ++i)
      for (int64_t l = 0; l < c.lists; ++l)
        for (int64_t w = 0; w < c.width; ++w) {
          int64_t pick = rng.below(c.n_kv + c.n_kv / 8);  // some -1, some duplicates
          r.indices.set({i, l, w}, double(pick < c.n_kv ? pick : -1));
        }
  }
  if (c.scramble_positions) {
    for (int64_t j = 0; j < c.n_kv; ++j) r.kpos.push_back((j * 37) % c.n_kv * 2);
    for (int64_t i = 0; i < c.n_q; ++i) r.qpos.push_back(c.n_kv + 10 * i);  // some keys lie ahead
  }
  r.opt.causal = c.causal;
  r.opt.key_positions = r.kpos.empty() ? nullptr : r.kpos.data();
  r.opt.query_positions = r.qpos.empty() ? nullptr : r.qpos.data();
  r.opt.slot_mass = r.mass.t();
  r.opt.mass_decay = c.decay;
  return r;
}

// decay * before + the reference's probabilities, in the buffer's shape.
std::vector<double> expected_mass(const MassRun &r, const MassCase &c) {
  ref::AttendArgs a;
  a.q = r.q.t();
  a.k = r.k.t();
  a.v = r.v.t();
  a.indices = c.lists > 0 ? r.indices.t() : nullptr;
  a.causal = c.causal;
  a.key_positions = r.opt.key_positions;
  a.query_positions = r.opt.query_positions;
  std::vector<double> m = ref::attend(a).mass;
  std::vector<double> want(r.before.size());
  for (int64_t j = 0; j < c.n_kv; ++j)
    for (int64_t h = 0; h < c.h_kv; ++h) {
      size_t at = c.shared ? size_t(j) : size_t(h * c.n_kv + j);
      want[at] += m[size_t(h * c.n_kv + j)];
    }
  for (size_t i = 0; i < want.size(); ++i) want[i] += double(c.decay) * r.before[i];
  return want;
}

sa_status run(sa_context *ctx, MassRun &r, const MassCase &c) {
  return sa_attend(ctx, r.q.t(), r.k.t(), r.v.t(), c.lists > 0 ? r.indices.t() : nullptr, &r.opt, r.out.t(),
                   nullptr);
}

void check(sa_context *ctx, const MassCase &c, uint64_t seed) {
  Rng rng(seed);
  MassRun r = make_run(rng, c);
  ASSERT_SA_OK(run(ctx, r, c));
  EXPECT_TRUE(r.mass.only_elements_written());
  EXPECT_TRUE(sat::close_rel(r.mass.values(), expected_mass(r, c), 2e-5));
}

class SlotMass : public sat::ContextTest {};

TEST_F(SlotMass, DefaultsMatchInitMacro) {
  sa_attend_options a = SA_ATTEND_OPTIONS_INIT, b = sa_attend_options_default();
  EXPECT_EQ(a.struct_size, b.struct_size);
  EXPECT_EQ(a.slot_mass, nullptr);
  EXPECT_EQ(b.slot_mass, nullptr);
  EXPECT_EQ(a.mass_decay, 0.99f);  // sa_evict_options' default mass_decay
  EXPECT_EQ(b.mass_decay, 0.99f);
}

TEST_F(SlotMass, DensePerKvHeadGqa) {
  MassCase c;
  c.n_q = 3, c.h_q = 8, c.h_kv = 2, c.d = 64, c.n_kv = 300;
  check(ctx(), c, 400);
}

TEST_F(SlotMass, DenseSharedAcrossHeads) {
  MassCase c;
  c.shared = true;
  c.h_q = 6, c.h_kv = 3, c.d = 16;
  check(ctx(), c, 401);
}

TEST_F(SlotMass, DenseCausalWithDecay) {
  MassCase c;
  c.n_q = 5, c.n_kv = 70, c.causal = true, c.decay = 0.75f;
  check(ctx(), c, 402);
}

TEST_F(SlotMass, PositionsNotRowsDecideCausality) {
  MassCase c;
  c.n_q = 3, c.n_kv = 90, c.causal = true, c.scramble_positions = true, c.decay = 0.5f;
  check(ctx(), c, 403);
  c.lists = c.h_kv, c.width = 40;
  check(ctx(), c, 404);
}

TEST_F(SlotMass, SparsePerKvHeadListsWithDuplicatesAndPadding) {
  MassCase c;
  c.n_q = 4, c.h_q = 8, c.h_kv = 2, c.d = 32, c.n_kv = 200, c.lists = 2, c.width = 50;
  check(ctx(), c, 405);
  c.shared = true;
  c.decay = 0.9f;
  check(ctx(), c, 406);
}

TEST_F(SlotMass, SparsePerQueryHeadLists) {
  MassCase c;
  c.n_q = 2, c.h_q = 6, c.h_kv = 2, c.d = 24, c.n_kv = 80, c.lists = 6, c.width = 30;
  check(ctx(), c, 407);
}

// The scalar path of the SIMD tables (D not a multiple of the vector width), f16/bf16 rows.
TEST_F(SlotMass, OddHeadDimAndHalfPrecisionKeys) {
  for (sa_dtype kv : {SA_DTYPE_F16, SA_DTYPE_BF16}) {
    MassCase c;
    c.kv = kv, c.d = 20;
    check(ctx(), c, 408);
    c.d = 64, c.lists = 2, c.width = 33;
    check(ctx(), c, 409);
  }
}

// A transposed [H_kv, n_kv] view of [n_kv][H_kv] storage: not a unit stride along the keys.
TEST_F(SlotMass, StridedBuffer) {
  MassCase c;
  c.h_kv = 4, c.h_q = 8, c.n_kv = 60, c.decay = 0.5f, c.mass_strides = {1, 4};
  check(ctx(), c, 410);
  c.lists = 4, c.width = 16;
  check(ctx(), c, 411);
  c.shared = true, c.mass_strides = {3};
  check(ctx(), c, 412);
}

// Long caches: dense work is split into blocks of keys, sparse lists into chunks of units.
TEST_F(SlotMass, LongCacheDenseAndSparse) {
  MassCase c;
  c.n_q = 1, c.h_q = 4, c.h_kv = 2, c.d = 32, c.n_kv = 5000, c.causal = true;
  check(ctx(), c, 413);
  c.n_q = 3, c.lists = 2, c.width = 3000;
  check(ctx(), c, 414);
}

// Sparse calls normally reuse the scores of the softmax pass; past 4M kept scores
// (units x heads x width, here 64 x 2 x 8 x 4200) the masses come from a second pass over K.
TEST_F(SlotMass, SparseListsTooManyToKeepTheirScores) {
  MassCase c;
  c.n_q = 64, c.h_q = 16, c.h_kv = 2, c.d = 8, c.n_kv = 5000, c.lists = 2, c.width = 4200, c.decay = 0.5f;
  check(ctx(), c, 416);
}

// Each query's probabilities sum to one, so a full dense call adds n_q * H_q in total.
TEST_F(SlotMass, TotalMassIsOnePerQueryHead) {
  Rng rng(415);
  MassCase c;
  c.n_q = 3, c.h_q = 4, c.h_kv = 1, c.n_kv = 257, c.decay = 0.f;
  MassRun r = make_run(rng, c);
  ASSERT_SA_OK(run(ctx(), r, c));
  double total = 0;
  for (double x : r.mass.values()) total += x;
  EXPECT_NEAR(total, 12.0, 1e-4);
}

TEST_F(SlotMass, SameBitsForAnyThreadCount) {
  auto three = sat::make_context(3);
  ASSERT_NE(three, nullptr);
  for (int64_t lists : {0, 2}) {
    MassCase c;
    c.n_q = 4, c.h_q = 8, c.h_kv = 2, c.d = 64, c.n_kv = 4000, c.lists = lists, c.width = 1500;
    Rng a(416), b(416);
    MassRun one = make_run(a, c), many = make_run(b, c);
    ASSERT_SA_OK(run(ctx(), one, c));
    ASSERT_SA_OK(run(three.get(), many, c));
    EXPECT_EQ(one.mass.values(), many.mass.values()) << "lists=" << lists;
  }
}

// decay 0 keeps only this call's mass, whatever the buffer held (NaN included).
TEST_F(SlotMass, DecayZeroClearsTheBuffer) {
  Rng rng(417);
  MassCase c;
  c.decay = 0.f;
  MassRun r = make_run(rng, c);
  r.mass.set({1, 7}, std::nan(""));
  r.before.assign(r.before.size(), 0.0);
  ASSERT_SA_OK(run(ctx(), r, c));
  EXPECT_TRUE(sat::close_rel(r.mass.values(), expected_mass(r, c), 2e-5));
}

// No queries: the call is one step, so the decay still applies.
TEST_F(SlotMass, NoQueriesOnlyDecays) {
  Rng rng(418);
  MassCase c;
  c.n_q = 0, c.decay = 0.5f;
  MassRun r = make_run(rng, c);
  ASSERT_SA_OK(run(ctx(), r, c));
  std::vector<double> want = r.before;
  for (double &x : want) x *= 0.5;
  EXPECT_EQ(r.mass.values(), want);
}

// The attention output does not change when the accumulation is on.
TEST_F(SlotMass, OutputUnchanged) {
  Rng rng(419);
  MassCase c;
  c.n_q = 2, c.lists = 2, c.width = 40;
  MassRun r = make_run(rng, c);
  ASSERT_SA_OK(run(ctx(), r, c));
  std::vector<double> with = r.out.values();
  r.opt.slot_mass = nullptr;
  ASSERT_SA_OK(run(ctx(), r, c));
  EXPECT_EQ(with, r.out.values());
}

}  // namespace
