// Per-KV-head eviction: each KV head keeps its own tokens, so slot s of head h may hold another
// token than slot s of head h'. Checked against references written from the header:
// - sa_cache_evict with opt->per_head: a brute-force eviction per head (raw scores), and the
//   single-set call on each head's rows (default ranking);
// - sa_attend with opt->head_key_positions: double-precision attention with a mask per head
//   (ref::attend), outputs, lse and slot_mass;
// - sa_index_update_heads + sa_select (exact, page): the brute-force selection of
//   ref::expect_row on each head's own positions;
// - a fixed-budget decode loop per head (evict, refill, select, attend) checked step by step;
// - bad input: shapes, -1 and negative positions, overflow, selectors that keep one position per
//   slot; nothing is written on failure.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <tuple>
#include <numeric>
#include <set>

#include "build_features.hpp"
#include "reference_attention.hpp"
#include "reference_select.hpp"
#include "test_util.hpp"

namespace {

using sat::Rng;
using sat::Tensor;

// ------------------------------------------------------------------ eviction

struct HeadCase {
  int64_t heads = 3, n = 96;
  std::vector<float> scores;     // [heads][n], multiples of 1/16
  std::vector<int64_t> positions;  // [heads][n], distinct per head, -1 = empty
};

// Each head holds n - empties distinct positions out of [0, span); heads differ.
HeadCase random_case(Rng &rng, int64_t heads, int64_t n, int64_t empties, int64_t span) {
  HeadCase c;
  c.heads = heads, c.n = n;
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<int64_t> all(static_cast<size_t>(span));
    std::iota(all.begin(), all.end(), int64_t(0));
    for (int64_t i = span - 1; i > 0; --i) std::swap(all[size_t(i)], all[size_t(rng.below(i + 1))]);
    std::vector<int64_t> row(all.begin(), all.begin() + n);
    for (int64_t e = 0; e < empties; ++e) row[size_t(rng.below(n))] = -1;
    c.positions.insert(c.positions.end(), row.begin(), row.end());
    for (int64_t s = 0; s < n; ++s) c.scores.push_back(float(rng.below(64)) / 16.f);
  }
  return c;
}

// Brute force for one head with raw scores (score_mean 0) and recent_share 0: empties first
// (ascending, at most incoming), then the max(0, occupied + incoming - budget) unprotected
// slots of lowest (score, position, slot).
std::vector<int32_t> brute_evict(const float *scores, const int64_t *pos, int64_t n, int64_t budget, int64_t incoming,
                                 int64_t sinks, int64_t window) {
  std::vector<int32_t> freed;
  int64_t occupied = 0, max_pos = -1;
  for (int64_t s = 0; s < n; ++s)
    if (pos[s] >= 0) ++occupied, max_pos = std::max(max_pos, pos[s]);
  for (int64_t s = 0; s < n && int64_t(freed.size()) < incoming; ++s)
    if (pos[s] == -1) freed.push_back(int32_t(s));
  std::vector<std::tuple<double, int64_t, int64_t>> cand;
  for (int64_t s = 0; s < n; ++s)
    if (pos[s] >= sinks && pos[s] <= max_pos - window) cand.emplace_back(double(scores[s]), pos[s], s);
  std::sort(cand.begin(), cand.end());
  const int64_t evict = std::max<int64_t>(0, occupied + incoming - budget);
  for (int64_t i = 0; i < evict; ++i) freed.push_back(int32_t(std::get<2>(cand[size_t(i)])));
  return freed;
}

sa_tensor raw(void *data, sa_dtype dt, std::initializer_list<int64_t> shape) {
  sa_tensor t{};
  t.data = data, t.dtype = dt, t.device = SA_DEVICE_CPU, t.rank = int32_t(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  return t;
}

struct EvictOut {
  std::vector<int32_t> freed;  // [heads][cap]
  std::vector<int64_t> n_freed;
  sa_status status = SA_OK;
};

EvictOut evict_per_head(sa_context *ctx, const sa_evict_options &o, HeadCase &c, int64_t cap) {
  EvictOut r;
  r.freed.assign(size_t(c.heads * cap), -7);
  r.n_freed.assign(size_t(c.heads), -7);
  sa_tensor sc = raw(c.scores.data(), SA_DTYPE_F32, {c.heads, c.n}), ps = raw(c.positions.data(), SA_DTYPE_I64, {c.heads, c.n}),
            fr = raw(r.freed.data(), SA_DTYPE_I32, {c.heads, cap});
  r.status = sa_cache_evict(ctx, &o, &sc, &ps, &fr, r.n_freed.data());
  return r;
}

TEST(HeadEvict, EachHeadMatchesBruteForce) {
  auto ctx = sat::make_context(2);
  Rng rng(11);
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t n = 40 + rng.below(60), empties = trial % 3 == 0 ? 0 : rng.below(6);
    HeadCase c = random_case(rng, 1 + rng.below(4), n, empties, n + 50);
    sa_evict_options o = SA_EVICT_OPTIONS_INIT;
    o.per_head = 1;
    o.score_mean = 0, o.recent_share = 0.f;
    o.sinks = int32_t(rng.below(5)), o.window = int32_t(rng.below(12));
    o.incoming = trial % 4 == 3 ? 0 : 1 + rng.below(2);
    o.budget = o.sinks + o.window + o.incoming + 1 + rng.below(n);
    const int64_t cap = n;
    EvictOut got = evict_per_head(ctx.get(), o, c, cap);
    ASSERT_EQ(got.status, SA_OK) << sa_last_error();
    for (int64_t h = 0; h < c.heads; ++h) {
      std::vector<int32_t> want = brute_evict(&c.scores[size_t(h * n)], &c.positions[size_t(h * n)], n, o.budget,
                                              o.incoming, o.sinks, o.window);
      ASSERT_EQ(got.n_freed[size_t(h)], int64_t(want.size())) << "trial " << trial << " head " << h;
      std::vector<int32_t> row(got.freed.begin() + h * cap, got.freed.begin() + h * cap + int64_t(want.size()));
      EXPECT_EQ(row, want) << "trial " << trial << " head " << h;
      for (int64_t i = int64_t(want.size()); i < cap; ++i) EXPECT_EQ(got.freed[size_t(h * cap + i)], -7) << "past n_freed";
    }
  }
}

