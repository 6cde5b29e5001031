// sa_cache_evict against a reference written from the header:
// - occupied = slots with position >= 0; the call evicts max(0, occupied + incoming - budget)
//   occupied slots, never a sink (position < sinks) nor a window position
//   (max_pos - window, max_pos], lowest summed score first, ties by older position then lower
//   slot.
// - Empty slots (position -1) come first in `freed`, in ascending slot order, as many as the
//   incoming tokens can use (min(empty, incoming)): they are where the host writes the new
//   tokens before it needs an evicted slot.
// - budget < sinks + window + incoming is refused (SA_ERR_INVALID_ARGUMENT), whatever the
//   cache holds; so are NaN scores and scores/positions of different lengths (SA_ERR_SHAPE).
// - The default ranking (score_mean, mass_decay): a slot's score per step seen, the score divided
//   by sum_{i < age} mass_decay^i with age = max_pos - position + 1, written here as a plain
//   loop; head_max ranks by the best row instead of the sum. The tests written for the raw sum
//   set score_mean = 0.
// - score_pool r: a slot is ranked by the best ranked score among the occupied slots (protected
//   ones too) whose positions are within r of its own, written here as a double loop.
// Scores are multiples of 1/16 so float sums are exact and ties are common.
#include <gtest/gtest.h>

#include <numeric>

#include "test_util.hpp"

