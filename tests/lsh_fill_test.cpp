// LSH lists are full: every list holds the forced slots (sinks, window) and min(top_k, S)
// scored slots, S the keys the query may choose (visible by position and segment, neither
// sink nor window), counted here by brute force. The query's buckets may be full of keys it
// cannot see (later positions in prefill, other segments) or nearly empty (many bits, no
// probes); the selector must look further rather than return a short list (issue 13 item 1).
// Covered: prefill with query positions (synthetic and the realistic fixture), decode,
// segments, per-query-head lists, borrowed keys and sa_select_batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "qkv_layer.hpp"
#include "test_util.hpp"

#ifndef SA_TEST_DATA_DIR
#error "SA_TEST_DATA_DIR must name tests/data"
#endif

namespace {

using sat::Rng;
using sat::Tensor;

constexpr int32_t kTopK = 128, kWindow = 64, kSinks = 4;

// Appended in one call, slot s holds position s. key_segments: nullptr or one per slot.
struct ListCheck {
  int64_t n_keys = 0;
  const int32_t *key_segments = nullptr;
};

// Row `row` of query position p (segment qseg when segments are on) against brute force.
::testing::AssertionResult full_list(const ListCheck &c, const std::vector<int32_t> &row, int64_t p, int32_t qseg) {
  auto visible = [&](int64_t s) { return s <= p && (!c.key_segments || c.key_segments[s] == qseg); };
  auto forced = [&](int64_t s) { return s < kSinks || s > p - kWindow; };
  int64_t selectable = 0, n_forced = 0;
  for (int64_t s = 0; s < c.n_keys; ++s) {
    if (!visible(s)) continue;
    if (forced(s)) ++n_forced;
    else ++selectable;
  }
  int64_t scored = 0, got_forced = 0, prev = -1;
  bool padding = false;
  for (int32_t s : row) {
    if (s < 0) {
      padding = true;
      continue;
    }
    if (padding) return ::testing::AssertionFailure() << "slot " << s << " after padding";
    if (s <= prev) return ::testing::AssertionFailure() << "slots not ascending and distinct at " << s;
    prev = s;
    if (s >= c.n_keys || !visible(s)) return ::testing::AssertionFailure() << "slot " << s << " is not visible";
    if (forced(s)) ++got_forced;
    else ++scored;
  }
  if (got_forced != n_forced)
    return ::testing::AssertionFailure() << got_forced << " of " << n_forced << " sink/window slots";
  const int64_t want = std::min<int64_t>(kTopK, selectable);
  if (scored != want)
    return ::testing::AssertionFailure() << scored << " scored slots, want min(top_k, " << selectable << ") = " << want;
  return ::testing::AssertionSuccess();
}

sa_index_options lsh_options(int64_t h_kv, int64_t d, int32_t bits = 0, int32_t probes = 2, int32_t rounds = 8) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = SA_SELECTOR_LSH;
  o.num_kv_heads = int32_t(h_kv);
  o.head_dim = int32_t(d);
  o.dtype = SA_DTYPE_F32;
  o.lsh.bits = bits;
  o.lsh.probes = probes;
  o.lsh.rounds = rounds;
  return o;
}

sat::IndexPtr make_lsh(sa_context *ctx, const sa_index_options &o) {
  sa_index *ix = nullptr;
  const sa_status st = sa_index_create(ctx, &o, &ix);
  EXPECT_EQ(st, SA_OK) << sa_last_error();
  return sat::IndexPtr(st == SA_OK ? ix : nullptr);
}

constexpr int64_t kHkv = 2, kHq = 4, kD = 32, kKeys = 4096;

// Keys whose second half is a tight cluster along u_h (per KV head) and queries along u_h:
// every table puts the query in the cluster's bucket, which holds only keys at positions
// >= kKeys / 2; before them the keys are random.
struct FutureCluster {
  std::vector<int64_t> positions = {100, 700, 1500, 2000, 2047, 2100, 2600, 3500, kKeys - 1};  // before queries
  Tensor keys{SA_DTYPE_F32, {kKeys, kHkv, kD}};
  Tensor queries;
  explicit FutureCluster(uint64_t seed) : queries(SA_DTYPE_F32, {int64_t(positions.size()), kHq, kD}) {
    Rng rng(seed);
    keys.randomize(rng);
    for (int64_t h = 0; h < kHkv; ++h) {
      std::vector<double> u(kD);
      double norm = 0;
      for (double &x : u) {
        x = rng.normal();
        norm += x * x;
      }
      for (double &x : u) x /= std::sqrt(norm);
      for (int64_t s = kKeys / 2; s < kKeys; ++s)
        for (int64_t d = 0; d < kD; ++d) keys.set({s, h, d}, 12.0 * u[size_t(d)] + 0.05 * rng.normal());
      for (int64_t i = 0; i < queries.dim(0); ++i)
        for (int64_t g = h * (kHq / kHkv); g < (h + 1) * (kHq / kHkv); ++g)
          for (int64_t d = 0; d < kD; ++d) queries.set({i, g, d}, 6.0 * u[size_t(d)] + 0.1 * rng.normal());
    }
  }
};