// The default ranking (mass per step seen, recent share) per head is the single-set call on that
// head's scores row and positions row.
TEST(HeadEvict, DefaultRankingIsTheSingleSetCallPerHead) {
  auto ctx = sat::make_context(1);
  Rng rng(12);
  for (int trial = 0; trial < 8; ++trial) {
    const int64_t n = 128;
    HeadCase c = random_case(rng, 4, n, trial % 2 ? 3 : 0, 400);
    sa_evict_options o = SA_EVICT_OPTIONS_INIT;
    o.per_head = 1;
    o.budget = 100, o.sinks = 4, o.window = 16, o.incoming = 1;
    EvictOut got = evict_per_head(ctx.get(), o, c, 64);
    ASSERT_EQ(got.status, SA_OK) << sa_last_error();
    sa_evict_options single = o;
    single.per_head = 0;
    for (int64_t h = 0; h < c.heads; ++h) {
      std::vector<int32_t> want(64, -7);
      int64_t n_want = 0;
      sa_tensor sc = raw(&c.scores[size_t(h * n)], SA_DTYPE_F32, {n}), ps = raw(&c.positions[size_t(h * n)], SA_DTYPE_I64, {n}),
                fr = raw(want.data(), SA_DTYPE_I32, {64});
      ASSERT_SA_OK(sa_cache_evict(ctx.get(), &single, &sc, &ps, &fr, &n_want));
      ASSERT_EQ(got.n_freed[size_t(h)], n_want);
      EXPECT_TRUE(std::equal(want.begin(), want.begin() + n_want, got.freed.begin() + h * 64)) << "head " << h;
    }
  }
}

TEST(HeadEvict, BadInputIsRefusedAndNothingIsWritten) {
  auto ctx = sat::make_context(1);
  Rng rng(13);
  HeadCase good = random_case(rng, 2, 32, 0, 64);
  sa_evict_options o = SA_EVICT_OPTIONS_INIT;
  o.per_head = 1, o.budget = 24, o.sinks = 2, o.window = 4;
  auto expect_refused = [&](sa_status want, HeadCase c, int64_t cap, const char *what) {
    EvictOut r = evict_per_head(ctx.get(), o, c, cap);
    EXPECT_EQ(r.status, want) << what << ": " << sa_last_error();
    EXPECT_STRNE(sa_last_error(), "");
    for (int32_t f : r.freed) EXPECT_EQ(f, -7) << what;
    for (int64_t f : r.n_freed) EXPECT_EQ(f, -7) << what;
  };
  { HeadCase c = good; c.positions[40] = -2; expect_refused(SA_ERR_INVALID_ARGUMENT, c, 16, "position -2 in head 1"); }
  { HeadCase c = good; c.scores[33] = std::nanf(""); expect_refused(SA_ERR_INVALID_ARGUMENT, c, 16, "NaN in head 1"); }
  { HeadCase c = good; c.positions[35] = SA_MAX_POSITION + 1; expect_refused(SA_ERR_INVALID_ARGUMENT, c, 16, "position past the bound"); }
  expect_refused(SA_ERR_SHAPE, good, 2, "freed too small for head 0 (9 to evict)");
  {  // head 1 repeats one position: its window holds more slots than the budget leaves
    HeadCase c = good;
    int64_t mx = *std::max_element(c.positions.begin() + 32, c.positions.end());
    for (int64_t s = 32; s < 64; ++s) c.positions[size_t(s)] = mx;
    expect_refused(SA_ERR_INVALID_ARGUMENT, c, 32, "protected slots over the budget in head 1");
    EXPECT_NE(std::string(sa_last_error()).find("KV head 1"), std::string::npos) << sa_last_error();
  }
  // Shapes: rank-1 positions, heads that disagree, slots that disagree.
  std::vector<int32_t> freed(64, -7);
  std::vector<int64_t> n_freed(2, -7);
  sa_tensor sc = raw(good.scores.data(), SA_DTYPE_F32, {2, 32}), ps = raw(good.positions.data(), SA_DTYPE_I64, {2, 32}),
            fr = raw(freed.data(), SA_DTYPE_I32, {2, 32});
  sa_tensor ps1 = raw(good.positions.data(), SA_DTYPE_I64, {64});
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx.get(), &o, &sc, &ps1, &fr, n_freed.data()));
  sa_tensor sc1 = raw(good.scores.data(), SA_DTYPE_F32, {64});
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx.get(), &o, &sc1, &ps, &fr, n_freed.data()));
  sa_tensor sc_h1 = raw(good.scores.data(), SA_DTYPE_F32, {1, 32});
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx.get(), &o, &sc_h1, &ps, &fr, n_freed.data()));
  sa_tensor sc_n = raw(good.scores.data(), SA_DTYPE_F32, {2, 31});
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx.get(), &o, &sc_n, &ps, &fr, n_freed.data()));
  sa_tensor fr_h = raw(freed.data(), SA_DTYPE_I32, {1, 64});
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx.get(), &o, &sc, &ps, &fr_h, n_freed.data()));
  sa_tensor fr1 = raw(freed.data(), SA_DTYPE_I32, {64});
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx.get(), &o, &sc, &ps, &fr1, n_freed.data()));
  sa_tensor ps_i32 = raw(good.positions.data(), SA_DTYPE_I32, {2, 32});
  EXPECT_SA_ERR(SA_ERR_DTYPE, sa_cache_evict(ctx.get(), &o, &sc, &ps_i32, &fr, n_freed.data()));
  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_cache_evict(ctx.get(), &o, &sc, &ps, &fr, nullptr));
  for (int32_t f : freed) EXPECT_EQ(f, -7);
  for (int64_t f : n_freed) EXPECT_EQ(f, -7);
  // Older hosts (a struct_size without per_head) get the single-set call.
  sa_evict_options old = o;
  old.struct_size = offsetof(sa_evict_options, per_head);
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx.get(), &old, &sc, &ps, &fr, n_freed.data()));
}