namespace {

using sat::Rng;
using sat::Tensor;

struct EvictCase {
  std::vector<double> scores;  // [rows][n] flattened; rows = scores.size() / n
  int64_t rows = 1;
  std::vector<int64_t> positions;
  int64_t budget = 0, incoming = 1;
  int32_t sinks = 4, window = 64;
  bool mean = false;  // score_mean: false = the raw scores (as the older tests expect)
  double decay = 1.0;
  bool head_max = false;
  int64_t pool = 0;
  size_t struct_size = sizeof(sa_evict_options);  // smaller: a host built against an older header
};

std::vector<int32_t> reference_evict(const EvictCase &c) {
  const int64_t n = int64_t(c.positions.size());
  std::vector<int32_t> freed;
  int64_t occupied = 0, max_pos = -1;
  for (int64_t s = 0; s < n; ++s)
    if (c.positions[size_t(s)] >= 0) ++occupied, max_pos = std::max(max_pos, c.positions[size_t(s)]);
  for (int64_t s = 0; s < n && int64_t(freed.size()) < c.incoming; ++s)
    if (c.positions[size_t(s)] == -1) freed.push_back(int32_t(s));
  struct Entry {
    double score;
    int64_t pos, slot;
  };
  std::vector<double> ranked(size_t(n), 0.0);
  for (int64_t s = 0; s < n; ++s) {
    const int64_t p = c.positions[size_t(s)];
    if (p < 0) continue;
    double sum = 0;
    for (int64_t r = 0; r < c.rows; ++r)
      sum = c.head_max ? (r == 0 ? c.scores[size_t(s)] : std::max(sum, c.scores[size_t(r * n + s)]))
                       : sum + c.scores[size_t(r * n + s)];
    if (c.mean) {  // the queries at positions p .. max_pos have seen the slot
      double seen = 0, w = 1;
      for (int64_t q = max_pos; q >= p; --q, w *= double(float(c.decay))) seen += w;
      sum = double(float(sum / seen));
    }
    ranked[size_t(s)] = sum;
  }
  std::vector<Entry> candidates;
  for (int64_t s = 0; s < n; ++s) {
    int64_t p = c.positions[size_t(s)];
    if (p < 0 || p < c.sinks || p > max_pos - c.window) continue;
    double score = ranked[size_t(s)];
    for (int64_t o = 0; o < n; ++o)  // pooling over every occupied slot near p
      if (c.pool > 0 && c.positions[size_t(o)] >= 0 && std::llabs(c.positions[size_t(o)] - p) <= c.pool)
        score = std::max(score, ranked[size_t(o)]);
    candidates.push_back({score, p, s});
  }
  std::sort(candidates.begin(), candidates.end(), [](const Entry &a, const Entry &b) {
    if (a.score != b.score) return a.score < b.score;
    if (a.pos != b.pos) return a.pos < b.pos;
    return a.slot < b.slot;
  });
  int64_t evict = std::max<int64_t>(0, occupied + c.incoming - c.budget);
  for (int64_t i = 0; i < evict; ++i) freed.push_back(int32_t(candidates.at(size_t(i)).slot));
  return freed;
}

struct EvictResult {
  sa_status status = SA_ERR_INTERNAL;
  std::vector<int32_t> freed;
  int64_t n_freed = -7;
};

// Runs the call with canaries around freed and a sentinel in n_freed. scores_strides lets a
// test describe [H, n] scores stored transposed.
EvictResult run_evict(sa_context *ctx, const EvictCase &c, int64_t freed_cap = -1, std::vector<int64_t> scores_strides = {}) {
  const int64_t n = int64_t(c.positions.size());
  Tensor scores = c.rows == 1 && scores_strides.empty() ? Tensor(SA_DTYPE_F32, {n})
                                                        : Tensor(SA_DTYPE_F32, {c.rows, n}, scores_strides);
  scores.set_values(c.scores);
  Tensor pos(SA_DTYPE_I64, {n});
  pos.set_values(std::vector<double>(c.positions.begin(), c.positions.end()));
  Tensor freed(SA_DTYPE_I32, {freed_cap >= 0 ? freed_cap : n + c.incoming});
  freed.poison();
  sa_evict_options o = SA_EVICT_OPTIONS_INIT;
  o.budget = c.budget;
  o.incoming = c.incoming;
  o.sinks = c.sinks;
  o.window = c.window;
  o.score_mean = c.mean;
  o.mass_decay = float(c.decay);
  o.head_max = c.head_max;
  o.recent_share = 0.f;  // the window alone, as the cases state it
  o.score_pool = c.pool;
  o.struct_size = c.struct_size;
  EvictResult r;
  r.status = sa_cache_evict(ctx, &o, scores.t(), pos.t(), freed.t(), &r.n_freed);
  if (r.status == SA_OK) {
    EXPECT_GE(r.n_freed, 0);
    EXPECT_LE(r.n_freed, freed.dim(0));
    // Only the first n_freed entries may change.
    EXPECT_TRUE(freed.only_elements_written());
    const int64_t canary = int32_t(0xA5A5A5A5u);
    for (int64_t i = 0; i < freed.dim(0); ++i) {
      if (i < r.n_freed) r.freed.push_back(int32_t(freed.get({i})));
      else {
        EXPECT_EQ(int64_t(freed.get({i})), canary) << "freed[" << i << "] written past n_freed";
      }
    }
  } else {
    EXPECT_TRUE(freed.untouched());
    EXPECT_EQ(r.n_freed, -7) << "n_freed written on failure";
    EXPECT_STRNE(sa_last_error(), "");
  }
  return r;
}

EvictCase full_cache(int64_t n, Rng &rng) {
  EvictCase c;
  c.positions.resize(size_t(n));
  std::iota(c.positions.begin(), c.positions.end(), 0);
  for (int64_t s = 0; s < n; ++s) c.scores.push_back(double(rng.below(64)) / 16);
  return c;
}

class Evict : public sat::ContextTest {};

TEST_F(Evict, DefaultsMatchInitMacro) {
  sa_evict_options a = SA_EVICT_OPTIONS_INIT, b = sa_evict_options_default();
  EXPECT_EQ(a.struct_size, b.struct_size);
  EXPECT_EQ(a.budget, b.budget);
  EXPECT_EQ(a.incoming, b.incoming);
  EXPECT_EQ(a.sinks, b.sinks);
  EXPECT_EQ(a.window, b.window);
}

TEST_F(Evict, FullCacheFreesOneForOneIncoming) {
  Rng rng(200);
  EvictCase c = full_cache(100, rng);
  c.budget = 100;
  c.sinks = 4;
  c.window = 8;
  c.scores[50] = -1;  // the clear loser
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.freed, std::vector<int32_t>({50}));
}

