// Decoding in a fixed-budget cache (fixed_budget_cache.hpp), for every selector kind: each test
// runs per kind and skips the kinds whose sa_index_create answers SA_ERR_UNSUPPORTED, so page,
// lsh and hnsw are covered as soon as a build has them. Checked against the double-precision
// oracles: the selection of each step (reference_select.hpp; exact: the top set, other kinds:
// visibility and the forced sinks and window, decided by positions, never by slot order), the
// attention over the retained slots (reference_attention.hpp), eviction order by accumulated
// attention, and SnapKV-style compression of a prompt in one call.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "fixed_budget_cache.hpp"
#include "reference_attention.hpp"
#include "reference_select.hpp"
#include "build_features.hpp"
#include "test_util.hpp"

namespace {

using sat::BudgetConfig;
using sat::FixedBudgetCache;
using sat::Rng;
using sat::Tensor;

// Creates the cache's index, or skips the test for a kind this build does not implement.
#define CREATE_INDEX_OR_SKIP(cache)                                                         \
  do {                                                                                      \
    sa_status created_ = (cache).create_index();                                            \
    SA_SKIP_IF_NOT_BUILT(created_, (cache).config().kind);                                    \
    ASSERT_SA_OK(created_);                                                                 \
  } while (0)

const char *kind_name(sa_selector_kind k) {
  switch (k) {
    case SA_SELECTOR_EXACT: return "exact";
    case SA_SELECTOR_PAGE: return "page";
    case SA_SELECTOR_LSH: return "lsh";
    case SA_SELECTOR_HNSW: return "hnsw";
    default: return "other";
  }
}

// A Tensor copy of a test-owned f32 descriptor.
Tensor copy_of(const sa_tensor &t) {
  std::vector<int64_t> shape(t.shape, t.shape + t.rank);
  Tensor c(t.dtype, shape);
  std::vector<double> v;
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  for (int64_t i = 0; i < n; ++i) v.push_back(sat::load_as_double(t.data, t.dtype, i));
  c.set_values(v);
  return c;
}

// The rows of `slots` of a [n, H, D] tensor, in that order.
Tensor gather_rows(const Tensor &t, const std::vector<int64_t> &slots) {
  Tensor g(t.dtype(), {int64_t(slots.size()), t.dim(1), t.dim(2)});
  for (size_t r = 0; r < slots.size(); ++r)
    for (int64_t h = 0; h < t.dim(1); ++h)
      for (int64_t x = 0; x < t.dim(2); ++x) g.set({int64_t(r), h, x}, t.get({slots[r], h, x}));
  return g;
}

std::vector<int32_t> selection_row(const sa_tensor &idx, int64_t head) {
  std::vector<int32_t> row(size_t(idx.shape[2]));
  for (int64_t w = 0; w < idx.shape[2]; ++w) row[size_t(w)] = static_cast<const int32_t *>(idx.data)[head * idx.shape[2] + w];
  return row;
}

class FixedBudget : public ::testing::TestWithParam<sa_selector_kind> {
 protected:
  void SetUp() override {
    ctx_ = sat::make_context(1);
    ASSERT_NE(ctx_, nullptr);
  }
  // Exact selections must be the oracle's top set; approximate kinds only keep the structure
  // (visible slots, every sink and window slot, ascending, padding).
  ::testing::AssertionResult check_selection(const ref::RowExpectation &e, const std::vector<int32_t> &row) {
    if (GetParam() == SA_SELECTOR_EXACT) return ref::check_row(e, row);
    return ref::check_row(e, row, /*tie_rel=*/1.0, /*count_slack=*/int64_t(row.size()));
  }
  BudgetConfig config(int64_t budget) {
    BudgetConfig c;
    c.kind = GetParam();
    c.budget = budget;
    c.h_q = 4, c.h_kv = 2, c.d = 16;
    c.sinks = 4, c.window = 16, c.top_k = 24;
    return c;
  }
  sat::ContextPtr ctx_;
};

// Every step frees one slot outside the sinks and the window, refills it, and the next
// selection and attention agree with the oracles over the cache as it now is.
TEST_P(FixedBudget, DecodeStepsMatchOracles) {
  BudgetConfig c = config(96);
  c.mass_decay = 0.95f;
  FixedBudgetCache cache(ctx_.get(), c);
  CREATE_INDEX_OR_SKIP(cache);
  ASSERT_SA_OK(cache.prefill());
  ref::KeyCache mirror(c.h_kv, c.d, SA_DTYPE_F32);
  mirror.append(copy_of(*cache.keys()));
  ref::SelectArgs args;
  args.top_k = c.top_k, args.window = c.window, args.sinks = c.sinks;
  for (int step = 0; step < 300; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    const int64_t newest_before = cache.next_position() - 1;
    ASSERT_SA_OK(cache.step());
    EXPECT_GE(cache.evicted_position(), c.sinks) << "a sink was evicted";
    EXPECT_LE(cache.evicted_position(), newest_before - c.window) << "a window position was evicted";
    std::set<int64_t> held(cache.positions().begin(), cache.positions().end());
    ASSERT_EQ(int64_t(held.size()), c.budget) << "positions repeat";
    ASSERT_EQ(*held.rbegin(), cache.query_position());

    // The index now holds the new key at the new position in the freed slot.
    Tensor keys = copy_of(*cache.keys());
    int64_t slot = cache.last_slot(), pos = cache.query_position();
    mirror.update({cache.last_slot()}, gather_rows(keys, {slot}), &pos);
    Tensor q = copy_of(*cache.query());
    args.query_positions = &pos;
    for (int64_t h = 0; h < c.h_kv; ++h)
      ASSERT_TRUE(check_selection(ref::expect_row(mirror, q, args, 0, h), selection_row(*cache.selection(), h)))
          << "head " << h;

    ref::AttendArgs a;
    a.q = cache.query(), a.k = cache.keys(), a.v = cache.values(), a.indices = cache.selection();
    a.causal = true, a.key_positions = cache.positions().data(), a.query_positions = &pos;
    ASSERT_TRUE(sat::close_rel(copy_of(*cache.output()).values(), ref::attend(a).out, 1e-5));
  }
}

// Accumulated attention ranks the slots: barely attended tokens go first, a strongly attended
// one outlives thousands of evictions.
TEST_P(FixedBudget, PlantedTokenSurvivesWhileShunnedOnesGo) {
  BudgetConfig c = config(128);
  c.query_bias = 1.0;
  c.planted_position = 10;
  c.shunned_first = 40, c.shunned_count = 8;
  c.recent_share = 0.5f;  // mass ranks the older half of the budget, where 10 and 40-47 lie
  FixedBudgetCache cache(ctx_.get(), c);
  CREATE_INDEX_OR_SKIP(cache);
  ASSERT_SA_OK(cache.prefill());
  std::set<int64_t> first;
  for (int step = 0; step < 8; ++step) {
    ASSERT_SA_OK(cache.step());
    first.insert(cache.evicted_position());
  }
  EXPECT_EQ(first, std::set<int64_t>({40, 41, 42, 43, 44, 45, 46, 47}));
  std::set<int64_t> evicted = first;
  for (int step = 0; step < 1500; ++step) {
    ASSERT_SA_OK(cache.step());
    EXPECT_NE(cache.evicted_position(), 10) << "the planted token was evicted at step " << step;
    EXPECT_TRUE(evicted.insert(cache.evicted_position()).second) << "a position was evicted twice";
  }
  const auto &pos = cache.positions();
  EXPECT_NE(std::find(pos.begin(), pos.end(), 10), pos.end());
  for (int64_t p = 40; p < 48; ++p) EXPECT_EQ(std::find(pos.begin(), pos.end(), p), pos.end());
}

// After many evictions the slots hold positions in no particular order. Attention over the
// retained cache (dense with key positions, or a list of its slots in any order) equals dense
// attention over the same tokens laid out in position order, in double precision.
TEST_P(FixedBudget, RetainedAttentionEqualsDenseOverSameTokens) {
  BudgetConfig c = config(80);
  FixedBudgetCache cache(ctx_.get(), c);
  CREATE_INDEX_OR_SKIP(cache);
  ASSERT_SA_OK(cache.prefill());
  for (int step = 0; step < 400; ++step) ASSERT_SA_OK(cache.step());

  std::vector<int64_t> by_position(static_cast<size_t>(c.budget));
  std::iota(by_position.begin(), by_position.end(), 0);
  const auto &pos = cache.positions();
  std::sort(by_position.begin(), by_position.end(), [&](int64_t a, int64_t b) { return pos[size_t(a)] < pos[size_t(b)]; });
  ASSERT_NE(by_position, [&] {
    std::vector<int64_t> ident(by_position.size());
    std::iota(ident.begin(), ident.end(), 0);
    return ident;
  }()) << "slots should be out of position order by now";
  Tensor keys = copy_of(*cache.keys()), values = copy_of(*cache.values()), q = copy_of(*cache.query());
  Tensor k_sorted = gather_rows(keys, by_position), v_sorted = gather_rows(values, by_position);
  std::vector<int64_t> sorted_pos;
  for (int64_t s : by_position) sorted_pos.push_back(pos[size_t(s)]);
  int64_t qpos = cache.query_position() + 1;  // a query after the newest token: every slot visible
  ref::AttendArgs a;
  a.q = q.t(), a.k = k_sorted.t(), a.v = v_sorted.t();
  a.causal = true, a.key_positions = sorted_pos.data(), a.query_positions = &qpos;
  const std::vector<double> want = ref::attend(a).out;

  Tensor out(SA_DTYPE_F32, {1, c.h_q, c.d});
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = 1, o.key_positions = pos.data(), o.query_positions = &qpos;
  ASSERT_SA_OK(sa_attend(ctx_.get(), q.t(), keys.t(), values.t(), nullptr, &o, out.t(), nullptr));
  EXPECT_TRUE(sat::close_rel(out.values(), want, 1e-5)) << "dense over the slots";

  Rng rng(500);
  Tensor all(SA_DTYPE_I32, {1, c.h_kv, c.budget});
  for (int64_t h = 0; h < c.h_kv; ++h) {
    std::vector<int64_t> shuffled(static_cast<size_t>(c.budget));
    std::iota(shuffled.begin(), shuffled.end(), 0);
    for (int64_t x = c.budget - 1; x > 0; --x) std::swap(shuffled[size_t(x)], shuffled[size_t(rng.below(x + 1))]);
    for (int64_t w = 0; w < c.budget; ++w) all.set({0, h, w}, double(shuffled[size_t(w)]));
  }
  ASSERT_SA_OK(sa_attend(ctx_.get(), q.t(), keys.t(), values.t(), all.t(), &o, out.t(), nullptr));
  EXPECT_TRUE(sat::close_rel(out.values(), want, 1e-5)) << "a list of every slot";

  if (GetParam() == SA_SELECTOR_EXACT) {  // top_k covering the cache selects every slot
    sa_select_options so = SA_SELECT_OPTIONS_INIT;
    so.top_k = int32_t(c.budget), so.window = c.window, so.sinks = c.sinks, so.query_positions = &qpos;
    Tensor idx(SA_DTYPE_I32, {1, c.h_kv, c.budget + c.window + c.sinks});
    ASSERT_SA_OK(sa_select(cache.index(), q.t(), &so, idx.t()));
    ASSERT_SA_OK(sa_attend(ctx_.get(), q.t(), keys.t(), values.t(), idx.t(), &o, out.t(), nullptr));
    EXPECT_TRUE(sat::close_rel(out.values(), want, 1e-5)) << "the exact selection of the whole cache";
  }
}

// Slots refilled with scrambled positions: causality, sinks and window follow the positions.
TEST_P(FixedBudget, SelectionFollowsPositionsNotSlots) {
  Rng rng(501);
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = GetParam();
  o.num_kv_heads = 2;
  o.head_dim = 16;
  o.dtype = SA_DTYPE_F32;
  sa_index *raw = nullptr;
  sa_status st = sa_index_create(ctx_.get(), &o, &raw);
  SA_SKIP_IF_NOT_BUILT(st, o.kind);
  ASSERT_SA_OK(st);
  sat::IndexPtr ix(raw);
  const int64_t n = 200;
  Tensor keys = sat::random_tensor(rng, SA_DTYPE_F32, {n, 2, 16});
  ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
  ref::KeyCache mirror(2, 16, SA_DTYPE_F32);
  mirror.append(keys);
  std::vector<int32_t> slots(static_cast<size_t>(n));
  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) slots[size_t(s)] = int32_t(s), positions[size_t(s)] = (s * 71) % n * 3 + 1000;
  Tensor fresh = sat::random_tensor(rng, SA_DTYPE_F32, {n, 2, 16});
  ASSERT_SA_OK(sa_index_update(ix.get(), slots.data(), n, fresh.t(), positions.data()));
  mirror.update(slots, fresh, positions.data());