// ------------------------------------------------------------------ attention

constexpr int64_t kHkv = 2, kHq = 4, kD = 16;

TEST(HeadAttend, PerHeadPositionsMatchTheReference) {
  Rng rng(21);
  const int64_t n_kv = 40;
  Tensor k = sat::random_tensor(rng, SA_DTYPE_F32, {n_kv, kHkv, kD}), v = sat::random_tensor(rng, SA_DTYPE_F32, {n_kv, kHkv, kD});
  HeadCase pc = random_case(rng, kHkv, n_kv, 4, 60);
  for (int threads : {1, 2}) {
    auto ctx = sat::make_context(threads);
    for (int sparse = 0; sparse < 2; ++sparse) {
      for (int default_q = 0; default_q < 2; ++default_q) {
        const int64_t n_q = 3;
        std::vector<int64_t> qpos = {30, 45, 59};
        Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD});
        Tensor idx(SA_DTYPE_I32, {n_q, kHkv, 24});
        for (int64_t i = 0; i < n_q; ++i)
          for (int64_t h = 0; h < kHkv; ++h)
            for (int64_t w = 0; w < 24; ++w) idx.set({i, h, w}, w % 7 == 3 ? -1 : double(rng.below(n_kv)));
        Tensor out(SA_DTYPE_F32, {n_q, kHq, kD}), lse(SA_DTYPE_F32, {n_q, kHq});
        std::vector<float> mass(size_t(kHkv * n_kv), 0.f);
        sa_tensor mass_t = raw(mass.data(), SA_DTYPE_F32, {kHkv, n_kv});
        sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
        o.causal = 1;
        o.query_positions = default_q ? nullptr : qpos.data();
        o.head_key_positions = pc.positions.data();
        o.slot_mass = &mass_t;
        o.mass_decay = 1.f;
        ASSERT_SA_OK(sa_attend(ctx.get(), q.t(), k.t(), v.t(), sparse ? idx.t() : nullptr, &o, out.t(), lse.t()));
        ref::AttendArgs a;
        a.q = q.t(), a.k = k.t(), a.v = v.t(), a.indices = sparse ? idx.t() : nullptr;
        a.causal = true, a.query_positions = o.query_positions, a.head_key_positions = pc.positions.data();
        ref::AttendResult r = ref::attend(a);
        EXPECT_TRUE(sat::close_rel(out.values(), r.out, 1e-5)) << "sparse " << sparse << " default_q " << default_q;
        std::vector<double> got_lse = lse.values();
        for (size_t i = 0; i < got_lse.size(); ++i) {
          if (std::isinf(r.lse[i])) EXPECT_TRUE(std::isinf(got_lse[i]) && got_lse[i] < 0);
          else EXPECT_NEAR(got_lse[i], r.lse[i], 1e-4);
        }
        std::vector<double> got_mass(mass.begin(), mass.end());
        EXPECT_TRUE(sat::close_rel(got_mass, r.mass, 1e-5));
        for (int64_t h = 0; h < kHkv; ++h)
          for (int64_t j = 0; j < n_kv; ++j)
            if (pc.positions[size_t(h * n_kv + j)] < 0) {
              EXPECT_EQ(mass[size_t(h * n_kv + j)], 0.f) << "empty row attended";
            }
      }
    }
  }
}

// The per-head positions must actually be read per head: the same call with head 0's row for
// every head (key_positions) differs.
TEST(HeadAttend, HeadsReadTheirOwnPositions) {
  auto ctx = sat::make_context(1);
  Rng rng(22);
  const int64_t n_kv = 16;
  Tensor k = sat::random_tensor(rng, SA_DTYPE_F32, {n_kv, kHkv, kD}), v = sat::random_tensor(rng, SA_DTYPE_F32, {n_kv, kHkv, kD});
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  std::vector<int64_t> pos(size_t(kHkv * n_kv));
  for (int64_t j = 0; j < n_kv; ++j) pos[size_t(j)] = j, pos[size_t(n_kv + j)] = j < 8 ? j + 100 : j;  // head 1: rows 0-7 in the future
  int64_t qpos = 20;
  Tensor a(SA_DTYPE_F32, {1, kHq, kD}), b(SA_DTYPE_F32, {1, kHq, kD});
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = 1, o.query_positions = &qpos, o.head_key_positions = pos.data();
  ASSERT_SA_OK(sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &o, a.t(), nullptr));
  o.head_key_positions = nullptr, o.key_positions = pos.data();
  ASSERT_SA_OK(sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &o, b.t(), nullptr));
  for (int64_t d = 0; d < kD; ++d) EXPECT_EQ(a.get({0, 0, d}), b.get({0, 0, d})) << "head 0 (query head 0) reads row 0";
  double diff = 0;
  for (int64_t d = 0; d < kD; ++d) diff += std::fabs(a.get({0, 2, d}) - b.get({0, 2, d}));
  EXPECT_GT(diff, 1e-3) << "KV head 1 ignored its own positions";
}