TEST_F(Evict, FreesExactlyTheExcessLowestFirst) {
  Rng rng(201);
  EvictCase c = full_cache(200, rng);
  c.budget = 180;
  c.incoming = 3;
  c.sinks = 2;
  c.window = 16;
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.n_freed, 23);
  EXPECT_EQ(r.freed, reference_evict(c));
}

TEST_F(Evict, NothingToFreeWritesNothing) {
  Rng rng(202);
  EvictCase c = full_cache(50, rng);
  c.budget = 60;
  c.sinks = 2;
  c.window = 8;
  EvictResult r = run_evict(ctx(), c);  // canaries checked inside
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.n_freed, 0);
}

TEST_F(Evict, SinksAndWindowAreNeverFreed) {
  Rng rng(203);
  EvictCase c = full_cache(100, rng);
  // The protected positions have the lowest scores of all.
  for (int64_t s : {0, 1, 2, 3, 90, 95, 99}) c.scores[size_t(s)] = -100;
  c.budget = 40;
  c.incoming = 0;
  c.sinks = 4;
  c.window = 10;
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.n_freed, 60);
  for (int32_t s : r.freed) {
    EXPECT_GE(c.positions[size_t(s)], 4);
    EXPECT_LE(c.positions[size_t(s)], 89);
  }
  EXPECT_EQ(r.freed, reference_evict(c));
}

TEST_F(Evict, WindowFollowsPositionsNotSlots) {
  // Slots hold positions in a scrambled order, as after earlier evictions.
  Rng rng(204);
  EvictCase c = full_cache(64, rng);
  for (int64_t s = 0; s < 64; ++s) c.positions[size_t(s)] = (s * 23) % 64 * 3;  // 0, 3, ..., 189
  c.sinks = 7;   // positions 0, 3, 6
  c.window = 5;  // positions 186, 189
  c.budget = 32;
  c.incoming = 2;
  for (double &x : c.scores) x = 1;  // all ties: older positions go first
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.freed, reference_evict(c));
  ASSERT_EQ(r.n_freed, 34);
  for (int64_t i = 0; i < 34; ++i) EXPECT_EQ(c.positions[size_t(r.freed[size_t(i)])], 9 + 3 * i);
}

TEST_F(Evict, TiesBreakByOlderPositionThenLowerSlot) {
  EvictCase c;
  // slot:        0  1  2  3  4  5  6  7
  c.positions = {0, 7, 5, 3, 6, 2, 4, 8};
  c.scores = {9, 1, 1, 1, 2, 1, 0.5, 9};
  c.sinks = 1;
  c.window = 1;  // position 8 (slot 7) protected, position 0 (slot 0) protected
  c.budget = 4;
  c.incoming = 1;
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  // Scores: slot 6 (0.5), then score 1 at positions 2 (slot 5), 3 (slot 3), 5 (slot 2), 7 (slot 1).
  EXPECT_EQ(r.freed, std::vector<int32_t>({6, 5, 3, 2, 1}));
}

TEST_F(Evict, EqualScoreAndPositionBreakByLowerSlot) {
  EvictCase c;
  c.positions = {9, 3, 3, 3, 10};  // duplicated positions (e.g. two sequences)
  c.scores = {5, 1, 1, 1, 5};
  c.sinks = 0;
  c.window = 1;
  c.budget = 3;
  c.incoming = 0;
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.freed, std::vector<int32_t>({1, 2}));
}

TEST_F(Evict, EmptySlotsComeFirst) {
  Rng rng(205);
  EvictCase c = full_cache(40, rng);
  for (int64_t s : {7, 12, 30}) c.positions[size_t(s)] = -1;  // 37 occupied
  c.sinks = 2;
  c.window = 4;
  c.budget = 37;
  c.incoming = 2;  // two empty slots take the new tokens; two occupied slots must go
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.freed, reference_evict(c));
  ASSERT_EQ(r.n_freed, 4);
  EXPECT_EQ(r.freed[0], 7);
  EXPECT_EQ(r.freed[1], 12);
}