sa_select_options fill_options(const std::vector<int64_t> &positions) {
  sa_select_options o = sat::select_options(kTopK, kWindow, kSinks);
  o.query_positions = positions.data();
  return o;
}

struct Variant {
  const char *name;
  int32_t bits, probes;
};
void PrintTo(const Variant &v, std::ostream *os) { *os << v.name; }

class LshFill : public ::testing::TestWithParam<Variant> {};

// Prefill: the queries' buckets hold later keys; per KV head and per query head lists.
TEST_P(LshFill, PrefillWithFutureKeysInTheBuckets) {
  auto ctx = sat::make_context(2);
  FutureCluster f(1301);
  auto ix = make_lsh(ctx.get(), lsh_options(kHkv, kD, GetParam().bits, GetParam().probes));
  ASSERT_NE(ix, nullptr);
  ASSERT_SA_OK(sa_index_append(ix.get(), f.keys.t()));
  for (int per_q : {0, 1}) {
    sa_select_options o = fill_options(f.positions);
    o.per_query_head = per_q;
    const int64_t lists = per_q ? kHq : kHkv, n_q = int64_t(f.positions.size());
    Tensor out(SA_DTYPE_I32, {n_q, lists, kTopK + kWindow + kSinks});
    ASSERT_SA_OK(sa_select(ix.get(), f.queries.t(), &o, out.t()));
    for (int64_t i = 0; i < n_q; ++i)
      for (int64_t l = 0; l < lists; ++l)
        EXPECT_TRUE(full_list({kKeys}, sat::row_of(out, i, l), f.positions[size_t(i)], 0))
            << "per_query_head " << per_q << ", query at " << f.positions[size_t(i)] << ", list " << l;
  }
}

// The same with an index that borrows the host's keys.
TEST_P(LshFill, PrefillBorrowedKeys) {
  auto ctx = sat::make_context(1);
  FutureCluster f(1302);
  sa_index_options io = lsh_options(kHkv, kD, GetParam().bits, GetParam().probes);
  io.borrow_keys = 1;
  auto ix = make_lsh(ctx.get(), io);
  ASSERT_NE(ix, nullptr);
  ASSERT_SA_OK(sa_index_append(ix.get(), f.keys.t()));
  sa_select_options o = fill_options(f.positions);
  o.keys = f.keys.t();
  const int64_t n_q = int64_t(f.positions.size());
  Tensor out(SA_DTYPE_I32, {n_q, kHkv, kTopK + kWindow + kSinks});
  ASSERT_SA_OK(sa_select(ix.get(), f.queries.t(), &o, out.t()));
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t l = 0; l < kHkv; ++l)
      EXPECT_TRUE(full_list({kKeys}, sat::row_of(out, i, l), f.positions[size_t(i)], 0))
          << "query at " << f.positions[size_t(i)] << ", list " << l;
}

// sa_select_batch over two sequences, query positions given for all queries.
TEST_P(LshFill, PrefillBatch) {
  auto ctx = sat::make_context(1);
  FutureCluster a(1303), b(1304);
  auto ia = make_lsh(ctx.get(), lsh_options(kHkv, kD, GetParam().bits, GetParam().probes));
  auto ib = make_lsh(ctx.get(), lsh_options(kHkv, kD, GetParam().bits, GetParam().probes));
  ASSERT_NE(ia, nullptr);
  ASSERT_NE(ib, nullptr);
  ASSERT_SA_OK(sa_index_append(ia.get(), a.keys.t()));
  ASSERT_SA_OK(sa_index_append(ib.get(), b.keys.t()));
  const int64_t per = int64_t(a.positions.size()), n_q = 2 * per;
  Tensor q(SA_DTYPE_F32, {n_q, kHq, kD});
  std::vector<int64_t> positions;
  for (const FutureCluster *f : {&a, &b})
    for (int64_t i = 0; i < per; ++i) {
      for (int64_t g = 0; g < kHq; ++g)
        for (int64_t d = 0; d < kD; ++d) q.set({int64_t(positions.size()), g, d}, f->queries.get({i, g, d}));
      positions.push_back(f->positions[size_t(i)]);
    }
  Tensor starts = sat::tensor_of(SA_DTYPE_I64, {3}, {0.0, double(per), double(n_q)});
  sa_index *ixs[2] = {ia.get(), ib.get()};
  sa_select_options o = fill_options(positions);
  Tensor out(SA_DTYPE_I32, {n_q, kHkv, kTopK + kWindow + kSinks});
  ASSERT_SA_OK(sa_select_batch(ixs, 2, q.t(), starts.t(), &o, nullptr, out.t()));
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t l = 0; l < kHkv; ++l)
      EXPECT_TRUE(full_list({kKeys}, sat::row_of(out, i, l), positions[size_t(i)], 0))
          << "query " << i << " at " << positions[size_t(i)] << ", list " << l;
}

