// sa_select with the exact selector against the brute-force oracle in reference_select.hpp:
// group-summed and per-query-head scoring, sinks and window, causal positions, segments,
// prefill vs decode, mass targets, threads, concurrency, chunked appends and updates.
#include <gtest/gtest.h>

#include <thread>

#include "build_features.hpp"
#include "mirrored_index.hpp"

namespace {

using sat::Rng;
using sat::Tensor;
using sat::row_of;
using sat::select_options;

// The exact selector and its mirror in the oracle.
struct Indexed : sat::MirroredIndex {
  Indexed(int64_t h_kv, int64_t d, sa_dtype dtype = SA_DTYPE_F32, int32_t threads = 1)
      : MirroredIndex(sat::index_options(SA_SELECTOR_EXACT, h_kv, d, dtype), threads) {}
};

// Every row of `out` against the oracle.
void check_all(const Indexed &ix, const Tensor &q, const sa_select_options &o, const Tensor &out,
               int64_t count_slack = 0) {
  ref::SelectArgs a = ref::SelectArgs::from(o);
  for (int64_t i = 0; i < out.dim(0); ++i)
    for (int64_t h = 0; h < out.dim(1); ++h) {
      ref::RowExpectation e = ref::expect_row(ix.cache, q, a, i, h);
      EXPECT_TRUE(ref::check_row(e, row_of(out, i, h), 1e-4, count_slack)) << "query " << i << ", head " << h;
    }
}


int64_t count_valid(const std::vector<int32_t> &row) {
  return std::count_if(row.begin(), row.end(), [](int32_t s) { return s >= 0; });
}

TEST(SelectOptions, DefaultsMatchInitMacro) {
  sa_select_options a = SA_SELECT_OPTIONS_INIT, b = sa_select_options_default();
  EXPECT_EQ(a.struct_size, b.struct_size);
  EXPECT_EQ(a.top_k, b.top_k);
  EXPECT_EQ(a.window, b.window);
  EXPECT_EQ(a.sinks, b.sinks);
  EXPECT_EQ(a.per_query_head, b.per_query_head);
  EXPECT_EQ(a.mass_target, b.mass_target);
  EXPECT_EQ(a.scale, b.scale);
  sa_index_options c = SA_INDEX_OPTIONS_INIT, d = sa_index_options_default();
  EXPECT_EQ(c.struct_size, d.struct_size);
  EXPECT_EQ(c.kind, d.kind);
  EXPECT_EQ(c.dtype, d.dtype);
  EXPECT_EQ(c.page.page_size, d.page.page_size);
  EXPECT_EQ(c.lsh.seed, d.lsh.seed);
  EXPECT_EQ(c.hnsw.ef_search, d.hnsw.ef_search);
}

TEST(Select, SizeCountsAppendedSlots) {
  Rng rng(100);
  Indexed ix(2, 16);
  ASSERT_NE(ix.get(), nullptr);
  int64_t n = -1;
  ASSERT_SA_OK(sa_index_size(ix.get(), &n));
  EXPECT_EQ(n, 0);
  ix.append(ix.random_keys(rng, 10));
  ix.append(ix.random_keys(rng, 0));
  ix.append(ix.random_keys(rng, 5));
  ASSERT_SA_OK(sa_index_size(ix.get(), &n));
  EXPECT_EQ(n, 15);
}

TEST(Select, ExactPerKvHeadMatchesBruteForce) {
  Rng rng(101);
  Indexed ix(2, 64);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 1000));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 8, 64});
  sa_select_options o = select_options(32, 16, 4);
  Tensor out = ix.select(q, o, 60);
  check_all(ix, q, o, out);
  for (int64_t h = 0; h < 2; ++h) EXPECT_EQ(count_valid(row_of(out, 0, h)), 52);
}

// Groups larger than one kernel call handles (16 query heads) are scored in pieces.
TEST(Select, ExactLargeGroupMatchesBruteForce) {
  Rng rng(104);
  Indexed ix(1, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 300));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 20, 32});
  sa_select_options o = select_options(16, 8, 2);
  check_all(ix, q, o, ix.select(q, o, 26));
}

TEST(Select, ExactPerQueryHeadMatchesBruteForce) {
  Rng rng(102);
  Indexed ix(2, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 800));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 8, 32});
  sa_select_options o = select_options(24, 8, 2);
  o.per_query_head = 1;
  Tensor out = ix.select(q, o, 34);
  ASSERT_EQ(out.dim(1), 8);
  check_all(ix, q, o, out);
  // Heads of one group rank differently, so their lists differ.
  EXPECT_NE(row_of(out, 0, 0), row_of(out, 0, 1));
}