TEST_F(Evict, EmptySlotsServeIncomingWithoutEviction) {
  Rng rng(206);
  EvictCase c = full_cache(20, rng);
  c.positions[3] = -1;
  c.positions[11] = -1;  // 18 occupied
  c.sinks = 1;
  c.window = 2;
  c.budget = 20;
  c.incoming = 2;
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.freed, std::vector<int32_t>({3, 11}));
}

TEST_F(Evict, PlantedHighScoreSurvives) {
  Rng rng(207);
  EvictCase c = full_cache(300, rng);
  c.scores[150] = 1000;
  c.sinks = 0;
  c.window = 0;
  c.budget = 10;
  c.incoming = 0;
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.n_freed, 290);
  EXPECT_EQ(std::find(r.freed.begin(), r.freed.end(), 150), r.freed.end());
}

TEST_F(Evict, PerHeadScoresAreSummed) {
  // Head 0 alone would free slot 5, head 1 alone slot 6; the sum decides.
  EvictCase c;
  c.positions = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  c.rows = 2;
  c.scores = {/* head 0 */ 9, 9, 9, 9, 9, 0, 5, 9, 9, 9,
              /* head 1 */ 9, 9, 9, 9, 9, 6, 0, 2, 9, 9};
  c.sinks = 1;
  c.window = 1;
  c.budget = 8;
  c.incoming = 0;
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.freed, std::vector<int32_t>({6, 5}));  // sums 5 (pos 6), 6 (pos 5); slot 7 sums 11
}

TEST_F(Evict, TransposedPerHeadScores) {
  Rng rng(208);
  EvictCase c = full_cache(64, rng);
  c.rows = 3;
  c.scores.clear();
  for (int64_t i = 0; i < 3 * 64; ++i) c.scores.push_back(double(rng.below(32)) / 16);
  c.sinks = 2;
  c.window = 4;
  c.budget = 50;
  c.incoming = 1;
  EvictResult r = run_evict(ctx(), c, -1, {1, 3});  // [3, 64] view of [64][3] storage
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.freed, reference_evict(c));
}