TEST(HeadAttend, BadInputIsRefused) {
  auto ctx = sat::make_context(1);
  Rng rng(23);
  const int64_t n_kv = 8;
  Tensor k = sat::random_tensor(rng, SA_DTYPE_F32, {n_kv, kHkv, kD}), v = sat::random_tensor(rng, SA_DTYPE_F32, {n_kv, kHkv, kD});
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  Tensor out(SA_DTYPE_F32, {1, kHq, kD});
  out.poison();
  std::vector<int64_t> pos(size_t(kHkv * n_kv));
  std::iota(pos.begin(), pos.end(), int64_t(0));
  std::vector<int64_t> shared(size_t(n_kv), 0);
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.head_key_positions = pos.data();
  o.key_positions = shared.data();
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &o, out.t(), nullptr));
  o.key_positions = nullptr;
  pos[size_t(n_kv + 3)] = -2;
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &o, out.t(), nullptr));
  EXPECT_NE(std::string(sa_last_error()).find("head_key_positions"), std::string::npos) << sa_last_error();
  pos[size_t(n_kv + 3)] = SA_MAX_POSITION + 1;
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &o, out.t(), nullptr));
  pos[size_t(n_kv + 3)] = 3;
  std::vector<float> mass(size_t(n_kv), 0.f);
  sa_tensor mass_t = raw(mass.data(), SA_DTYPE_F32, {n_kv});
  o.slot_mass = &mass_t;
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &o, out.t(), nullptr));
  EXPECT_TRUE(out.untouched());
  for (float m : mass) EXPECT_EQ(m, 0.f);
  o.slot_mass = nullptr;
  // A paged cache takes per-head positions in place of its slot positions, not beside them
  // (paged_test.cpp checks the paged per-head attention itself).
  sa_paged_kv kv = SA_PAGED_KV_INIT;
  kv.k = *k.t(), kv.v = *v.t();
  kv.slot_positions = raw(shared.data(), SA_DTYPE_I64, {n_kv});
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_attend_paged(ctx.get(), q.t(), nullptr, &kv, nullptr, &o, out.t(), nullptr));
  EXPECT_TRUE(out.untouched());
}

// ------------------------------------------------------------------ index and selection

// The index as the test mirrors it: every head's keys per slot and each head's positions.
struct HeadMirror {
  ref::KeyCache keys;                    // keys of every head; pos unused
  std::vector<std::vector<int64_t>> pos;  // [head][slot]
  HeadMirror(int64_t h, int64_t d, sa_dtype dt) : keys(h, d, dt), pos(size_t(h)) {}
  // Appended keys take the positions after the largest any head holds.
  void append(const Tensor &k) {
    const int64_t start = max_pos() + 1;
    keys.append(k);
    for (auto &p : pos)
      for (int64_t r = 0; r < k.dim(0); ++r) p.push_back(start + r);
  }
  int64_t max_pos() const {
    int64_t m = -1;
    for (const auto &p : pos)
      for (int64_t x : p) m = std::max(m, x);
    return m;
  }
  // Key row i of head h into head h's slot slots[h * n + i].
  void update_heads(const std::vector<int32_t> &slots, const Tensor &k, const std::vector<int64_t> &positions) {
    const int64_t n = k.dim(0);
    for (int64_t h = 0; h < keys.h_kv; ++h)
      for (int64_t i = 0; i < n; ++i) {
        const int32_t s = slots[size_t(h * n + i)];
        for (int64_t x = 0; x < keys.d; ++x)
          keys.keys[size_t((s * keys.h_kv + h) * keys.d + x)] = sat::round_to(keys.dtype, k.get({i, h, x}));
        pos[size_t(h)][size_t(s)] = positions[size_t(h * n + i)];
      }
  }
  ref::KeyCache head_view(int64_t h) const {
    ref::KeyCache c = keys;
    c.pos = pos[size_t(h)];
    return c;
  }
};

// Fills the host's K [n, H, D] from the mirror (for borrow_keys).
void write_host_keys(const HeadMirror &m, Tensor &host) {
  for (int64_t s = 0; s < m.keys.size(); ++s)
    for (int64_t h = 0; h < m.keys.h_kv; ++h)
      for (int64_t x = 0; x < m.keys.d; ++x) host.set({s, h, x}, m.keys.key(s, h, x));
}

// tie_rel 1: only visibility, the sinks and window and the count are checked (page selection
// without refine ranks whole pages by their bounds, not keys by their scores).
::testing::AssertionResult selection_matches(const HeadMirror &m, const Tensor &queries, const Tensor &out,
                                             const sa_select_options &so, double tie_rel = 1e-4) {
  const ref::SelectArgs a = ref::SelectArgs::from(so);
  const int64_t lists = out.dim(1), G = queries.dim(1) / m.keys.h_kv;
  for (int64_t i = 0; i < out.dim(0); ++i)
    for (int64_t l = 0; l < lists; ++l) {
      const int64_t kvh = so.per_query_head ? l / G : l;
      const ref::RowExpectation e = ref::expect_row(m.head_view(kvh), queries, a, i, l);
      ::testing::AssertionResult r = ref::check_row(e, sat::row_of(out, i, l), tie_rel);
      if (!r) return r << " (query " << i << ", list " << l << ")";
    }
  return ::testing::AssertionSuccess();
}