TEST(Select, GroupSumDiffersFromSingleHead) {
  // Proves the per-KV-head score is not just the first query head's ranking.
  Rng rng(103);
  Indexed ix(1, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 600));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 4, 32});
  sa_select_options o = select_options(20, 0, 0);
  Tensor grouped = ix.select(q, o, 20);
  check_all(ix, q, o, grouped);
  o.per_query_head = 1;
  Tensor single = ix.select(q, o, 20);
  check_all(ix, q, o, single);
  EXPECT_NE(row_of(grouped, 0, 0), row_of(single, 0, 0));
}

TEST(Select, PlantedNeedlesAreFound) {
  Rng rng(104);
  Indexed ix(2, 64);
  ASSERT_NE(ix.get(), nullptr);
  Tensor keys = ix.random_keys(rng, 2000);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 8, 64});
  const std::vector<int64_t> needles = {100, 333, 777, 1234, 1500};
  // Needle keys of KV head 1 point along the summed queries of its group (heads 4..7).
  for (int64_t s : needles)
    for (int64_t x = 0; x < 64; ++x) {
      double sum = 0;
      for (int64_t g = 4; g < 8; ++g) sum += q.get({0, g, x});
      keys.set({s, 1, x}, sat::round_to(SA_DTYPE_F32, 0.5 * sum));
    }
  ix.append(keys);
  sa_select_options o = select_options(8, 16, 4);
  Tensor out = ix.select(q, o, 28);
  check_all(ix, q, o, out);
  std::vector<int32_t> row = row_of(out, 0, 1);
  for (int64_t s : needles) EXPECT_NE(std::find(row.begin(), row.end(), int32_t(s)), row.end()) << "needle " << s;
}

TEST(Select, SinksAndWindowAlwaysPresent) {
  Rng rng(105);
  Indexed ix(1, 16);
  ASSERT_NE(ix.get(), nullptr);
  Tensor keys = ix.random_keys(rng, 500);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 2, 16});
  // Sink and window keys point away from the query: they would never win on score.
  for (int64_t s : {0, 1, 2, 495, 496, 497, 498, 499})
    for (int64_t x = 0; x < 16; ++x) keys.set({s, 0, x}, -3.0 * q.get({0, 0, x}));
  ix.append(keys);
  sa_select_options o = select_options(10, 5, 3);
  Tensor out = ix.select(q, o, 18);
  check_all(ix, q, o, out);
  std::vector<int32_t> row = row_of(out, 0, 0);
  for (int32_t s : {0, 1, 2, 495, 496, 497, 498, 499})
    EXPECT_NE(std::find(row.begin(), row.end(), s), row.end()) << "slot " << s;
  EXPECT_EQ(count_valid(row), 18);
}

TEST(Select, FewerVisibleKeysThanBudget) {
  Rng rng(106);
  Indexed ix(2, 8);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 20));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 2, 8});
  sa_select_options o = select_options(64, 64, 4);
  Tensor out = ix.select(q, o, 140);
  check_all(ix, q, o, out);
  std::vector<int32_t> row = row_of(out, 0, 0);
  for (int32_t s = 0; s < 20; ++s) EXPECT_EQ(row[size_t(s)], s);
  for (size_t w = 20; w < row.size(); ++w) EXPECT_EQ(row[w], -1);
}

TEST(Select, EmptyIndexGivesOnlyPadding) {
  Indexed ix(1, 8);
  ASSERT_NE(ix.get(), nullptr);
  Rng rng(107);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 1, 8});
  sa_select_options o = select_options(4, 4, 4);
  Tensor out = ix.select(q, o, 12);
  for (double x : out.values()) EXPECT_EQ(x, -1);
}

TEST(Select, CausalExplicitQueryPositions) {
  Rng rng(108);
  Indexed ix(2, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 1000));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {4, 4, 32});
  std::vector<int64_t> pos = {5, 100, 500, 999};
  sa_select_options o = select_options(16, 8, 4);
  o.query_positions = pos.data();
  Tensor out = ix.select(q, o, 30);
  check_all(ix, q, o, out);
  for (int64_t i = 0; i < 4; ++i)
    for (int32_t s : row_of(out, i, 0)) EXPECT_LE(s, pos[size_t(i)]);
  // Query at position 5 sees 6 keys: all of them, nothing more.
  EXPECT_EQ(count_valid(row_of(out, 0, 1)), 6);
}

TEST(Select, CausalDefaultPositionsAreTheLastQueries) {
  Rng rng(109);
  Indexed ix(1, 16);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 300));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {5, 2, 16});  // positions 295..299
  sa_select_options o = select_options(8, 4, 2);
  Tensor out = ix.select(q, o, 14);
  check_all(ix, q, o, out);
  for (int64_t i = 0; i < 5; ++i) {
    std::vector<int32_t> row = row_of(out, i, 0);
    EXPECT_EQ(*std::max_element(row.begin(), row.end()), 295 + i);
  }
}

