// sa_index_truncate and sa_index_clone for every selector kind. An index truncated to M
// slots must select bit for bit like one built directly by the same appends (the one that
// held slot M cut there), and go on doing so as both grow; a clone must select like its
// source and then change independently of it. Keys (and the learned and indexer weights) are
// multiples of small powers of two, so every projection is exact in f32 whatever the order
// of its sums: a batch's matrix product and a short append's loop agree, and the comparisons
// can be exact for the learned and indexer selectors too.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "build_features.hpp"
#include "test_util.hpp"
#include "weights_file.hpp"

namespace {

using namespace sat;

constexpr int kHkv = 2, kHq = 4, kD = 32;
constexpr int kSearch = 8, kIndexHeads = 2;  // learned d_search; indexer heads (d_index = kSearch)
constexpr int64_t kPool = 1024;

// Appends of a prompt, decode steps and chunks; LSH rebuilds after 40, 91 and 182 keys.
const std::vector<int64_t> kAppends = {40, 1, 1, 5, 1, 13, 1, 7, 1, 1, 20, 30, 1, 60, 3, 1, 50, 1, 1};
constexpr int64_t kN = 238;  // their sum
// Appends after a truncation, crossing LSH's next rebuilds.
const std::vector<int64_t> kMore = {1, 3, 70, 1, 60};

struct Kind {
  const char *name;
  sa_selector_kind kind;
  int refine = 1;       // page
  int64_t rescore = 0;  // learned
};

double quantize(double x, double step) { return std::nearbyint(x / step) * step; }

std::vector<double> quantized(Rng &rng, size_t n, double step, double sigma = 1.0) {
  std::vector<double> v(n);
  for (double &x : v) x = quantize(sigma * rng.normal(), step);
  return v;
}

// One file with the learned (layer 0: one shared projection each) and indexer tensors.
const std::string &weights_path() {
  static const std::string path = [] {
    Rng rng(5);
    const int64_t in_q = int64_t(kHq) * kD, in_k = int64_t(kHkv) * kD;
    return wf::write_file(wf::file_bytes({
        {"layers.0.q_proj", "F32", {kSearch, kD}, quantized(rng, kSearch * kD, 0.125, 0.5), ""},
        {"layers.0.k_proj", "F32", {kSearch, kD}, quantized(rng, kSearch * kD, 0.125, 0.5), ""},
        {"layers.0.indexer.q_proj", "F32", {kIndexHeads, kSearch, in_q}, quantized(rng, size_t(kIndexHeads * kSearch * in_q), 0.125, 0.5), ""},
        {"layers.0.indexer.head_weights", "F32", {kIndexHeads, in_q}, quantized(rng, size_t(kIndexHeads * in_q), 0.125, 0.5), ""},
        {"layers.0.indexer.k_proj", "F32", {kSearch, in_k}, quantized(rng, size_t(kSearch * in_k), 0.125, 0.5), ""},
    }));
  }();
  return path;
}

sa_index_options options_for(const Kind &k) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = k.kind;
  o.num_kv_heads = kHkv;
  o.head_dim = kD;
  o.dtype = SA_DTYPE_F16;
  o.page.page_size = 8;
  o.page.refine = k.refine;
  o.lsh.rounds = 3;  // few tables and probes: candidates are a small part of the keys
  o.lsh.bits = 0;
  o.lsh.probes = 1;
  o.hnsw.m = 4;
  o.hnsw.ef_construction = 16;
  o.hnsw.ef_search = 8;  // with top_k 8, queries seeing more than 16 keys search the graph
  o.learned.weights_path = weights_path().c_str();
  o.learned.layer = 0;
  o.learned.rescore = k.rescore;
  return o;
}

IndexPtr create(sa_context *ctx, const Kind &k) {
  const sa_index_options o = options_for(k);
  sa_index *ix = nullptr;
  const sa_status s = sa_index_create(ctx, &o, &ix);
  EXPECT_EQ(s, SA_OK) << sa_last_error();
  return IndexPtr(s == SA_OK ? ix : nullptr);
}

// Keys [kPool, H_kv, D], multiples of 1/16 (exact in f16).
Tensor key_pool(uint64_t seed) {
  Rng rng(seed);
  Tensor t(SA_DTYPE_F32, {kPool, kHkv, kD});
  t.set_values(quantized(rng, size_t(kPool * kHkv * kD), 1.0 / 16));
  return t;
}