struct IndexCase {
  const char *name;
  sa_selector_kind kind;
  bool borrow, refine;
};

class HeadIndex : public ::testing::TestWithParam<IndexCase> {};

// Page selection with refine scores every key of the best pages exactly; with 64 keys that is
// all of them, so it must equal the exact selection.
TEST_P(HeadIndex, SelectionReadsEachHeadsPositions) {
  const IndexCase c = GetParam();
  const bool borrow = c.borrow;
  const double tie_rel = c.refine ? 1e-4 : 1.0;
  auto ctx = sat::make_context(2);
  Rng rng(31);
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.kind = c.kind, io.num_kv_heads = int32_t(kHkv), io.head_dim = int32_t(kD), io.dtype = SA_DTYPE_F32;
  io.borrow_keys = borrow;
  io.page.page_size = 4;
  io.page.refine = c.refine;
  sa_index *raw_ix = nullptr;
  ASSERT_SA_OK(sa_index_create(ctx.get(), &io, &raw_ix));
  sat::IndexPtr ix(raw_ix);
  const int64_t N = 64;
  HeadMirror m(kHkv, kD, SA_DTYPE_F32);
  Tensor k0 = sat::random_tensor(rng, SA_DTYPE_F32, {N, kHkv, kD});
  ASSERT_SA_OK(sa_index_append(ix.get(), k0.t()));
  m.append(k0);
  Tensor host(SA_DTYPE_F32, {N, kHkv, kD});
  for (int round = 0; round < 4; ++round) {
    const int64_t n = 6;
    std::vector<int32_t> slots(size_t(kHkv * n));
    std::vector<int64_t> positions(size_t(kHkv * n));
    for (int64_t h = 0; h < kHkv; ++h) {
      std::vector<int32_t> all(static_cast<size_t>(N));
      std::iota(all.begin(), all.end(), 0);
      for (int64_t i = N - 1; i > 0; --i) std::swap(all[size_t(i)], all[size_t(rng.below(i + 1))]);
      for (int64_t i = 0; i < n; ++i) {
        slots[size_t(h * n + i)] = all[size_t(i)];
        positions[size_t(h * n + i)] = N + round * 8 + i + (h == 1 ? 20 : 0);
      }
    }
    Tensor kn = sat::random_tensor(rng, SA_DTYPE_F32, {n, kHkv, kD});
    ASSERT_SA_OK(sa_index_update_heads(ix.get(), slots.data(), n, kn.t(), positions.data()));
    m.update_heads(slots, kn, positions);
    if (round == 2) {  // a single-set update keeps working on a per-head index
      std::vector<int32_t> s1 = {5, 9};
      std::vector<int64_t> p1 = {m.max_pos() + 1, m.max_pos() + 2};
      Tensor k1 = sat::random_tensor(rng, SA_DTYPE_F32, {2, kHkv, kD});
      ASSERT_SA_OK(sa_index_update(ix.get(), s1.data(), 2, k1.t(), p1.data()));
      std::vector<int32_t> both = {5, 9, 5, 9};
      std::vector<int64_t> pboth = {p1[0], p1[1], p1[0], p1[1]};
      m.update_heads(both, k1, pboth);
    }
    write_host_keys(m, host);
    for (int pqh = 0; pqh < 2; ++pqh) {
      const int64_t n_q = 3;
      std::vector<int64_t> qpos = {m.max_pos(), m.max_pos() - 9, 40};
      Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD});
      sa_select_options so = sat::select_options(8, 6, 2);
      so.per_query_head = pqh;
      so.query_positions = qpos.data();
      so.keys = host.t();
      Tensor out(SA_DTYPE_I32, {n_q, pqh ? kHq : kHkv, 8 + 6 + 2 + 6});
      ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, out.t()));
      EXPECT_TRUE(selection_matches(m, q, out, so, tie_rel)) << "round " << round << " per_query_head " << pqh;
      if (pqh == 0 && round == 3) {  // default query positions: from the largest position of any head
        so.query_positions = nullptr;
        Tensor q1 = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
        Tensor o1(SA_DTYPE_I32, {1, kHkv, 22});
        ASSERT_SA_OK(sa_select(ix.get(), q1.t(), &so, o1.t()));
        int64_t last = m.max_pos();
        so.query_positions = &last;
        EXPECT_TRUE(selection_matches(m, q1, o1, so, tie_rel));
      }
    }
  }
  // A clone selects the same; the heads do hold different tokens in one slot by now.
  EXPECT_NE(m.pos[0], m.pos[1]);
  if (!borrow) {
    sa_index *copy = nullptr;
    ASSERT_SA_OK(sa_index_clone(ix.get(), &copy));
    sat::IndexPtr c(copy);
    std::vector<int64_t> qpos = {m.max_pos()};
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
    sa_select_options so = sat::select_options(8, 6, 2);
    so.query_positions = qpos.data();
    Tensor a(SA_DTYPE_I32, {1, kHkv, 16}), b(SA_DTYPE_I32, {1, kHkv, 16});
    ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, a.t()));
    ASSERT_SA_OK(sa_select(c.get(), q.t(), &so, b.t()));
    EXPECT_EQ(a.values(), b.values());
    // Drafts appended to a per-head index drop again with sa_index_truncate.
    const int64_t first_draft = m.max_pos() + 1;
    Tensor drafts = sat::random_tensor(rng, SA_DTYPE_F32, {3, kHkv, kD});
    ASSERT_SA_OK(sa_index_append(ix.get(), drafts.t()));
    ASSERT_SA_OK(sa_index_truncate(ix.get(), first_draft));
    int64_t size = 0;
    ASSERT_SA_OK(sa_index_size(ix.get(), &size));
    EXPECT_EQ(size, N);
    ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, b.t()));
    EXPECT_EQ(a.values(), b.values());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, HeadIndex,
    ::testing::Values(IndexCase{"Exact", SA_SELECTOR_EXACT, false, true}, IndexCase{"ExactBorrowed", SA_SELECTOR_EXACT, true, true},
                      IndexCase{"Page", SA_SELECTOR_PAGE, false, true}, IndexCase{"PageBorrowed", SA_SELECTOR_PAGE, true, true},
                      IndexCase{"PageNoRefine", SA_SELECTOR_PAGE, false, false}),
    [](const ::testing::TestParamInfo<IndexCase> &info) { return std::string(info.param.name); });