TEST(Select, SegmentsAreRespected) {
  Rng rng(110);
  Indexed ix(2, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 900));
  std::vector<int32_t> kseg(900);
  for (int64_t s = 0; s < 900; ++s) kseg[size_t(s)] = s < 300 ? 0 : s < 650 ? 1 : 2;
  std::vector<int32_t> qseg = {0, 1, 1, 2};
  std::vector<int64_t> qpos = {299, 400, 649, 899};
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {4, 4, 32});
  sa_select_options o = select_options(20, 10, 4);
  o.query_positions = qpos.data();
  o.query_segments = qseg.data();
  o.key_segments = kseg.data();
  Tensor out = ix.select(q, o, 40);
  check_all(ix, q, o, out);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t h = 0; h < 2; ++h)
      for (int32_t s : row_of(out, i, h))
        if (s >= 0) {
          EXPECT_EQ(kseg[size_t(s)], qseg[size_t(i)]) << "query " << i << " slot " << s;
        }
  // Query 1 (position 400, segment 1) has 101 visible keys: window + top_k only, no sinks.
  EXPECT_EQ(count_valid(row_of(out, 1, 0)), 30);
}

TEST(Select, QueriesIn16BitDtypes) {
  Rng rng(111);
  Indexed ix(2, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 400));
  for (sa_dtype dt : {SA_DTYPE_F16, SA_DTYPE_BF16}) {
    Tensor q = sat::random_tensor(rng, dt, {2, 4, 32}, sat::padded_strides(5, 40));
    sa_select_options o = select_options(16, 8, 4);
    Tensor out = ix.select(q, o, 28);
    check_all(ix, q, o, out);
  }
}

TEST(Select, IndexDtypes) {
  Rng rng(112);
  for (sa_dtype dt : {SA_DTYPE_F16, SA_DTYPE_BF16, SA_DTYPE_F32}) {
    SCOPED_TRACE(testing::Message() << "index dtype " << int(dt));
    Indexed ix(2, 64, dt);
    ASSERT_NE(ix.get(), nullptr);
    Tensor keys = ix.random_keys(rng, 700);
    ix.append(keys);
    // Also append keys given in the storage dtype itself, head-major.
    Tensor more(dt, {50, 2, 64}, sat::head_major_strides(50, 64));
    more.randomize(rng);
    ix.append(more);
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, 8, 64});
    sa_select_options o = select_options(32, 16, 4);
    Tensor out = ix.select(q, o, 52);
    check_all(ix, q, o, out);
  }
}

TEST(Select, StridedOutput) {
  Rng rng(113);
  Indexed ix(2, 16);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 200));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, 2, 16});
  sa_select_options o = select_options(8, 4, 2);
  Tensor out(SA_DTYPE_I32, {3, 2, 14}, {1, 3 * 16, 3});  // [H][width][n_q] storage with gaps
  out.poison();
  ASSERT_SA_OK(sa_select(ix.get(), q.t(), &o, out.t()));
  EXPECT_TRUE(out.only_elements_written());
  check_all(ix, q, o, out);
}

// Many queries take the batched (GEMM) scoring path; one query at a time takes the decode
// path. Both must agree with the oracle and with each other up to ties.
TEST(Select, PrefillAgreesWithDecode) {
  Rng rng(114);
  Indexed ix(2, 64);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 700));
  const int64_t n_q = 64;
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, 8, 64});
  for (int32_t pqh : {0, 1}) {
    SCOPED_TRACE(testing::Message() << "per_query_head=" << pqh);
    sa_select_options o = select_options(32, 16, 4);
    o.per_query_head = pqh;
    Tensor batch = ix.select(q, o, 52);
    check_all(ix, q, o, batch);
    int64_t differing = 0;
    for (int64_t i = 0; i < n_q; i += 7) {
      Tensor one(SA_DTYPE_F32, {1, 8, 64});
      for (int64_t h = 0; h < 8; ++h)
        for (int64_t x = 0; x < 64; ++x) one.set({0, h, x}, q.get({i, h, x}));
      int64_t p = 700 - n_q + i;
      sa_select_options o1 = o;
      o1.query_positions = &p;
      Tensor single = ix.select(one, o1, 52);
      check_all(ix, one, o1, single);
      for (int64_t h = 0; h < single.dim(1); ++h) differing += row_of(single, 0, h) != row_of(batch, i, h);
    }
    EXPECT_LE(differing, 1) << "rows where prefill and decode chose different sets";
  }
}