  ref::SelectArgs args;
  args.top_k = 16, args.window = 30, args.sinks = 1010;  // sinks: positions 1000, 1003, 1006, 1009
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = args.top_k, so.window = args.window, so.sinks = args.sinks;
  for (int64_t qpos : {int64_t(1100), int64_t(1350), int64_t(1597), int64_t(5000)}) {
    SCOPED_TRACE(testing::Message() << "query position " << qpos);
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 4, 16});
    Tensor idx(SA_DTYPE_I32, {1, 2, args.top_k + args.window + args.sinks});
    so.query_positions = &qpos;
    args.query_positions = &qpos;
    ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, idx.t()));
    for (int64_t h = 0; h < 2; ++h) {
      std::vector<int32_t> row;
      for (int64_t w = 0; w < idx.dim(2); ++w) row.push_back(int32_t(idx.get({0, h, w})));
      EXPECT_TRUE(check_selection(ref::expect_row(mirror, q, args, 0, h), row)) << "head " << h;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, FixedBudget,
                         ::testing::Values(SA_SELECTOR_EXACT, SA_SELECTOR_PAGE, SA_SELECTOR_LSH, SA_SELECTOR_HNSW),
                         [](const ::testing::TestParamInfo<sa_selector_kind> &info) { return kind_name(info.param); });