// Rows [first, last) of a contiguous pool, without a copy.
sa_tensor rows(Tensor &pool, int64_t first, int64_t last) {
  sa_tensor t = *pool.t();
  t.data = static_cast<float *>(pool.data()) + first * kHkv * kD;
  t.shape[0] = last - first;
  return t;
}

// Appends pool rows [from, from + sum(sizes)) in the given appends, stopping after `limit` rows.
void append_in(sa_index *ix, Tensor &pool, int64_t from, const std::vector<int64_t> &sizes, int64_t limit) {
  int64_t done = 0;
  for (int64_t n : sizes) {
    const int64_t take = std::min(n, limit - done);
    if (take <= 0) break;
    const sa_tensor t = rows(pool, from + done, from + done + take);
    ASSERT_SA_OK(sa_index_append(ix, &t));
    done += take;
  }
}

int64_t size_of(const sa_index *ix) {
  int64_t n = -1;
  EXPECT_SA_OK(sa_index_size(ix, &n));
  return n;
}

struct Selection {
  std::vector<double> lists, per_head;
};

// Two selections: top_k 8 + window 4 + sinks 2 for the last three positions; and per query
// head, with causal query positions early and late in the index (mass target where allowed).
Selection select_both(sa_index *ix, const Kind &k) {
  static const Tensor q = [] {
    Rng rng(99);
    Tensor t(SA_DTYPE_F32, {3, kHq, kD});
    t.set_values(quantized(rng, size_t(3 * kHq * kD), 1.0 / 16));
    return t;
  }();
  Selection out;
  sa_select_options a = select_options(8, 4, 2);
  Tensor ia(SA_DTYPE_I32, {3, kHkv, 14});
  EXPECT_SA_OK(sa_select(ix, q.t(), &a, ia.t()));
  out.lists = ia.values();

  const int64_t n = size_of(ix);
  const int64_t pos[3] = {std::max<int64_t>(n - 2, 0), n / 2, n / 3};
  sa_select_options b = select_options(8, 3, 1);
  b.query_positions = pos;
  b.per_query_head = 1;
  if (k.kind != SA_SELECTOR_INDEXER) b.mass_target = 0.95f;
  Tensor ib(SA_DTYPE_I32, {3, kHq, 12});
  EXPECT_SA_OK(sa_select(ix, q.t(), &b, ib.t()));
  out.per_head = ib.values();
  return out;
}

void expect_same(sa_index *got, sa_index *want, const Kind &k, const std::string &what) {
  ASSERT_EQ(size_of(got), size_of(want)) << what;
  const Selection a = select_both(got, k), b = select_both(want, k);
  EXPECT_EQ(a.lists, b.lists) << what;
  EXPECT_EQ(a.per_head, b.per_head) << what;
}

class Lifecycle : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    ctx_ = make_context(1);  // selections do not depend on threads; one keeps the suite quick
    ASSERT_NE(ctx_, nullptr);
  }
  sa_context *ctx() { return ctx_.get(); }
  ContextPtr ctx_;
  Tensor pool_ = key_pool(1), other_ = key_pool(2), third_ = key_pool(3);
};

TEST_P(Lifecycle, TruncateSelectsLikeADirectBuildAndKeepsGrowingLikeIt) {
  const Kind k = GetParam();
  // 0, 1, a page boundary, mid page in the first append, cuts inside later appends (LSH: with
  // the tables of the last rebuild before the cut drawn again, 45 and 100, or kept, 200; or
  // rebuilt at the cut, 80), an LSH rebuild point (91), an append boundary (236), past the end.
  for (int64_t m : {0, 1, 16, 21, 45, 80, 91, 100, 200, 236, 500}) {
    const std::string at = std::string(k.name) + ", truncated to " + std::to_string(m);
    IndexPtr a = create(ctx(), k), b = create(ctx(), k);
    ASSERT_TRUE(a && b);
    append_in(a.get(), pool_, 0, kAppends, kN);
    append_in(b.get(), pool_, 0, kAppends, m);
    ASSERT_SA_OK(sa_index_truncate(a.get(), m));
    expect_same(a.get(), b.get(), k, at);
    // Both grow by the same appends: new positions continue from the kept ones.
    int64_t from = 0;
    for (int64_t n : kMore) {
      append_in(a.get(), other_, from, {n}, n);
      append_in(b.get(), other_, from, {n}, n);
      from += n;
      if (n == 1 && from > 1) continue;  // compared after the first key and after the chunks
      expect_same(a.get(), b.get(), k, at + ", then " + std::to_string(from) + " more");
    }
  }
}