// Prefill scores each block of queries only against the slots some query of the block may see
// (a prefix found from the slots' positions) and keeps only the candidates that may reach the
// top_k: queries at the block edges (blocks of up to 256 queries), at positions around the
// 16-slot rounding of the prefix, with segments, after updates that put high positions in low
// slots, with a mass target and per query head, on 1 and 2 threads, against the oracle.
TEST(Select, PrefillBlocksMatchBruteForce) {
  Rng rng(140);
  const int64_t n = 700, n_q = 600;
  for (int32_t threads : {1, 2}) {
    Indexed ix(2, 16, SA_DTYPE_F32, threads);
    ASSERT_NE(ix.get(), nullptr);
    ix.append(ix.random_keys(rng, n));
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, 8, 16});
    std::vector<int64_t> pos(static_cast<size_t>(n_q));
    for (int64_t i = 0; i < n_q; ++i) pos[size_t(i)] = i < 40 ? i : 100 + i;  // 0..39: the first prefixes
    for (int64_t i : {255, 256, 511, 512}) pos[size_t(i)] = i % 2 ? 15 : 16;  // block edges, low positions
    SCOPED_TRACE(testing::Message() << "threads=" << threads);
    sa_select_options o = select_options(16, 8, 4);
    o.query_positions = pos.data();
    check_all(ix, q, o, ix.select(q, o, 28));
    o.per_query_head = 1;
    check_all(ix, q, o, ix.select(q, o, 28));
    o.per_query_head = 0;
    o.mass_target = 0.5;
    check_all(ix, q, o, ix.select(q, o, 28), 1);
    o.mass_target = 0;

    std::vector<int32_t> kseg(static_cast<size_t>(n)), qseg(static_cast<size_t>(n_q));
    for (int64_t j = 0; j < n; ++j) kseg[size_t(j)] = j < 250 ? 0 : 1;
    for (int64_t i = 0; i < n_q; ++i) qseg[size_t(i)] = pos[size_t(i)] < 250 ? 0 : 1;
    o.query_segments = qseg.data();
    o.key_segments = kseg.data();
    check_all(ix, q, o, ix.select(q, o, 28));
    o.query_segments = o.key_segments = nullptr;

    // Slots 3, 300 and 650 now hold the latest positions: a query sees them only from there on.
    std::vector<int32_t> slots = {3, 300, 650};
    std::vector<int64_t> fresh_pos = {700, 701, 702};
    Tensor fresh = ix.random_keys(rng, 3);
    ASSERT_SA_OK(sa_index_update(ix.get(), slots.data(), 3, fresh.t(), fresh_pos.data()));
    ix.cache.update(slots, fresh, fresh_pos.data());
    for (int64_t i = n_q - 8; i < n_q; ++i) pos[size_t(i)] = 695 + (i - (n_q - 8));  // 695..702
    check_all(ix, q, o, ix.select(q, o, 28));
  }
}

// Prefill ranks each list's masses through a pivot taken from the previous query (the masses
// reaching it, then the best of those), and writes lists whose candidates all fit by merging
// them with the forced slots; a block's first query, and any query the pivot leaves short,
// takes the floor's path. Keys drawn from a few distinct vectors tie by the hundred. Each query
// is asked 8 times in a row at the same position: the copies (pivot path) must list exactly
// what the first (floor path) lists, and every list agrees with the oracle; for f32, f16 and
// bf16 queries, per KV head and per query head, lists shorter than top_k, a mass target, on 2
// threads.
TEST(Select, PrefillPivotKeepsTies) {
  Rng rng(141);
  const int64_t n = 900, d = 16, distinct = 12, copies = 8, n_q = distinct * copies;
  Indexed ix(2, d, SA_DTYPE_F32, 2);
  ASSERT_NE(ix.get(), nullptr);
  Tensor few = ix.random_keys(rng, 6);
  Tensor keys(SA_DTYPE_F32, {n, 2, d});
  for (int64_t j = 0; j < n; ++j)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t x = 0; x < d; ++x) keys.set({j, h, x}, few.get({int64_t(rng.below(6)), h, x}));
  ix.append(keys);
  std::vector<int64_t> pos(static_cast<size_t>(n_q));
  for (int64_t i = 0; i < n_q; ++i) {
    const int64_t k = i / copies;
    pos[size_t(i)] = k < 3 ? 10 * k : n - 80 * (distinct - k);  // short lists first
  }
  for (sa_dtype qt : {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16})
    for (int32_t pqh : {0, 1})
      for (float target : {0.f, 0.6f}) {
        SCOPED_TRACE(testing::Message() << "dtype " << qt << " per_query_head " << pqh << " mass target " << target);
        Tensor base = sat::random_tensor(rng, qt, {distinct, 8, d});
        Tensor q(qt, {n_q, 8, d});
        for (int64_t i = 0; i < n_q; ++i)
          for (int64_t h = 0; h < 8; ++h)
            for (int64_t x = 0; x < d; ++x) q.set({i, h, x}, base.get({i / copies, h, x}));
        sa_select_options o = select_options(24, 8, 2);
        o.per_query_head = pqh;
        o.mass_target = target;
        o.query_positions = pos.data();
        Tensor batch = ix.select(q, o, 34);
        check_all(ix, q, o, batch, target > 0.f ? 1 : 0);
        for (int64_t i = 0; i < n_q; ++i)
          for (int64_t h = 0; h < batch.dim(1); ++h)
            EXPECT_EQ(row_of(batch, i, h), row_of(batch, i / copies * copies, h)) << "query " << i << ", list " << h;
      }
}