// Page prefill with refine scores a query exactly when it sees at most 2 x (top_k + 2048) keys.
// With per-head positions a query sees a different number of keys in each KV head: here head 1's
// first 300 slots hold later tokens, so the queries see 6200 - 300 keys there (under the 6096 of
// top_k 1000) and all 6200 in head 0. Head 1's lists must still be the exact selection.
TEST(HeadIndex, PagePrefillScoresExactlyWhereAHeadSeesFewKeys) {
  auto ctx = sat::make_context(1);
  Rng rng(57);
  const int64_t N = 6200, n = 300, n_q = 8;
  const int32_t top_k = 1000;
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.num_kv_heads = int32_t(kHkv), io.head_dim = int32_t(kD), io.dtype = SA_DTYPE_F32;
  sat::IndexPtr exact, page;
  for (sa_selector_kind kind : {SA_SELECTOR_EXACT, SA_SELECTOR_PAGE}) {
    io.kind = kind;
    sa_index *raw = nullptr;
    ASSERT_SA_OK(sa_index_create(ctx.get(), &io, &raw));
    (kind == SA_SELECTOR_EXACT ? exact : page).reset(raw);
  }
  Tensor k0 = sat::random_tensor(rng, SA_DTYPE_F32, {N, kHkv, kD});
  Tensor kn(SA_DTYPE_F32, {n, kHkv, kD});
  std::vector<int32_t> slots(size_t(kHkv * n));
  std::vector<int64_t> positions(size_t(kHkv * n));
  for (int64_t h = 0; h < kHkv; ++h)
    for (int64_t i = 0; i < n; ++i) {
      slots[size_t(h * n + i)] = int32_t(i);
      positions[size_t(h * n + i)] = h == 0 ? i : N + i;  // head 0 keeps its tokens, head 1 gets later ones
      for (int64_t x = 0; x < kD; ++x) kn.set({i, h, x}, k0.get({i, h, x}));
    }
  for (sa_index *ix : {exact.get(), page.get()}) {
    ASSERT_SA_OK(sa_index_append(ix, k0.t()));
    ASSERT_SA_OK(sa_index_update_heads(ix, slots.data(), n, kn.t(), positions.data()));
  }
  std::vector<int64_t> qpos(static_cast<size_t>(n_q));
  for (int64_t i = 0; i < n_q; ++i) qpos[size_t(i)] = N - n_q + i;  // head 0: > 6096 keys, head 1: < 6096
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, kHq, kD});
  sa_select_options so = sat::select_options(top_k, 0, 0);
  so.query_positions = qpos.data();
  Tensor want(SA_DTYPE_I32, {n_q, kHkv, top_k}), got(SA_DTYPE_I32, {n_q, kHkv, top_k});
  ASSERT_SA_OK(sa_select(exact.get(), q.t(), &so, want.t()));
  ASSERT_SA_OK(sa_select(page.get(), q.t(), &so, got.t()));
  for (int64_t i = 0; i < n_q; ++i)
    EXPECT_EQ(sat::row_of(got, i, 1), sat::row_of(want, i, 1)) << "query " << i << ", KV head 1 (sees "
                                                                 << qpos[size_t(i)] + 1 - n << " keys)";
}