// `pool` with rows `slots` replaced by rows from `src` (from src_first on): the keys an index
// holds after refilling those slots.
Tensor refilled(const Tensor &pool, const std::vector<int32_t> &slots, const Tensor &src, int64_t src_first) {
  Tensor t = pool;
  for (size_t i = 0; i < slots.size(); ++i)
    for (int h = 0; h < kHkv; ++h)
      for (int d = 0; d < kD; ++d) t.set({slots[i], h, d}, src.get({src_first + int64_t(i), h, d}));
  return t;
}

TEST_P(Lifecycle, TruncateDropsDraftsAfterAnUpdate) {
  const Kind k = GetParam();
  const bool hnsw = k.kind == SA_SELECTOR_HNSW;
  // Eviction refills four slots. HNSW does not replay updates (its graphs are built again from
  // the current keys as if appended), so there the refills keep their slots' positions and the
  // reference is built by appending the refilled keys in the same appends.
  const std::vector<int32_t> slots = {3, 10, 50, 77};
  const std::vector<int64_t> same_positions = {3, 10, 50, 77};
  const int64_t *positions = hnsw ? same_positions.data() : nullptr;  // NULL: 100 .. 103
  const sa_tensor refill = rows(other_, 500, 504);
  Tensor current = refilled(pool_, slots, other_, 500);

  auto build = [&](int64_t drafts_kept) {
    IndexPtr ix = create(ctx(), k);
    if (!ix) return ix;
    if (hnsw) {
      append_in(ix.get(), current, 0, kAppends, 100);
    } else {
      append_in(ix.get(), pool_, 0, kAppends, 100);
      EXPECT_SA_OK(sa_index_update(ix.get(), slots.data(), 4, &refill, positions));
    }
    append_in(ix.get(), third_, 0, {7}, drafts_kept);  // the drafts, in one append
    return ix;
  };
  IndexPtr a = create(ctx(), k);
  ASSERT_TRUE(a);
  append_in(a.get(), pool_, 0, kAppends, 100);
  ASSERT_SA_OK(sa_index_update(a.get(), slots.data(), 4, &refill, positions));
  append_in(a.get(), third_, 0, {7}, 7);
  const int64_t first_draft = hnsw ? 100 : 104;  // the drafts' first position

  // A cut that would keep a slot holding a dropped position is refused, the index unchanged.
  if (!hnsw) {
    EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_index_truncate(a.get(), 102));  // slots 50 and 77 hold 102, 103
    IndexPtr all = build(7);
    ASSERT_TRUE(all);
    expect_same(a.get(), all.get(), k, std::string(k.name) + ", refused cut");
  }
  // Keep three drafts, then none.
  ASSERT_SA_OK(sa_index_truncate(a.get(), first_draft + 3));
  IndexPtr three = build(3);
  ASSERT_TRUE(three);
  expect_same(a.get(), three.get(), k, std::string(k.name) + ", three drafts kept");
  ASSERT_SA_OK(sa_index_truncate(a.get(), first_draft));
  IndexPtr none = build(0);
  ASSERT_TRUE(none);
  expect_same(a.get(), none.get(), k, std::string(k.name) + ", drafts dropped");
  // The accepted tokens follow.
  append_in(a.get(), third_, 100, {1, 2}, 3);
  append_in(none.get(), third_, 100, {1, 2}, 3);
  expect_same(a.get(), none.get(), k, std::string(k.name) + ", after the next appends");
}