INSTANTIATE_TEST_SUITE_P(Options, LshFill,
                         ::testing::Values(Variant{"Defaults", 0, 2}, Variant{"OwnBucketOnly", 12, 0}),
                         [](const auto &info) { return std::string(info.param.name); });

// Decode (every key visible): with 16 bits and no probes the buckets hold a key or none.
TEST(LshFillDecode, SparseBuckets) {
  auto ctx = sat::make_context(1);
  Rng rng(1305);
  const int64_t n = 3000;
  Tensor keys = sat::random_tensor(rng, SA_DTYPE_F32, {n, kHkv, kD});
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, kHq, kD});
  auto ix = make_lsh(ctx.get(), lsh_options(kHkv, kD, 16, 0, 2));
  ASSERT_NE(ix, nullptr);
  ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
  sa_select_options o = sat::select_options(kTopK, kWindow, kSinks);  // the last 3 positions
  Tensor out(SA_DTYPE_I32, {3, kHkv, kTopK + kWindow + kSinks});
  ASSERT_SA_OK(sa_select(ix.get(), q.t(), &o, out.t()));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t l = 0; l < kHkv; ++l)
      EXPECT_TRUE(full_list({n}, sat::row_of(out, i, l), n - 3 + i, 0)) << "query " << i << ", list " << l;
}

// Packed sequences: the query's buckets are mostly other segments' keys.
TEST(LshFillDecode, Segments) {
  auto ctx = sat::make_context(1);
  Rng rng(1306);
  const int64_t n = 4000;
  Tensor keys = sat::random_tensor(rng, SA_DTYPE_F32, {n, kHkv, kD});
  std::vector<int32_t> key_seg(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) key_seg[size_t(s)] = s < 3700 ? int32_t(s % 8 == 0) : 1;  // segment 1: 12% of keys
  const std::vector<int64_t> positions = {900, 2000, 3999};
  const std::vector<int32_t> q_seg = {1, 1, 1};
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, kHq, kD});
  auto ix = make_lsh(ctx.get(), lsh_options(kHkv, kD));
  ASSERT_NE(ix, nullptr);
  ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
  sa_select_options o = fill_options(positions);
  o.query_segments = q_seg.data();
  o.key_segments = key_seg.data();
  Tensor out(SA_DTYPE_I32, {3, kHkv, kTopK + kWindow + kSinks});
  ASSERT_SA_OK(sa_select(ix.get(), q.t(), &o, out.t()));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t l = 0; l < kHkv; ++l)
      EXPECT_TRUE(full_list({n, key_seg.data()}, sat::row_of(out, i, l), positions[size_t(i)], 1))
          << "query at " << positions[size_t(i)] << ", list " << l;
}

// The realistic fixture (layer 3, 1024 tokens) in prefill: the fixture's query rows (those of
// its last 256 tokens) asked at positions spread over 64..1023, with the default options.
TEST(LshFillFixture, PrefillQueryPositions) {
  const quality::QkvLayer L = quality::load_layer(SA_TEST_DATA_DIR, 3);
  auto ctx = sat::make_context(2);
  Tensor keys(SA_DTYPE_F32, {L.tokens, L.hkv, L.d});
  std::vector<double> kv(size_t(L.k.numel()));
  for (size_t e = 0; e < kv.size(); ++e) kv[e] = L.k.at(int64_t(e));
  keys.set_values(kv);
  const int64_t n_q = L.q.shape[0];
  Tensor q(SA_DTYPE_F32, {n_q, L.hq, L.d});
  std::vector<double> qv(size_t(L.q.numel()));
  for (size_t e = 0; e < qv.size(); ++e) qv[e] = L.q.at(int64_t(e));
  q.set_values(qv);
  std::vector<int64_t> positions(static_cast<size_t>(n_q));
  for (int64_t i = 0; i < n_q; ++i) positions[size_t(i)] = 64 + i * (L.tokens - 64) / n_q;
  auto ix = make_lsh(ctx.get(), lsh_options(L.hkv, L.d));
  ASSERT_NE(ix, nullptr);
  ASSERT_SA_OK(sa_index_append(ix.get(), keys.t()));
  sa_select_options o = fill_options(positions);
  Tensor out(SA_DTYPE_I32, {n_q, L.hkv, kTopK + kWindow + kSinks});
  ASSERT_SA_OK(sa_select(ix.get(), q.t(), &o, out.t()));
  int64_t bad = 0;
  for (int64_t i = 0; i < n_q; ++i)
    for (int64_t l = 0; l < L.hkv; ++l) {
      const ::testing::AssertionResult r = full_list({L.tokens}, sat::row_of(out, i, l), positions[size_t(i)], 0);
      if (!r && ++bad <= 5) ADD_FAILURE() << "query at " << positions[size_t(i)] << ", list " << l << ": " << r.message();
    }
  EXPECT_EQ(bad, 0) << "short or invalid lists of " << n_q * L.hkv;
}

}  // namespace