// Many random cases: positions scrambled with gaps and empties, frequent ties.
TEST_F(Evict, RandomCasesMatchReference) {
  Rng rng(209);
  for (int iter = 0; iter < 200; ++iter) {
    SCOPED_TRACE(testing::Message() << "case " << iter);
    EvictCase c;
    int64_t n = 8 + rng.below(120);
    c.rows = 1 + rng.below(3);
    std::vector<int64_t> perm(static_cast<size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = n - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
    int64_t occupied = 0;
    for (int64_t s = 0; s < n; ++s) {
      bool empty = rng.below(8) == 0;
      c.positions.push_back(empty ? -1 : perm[size_t(s)] * 2);
      occupied += !empty;
    }
    for (int64_t i = 0; i < c.rows * n; ++i) c.scores.push_back(double(rng.below(16)) / 16);
    c.sinks = int32_t(rng.below(4));
    c.window = int32_t(rng.below(8));
    c.incoming = rng.below(4);
    // A budget the protected slots leave room for.
    int64_t protected_max = c.sinks + c.window;  // positions are even: at most this many protected
    c.budget = protected_max + c.incoming + rng.below(std::max<int64_t>(1, occupied));
    c.budget = std::max<int64_t>(c.budget, 1);
    EvictResult r = run_evict(ctx(), c);
    ASSERT_SA_OK(r.status);
    EXPECT_EQ(r.freed, reference_evict(c));
  }
}

TEST_F(Evict, ThreadCountsAgree) {
  Rng rng(210);
  auto two = sat::make_context(2);
  ASSERT_NE(two, nullptr);
  EvictCase c = full_cache(5000, rng);
  c.budget = 4000;
  c.incoming = 16;
  EvictResult a = run_evict(ctx(), c), b = run_evict(two.get(), c);
  ASSERT_SA_OK(a.status);
  ASSERT_SA_OK(b.status);
  EXPECT_EQ(a.freed, b.freed);
  EXPECT_EQ(a.freed, reference_evict(c));
}

// budget = sinks + window + incoming is the smallest budget accepted, and it suffices: a full
// cache with distinct positions can always free a slot per step.
TEST_F(Evict, SmallestBudgetAlwaysFreesASlot) {
  Rng rng(211);
  EvictCase c = full_cache(13, rng);
  c.sinks = 4;
  c.window = 8;
  c.budget = 13;
  c.incoming = 1;
  for (int step = 0; step < 200; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    EvictResult r = run_evict(ctx(), c);
    ASSERT_SA_OK(r.status);
    ASSERT_EQ(r.freed, reference_evict(c));
    ASSERT_EQ(r.n_freed, 1);
    // The new token takes the slot, with the next position and a random score.
    c.positions[size_t(r.freed[0])] = *std::max_element(c.positions.begin(), c.positions.end()) + 1;
    c.scores[size_t(r.freed[0])] = double(rng.below(64)) / 16;
  }
}

// ------------------------------------------------------------------ refused inputs

TEST_F(Evict, BudgetBelowSinksWindowIncomingIsRefused) {
  Rng rng(212);
  // Refused whatever the cache holds, a small cache included: the budget can never work.
  for (int64_t n : {100, 10}) {
    EvictCase c = full_cache(n, rng);
    c.sinks = 4;
    c.window = 16;
    c.budget = 20;  // 4 + 16 + 1 incoming = 21
    c.incoming = 1;
    EvictResult r = run_evict(ctx(), c);
    EXPECT_EQ(r.status, SA_ERR_INVALID_ARGUMENT) << sa_status_name(r.status);
    EXPECT_NE(std::string(sa_last_error()).find("budget"), std::string::npos) << sa_last_error();
    c.budget = 21;
    EXPECT_SA_OK(run_evict(ctx(), c).status);
  }
}

// Repeated positions (e.g. several sequences in one cache) can protect more slots than
// sinks + window: refused when nothing evictable is left.
TEST_F(Evict, RepeatedProtectedPositionsExceedingBudgetAreRefused) {
  EvictCase c;
  c.positions = {0, 5, 9, 9, 9, 9, 9, 9};  // six slots in the window of position 9
  c.scores.assign(8, 1.0);
  c.sinks = 1;
  c.window = 2;
  c.budget = 6;
  c.incoming = 1;  // 8 + 1 - 6 = 3 to free, only slot 1 (position 5) is evictable
  EvictResult r = run_evict(ctx(), c);
  EXPECT_EQ(r.status, SA_ERR_INVALID_ARGUMENT) << sa_status_name(r.status);
  EXPECT_NE(std::string(sa_last_error()).find("positions repeat"), std::string::npos) << sa_last_error();
}

TEST_F(Evict, NanScoreIsRefused) {
  Rng rng(213);
  EvictCase c = full_cache(50, rng);
  c.sinks = 1;
  c.window = 1;
  c.budget = 40;
  c.scores[20] = std::nan("");
  EXPECT_EQ(run_evict(ctx(), c).status, SA_ERR_INVALID_ARGUMENT);
  c.rows = 2;  // a NaN in one head row
  c.scores.assign(100, 0.5);
  c.scores[77] = std::nan("");
  EXPECT_EQ(run_evict(ctx(), c).status, SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("NaN"), std::string::npos) << sa_last_error();
  c.scores[77] = INFINITY;  // +inf and -inf summed over the heads make a NaN
  c.scores[27] = -INFINITY;
  EXPECT_EQ(run_evict(ctx(), c).status, SA_ERR_INVALID_ARGUMENT);
}

// Infinite scores are ordinary extremes: -inf goes first, +inf stays.
TEST_F(Evict, InfiniteScoresAreOrdered) {
  Rng rng(215);
  EvictCase c = full_cache(30, rng);
  c.sinks = 1;
  c.window = 1;
  c.budget = 27;
  c.incoming = 1;  // 4 to free
  c.scores[20] = -INFINITY;
  c.scores[5] = INFINITY;
  for (int64_t s : {6, 7, 8}) c.scores[size_t(s)] = -1;
  EvictResult r = run_evict(ctx(), c);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.freed, std::vector<int32_t>({20, 6, 7, 8}));
}