TEST_P(Lifecycle, CloneSelectsLikeItsSourceAndChangesIndependently) {
  const Kind k = GetParam();
  // The truncation below cuts the clone's keys before a rebuild that followed the refill: HNSW
  // and LSH then build their state again from the current keys, so there the refill keeps the
  // slots' positions and the reference is built by appending the current keys.
  const bool from_current = k.kind == SA_SELECTOR_HNSW || k.kind == SA_SELECTOR_LSH;
  const std::vector<int32_t> slots = {5, 60};
  const std::vector<int64_t> same_positions = {5, 60};
  const sa_tensor refill = rows(other_, 600, 602);
  // The shared prefix: appends, one refill (positions 100, 101, or the slots' own).
  auto prefix = [&]() {
    IndexPtr ix = create(ctx(), k);
    if (!ix) return ix;
    append_in(ix.get(), pool_, 0, kAppends, 100);
    EXPECT_SA_OK(sa_index_update(ix.get(), slots.data(), 2, &refill, from_current ? same_positions.data() : nullptr));
    return ix;
  };
  const int64_t first_new = from_current ? 100 : 102;  // position of the first key after the prefix
  IndexPtr a = prefix();
  ASSERT_TRUE(a);
  sa_index *raw = nullptr;
  ASSERT_SA_OK(sa_index_clone(a.get(), &raw));
  IndexPtr c(raw);
  ASSERT_NE(c, nullptr);
  expect_same(c.get(), a.get(), k, std::string(k.name) + ", fresh clone");

  // Each grows its own way (90 keys: past LSH's next rebuild); each must match a direct build.
  append_in(a.get(), other_, 0, {1, 89}, 90);
  append_in(c.get(), third_, 0, {45, 1, 44}, 90);
  IndexPtr a_direct = prefix(), c_direct = prefix();
  ASSERT_TRUE(a_direct && c_direct);
  append_in(a_direct.get(), other_, 0, {1, 89}, 90);
  append_in(c_direct.get(), third_, 0, {45, 1, 44}, 90);
  expect_same(a.get(), a_direct.get(), k, std::string(k.name) + ", source after diverging");
  expect_same(c.get(), c_direct.get(), k, std::string(k.name) + ", clone after diverging");

  // A clone of the clone, truncated, leaves the clone alone; the source may go first.
  ASSERT_SA_OK(sa_index_clone(c.get(), &raw));
  IndexPtr cc(raw);
  ASSERT_SA_OK(sa_index_truncate(cc.get(), first_new + 44));  // the first 44 of the clone's new keys stay
  a.reset();
  expect_same(c.get(), c_direct.get(), k, std::string(k.name) + ", clone after its clone was truncated");
  IndexPtr cc_direct = from_current ? create(ctx(), k) : prefix();
  ASSERT_TRUE(cc_direct);
  Tensor current = refilled(pool_, slots, other_, 600);
  if (from_current) append_in(cc_direct.get(), current, 0, kAppends, 100);
  append_in(cc_direct.get(), third_, 0, {45, 1, 44}, 44);
  expect_same(cc.get(), cc_direct.get(), k, std::string(k.name) + ", truncated clone of the clone");

  // An empty index clones to an empty index that grows like a new one.
  IndexPtr empty = create(ctx(), k);
  ASSERT_SA_OK(sa_index_clone(empty.get(), &raw));
  IndexPtr empty_clone(raw);
  EXPECT_EQ(size_of(empty_clone.get()), 0);
  append_in(empty_clone.get(), pool_, 0, kAppends, 50);
  append_in(empty.get(), pool_, 0, kAppends, 50);
  expect_same(empty_clone.get(), empty.get(), k, std::string(k.name) + ", clone of an empty index");
}

const std::vector<Kind> kKinds = sat::built_only<Kind>({
    {"exact", SA_SELECTOR_EXACT},
    {"page", SA_SELECTOR_PAGE, 0},            // bounds alone decide
    {"page_refine", SA_SELECTOR_PAGE, 1},
    {"lsh", SA_SELECTOR_LSH},
    {"hnsw", SA_SELECTOR_HNSW},
    {"learned", SA_SELECTOR_LEARNED, 1, 0},   // the search space alone
    {"learned_rescore", SA_SELECTOR_LEARNED, 1, 2},
    {"indexer", SA_SELECTOR_INDEXER},
}, [](const Kind &k) { return k.kind; });

INSTANTIATE_TEST_SUITE_P(Kinds, Lifecycle, ::testing::ValuesIn(kKinds),
                         [](const ::testing::TestParamInfo<Kind> &i) { return std::string(i.param.name); });

// ------------------------------------------------------------------ concurrency

// Clones made while other threads select on the source select like it.
TEST(LifecycleThreads, CloneWhileOthersSelect) {
  for (const Kind &k : {kKinds[0], kKinds[3], kKinds[4]}) {
    ContextPtr ctx = make_context(1);
    ASSERT_NE(ctx, nullptr);
    Tensor pool = key_pool(4);
    IndexPtr ix = create(ctx.get(), k);
    ASSERT_TRUE(ix);
    append_in(ix.get(), pool, 0, kAppends, kN);
    const Selection want = select_both(ix.get(), k);
    std::atomic<bool> stop{false};
    std::atomic<int> mismatches{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t)
      readers.emplace_back([&] {
        while (!stop) {
          const Selection s = select_both(ix.get(), k);
          if (s.lists != want.lists || s.per_head != want.per_head) ++mismatches;
        }
      });
    for (int i = 0; i < 20; ++i) {
      sa_index *raw = nullptr;
      EXPECT_SA_OK(sa_index_clone(ix.get(), &raw));
      IndexPtr c(raw);
      const Selection got = select_both(c.get(), k);
      EXPECT_EQ(got.lists, want.lists) << k.name << ", clone " << i;
      EXPECT_EQ(got.per_head, want.per_head) << k.name << ", clone " << i;
    }
    stop = true;
    for (std::thread &t : readers) t.join();
    EXPECT_EQ(mismatches.load(), 0) << k.name;
  }
}