// Exact prefill scores its query blocks with score_panels (select/key_panels.hpp) in an AVX-512
// context and with oneDNN's matmul in an AVX2 one; where oneDNN computes the same fused chain
// (blocks of 32 rows or more, as both take here) the lists are the same, bit for bit in the
// scores they rank by. Keys that are not a whole number of panels (1000), NaN keys, zero
// queries, f32, f16 and bf16 keys, per KV head and per query head, a mass target, 1 to 3 threads.
TEST(Select, PrefillPanelsChooseAsTheGemm) {
  if (!SA_HAVE_ONEDNN) GTEST_SKIP() << "the portable GEMM adds without fusing: other bits";
  sat::ContextPtr probe = sat::make_context(1);
  ASSERT_NE(probe.get(), nullptr);
  if (sa_context_isa(probe.get()) != SA_ISA_AVX512) GTEST_SKIP() << "no AVX-512";
  Rng rng(143);
  const int64_t n = 1000, d = 64, h_kv = 2, h_q = 8, n_q = 128;
  std::vector<int64_t> pos(static_cast<size_t>(n_q));
  for (int64_t i = 0; i < n_q; ++i) pos[size_t(i)] = 100 + 7 * i;
  pos.back() = n - 1;  // the last block's prefix is every key
  for (sa_dtype kt : {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}) {
    Tensor keys = sat::random_tensor(rng, kt, {n, h_kv, d});
    keys.set({500, 1, 3}, std::nan(""));
    Tensor q = sat::random_tensor(rng, kt, {n_q, h_q, d});
    for (int64_t x = 0; x < d; ++x) {  // rows whose scores are all zero (a maximum of 0)
      q.set({5, 0, x}, 0.0);
      q.set({6, 1, x}, -0.0);
    }
    for (int32_t pqh : {0, 1})
      for (float target : {0.f, 0.5f})
        for (int32_t threads : {1, 2, 3}) {
          SCOPED_TRACE(testing::Message() << "keys " << kt << " per_query_head " << pqh << " mass target " << target
                                          << " threads " << threads);
          sa_select_options o = select_options(24, 8, 2);
          o.per_query_head = pqh;
          o.mass_target = target;
          o.query_positions = pos.data();
          std::vector<Tensor> outs;
          for (sa_isa isa : {SA_ISA_AVX512, SA_ISA_AVX2}) {
            sat::ContextPtr ctx = sat::make_context(threads, isa);
            ASSERT_NE(ctx.get(), nullptr);
            sat::IndexPtr ix = sat::make_index(ctx.get(), int32_t(h_kv), int32_t(d), kt);
            ASSERT_NE(ix.get(), nullptr);
            ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
            outs.emplace_back(SA_DTYPE_I32, std::vector<int64_t>{n_q, pqh ? h_q : h_kv, 34});
            ASSERT_SA_OK(sa_select(ix.get(), q.t(), &o, outs.back().t()));
          }
          for (int64_t i = 0; i < n_q; ++i)
            for (int64_t h = 0; h < outs[0].dim(1); ++h)
              ASSERT_EQ(row_of(outs[0], i, h), row_of(outs[1], i, h)) << "query " << i << ", list " << h;
        }
  }
}

TEST(Select, MassTargetPerQueryHead) {
  Rng rng(115);
  Indexed ix(2, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 1500));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, 4, 32});
  for (float target : {0.3f, 0.6f, 0.9f}) {
    SCOPED_TRACE(testing::Message() << "mass_target=" << target);
    sa_select_options o = select_options(300, 8, 2);
    o.per_query_head = 1;
    o.mass_target = target;
    o.scale = 0.6f;  // peaked enough that the target is met well before top_k
    Tensor out = ix.select(q, o, 310);
    check_all(ix, q, o, out, 1);
    // The test means something only when the target stops selection early.
    ref::RowExpectation e = ref::expect_row(ix.cache, q, ref::SelectArgs::from(o), 0, 0);
    EXPECT_GT(e.n_scored, 0);
    EXPECT_LT(e.n_scored, 300);
  }
}