TEST(HeadIndex, BadUpdatesAreRefusedAndLeaveTheIndex) {
  auto ctx = sat::make_context(1);
  Rng rng(32);
  const int64_t N = 16;
  Tensor k0 = sat::random_tensor(rng, SA_DTYPE_F32, {N, kHkv, kD});
  Tensor kn = sat::random_tensor(rng, SA_DTYPE_F32, {2, kHkv, kD});
  std::vector<int32_t> slots = {3, 4, 3, 4};  // the same slots in both heads: allowed
  std::vector<int64_t> positions = {20, 21, 22, 23};
  // Selectors that keep one position per slot refuse.
  for (sa_selector_kind kind : sat::built_kinds({SA_SELECTOR_LSH, SA_SELECTOR_HNSW})) {
    sat::IndexPtr ix = sat::make_index(ctx.get(), int32_t(kHkv), int32_t(kD), SA_DTYPE_F32, kind);
    ASSERT_SA_OK(sa_index_append(ix.get(), k0.t()));
    EXPECT_SA_ERR(SA_ERR_UNSUPPORTED, sa_index_update_heads(ix.get(), slots.data(), 2, kn.t(), positions.data()));
    EXPECT_SA_OK(sa_index_update(ix.get(), slots.data(), 2, kn.t(), positions.data()));  // still usable
  }
  sat::IndexPtr ix = sat::make_index(ctx.get(), int32_t(kHkv), int32_t(kD), SA_DTYPE_F32, SA_SELECTOR_EXACT);
  ASSERT_SA_OK(sa_index_append(ix.get(), k0.t()));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  sa_select_options so = sat::select_options(4, 2, 1);
  Tensor before(SA_DTYPE_I32, {1, kHkv, 7}), after(SA_DTYPE_I32, {1, kHkv, 7});
  ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, before.t()));
  auto bad = [&](sa_status want, std::vector<int32_t> s, std::vector<int64_t> p, const sa_tensor *keys, int64_t n,
                 const char *what) {
    SCOPED_TRACE(what);
    EXPECT_SA_ERR(want, sa_index_update_heads(ix.get(), s.empty() ? nullptr : s.data(), n, keys,
                                              p.empty() ? nullptr : p.data()));
  };
  bad(SA_ERR_OUT_OF_RANGE, {3, 4, 3, 16}, positions, kn.t(), 2, "slot == size in head 1");
  bad(SA_ERR_OUT_OF_RANGE, {3, -1, 3, 4}, positions, kn.t(), 2, "slot -1");
  bad(SA_ERR_INVALID_ARGUMENT, {3, 4, 7, 7}, positions, kn.t(), 2, "a slot twice in head 1");
  bad(SA_ERR_INVALID_ARGUMENT, slots, {20, 21, -1, 23}, kn.t(), 2, "position -1");
  bad(SA_ERR_INVALID_ARGUMENT, slots, {20, 21, SA_MAX_POSITION + 1, 23}, kn.t(), 2, "position past the bound");
  bad(SA_ERR_NULL_POINTER, slots, {}, kn.t(), 2, "positions NULL");
  bad(SA_ERR_NULL_POINTER, {}, positions, kn.t(), 2, "slots NULL");
  bad(SA_ERR_SHAPE, slots, positions, kn.t(), 3, "n disagrees with keys");
  bad(SA_ERR_INVALID_ARGUMENT, slots, positions, kn.t(), -1, "n negative");
  Tensor wrong_heads = sat::random_tensor(rng, SA_DTYPE_F32, {2, 1, kD});
  bad(SA_ERR_SHAPE, {3, 4}, {20, 21}, wrong_heads.t(), 2, "keys with one head");
  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_index_update_heads(nullptr, slots.data(), 2, kn.t(), positions.data()));
  ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, after.t()));
  EXPECT_EQ(before.values(), after.values()) << "a refused update changed the index";
  Tensor none(SA_DTYPE_F32, {0, kHkv, kD});
  EXPECT_SA_OK(sa_index_update_heads(ix.get(), nullptr, 0, none.t(), nullptr));  // nothing to refill
}

// ------------------------------------------------------------------ the fixed-budget loop