// ------------------------------------------------------------------ bad input

class LifecycleBadInput : public ContextTest {};

TEST_F(LifecycleBadInput, TruncateRefusesWhatItCannotDoAndLeavesTheIndexAlone) {
  Tensor pool = key_pool(6);
  const Kind k{"exact", SA_SELECTOR_EXACT};
  IndexPtr ix = create(ctx(), k);
  ASSERT_TRUE(ix);
  append_in(ix.get(), pool, 0, kAppends, 60);
  const Selection before = select_both(ix.get(), k);

  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_index_truncate(nullptr, 0));
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_index_truncate(ix.get(), -1));
  EXPECT_NE(std::string(sa_last_error()).find("position"), std::string::npos) << sa_last_error();
  // Slot 7 refilled with position 60, after which slots 8 .. 59 hold lower positions.
  const int32_t slot = 7;
  const sa_tensor refill = rows(pool, 700, 701);
  ASSERT_SA_OK(sa_index_update(ix.get(), &slot, 1, &refill, nullptr));
  const Selection updated = select_both(ix.get(), k);
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_index_truncate(ix.get(), 60));
  EXPECT_NE(std::string(sa_last_error()).find("slot 7"), std::string::npos) << sa_last_error();
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_index_truncate(ix.get(), 30));
  EXPECT_EQ(size_of(ix.get()), 60);
  const Selection after = select_both(ix.get(), k);
  EXPECT_EQ(after.lists, updated.lists);
  EXPECT_EQ(after.per_head, updated.per_head);
  EXPECT_NE(updated.lists, before.lists);  // the refill mattered: the comparison above sees changes
  // Past every position: nothing to drop.
  ASSERT_SA_OK(sa_index_truncate(ix.get(), 61));
  ASSERT_SA_OK(sa_index_truncate(ix.get(), INT64_MAX));
  EXPECT_EQ(size_of(ix.get()), 60);
  // Dropping the refilled slot's position alone is allowed only when it is last: it is not.
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_index_truncate(ix.get(), 59));
  // An empty index truncates to itself.
  IndexPtr empty = create(ctx(), k);
  ASSERT_SA_OK(sa_index_truncate(empty.get(), 0));
  EXPECT_EQ(size_of(empty.get()), 0);
}

// ------------------------------------------------------------------ positions after updates

// One KV head, D = 4: key s is (score_s, 0, 0, 0) so that a query (1, 0, 0, 0) ranks slots by
// the scores given.
Tensor scored_keys(const std::vector<double> &scores) {
  std::vector<double> v;
  for (double x : scores) v.insert(v.end(), {x, 0, 0, 0});
  return tensor_of(SA_DTYPE_F32, {int64_t(scores.size()), 1, 4}, v);
}

std::vector<int32_t> select_one(sa_index *ix, sa_select_options o, int64_t width, const int64_t *qpos = nullptr) {
  const Tensor q = tensor_of(SA_DTYPE_F32, {1, 1, 4}, {1, 0, 0, 0});
  Tensor out(SA_DTYPE_I32, {1, 1, width});
  o.query_positions = qpos;
  EXPECT_SA_OK(sa_select(ix, q.t(), &o, out.t()));
  return row_of(out, 0, 0);
}