TEST(Select, MassTargetPerKvHead) {
  Rng rng(116);
  for (int64_t h_q : {2, 8}) {  // group of 1 (unambiguous) and of 4 (mass = group mean)
    SCOPED_TRACE(testing::Message() << "H_q=" << h_q);
    Indexed ix(2, 32);
    ASSERT_NE(ix.get(), nullptr);
    ix.append(ix.random_keys(rng, 1200));
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, h_q, 32});
    sa_select_options o = select_options(400, 4, 1);
    o.mass_target = 0.7f;
    o.scale = 0.6f;
    Tensor out = ix.select(q, o, 405);
    check_all(ix, q, o, out, 1);
    ref::RowExpectation e = ref::expect_row(ix.cache, q, ref::SelectArgs::from(o), 1, 1);
    EXPECT_GT(e.n_scored, 0);
    EXPECT_LT(e.n_scored, 400);
  }
}

TEST(Select, MassTargetMetBySinksAndWindowAddsNothing) {
  Rng rng(117);
  Indexed ix(1, 16);
  ASSERT_NE(ix.get(), nullptr);
  Tensor keys = ix.random_keys(rng, 300);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 1, 16});
  for (int64_t x = 0; x < 16; ++x) keys.set({299, 0, x}, 4.0 * q.get({0, 0, x}));  // the window key dominates
  ix.append(keys);
  sa_select_options o = select_options(50, 1, 0);
  o.mass_target = 0.5f;
  Tensor out = ix.select(q, o, 51);
  check_all(ix, q, o, out);
  EXPECT_EQ(count_valid(row_of(out, 0, 0)), 1);
}

TEST(Select, ThreadCountsGiveIdenticalResults) {
  Rng rng(118);
  Indexed one(2, 64, SA_DTYPE_F16, 1), two(2, 64, SA_DTYPE_F16, 2);
  ASSERT_TRUE(one.get() && two.get());
  Tensor keys = one.random_keys(rng, 3000);
  one.append(keys);
  two.append(keys);
  for (int64_t n_q : {1, 40}) {
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, 8, 64});
    for (int32_t pqh : {0, 1}) {
      sa_select_options o = select_options(64, 32, 4);
      o.per_query_head = pqh;
      Tensor a = one.select(q, o, 100), b = two.select(q, o, 100);
      EXPECT_EQ(a.values(), b.values()) << "n_q=" << n_q << " per_query_head=" << pqh;
      if (n_q == 1) check_all(one, q, o, a);
    }
  }
}

TEST(Select, ConcurrentSelectsMatchSerial) {
  Rng rng(119);
  Indexed ix(2, 32, SA_DTYPE_F16, 1);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 2000));
  std::vector<Tensor> qs;
  std::vector<Tensor> serial;
  sa_select_options o = select_options(32, 16, 4);
  for (int t = 0; t < 4; ++t) {
    qs.push_back(sat::random_tensor(rng, SA_DTYPE_F32, {t + 1, 4, 32}));
    serial.push_back(ix.select(qs.back(), o, 52));
  }
  std::vector<std::vector<double>> got(4);
  std::vector<sa_status> st(4, SA_OK);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 10; ++rep) {
        Tensor out(SA_DTYPE_I32, {t + 1, 2, 52});
        sa_status s = sa_select(ix.get(), qs[size_t(t)].t(), &o, out.t());
        if (s != SA_OK) st[size_t(t)] = s;
        if (rep == 0) got[size_t(t)] = out.values();
        else if (out.values() != got[size_t(t)]) st[size_t(t)] = SA_ERR_INTERNAL;  // not reproducible
      }
    });
  for (auto &th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(st[size_t(t)], SA_OK) << "thread " << t;
    EXPECT_EQ(got[size_t(t)], serial[size_t(t)].values()) << "thread " << t;
  }
}

TEST(Select, ChunkedAppendEqualsOneAppend) {
  Rng rng(120);
  Indexed whole(2, 32, SA_DTYPE_F16), parts(2, 32, SA_DTYPE_F16);
  ASSERT_TRUE(whole.get() && parts.get());
  Tensor keys = whole.random_keys(rng, 1000);
  whole.append(keys);
  int64_t start = 0;
  for (int64_t n : {1, 7, 100, 392, 500}) {
    Tensor chunk(SA_DTYPE_F32, {n, 2, 32});
    for (int64_t r = 0; r < n; ++r)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t x = 0; x < 32; ++x) chunk.set({r, h, x}, keys.get({start + r, h, x}));
    parts.append(chunk);
    start += n;
  }
  int64_t size = 0;
  ASSERT_SA_OK(sa_index_size(parts.get(), &size));
  EXPECT_EQ(size, 1000);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, 8, 32});
  sa_select_options o = select_options(40, 8, 4);
  Tensor a = whole.select(q, o, 52), b = parts.select(q, o, 52);
  EXPECT_EQ(a.values(), b.values());
  check_all(parts, q, o, b);
}