TEST_F(Evict, FreedTooSmallIsRefused) {
  Rng rng(214);
  EvictCase c = full_cache(50, rng);
  c.sinks = 1;
  c.window = 1;
  c.budget = 40;
  c.incoming = 2;  // 12 to free
  EXPECT_EQ(run_evict(ctx(), c, 11).status, SA_ERR_SHAPE);
  EvictResult r = run_evict(ctx(), c, 12);
  ASSERT_SA_OK(r.status);
  EXPECT_EQ(r.n_freed, 12);
}

TEST_F(Evict, MismatchedLengthsAreRefused) {
  Tensor scores(SA_DTYPE_F32, {10}), pos(SA_DTYPE_I64, {11}), freed(SA_DTYPE_I32, {11});
  scores.set_values(std::vector<double>(10, 1.0));
  std::vector<double> p(11);
  std::iota(p.begin(), p.end(), 0.0);
  pos.set_values(p);
  freed.poison();
  sa_evict_options o = SA_EVICT_OPTIONS_INIT;
  o.budget = 5;
  o.sinks = 0;
  o.window = 0;
  int64_t n = -7;
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx(), &o, scores.t(), pos.t(), freed.t(), &n));
  Tensor per_head(SA_DTYPE_F32, {2, 10});  // [H, n] with the wrong n
  per_head.set_values(std::vector<double>(20, 1.0));
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_cache_evict(ctx(), &o, per_head.t(), pos.t(), freed.t(), &n));
  EXPECT_NE(std::string(sa_last_error()).find("positions.shape[0]"), std::string::npos) << sa_last_error();
  EXPECT_EQ(n, -7);
  EXPECT_TRUE(freed.untouched());
}

}  // namespace

// The default ranks by attention per step seen: an old slot that gathered much mass long ago
// goes before a young one whose sum is smaller but whose rate is higher. (The plain sum, the
// default before, evicts the young one: a fixed-budget cache then fills with stale tokens.)
TEST_F(Evict, DefaultRanksByMassPerStepSeen) {
  EvictCase c;
  c.positions = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};  // max_pos 9: position p seen by 10 - p queries
  for (int64_t p : c.positions) c.scores.push_back(double(10 * (10 - p)));  // 10 per step
  c.scores[2] = 4;     // 8 steps: 0.5 per step
  c.scores[7] = 2.25;  // 3 steps: 0.75 per step
  c.sinks = 1;
  c.window = 1;
  c.budget = 10;
  c.incoming = 1;
  Tensor scores(SA_DTYPE_F32, {10}), pos(SA_DTYPE_I64, {10}), freed(SA_DTYPE_I32, {2});
  scores.set_values(c.scores);
  pos.set_values(std::vector<double>(c.positions.begin(), c.positions.end()));
  sa_evict_options o = SA_EVICT_OPTIONS_INIT;  // the defaults, as a host gets them
  o.budget = c.budget;
  o.sinks = c.sinks;
  o.window = c.window;
  int64_t n = 0;
  ASSERT_SA_OK(sa_cache_evict(ctx(), &o, scores.t(), pos.t(), freed.t(), &n));
  ASSERT_EQ(n, 1);
  EXPECT_EQ(int32_t(freed.get({0})), 2);
  c.mean = true;
  c.decay = 0.99;  // the default decay; the default recent share protects positions 6 .. 9 too
  EXPECT_EQ(reference_evict(c), std::vector<int32_t>({2}));
  c.mean = false;  // the plain sum would have evicted the young slot
  EXPECT_EQ(reference_evict(c), std::vector<int32_t>({7}));
  EXPECT_EQ(run_evict(ctx(), c).freed, std::vector<int32_t>({7}));
}