// Known bug 2 of the API fuzzer: moving the slot that held the largest position to a smaller
// one must lower the index's largest position, which default query positions and the next
// append count from.
TEST_F(LifecycleBadInput, UpdateThatMovesTheLargestPositionBackLowersIt) {
  IndexPtr ix = make_index(ctx(), 1, 4);
  ASSERT_TRUE(ix);
  // Slots 0..9 at positions 0..9; slot 8 scores lowest, so only the window can bring it.
  std::vector<double> scores = {5, 6, 7, 8, 9, 10, 11, 12, -50, 13};
  const Tensor keys = scored_keys(scores);
  ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
  const int32_t slot = 9;
  const int64_t three = 3;
  const Tensor refill = scored_keys({14});
  ASSERT_SA_OK(sa_index_update(ix.get(), &slot, 1, refill.t(), &three));  // positions 0..8, 3 twice
  // The default query is the last token, position 8: its window of 1 is slot 8; top_k 1 the
  // best visible key, slot 9 (position 3).
  EXPECT_EQ(select_one(ix.get(), select_options(1, 1, 0), 2), (std::vector<int32_t>{8, 9}));
  // The next append gets position 9: a query there keeps it in its window of 1.
  const Tensor more = scored_keys({-60});
  ASSERT_SA_OK(sa_index_append(ix.get(), more.t()));
  const int64_t nine = 9;
  EXPECT_EQ(select_one(ix.get(), select_options(1, 1, 0), 2, &nine), (std::vector<int32_t>{9, 10}));
  EXPECT_EQ(select_one(ix.get(), select_options(1, 1, 0), 2), (std::vector<int32_t>{9, 10}));
}

// Known bug 3 of the API fuzzer: with repeated positions the sinks and the window can
// outnumber sinks + window. They all stay (the scored keys get what remains of the width), and
// when they alone exceed the width the window is kept first, the most recent first, then the
// sinks, the oldest first; equal positions by lower slot.
TEST_F(LifecycleBadInput, RepeatedPositionsKeepTheWindowAndSinksFirst) {
  IndexPtr ix = make_index(ctx(), 1, 4);
  ASSERT_TRUE(ix);
  // Slots 0..11 at positions 0..11; the high scores are on the old slots 2..7.
  const Tensor keys = scored_keys({-9, -9, 50, 51, 52, 53, 54, 55, -9, -9, -9, -9});
  ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
  // Slots 8, 9, 10 and 11 all at position 11, the query's (positions 0..7 and 11).
  const std::vector<int32_t> slots = {8, 9, 10};
  const std::vector<int64_t> eleven = {11, 11, 11};
  const Tensor refill = scored_keys({-9, -9, -9});
  ASSERT_SA_OK(sa_index_update(ix.get(), slots.data(), 3, refill.t(), eleven.data()));
  // sinks 1 + window 2 + top_k 2 = width 5: forced are slot 0 (sink), slots 8..11 (window):
  // five, the whole width, so no scored key fits.
  EXPECT_EQ(select_one(ix.get(), select_options(2, 2, 1), 5), (std::vector<int32_t>{0, 8, 9, 10, 11}));
  // Width 7: the five forced slots and the two best scored (slots 6 and 7).
  EXPECT_EQ(select_one(ix.get(), select_options(2, 2, 1), 7), (std::vector<int32_t>{0, 6, 7, 8, 9, 10, 11}));
  // sinks 2 + window 1 + top_k 1 = width 4, forced: slots 0, 1 (sinks), 8..11 (window): the
  // window's four fill it.
  EXPECT_EQ(select_one(ix.get(), select_options(1, 1, 2), 4), (std::vector<int32_t>{8, 9, 10, 11}));
  // Slot 9 moved to position 1: sinks 2 are slots 0, 1, 9; window 1 slots 8, 10, 11. Width 5:
  // the window's three, then the sinks from position 0 up: slot 0, then slot 1 (position 1,
  // lower slot than 9).
  const int32_t nine = 9;
  const int64_t one = 1;
  const Tensor refill1 = scored_keys({-9});
  ASSERT_SA_OK(sa_index_update(ix.get(), &nine, 1, refill1.t(), &one));
  EXPECT_EQ(select_one(ix.get(), select_options(2, 1, 2), 5), (std::vector<int32_t>{0, 1, 8, 10, 11}));
}

TEST_F(LifecycleBadInput, CloneRefusesNullPointersWithoutWriting) {
  IndexPtr ix = create(ctx(), Kind{"exact", SA_SELECTOR_EXACT});
  ASSERT_TRUE(ix);
  sa_index *sentinel = reinterpret_cast<sa_index *>(uintptr_t(0x1234));
  sa_index *out = sentinel;
  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_index_clone(nullptr, &out));
  EXPECT_EQ(out, sentinel);
  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_index_clone(ix.get(), nullptr));
}

TEST(LifecycleTable, FunctionTableHasTruncateAndClone) {
  const sa_api *api = sa_get_api(SA_ABI_VERSION);
  ASSERT_NE(api, nullptr);
  EXPECT_EQ(api->index_truncate, &sa_index_truncate);
  EXPECT_EQ(api->index_clone, &sa_index_clone);
}

}  // namespace