// A host's decode loop with a per-head cache of B slots: every step evicts per head, writes the
// new token's K/V into each head's freed slot, refills the index per head, selects and attends
// with per-head positions and slot_mass. Checked every step: each head holds min(t + 1, B)
// distinct tokens with its sinks and window; the selection against the brute force on each
// head's positions; attention and slot_mass against double precision.
TEST(HeadBudget, DecodeLoopPerHeadMatchesTheReferences) {
  auto ctx = sat::make_context(2);
  Rng rng(41);
  const int64_t B = 40, T = 150;
  const int32_t sinks = 2, window = 6, top_k = 10;
  const int64_t width = sinks + window + top_k;
  // Tokens: per head its own keys, with a few heads-specific "important" tokens.
  Tensor hist_k = sat::random_tensor(rng, SA_DTYPE_F32, {T, kHkv, kD}), hist_v = sat::random_tensor(rng, SA_DTYPE_F32, {T, kHkv, kD});
  Tensor kc(SA_DTYPE_F32, {B, kHkv, kD}), vc(SA_DTYPE_F32, {B, kHkv, kD});
  std::vector<int64_t> pos(size_t(kHkv * B), -1);
  std::vector<float> mass(size_t(kHkv * B), 0.f);
  sa_tensor mass_t = raw(mass.data(), SA_DTYPE_F32, {kHkv, B}), pos_t = raw(pos.data(), SA_DTYPE_I64, {kHkv, B});
  std::vector<int32_t> freed(size_t(kHkv * 2));
  std::vector<int64_t> n_freed(static_cast<size_t>(kHkv));
  sa_tensor freed_t = raw(freed.data(), SA_DTYPE_I32, {kHkv, 2});
  sat::IndexPtr ix = sat::make_index(ctx.get(), int32_t(kHkv), int32_t(kD), SA_DTYPE_F32, SA_SELECTOR_EXACT);
  HeadMirror m(kHkv, kD, SA_DTYPE_F32);
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.per_head = 1, eo.budget = B, eo.sinks = sinks, eo.window = window;
  const float decay = 0.99f;
  eo.mass_decay = decay;
  int64_t diverged_steps = 0;
  for (int64_t t = 0; t < T; ++t) {
    ASSERT_SA_OK(sa_cache_evict(ctx.get(), &eo, &mass_t, &pos_t, &freed_t, n_freed.data()));
    std::vector<int32_t> slots(static_cast<size_t>(kHkv));
    std::vector<int64_t> tpos(size_t(kHkv), t);
    Tensor knew(SA_DTYPE_F32, {1, kHkv, kD});
    for (int64_t h = 0; h < kHkv; ++h) {
      ASSERT_EQ(n_freed[size_t(h)], 1) << "step " << t << " head " << h;
      const int32_t s = freed[size_t(h * 2)];
      slots[size_t(h)] = s;
      for (int64_t d = 0; d < kD; ++d) {
        kc.set({s, h, d}, hist_k.get({t, h, d}));
        vc.set({s, h, d}, hist_v.get({t, h, d}));
        knew.set({0, h, d}, hist_k.get({t, h, d}));
      }
      pos[size_t(h * B + s)] = t;
      mass[size_t(h * B + s)] = 0.f;
    }
    if (t < B) {
      for (int64_t h = 0; h < kHkv; ++h) ASSERT_EQ(slots[size_t(h)], t) << "empty slots fill in order";
      ASSERT_SA_OK(sa_index_append(ix.get(), knew.t()));
      m.append(knew);
    } else {
      ASSERT_SA_OK(sa_index_update_heads(ix.get(), slots.data(), 1, knew.t(), tpos.data()));
      m.update_heads(slots, knew, tpos);
    }
    // Each head: min(t + 1, B) distinct tokens, sinks and window among them.
    for (int64_t h = 0; h < kHkv; ++h) {
      std::set<int64_t> held;
      for (int64_t s = 0; s < B; ++s)
        if (pos[size_t(h * B + s)] >= 0) held.insert(pos[size_t(h * B + s)]);
      ASSERT_EQ(int64_t(held.size()), std::min(t + 1, B));
      for (int64_t p = 0; p < std::min<int64_t>(sinks, t + 1); ++p) EXPECT_TRUE(held.count(p)) << "sink " << p;
      for (int64_t p = std::max<int64_t>(0, t - window + 1); p <= t; ++p) EXPECT_TRUE(held.count(p)) << "window " << p;
      ASSERT_EQ(m.pos[size_t(h)], std::vector<int64_t>(pos.begin() + h * B, pos.begin() + h * B + std::min(t + 1, B)));
    }
    if (!std::equal(pos.begin(), pos.begin() + B, pos.begin() + B)) ++diverged_steps;
    // Select and attend the new token's query.
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
    sa_select_options so = sat::select_options(top_k, window, sinks);
    so.query_positions = &t;
    Tensor idx(SA_DTYPE_I32, {1, kHkv, width});
    ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, idx.t()));
    ASSERT_TRUE(selection_matches(m, q, idx, so)) << "step " << t;
    const int64_t filled = std::min(t + 1, B);
    std::vector<int64_t> hk_pos(size_t(kHkv * filled));
    for (int64_t h = 0; h < kHkv; ++h)
      std::copy_n(pos.begin() + h * B, filled, hk_pos.begin() + h * filled);
    Tensor kv_k(SA_DTYPE_F32, {filled, kHkv, kD}), kv_v(SA_DTYPE_F32, {filled, kHkv, kD});
    for (int64_t s = 0; s < filled; ++s)
      for (int64_t h = 0; h < kHkv; ++h)
        for (int64_t d = 0; d < kD; ++d) kv_k.set({s, h, d}, kc.get({s, h, d})), kv_v.set({s, h, d}, vc.get({s, h, d}));
    std::vector<float> mass_before = mass;
    sa_tensor m_view = raw(mass.data(), SA_DTYPE_F32, {kHkv, filled});
    m_view.strides[0] = B, m_view.strides[1] = 1;
    sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
    ao.causal = 1, ao.query_positions = &t, ao.head_key_positions = hk_pos.data();
    ao.slot_mass = &m_view, ao.mass_decay = decay;
    Tensor out(SA_DTYPE_F32, {1, kHq, kD});
    ASSERT_SA_OK(sa_attend(ctx.get(), q.t(), kv_k.t(), kv_v.t(), idx.t(), &ao, out.t(), nullptr));
    ref::AttendArgs a;
    a.q = q.t(), a.k = kv_k.t(), a.v = kv_v.t(), a.indices = idx.t(), a.causal = true, a.query_positions = &t;
    a.head_key_positions = hk_pos.data();
    const ref::AttendResult r = ref::attend(a);
    ASSERT_TRUE(sat::close_rel(out.values(), r.out, 1e-5)) << "step " << t;
    // The output is attention over the selected tokens of each head's history.
    for (int64_t h = 0; h < kHkv; ++h)
      for (int64_t w = 0; w < width; ++w) {
        const int64_t s = int64_t(idx.get({0, h, w}));
        if (s < 0) continue;
        for (int64_t d = 0; d < kD; ++d) ASSERT_EQ(kv_k.get({s, h, d}), hist_k.get({hk_pos[size_t(h * filled + s)], h, d}));
      }
    std::vector<double> want_mass(size_t(kHkv * filled)), got_mass(size_t(kHkv * filled));
    for (int64_t h = 0; h < kHkv; ++h)
      for (int64_t s = 0; s < filled; ++s) {
        want_mass[size_t(h * filled + s)] = double(decay) * mass_before[size_t(h * B + s)] + r.mass[size_t(h * filled + s)];
        got_mass[size_t(h * filled + s)] = mass[size_t(h * B + s)];
      }
    ASSERT_TRUE(sat::close_rel(got_mass, want_mass, 1e-5)) << "step " << t;
  }
  EXPECT_GT(diverged_steps, T / 2) << "the heads kept the same tokens: the loop did not test per-head eviction";
}

}  // namespace