// Selections between appends see exactly the keys appended so far, also when the index
// outgrows its capacity hint.
TEST(Select, InterleavedAppendAndSelect) {
  Rng rng(124);
  auto ctx = sat::make_context(2);
  ASSERT_NE(ctx, nullptr);
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.num_kv_heads = 2;
  io.head_dim = 16;
  io.dtype = SA_DTYPE_BF16;
  io.capacity = 10;
  sa_index *raw = nullptr;
  ASSERT_SA_OK(sa_index_create(ctx.get(), &io, &raw));
  Indexed ix(2, 16, SA_DTYPE_BF16);
  ix.ix.reset(raw);
  for (int step = 0; step < 6; ++step) {
    ix.append(ix.random_keys(rng, 1 + step * 150));
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 4, 16});
    sa_select_options o = select_options(12, 6, 2);
    Tensor out = ix.select(q, o, 20);
    check_all(ix, q, o, out);
  }
}

// After eviction a slot holds a newer token: selection follows positions, not slot order.
TEST(Select, UpdateRefillsSlotsWithNewPositions) {
  Rng rng(121);
  Indexed ix(1, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 500));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 2, 32});
  // Slots 10, 20, 30 now hold tokens 500..502; their keys point along the query.
  std::vector<int32_t> slots = {10, 20, 30};
  std::vector<int64_t> positions = {500, 501, 502};
  Tensor fresh = ix.random_keys(rng, 3);
  for (int64_t x = 0; x < 32; ++x) fresh.set({2, 0, x}, sat::round_to(SA_DTYPE_F32, q.get({0, 0, x}) + q.get({0, 1, x})));
  ASSERT_SA_OK(sa_index_update(ix.get(), slots.data(), 3, fresh.t(), positions.data()));
  ix.cache.update(slots, fresh, positions.data());
  int64_t size = 0;
  ASSERT_SA_OK(sa_index_size(ix.get(), &size));
  EXPECT_EQ(size, 500);

  // Default query position is now 502: window (498, 502] = slots 499, 10, 20, 30.
  sa_select_options o = select_options(6, 4, 2);
  Tensor out = ix.select(q, o, 12);
  check_all(ix, q, o, out);
  std::vector<int32_t> row = row_of(out, 0, 0);
  for (int32_t s : {0, 1, 10, 20, 30, 499}) EXPECT_NE(std::find(row.begin(), row.end(), s), row.end()) << s;

  // A query at position 300 must not see the refilled slots, though their slot numbers are low.
  int64_t p = 300;
  o.query_positions = &p;
  out = ix.select(q, o, 12);
  check_all(ix, q, o, out);
  row = row_of(out, 0, 0);
  for (int32_t s : {10, 20, 30}) EXPECT_EQ(std::find(row.begin(), row.end(), s), row.end()) << s;
  for (int32_t s : {297, 298, 299, 300}) EXPECT_NE(std::find(row.begin(), row.end(), s), row.end()) << s;

  // Positions NULL: the refilled slots take the next positions in order (503, 504).
  std::vector<int32_t> more = {40, 5};
  Tensor fresh2 = ix.random_keys(rng, 2);
  ASSERT_SA_OK(sa_index_update(ix.get(), more.data(), 2, fresh2.t(), nullptr));
  ix.cache.update(more, fresh2, nullptr);
  o.query_positions = nullptr;
  o.window = 2;  // positions 503, 504 -> slots 40, 5
  out = ix.select(q, o, 12);
  check_all(ix, q, o, out);
  row = row_of(out, 0, 0);
  for (int32_t s : {40, 5}) EXPECT_NE(std::find(row.begin(), row.end(), s), row.end()) << s;
}

TEST(Select, UpdatedKeysChangeScores) {
  Rng rng(122);
  Indexed ix(2, 32);
  ASSERT_NE(ix.get(), nullptr);
  ix.append(ix.random_keys(rng, 400));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {1, 4, 32});
  sa_select_options o = select_options(4, 0, 0);
  Tensor before = ix.select(q, o, 4);
  check_all(ix, q, o, before);
  // Turn slots 7 and 8 (keeping their positions) into needles for KV head 0.
  std::vector<int32_t> slots = {7, 8};
  std::vector<int64_t> positions = {7, 8};
  Tensor fresh = ix.random_keys(rng, 2);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t x = 0; x < 32; ++x) fresh.set({r, 0, x}, sat::round_to(SA_DTYPE_F32, q.get({0, 0, x}) + q.get({0, 1, x})));
  ASSERT_SA_OK(sa_index_update(ix.get(), slots.data(), 2, fresh.t(), positions.data()));
  ix.cache.update(slots, fresh, positions.data());
  Tensor after = ix.select(q, o, 4);
  check_all(ix, q, o, after);
  std::vector<int32_t> row = row_of(after, 0, 0);
  for (int32_t s : {7, 8}) EXPECT_NE(std::find(row.begin(), row.end(), s), row.end()) << s;
}