// mass_decay d weighs the queries that saw a slot like slot_mass does: age a counts
// 1 + d + ... + d^(a-1). d = 0 ranks by the last query alone (TOVA).
TEST_F(Evict, MeanFollowsTheDecay) {
  EvictCase c;
  c.positions = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  c.scores = {9, 9, 1.75, 9, 9, 9, 9, 1.5, 9, 9};
  c.sinks = 1;
  c.window = 1;
  c.budget = 10;
  c.mean = true;
  // d = 1: 1.75 / 8 < 1.5 / 3. d = 0.5: 1.75 / 1.9921875 > 1.5 / 1.75. d = 0: raw.
  c.decay = 1.0;
  EXPECT_EQ(run_evict(ctx(), c).freed, std::vector<int32_t>({2}));
  EXPECT_EQ(reference_evict(c), std::vector<int32_t>({2}));
  c.decay = 0.5;
  EXPECT_EQ(run_evict(ctx(), c).freed, std::vector<int32_t>({7}));
  EXPECT_EQ(reference_evict(c), std::vector<int32_t>({7}));
  c.decay = 0.0;
  EXPECT_EQ(run_evict(ctx(), c).freed, std::vector<int32_t>({7}));
}

TEST_F(Evict, HeadMaxRanksByTheBestRow) {
  // Slot 5: sum 6, best row 3. Slot 6: sum 5, best row 5. The rest: sum 18, best 9.
  EvictCase c;
  c.positions = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  c.rows = 2;
  c.scores = {/* head 0 */ 9, 9, 9, 9, 9, 3, 0, 9, 9, 9,
              /* head 1 */ 9, 9, 9, 9, 9, 3, 5, 9, 9, 9};
  c.sinks = 1;
  c.window = 1;
  c.budget = 9;
  c.incoming = 0;
  EXPECT_EQ(run_evict(ctx(), c).freed, std::vector<int32_t>({6}));
  c.head_max = true;
  EXPECT_EQ(run_evict(ctx(), c).freed, std::vector<int32_t>({5}));
  EXPECT_EQ(reference_evict(c), std::vector<int32_t>({5}));
}