// SnapKV-style: one attention call of the prompt's last queries scores every slot, one evict
// call compresses the prompt to the budget.
TEST(FixedBudgetPrompt, CompressLongPromptInOneCall) {
  auto ctx = sat::make_context(2);
  ASSERT_NE(ctx, nullptr);
  Rng rng(502);
  const int64_t n = 4096, budget = 1024, observe = 32, h_q = 4, h_kv = 2, d = 32;
  Tensor k = sat::random_tensor(rng, SA_DTYPE_F32, {n, h_kv, d});
  Tensor v = sat::random_tensor(rng, SA_DTYPE_F32, {n, h_kv, d});
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {observe, h_q, d});  // prompt positions n-32 .. n-1
  Tensor out(SA_DTYPE_F32, {observe, h_q, d});
  Tensor mass(SA_DTYPE_F32, {n});
  mass.set_values(std::vector<double>(size_t(n), 0.0));
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
  ao.causal = 1;
  ao.slot_mass = mass.t();
  ASSERT_SA_OK(sa_attend(ctx.get(), q.t(), k.t(), v.t(), nullptr, &ao, out.t(), nullptr));
  ref::AttendArgs a;
  a.q = q.t(), a.k = k.t(), a.v = v.t(), a.causal = true;
  std::vector<double> want(size_t(n), 0.0), per_head = ref::attend(a).mass;
  for (int64_t h = 0; h < h_kv; ++h)
    for (int64_t j = 0; j < n; ++j) want[size_t(j)] += per_head[size_t(h * n + j)];
  const std::vector<double> got = mass.values();
  ASSERT_TRUE(sat::close_rel(got, want, 2e-5));

  Tensor positions(SA_DTYPE_I64, {n});
  std::vector<double> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0.0);
  positions.set_values(p);
  Tensor freed(SA_DTYPE_I32, {n});
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.budget = budget, eo.incoming = 0, eo.sinks = 4, eo.window = int32_t(observe);
  eo.score_mean = 0, eo.recent_share = 0.f;  // SnapKV: the observation window's mass as given
  int64_t n_freed = 0;
  ASSERT_SA_OK(sa_cache_evict(ctx.get(), &eo, mass.t(), positions.t(), freed.t(), &n_freed));
  ASSERT_EQ(n_freed, n - budget);
  std::vector<char> gone(size_t(n), 0);
  for (int64_t i = 0; i < n_freed; ++i) gone[size_t(freed.get({i}))] = 1;
  double lowest_kept = INFINITY, highest_freed = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    const bool protected_slot = j < 4 || j >= n - observe;
    if (protected_slot) {
      EXPECT_FALSE(gone[size_t(j)]) << "protected slot " << j << " freed";
    } else if (gone[size_t(j)]) {
      highest_freed = std::max(highest_freed, got[size_t(j)]);
    } else {
      lowest_kept = std::min(lowest_kept, got[size_t(j)]);
    }
  }
  EXPECT_LE(highest_freed, lowest_kept) << "a freed slot outscored a kept one";
}

}  // namespace