// Selectors this version may not build: either refused cleanly or working.
TEST(Select, OtherKindsAreUnsupportedOrWork) {
  Rng rng(123);
  auto ctx = sat::make_context(1);
  ASSERT_NE(ctx, nullptr);
  for (sa_selector_kind kind : {SA_SELECTOR_PAGE, SA_SELECTOR_LSH, SA_SELECTOR_HNSW, SA_SELECTOR_LEARNED, SA_SELECTOR_INDEXER}) {
    SCOPED_TRACE(testing::Message() << "kind " << int(kind));
    sa_index_options io = SA_INDEX_OPTIONS_INIT;
    io.kind = kind;
    io.num_kv_heads = 2;
    io.head_dim = 32;
    sa_index *raw = reinterpret_cast<sa_index *>(uintptr_t(0x5a5a));
    sa_status s = sa_index_create(ctx.get(), &io, &raw);
    bool needs_weights = kind == SA_SELECTOR_LEARNED || kind == SA_SELECTOR_INDEXER;
    if (s != SA_OK) {
      EXPECT_STRNE(sa_last_error(), "");
      EXPECT_EQ(raw, reinterpret_cast<sa_index *>(uintptr_t(0x5a5a))) << "out written on failure";
      if (needs_weights) {  // no weights_path given: refused either way
        EXPECT_TRUE(s == SA_ERR_INVALID_ARGUMENT || s == SA_ERR_NULL_POINTER) << sa_status_name(s);
      } else {
        EXPECT_EQ(s, SA_ERR_UNSUPPORTED) << sa_last_error();
        EXPECT_FALSE(sat::selector_built(kind)) << "the build has this kind, yet refuses it";
      }
      continue;
    }
    EXPECT_FALSE(needs_weights) << "created without weights";
    sat::IndexPtr ix(raw);
    // Working selectors keep the shared contract: visible slots, ascending, sinks and window.
    ref::KeyCache cache(2, 32, io.dtype);
    Tensor keys(SA_DTYPE_F32, {600, 2, 32});
    keys.randomize(rng);
    ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
    cache.append(keys);
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 4, 32});
    sa_select_options o = select_options(16, 8, 4);
    Tensor out(SA_DTYPE_I32, {2, 2, 28});
    out.poison();
    ASSERT_SA_OK(sa_select(ix.get(), q.t(), &o, out.t()));
    EXPECT_TRUE(out.only_elements_written());
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t h = 0; h < 2; ++h) {
        // Approximate selectors: no claim about which scored keys.
        const ref::RowExpectation e = ref::expect_visible(cache, q, ref::SelectArgs::from(o), i);
        EXPECT_TRUE(ref::check_row(e, row_of(out, i, h), 1e-4, 16));
      }
  }
}

}  // namespace

// A query group larger than the kernel's 16 heads per call (MQA with 20 query heads), on the
// per-query scoring path.
TEST(ExactSelect, GroupsLargerThanTheKernelTakes) {
  const int64_t Hq = 20, D = 16, N = 90, n_q = 2;
  sat::Rng rng(2020);
  auto ctx = sat::make_context(1);
  auto ix = sat::make_index(ctx.get(), 1, int32_t(D));
  sat::Tensor keys = sat::random_tensor(rng, SA_DTYPE_F32, {N, 1, D});
  ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
  ref::KeyCache cache(1, D, SA_DTYPE_F32);
  cache.append(keys);
  sat::Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, Hq, D});
  for (int per_head = 0; per_head < 2; ++per_head) {
    sa_select_options so = SA_SELECT_OPTIONS_INIT;
    so.top_k = 10, so.window = 4, so.sinks = 2, so.per_query_head = per_head;
    const int64_t rows = per_head ? Hq : 1;
    sat::Tensor out(SA_DTYPE_I32, {n_q, rows, 16});
    ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, out.t()));
    for (int64_t i = 0; i < n_q; ++i)
      for (int64_t h = 0; h < rows; ++h) {
        std::vector<int32_t> row;
        for (int64_t c = 0; c < 16; ++c) row.push_back(int32_t(out.get({i, h, c})));
        EXPECT_TRUE(ref::check_row(ref::expect_row(cache, q, ref::SelectArgs::from(so), i, h), row))
            << "query " << i << " row " << h;
      }
  }
}