TEST_F(Evict, RandomMeanCasesMatchReference) {
  Rng rng(211);
  const double decays[] = {1.0, 0.99, 0.9, 0.5, 0.0};
  for (int iter = 0; iter < 300; ++iter) {
    SCOPED_TRACE(testing::Message() << "case " << iter);
    EvictCase c;
    const int64_t n = 8 + rng.below(120);
    c.rows = 1 + rng.below(3);
    c.mean = true;
    c.decay = decays[rng.below(5)];
    c.head_max = rng.below(2) == 1;
    std::vector<int64_t> perm(static_cast<size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = n - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
    int64_t occupied = 0;
    for (int64_t s = 0; s < n; ++s) {
      const bool empty = rng.below(8) == 0;
      c.positions.push_back(empty ? -1 : perm[size_t(s)] * 2);
      occupied += !empty;
    }
    for (int64_t i = 0; i < c.rows * n; ++i) c.scores.push_back(double(rng.below(64)) / 16);
    c.sinks = int32_t(rng.below(4));
    c.window = int32_t(rng.below(8));
    c.incoming = rng.below(4);
    c.budget = std::max<int64_t>(1, c.sinks + c.window + c.incoming + rng.below(std::max<int64_t>(1, occupied)));
    EvictResult r = run_evict(ctx(), c);
    ASSERT_SA_OK(r.status);
    EXPECT_EQ(r.freed, reference_evict(c)) << "decay " << c.decay << " head_max " << c.head_max;
  }
}

TEST_F(Evict, RandomPooledCasesMatchReference) {
  Rng rng(213);
  const double decays[] = {1.0, 0.99, 0.9};
  for (int iter = 0; iter < 300; ++iter) {
    SCOPED_TRACE(testing::Message() << "case " << iter);
    EvictCase c;
    const int64_t n = 8 + rng.below(120);
    c.rows = 1 + rng.below(2);
    c.mean = rng.below(2) == 1;
    c.decay = decays[rng.below(3)];
    c.pool = int32_t(1 + rng.below(6));
    int64_t occupied = 0;
    for (int64_t s = 0; s < n; ++s) {  // positions in a shuffled order, some repeated, some gaps
      const bool empty = rng.below(8) == 0;
      c.positions.push_back(empty ? -1 : rng.below(2 * n));
      occupied += !empty;
    }
    for (int64_t i = 0; i < c.rows * n; ++i) c.scores.push_back(double(rng.below(64)) / 16);
    c.sinks = int32_t(rng.below(4));
    c.window = int32_t(rng.below(8));
    c.incoming = rng.below(3);
    // Repeated positions may protect more than sinks + window slots: count them for the budget.
    int64_t max_pos = -1, protect = 0;
    for (int64_t p : c.positions) max_pos = std::max(max_pos, p);
    for (int64_t p : c.positions) protect += p >= 0 && (p < c.sinks || p > max_pos - c.window);
    c.budget = std::max<int64_t>(1, std::max<int64_t>(c.sinks + c.window, protect) + c.incoming +
                                        rng.below(std::max<int64_t>(1, occupied)));
    EvictResult r = run_evict(ctx(), c);
    ASSERT_SA_OK(r.status);
    EXPECT_EQ(r.freed, reference_evict(c)) << "pool " << c.pool << " mean " << c.mean;
  }
}

TEST_F(Evict, PoolingKeepsTheNeighboursOfAnAttendedToken) {
  // Positions 0..19, one attended token at 10; sinks 0, window 2, 6 slots to free. Without pooling
  // 9 and 11 score 0 like the rest and the oldest go first; with pool 1 they rank with 10.
  EvictCase c;
  for (int64_t p = 0; p < 20; ++p) c.positions.push_back(p), c.scores.push_back(p == 10 ? 1.0 : 0.0);
  c.sinks = 0, c.window = 2, c.budget = 15, c.incoming = 1;
  EvictResult own = run_evict(ctx(), c);
  ASSERT_SA_OK(own.status);
  EXPECT_EQ(own.freed, (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  c.budget = 8;  // 13 to free: 9 and 11 go without pooling
  own = run_evict(ctx(), c);
  ASSERT_SA_OK(own.status);
  EXPECT_NE(std::find(own.freed.begin(), own.freed.end(), 9), own.freed.end());
  c.pool = 1;
  EvictResult pooled = run_evict(ctx(), c);
  ASSERT_SA_OK(pooled.status);
  EXPECT_EQ(pooled.freed, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15}));
  EXPECT_EQ(pooled.freed, reference_evict(c));
  c.pool = -1;
  EXPECT_EQ(run_evict(ctx(), c).status, SA_ERR_INVALID_ARGUMENT);
}

TEST_F(Evict, HostsBuiltBeforePoolingGetItsDefault) {
  // The struct before score_pool was 56 bytes, its last 4 padding: a host built then passes 56,
  // whatever those bytes hold, and must get no pooling (score_pool starts at byte 56).
  static_assert(offsetof(sa_evict_options, score_pool) >= 56, "score_pool would overlap old hosts' padding");
  EvictCase c;
  for (int64_t p = 0; p < 20; ++p) c.positions.push_back(p), c.scores.push_back(p == 10 ? 1.0 : 0.0);
  c.sinks = 0, c.window = 2, c.budget = 8, c.incoming = 1, c.pool = 1;
  c.struct_size = 56;
  const EvictResult old = run_evict(ctx(), c);
  ASSERT_SA_OK(old.status);
  c.pool = 0;
  c.struct_size = sizeof(sa_evict_options);
  EXPECT_EQ(old.freed, reference_evict(c));
}

TEST_F(Evict, MassDecayOutsideUnitIntervalIsRefused) {
  Rng rng(212);
  EvictCase c = full_cache(100, rng);
  c.budget = 90;
  c.mean = true;
  for (double d : {-0.5, 1.5, double(NAN)}) {
    c.decay = d;
    EXPECT_EQ(run_evict(ctx(), c).status, SA_ERR_INVALID_ARGUMENT) << d;
  }
}
