// sa_attend_paged and sa_select_batch: batches of sequences of different lengths over a paged
// KV cache, against the double-precision reference run on each sequence gathered into a
// contiguous cache by the test itself (its own page-table walk and element offsets).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <numeric>
#include <thread>
#include <vector>

#include "reference_attention.hpp"
#include "build_features.hpp"
#include "test_util.hpp"

namespace {

using sat::Tensor;

// A paged cache owned by the test: pages [num_pages, P, H_kv, D] (optionally padded so that
// pages are not P rows apart), a page table per sequence and the lengths.
struct PagedCache {
  int64_t P = 16, H_kv = 2, D = 16, num_pages = 0;
  Tensor k, v, table, lens, slot_pos;
  std::vector<int64_t> len;
  std::vector<std::vector<int32_t>> pages;  // per sequence, in token order
  bool with_positions = false;

  sa_paged_kv desc() {
    sa_paged_kv kv = SA_PAGED_KV_INIT;
    kv.k = *k.t();
    kv.v = *v.t();
    kv.page_table = *table.t();
    kv.seq_lens = *lens.t();
    if (with_positions) kv.slot_positions = *slot_pos.t();
    return kv;
  }
  int64_t slot(int64_t b, int64_t t) const { return int64_t(pages[size_t(b)][size_t(t / P)]) * P + t % P; }
  int64_t num_slots() const { return num_pages * P; }
};

// Lengths `lens`, pages handed out in a shuffled order; share_prefix: sequence 1 starts with
// sequence 0's first full pages (prefix sharing). pad: pages padded by 3 rows (repacked path).
PagedCache make_cache(sat::Rng &rng, std::vector<int64_t> lens, int64_t P, sa_dtype dtype, bool share_prefix = false,
                      bool pad = false) {
  PagedCache c;
  c.P = P;
  c.len = lens;
  const int64_t B = int64_t(lens.size());
  int64_t need = 0, max_pages = 1;
  for (int64_t l : lens) {
    need += (l + P - 1) / P;
    max_pages = std::max(max_pages, (l + P - 1) / P);
  }
  c.num_pages = need + 2;  // two pages nobody uses
  std::vector<int32_t> order(static_cast<size_t>(c.num_pages));
  std::iota(order.begin(), order.end(), 0);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(int64_t(i)))]);
  size_t next = 0;
  c.pages.resize(size_t(B));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < (lens[size_t(b)] + P - 1) / P; ++j) {
      const bool shared = share_prefix && b == 1 && (j + 1) * P <= std::min(lens[0], lens[1]) && j < 2;
      c.pages[size_t(b)].push_back(shared ? c.pages[0][size_t(j)] : order[next++]);
    }
  std::vector<int64_t> strides;
  if (pad) strides = {(P + 3) * c.H_kv * c.D, c.H_kv * c.D, c.D, 1};
  c.k = sat::random_tensor(rng, dtype, {c.num_pages, P, c.H_kv, c.D}, strides);
  c.v = sat::random_tensor(rng, dtype, {c.num_pages, P, c.H_kv, c.D}, strides);
  c.table = Tensor(SA_DTYPE_I32, {B, max_pages});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < max_pages; ++j)
      c.table.set({b, j}, j < int64_t(c.pages[size_t(b)].size()) ? c.pages[size_t(b)][size_t(j)] : -7);  // unused: junk
  c.lens = Tensor(SA_DTYPE_I64, {B});
  for (int64_t b = 0; b < B; ++b) c.lens.set({b}, double(lens[size_t(b)]));
  c.slot_pos = Tensor(SA_DTYPE_I64, {c.num_slots()});
  for (int64_t s = 0; s < c.num_slots(); ++s) c.slot_pos.set({s}, -1);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < lens[size_t(b)]; ++t) c.slot_pos.set({c.slot(b, t)}, double(t));
  return c;
}

// The whole cache as contiguous rows [num_slots, H_kv, D] (row = physical slot), read with the
// test's own offsets: what the reference attends over.
void flat_cache(const PagedCache &c, Tensor &k, Tensor &v) {
  k = Tensor(c.k.dtype(), {c.num_slots(), c.H_kv, c.D});
  v = Tensor(c.v.dtype(), {c.num_slots(), c.H_kv, c.D});
  for (int64_t s = 0; s < c.num_slots(); ++s)
    for (int64_t h = 0; h < c.H_kv; ++h)
      for (int64_t d = 0; d < c.D; ++d) {
        k.set({s, h, d}, c.k.get({s / c.P, s % c.P, h, d}));
        v.set({s, h, d}, c.v.get({s / c.P, s % c.P, h, d}));
      }
}

// Rows [q0, q1) of a [n, H, X] tensor as a contiguous copy.
Tensor rows_of(const Tensor &t, int64_t q0, int64_t q1) {
  Tensor r(t.dtype(), {q1 - q0, t.dim(1), t.dim(2)});
  for (int64_t i = q0; i < q1; ++i)
    for (int64_t h = 0; h < t.dim(1); ++h)
      for (int64_t x = 0; x < t.dim(2); ++x) r.set({i - q0, h, x}, t.get({i, h, x}));
  return r;
}

struct Expected {
  std::vector<double> out, lse, mass;  // mass: [H_kv, num_slots]
};

// Reference for the batch: per sequence, dense over its tokens (as rows of the flat cache,
// listed in token order) or over its index rows; causal by slot position.
Expected reference(const PagedCache &c, const Tensor &q, const std::vector<int64_t> &starts, const Tensor *indices,
                   bool causal, const std::vector<int64_t> &qpos) {
  Tensor fk, fv;
  flat_cache(c, fk, fv);
  std::vector<int64_t> positions(static_cast<size_t>(c.num_slots()));
  for (int64_t s = 0; s < c.num_slots(); ++s) positions[size_t(s)] = int64_t(c.slot_pos.get({s}));
  Expected e;
  e.mass.assign(size_t(c.H_kv * c.num_slots()), 0.0);
  const int64_t B = int64_t(c.len.size());
  for (int64_t b = 0; b < B; ++b) {
    const int64_t q0 = starts[size_t(b)], q1 = starts[size_t(b) + 1];
    if (q1 == q0) continue;
    Tensor qb = rows_of(q, q0, q1), lists;
    if (indices) {
      lists = rows_of(*indices, q0, q1);
    } else {
      lists = Tensor(SA_DTYPE_I32, {q1 - q0, c.H_kv, std::max<int64_t>(1, c.len[size_t(b)])});
      for (int64_t i = 0; i < q1 - q0; ++i)
        for (int64_t h = 0; h < c.H_kv; ++h)
          for (int64_t t = 0; t < lists.dim(2); ++t)
            lists.set({i, h, t}, t < c.len[size_t(b)] ? double(c.slot(b, t)) : -1.0);
    }
    // Without slot positions the library takes sparse entries as given; dense keys count tokens.
    ref::AttendArgs a;
    a.q = qb.t();
    a.k = fk.t();
    a.v = fv.t();
    a.indices = lists.t();
    a.causal = causal && (!indices || c.with_positions);
    a.query_positions = &qpos[size_t(q0)];
    a.key_positions = positions.data();
    // Empty slots (-1) are never attended: drop them from the lists the reference reads.
    for (int64_t i = 0; i < lists.dim(0); ++i)
      for (int64_t h = 0; h < lists.dim(1); ++h)
        for (int64_t w = 0; w < lists.dim(2); ++w) {
          const int64_t s = int64_t(lists.get({i, h, w}));
          if (s >= 0 && positions[size_t(s)] < 0 && c.with_positions) lists.set({i, h, w}, -1);
        }
    const ref::AttendResult r = ref::attend(a);
    e.out.insert(e.out.end(), r.out.begin(), r.out.end());
    e.lse.insert(e.lse.end(), r.lse.begin(), r.lse.end());
    for (size_t j = 0; j < r.mass.size(); ++j) e.mass[j] += r.mass[j];
  }
  return e;
}

double tolerance(sa_dtype kv) { return kv == SA_DTYPE_F32 ? 2e-5 : 1e-4; }

std::vector<int64_t> one_query_each(int64_t B) {
  std::vector<int64_t> s(static_cast<size_t>(B + 1));
  std::iota(s.begin(), s.end(), 0);
  return s;
}

struct Case {
  std::vector<int64_t> lens;
  int64_t P;
  sa_dtype dtype;
  bool causal, share, pad, positions;
  int queries_per_seq;  // 1: decode (no query_starts); > 1: the last tokens of each sequence
  int64_t width = 24;   // sparse lists' entries per query head
};

class PagedAttend : public sat::ContextTest {
 protected:
  void run_case(const Case &cs, bool sparse, sa_context *ctx) {
    sat::Rng rng(1234 + cs.P + int64_t(cs.lens.size()));
    PagedCache c = make_cache(rng, cs.lens, cs.P, cs.dtype, cs.share, cs.pad);
    c.with_positions = cs.positions;
    // After eviction positions no longer count tokens: token t holds position 2t, and every
    // fifth slot is empty (-1).
    if (cs.positions)
      for (int64_t b = 0; b < int64_t(cs.lens.size()); ++b)
        for (int64_t t = 0; t < cs.lens[size_t(b)]; ++t) c.slot_pos.set({c.slot(b, t)}, t % 5 == 2 ? -1.0 : 2.0 * t);
    const int64_t B = int64_t(cs.lens.size()), H_q = 4;
    std::vector<int64_t> starts(1, 0);
    for (int64_t b = 0; b < B; ++b)
      starts.push_back(starts.back() + std::min<int64_t>(cs.queries_per_seq, std::max<int64_t>(1, cs.lens[size_t(b)])));
    const int64_t n_q = starts.back();
    std::vector<int64_t> qpos(static_cast<size_t>(n_q));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = starts[size_t(b)]; i < starts[size_t(b) + 1]; ++i)
        qpos[size_t(i)] = (cs.positions ? 2 : 1) * (cs.lens[size_t(b)] - (starts[size_t(b) + 1] - starts[size_t(b)]) +
                                                    (i - starts[size_t(b)]));
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, H_q, c.D});
    Tensor qs(SA_DTYPE_I64, {B + 1});
    for (int64_t b = 0; b <= B; ++b) qs.set({b}, double(starts[size_t(b)]));
    const bool use_starts = cs.queries_per_seq > 1;
    if (!use_starts) {
      ASSERT_EQ(starts, one_query_each(B));
    }

    // Sparse lists: random physical slots of the query's own sequence (repeats count twice), some -1.
    Tensor idx;
    if (sparse) {
      const int64_t width = cs.width;
      idx = Tensor(SA_DTYPE_I32, {n_q, H_q, width});  // per query head
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = starts[size_t(b)]; i < starts[size_t(b) + 1]; ++i)
          for (int64_t h = 0; h < H_q; ++h)
            for (int64_t w = 0; w < width; ++w) {
              const int64_t len = cs.lens[size_t(b)];
              idx.set({i, h, w}, len == 0 || w % 7 == 3 ? -1.0 : double(c.slot(b, rng.below(len))));
            }
    }
    Tensor out(SA_DTYPE_F32, {n_q, H_q, c.D}), lse(SA_DTYPE_F32, {n_q, H_q});
    Tensor mass(SA_DTYPE_F32, {c.H_kv, c.num_slots()});
    for (int64_t h = 0; h < c.H_kv; ++h)
      for (int64_t s = 0; s < c.num_slots(); ++s) mass.set({h, s}, 0.0);
    sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
    o.causal = cs.causal;
    if (cs.positions) o.query_positions = qpos.data();
    o.slot_mass = mass.t();
    sa_paged_kv kv = c.desc();
    ASSERT_SA_OK(sa_attend_paged(ctx, q.t(), use_starts ? qs.t() : nullptr, &kv, sparse ? idx.t() : nullptr, &o,
                                 out.t(), lse.t()));
    const Expected e = reference(c, q, starts, sparse ? &idx : nullptr, cs.causal, qpos);
    EXPECT_TRUE(sat::close_rel(out.values(), e.out, tolerance(cs.dtype)));
    std::vector<double> got_lse = lse.values();
    for (size_t j = 0; j < got_lse.size(); ++j) {
      if (std::isinf(e.lse[j])) EXPECT_TRUE(std::isinf(got_lse[j]) && got_lse[j] < 0) << "lse " << j;
      else EXPECT_NEAR(got_lse[j], e.lse[j], 1e-4 * std::max(1.0, std::fabs(e.lse[j]))) << "lse " << j;
    }
    EXPECT_TRUE(sat::close_rel(mass.values(), e.mass, 1e-4));
    EXPECT_TRUE(out.only_elements_written());
  }
};

TEST_F(PagedAttend, DenseBatchesOfMixedLengthsEveryPageSize) {
  for (int64_t P : {1, 16, 256})
    for (bool causal : {false, true}) {
      SCOPED_TRACE("P " + std::to_string(P) + " causal " + std::to_string(causal));
      run_case({{0, 1, 63, 200, 17}, P, SA_DTYPE_F32, causal, true, false, false, 1}, false, ctx());
    }
}

TEST_F(PagedAttend, SeventeenSequencesWithALongOne) {
  std::vector<int64_t> lens;
  for (int b = 0; b < 17; ++b) lens.push_back(b == 5 ? 4097 : (b * 37) % 130);
  run_case({lens, 16, SA_DTYPE_F16, true, true, false, false, 1}, false, ctx());
  run_case({lens, 16, SA_DTYPE_F16, true, true, false, false, 1}, true, ctx());
}

TEST_F(PagedAttend, EveryDtypeDenseAndSparse) {
  for (sa_dtype dt : {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16})
    for (bool sparse : {false, true}) {
      SCOPED_TRACE("dtype " + std::to_string(int(dt)) + " sparse " + std::to_string(sparse));
      run_case({{1, 63, 40}, 16, dt, true, false, false, false, 1}, sparse, ctx());
    }
}

TEST_F(PagedAttend, PrefillChunksWithQueryStarts) {
  for (bool sparse : {false, true}) run_case({{5, 0, 70, 33}, 16, SA_DTYPE_F32, true, true, false, false, 6}, sparse, ctx());
}

TEST_F(PagedAttend, SlotPositionsMaskEmptySlotsAndFutureKeys) {
  for (bool causal : {true, false})  // empty slots (-1) are never attended, causal or not
    for (bool sparse : {false, true}) {
      SCOPED_TRACE(std::string(sparse ? "sparse" : "dense") + (causal ? ", causal" : ""));
      run_case({{30, 0, 64, 9}, 16, SA_DTYPE_F32, causal, false, false, true, 3}, sparse, ctx());
    }
}

TEST_F(PagedAttend, PaddedPagesAreRepacked) {
  for (bool sparse : {false, true}) run_case({{20, 50}, 16, SA_DTYPE_BF16, true, false, true, false, 1}, sparse, ctx());
}

TEST_F(PagedAttend, TwoThreadsMatchTheReference) {
  auto two = sat::make_context(2);
  ASSERT_NE(two, nullptr);
  for (bool sparse : {false, true}) run_case({{300, 1, 2000, 64}, 16, SA_DTYPE_F16, true, true, false, false, 2}, sparse, two.get());
}

// One decode query over a long sequence: its keys (dense) or its lists (sparse, 2116 entries)
// are split into chunks over the threads and merged; empty slots fall inside the chunks.
TEST_F(PagedAttend, DecodeStepSplitOverSixteenThreads) {
  auto many = sat::make_context(16);
  ASSERT_NE(many, nullptr);
  for (bool sparse : {false, true}) {
    SCOPED_TRACE(sparse ? "sparse" : "dense");
    Case cs{{6000}, 16, SA_DTYPE_F16, true, false, false, true, 1};
    cs.width = 2116;
    run_case(cs, sparse, many.get());
  }
}

// The single-sequence layout: rank-3 k/v, no page table, equals sa_attend.
TEST_F(PagedAttend, ContiguousCacheEqualsSaAttend) {
  sat::Rng rng(9);
  const int64_t n = 100, H_kv = 2, H_q = 4, D = 16;
  Tensor k = sat::random_tensor(rng, SA_DTYPE_F16, {n, H_kv, D}), v = sat::random_tensor(rng, SA_DTYPE_F16, {n, H_kv, D});
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, H_q, D});
  Tensor a(SA_DTYPE_F32, {3, H_q, D}), b(SA_DTYPE_F32, {3, H_q, D});
  Tensor qs = sat::tensor_of(SA_DTYPE_I32, {2}, {0, 3});
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = 1;
  ASSERT_SA_OK(sa_attend(ctx(), q.t(), k.t(), v.t(), nullptr, &o, a.t(), nullptr));
  sa_paged_kv kv = SA_PAGED_KV_INIT;
  kv.k = *k.t();
  kv.v = *v.t();
  ASSERT_SA_OK(sa_attend_paged(ctx(), q.t(), qs.t(), &kv, nullptr, &o, b.t(), nullptr));
  EXPECT_TRUE(sat::close_rel(b.values(), a.values(), 1e-6));
}

// Known bug 4 of the API fuzzer: dense attention over a batch whose sequences all hold no token
// (the list of their tokens is empty) gives out = 0, lse = -inf and adds no slot mass.
TEST_F(PagedAttend, DenseBatchOfEmptySequencesAttendsNothing) {
  sat::Rng rng(12);
  PagedCache c = make_cache(rng, {0, 0, 0}, 16, SA_DTYPE_F32);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {3, 4, c.D});
  Tensor out(SA_DTYPE_F32, {3, 4, c.D}), lse(SA_DTYPE_F32, {3, 4});
  Tensor mass = sat::random_tensor(rng, SA_DTYPE_F32, {c.H_kv, c.num_slots()});
  const std::vector<double> mass_before = mass.values();
  for (int causal : {0, 1}) {
    out.poison();
    lse.poison();
    sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
    o.causal = causal;
    o.slot_mass = mass.t();
    o.mass_decay = 1.0f;  // the default 0.99 would scale every slot: this checks what is added
    sa_paged_kv kv = c.desc();
    ASSERT_SA_OK(sa_attend_paged(ctx(), q.t(), nullptr, &kv, nullptr, &o, out.t(), lse.t()));
    EXPECT_EQ(out.values(), std::vector<double>(size_t(3 * 4 * c.D), 0.0)) << "causal " << causal;
    EXPECT_EQ(lse.values(), std::vector<double>(12, -std::numeric_limits<double>::infinity())) << "causal " << causal;
    EXPECT_EQ(mass.values(), mass_before) << "causal " << causal;  // decay 1: nothing added
  }
}

// Bad page tables and batch shapes: a status and a message, nothing written.
TEST_F(PagedAttend, BadPageTablesAreRefused) {
  sat::Rng rng(5);
  PagedCache c = make_cache(rng, {20, 40}, 16, SA_DTYPE_F32);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 4, c.D});
  Tensor out(SA_DTYPE_F32, {2, 4, c.D});
  out.poison();
  auto attend = [&](sa_paged_kv &kv, const sa_tensor *qs = nullptr) {
    return sa_attend_paged(ctx(), q.t(), qs, &kv, nullptr, nullptr, out.t(), nullptr);
  };
  {
    PagedCache bad = c;
    bad.table.set({1, 2}, double(c.num_pages));  // a page past the cache, inside sequence 1's length
    sa_paged_kv kv = bad.desc();
    EXPECT_SA_ERR(SA_ERR_OUT_OF_RANGE, attend(kv));
    bad.table.set({1, 2}, -1);
    kv = bad.desc();
    EXPECT_SA_ERR(SA_ERR_OUT_OF_RANGE, attend(kv));
  }
  {
    PagedCache bad = c;
    bad.lens.set({0}, double(bad.table.dim(1) * 16 + 1));  // beyond its page table row
    sa_paged_kv kv = bad.desc();
    EXPECT_SA_ERR(SA_ERR_SHAPE, attend(kv));
    bad.lens.set({0}, -1);
    kv = bad.desc();
    EXPECT_SA_ERR(SA_ERR_OUT_OF_RANGE, attend(kv));
  }
  {
    sa_paged_kv kv = c.desc();
    kv.page_table = sa_tensor{};
    EXPECT_SA_ERR(SA_ERR_NULL_POINTER, attend(kv));
    kv = c.desc();
    kv.seq_lens.shape[0] = 3;
    EXPECT_SA_ERR(SA_ERR_SHAPE, attend(kv));
    kv = c.desc();
    Tensor qs = sat::tensor_of(SA_DTYPE_I32, {3}, {0, 2, 1});  // decreasing
    EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, attend(kv, qs.t()));
    Tensor positions(SA_DTYPE_I64, {c.num_slots()});
    for (int64_t s = 0; s < c.num_slots(); ++s) positions.set({s}, s == 3 ? -2.0 : 0.0);
    kv.slot_positions = *positions.t();
    EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, attend(kv));
  }
  {
    sa_paged_kv kv = c.desc();
    Tensor idx(SA_DTYPE_I32, {2, 2, 4});
    for (int64_t e = 0; e < 16; ++e) idx.set({e / 8, (e / 4) % 2, e % 4}, e == 9 ? double(c.num_slots()) : 0.0);
    EXPECT_SA_ERR(SA_ERR_OUT_OF_RANGE, sa_attend_paged(ctx(), q.t(), nullptr, &kv, idx.t(), nullptr, out.t(), nullptr));
    sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
    o.causal = 1;
    Tensor positions(SA_DTYPE_I64, {c.num_slots()});
    kv.slot_positions = *positions.t();
    EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_attend_paged(ctx(), q.t(), nullptr, &kv, nullptr, &o, out.t(), nullptr));
  }
  EXPECT_TRUE(out.untouched());
}

// ------------------------------------------------------------------ per-KV-head positions

// Per-KV-head eviction over a paged cache: each KV head keeps its own tokens, so
// opt->head_key_positions [H_kv, num_slots] gives the position every physical slot holds per
// head. Head 0 of token t holds position 3t, head 1 holds 3(len - 1 - t) + 1 (the reverse order:
// masks must read positions, not slot order), and each head has its own empty slots.
std::vector<int64_t> head_positions(const PagedCache &c, bool with_empty_slots = true) {
  std::vector<int64_t> pos(size_t(c.H_kv * c.num_slots()), -1);
  for (int64_t b = 0; b < int64_t(c.len.size()); ++b)
    for (int64_t t = 0; t < c.len[size_t(b)]; ++t)
      for (int64_t h = 0; h < c.H_kv; ++h)
        if (!with_empty_slots || (t * 7 + h) % 5 != 3)
          pos[size_t(h * c.num_slots() + c.slot(b, t))] = h == 0 ? 3 * t : 3 * (c.len[size_t(b)] - 1 - t) + 1;
  return pos;
}

// The double-precision reference with per-head positions hpos [H_kv, num_slots]: per sequence,
// over its tokens (rows of the flat cache in token order) or its index rows; the reference
// itself skips rows a head holds empty (-1) and masks by each head's positions.
Expected reference_heads(const PagedCache &c, const std::vector<int64_t> &hpos, const Tensor &q,
                         const std::vector<int64_t> &starts, const Tensor *indices, bool causal,
                         const std::vector<int64_t> &qpos) {
  Tensor fk, fv;
  flat_cache(c, fk, fv);
  Expected e;
  e.mass.assign(size_t(c.H_kv * c.num_slots()), 0.0);
  for (int64_t b = 0; b < int64_t(c.len.size()); ++b) {
    const int64_t q0 = starts[size_t(b)], q1 = starts[size_t(b) + 1], len = c.len[size_t(b)];
    if (q1 == q0) continue;
    Tensor qb = rows_of(q, q0, q1), lists;
    if (indices) {
      lists = rows_of(*indices, q0, q1);
    } else {
      lists = Tensor(SA_DTYPE_I32, {q1 - q0, c.H_kv, std::max<int64_t>(1, len)});
      for (int64_t i = 0; i < q1 - q0; ++i)
        for (int64_t h = 0; h < c.H_kv; ++h)
          for (int64_t t = 0; t < lists.dim(2); ++t) lists.set({i, h, t}, t < len ? double(c.slot(b, t)) : -1.0);
    }
    ref::AttendArgs a;
    a.q = qb.t();
    a.k = fk.t();
    a.v = fv.t();
    a.indices = lists.t();
    a.causal = causal;
    a.query_positions = &qpos[size_t(q0)];
    a.head_key_positions = hpos.data();
    const ref::AttendResult r = ref::attend(a);
    e.out.insert(e.out.end(), r.out.begin(), r.out.end());
    e.lse.insert(e.lse.end(), r.lse.begin(), r.lse.end());
    for (size_t j = 0; j < r.mass.size(); ++j) e.mass[j] += r.mass[j];
  }
  return e;
}

struct HeadCase {
  std::vector<int64_t> lens;
  int64_t P;
  sa_dtype dtype;
  bool causal, sparse, given_qpos;
  int queries_per_seq;
};

class PagedHeadPositions : public sat::ContextTest {
 protected:
  void run_case(const HeadCase &cs) {
    sat::Rng rng(77 + cs.P + int64_t(cs.lens.size()));
    PagedCache c = make_cache(rng, cs.lens, cs.P, cs.dtype);  // shuffled pages
    const std::vector<int64_t> hpos = head_positions(c);
    const int64_t B = int64_t(cs.lens.size()), H_q = 4, S = c.num_slots();
    std::vector<int64_t> starts(1, 0);
    for (int64_t b = 0; b < B; ++b)
      starts.push_back(starts.back() + std::min<int64_t>(cs.queries_per_seq, std::max<int64_t>(1, cs.lens[size_t(b)])));
    const int64_t n_q = starts.back();
    // Query positions: given (3 per token, as head 0 counts), or the default the test derives
    // itself: the last n_b positions up to the largest any head holds in the sequence's slots.
    std::vector<int64_t> qpos(static_cast<size_t>(n_q)), given(static_cast<size_t>(n_q));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n_b = starts[size_t(b) + 1] - starts[size_t(b)], len = cs.lens[size_t(b)];
      int64_t last = -1;
      for (int64_t t = 0; t < len; ++t)
        for (int64_t h = 0; h < c.H_kv; ++h) last = std::max(last, hpos[size_t(h * S + c.slot(b, t))]);
      for (int64_t i = starts[size_t(b)]; i < starts[size_t(b) + 1]; ++i) {
        given[size_t(i)] = 3 * (len - n_b + (i - starts[size_t(b)]));
        qpos[size_t(i)] = cs.given_qpos ? given[size_t(i)] : last - n_b + 1 + (i - starts[size_t(b)]);
      }
    }
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {n_q, H_q, c.D});
    Tensor qs(SA_DTYPE_I64, {B + 1});
    for (int64_t b = 0; b <= B; ++b) qs.set({b}, double(starts[size_t(b)]));
    Tensor idx;  // per query head: random slots of the query's own sequence, some -1
    if (cs.sparse) {
      idx = Tensor(SA_DTYPE_I32, {n_q, H_q, 20});
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = starts[size_t(b)]; i < starts[size_t(b) + 1]; ++i)
          for (int64_t h = 0; h < H_q; ++h)
            for (int64_t w = 0; w < 20; ++w) {
              const int64_t len = cs.lens[size_t(b)];
              idx.set({i, h, w}, len == 0 || w % 7 == 3 ? -1.0 : double(c.slot(b, rng.below(len))));
            }
    }
    Tensor out(SA_DTYPE_F32, {n_q, H_q, c.D}), lse(SA_DTYPE_F32, {n_q, H_q}), mass(SA_DTYPE_F32, {c.H_kv, S});
    for (int64_t h = 0; h < c.H_kv; ++h)
      for (int64_t s = 0; s < S; ++s) mass.set({h, s}, 0.0);
    sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
    o.causal = cs.causal;
    o.head_key_positions = hpos.data();
    if (cs.given_qpos) o.query_positions = given.data();
    o.slot_mass = mass.t();
    sa_paged_kv kv = c.desc();
    ASSERT_SA_OK(sa_attend_paged(ctx(), q.t(), qs.t(), &kv, cs.sparse ? idx.t() : nullptr, &o, out.t(), lse.t()));
    EXPECT_TRUE(out.only_elements_written());

    // 1. The double-precision reference over the flat cache (row = physical slot).
    const Expected e = reference_heads(c, hpos, q, starts, cs.sparse ? &idx : nullptr, cs.causal, qpos);
    // 2. sa_attend on each sequence gathered into a contiguous cache (row t = token t), its
    //    positions [H_kv, len] and its lists mapped from slots to tokens.
    std::vector<double> flat_out, flat_mass(size_t(c.H_kv * S), 0.0);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t q0 = starts[size_t(b)], q1 = starts[size_t(b) + 1], len = cs.lens[size_t(b)];
      Tensor qb = rows_of(q, q0, q1);
      if (len == 0) {  // sa_attend takes no empty cache: nothing visible, out 0
        flat_out.insert(flat_out.end(), size_t((q1 - q0) * H_q * c.D), 0.0);
        continue;
      }
      Tensor kb(c.k.dtype(), {len, c.H_kv, c.D}), vb(c.v.dtype(), {len, c.H_kv, c.D});
      std::vector<int64_t> hpos_b(size_t(c.H_kv * len));
      std::vector<int64_t> token_of(size_t(S), -1);
      for (int64_t t = 0; t < len; ++t) {
        const int64_t s = c.slot(b, t);
        token_of[size_t(s)] = t;
        for (int64_t h = 0; h < c.H_kv; ++h) {
          hpos_b[size_t(h * len + t)] = hpos[size_t(h * S + s)];
          for (int64_t d = 0; d < c.D; ++d) {
            kb.set({t, h, d}, c.k.get({s / c.P, s % c.P, h, d}));
            vb.set({t, h, d}, c.v.get({s / c.P, s % c.P, h, d}));
          }
        }
      }
      Tensor ib;
      if (cs.sparse) {
        ib = rows_of(idx, q0, q1);
        for (int64_t i = 0; i < ib.dim(0); ++i)
          for (int64_t h = 0; h < ib.dim(1); ++h)
            for (int64_t w = 0; w < ib.dim(2); ++w) {
              const int64_t s = int64_t(ib.get({i, h, w}));
              ib.set({i, h, w}, s < 0 ? -1.0 : double(token_of[size_t(s)]));
            }
      }
      Tensor ob(SA_DTYPE_F32, {q1 - q0, H_q, c.D}), mb(SA_DTYPE_F32, {c.H_kv, len});
      for (int64_t h = 0; h < c.H_kv; ++h)
        for (int64_t t = 0; t < len; ++t) mb.set({h, t}, 0.0);
      sa_attend_options ob_opt = SA_ATTEND_OPTIONS_INIT;
      ob_opt.causal = cs.causal;
      ob_opt.head_key_positions = hpos_b.data();
      if (cs.given_qpos) ob_opt.query_positions = &given[size_t(q0)];  // else its default: the same rule
      ob_opt.slot_mass = mb.t();
      ASSERT_SA_OK(sa_attend(ctx(), qb.t(), kb.t(), vb.t(), cs.sparse ? ib.t() : nullptr, &ob_opt, ob.t(), nullptr));
      const std::vector<double> got = ob.values();
      flat_out.insert(flat_out.end(), got.begin(), got.end());
      for (int64_t h = 0; h < c.H_kv; ++h)
        for (int64_t t = 0; t < len; ++t) flat_mass[size_t(h * S + c.slot(b, t))] += mb.get({h, t});
    }
    EXPECT_TRUE(sat::close_rel(out.values(), e.out, tolerance(cs.dtype)));
    const std::vector<double> got_lse = lse.values();
    for (size_t j = 0; j < got_lse.size(); ++j) {
      if (std::isinf(e.lse[j])) EXPECT_TRUE(std::isinf(got_lse[j]) && got_lse[j] < 0) << "lse " << j;
      else EXPECT_NEAR(got_lse[j], e.lse[j], 1e-4 * std::max(1.0, std::fabs(e.lse[j]))) << "lse " << j;
    }
    EXPECT_TRUE(sat::close_rel(mass.values(), e.mass, 1e-4));
    EXPECT_TRUE(sat::close_rel(out.values(), flat_out, 1e-5));
    EXPECT_TRUE(sat::close_rel(mass.values(), flat_mass, 1e-5));
  }
};

TEST_F(PagedHeadPositions, DenseAndSparseMatchTheReferenceAndSaAttend) {
  for (bool causal : {true, false})  // empty slots (-1) are never attended, causal or not
    for (bool sparse : {false, true})
      for (bool given : {false, true}) {
        SCOPED_TRACE(std::string(sparse ? "sparse" : "dense") + (causal ? ", causal" : "") +
                     (given ? ", given query positions" : ", default query positions"));
        run_case({{30, 0, 64, 9, 100}, 16, SA_DTYPE_F32, causal, sparse, given, 3});
      }
}

TEST_F(PagedHeadPositions, DecodeStepEveryDtypeAndPageSize) {
  for (sa_dtype dt : {SA_DTYPE_F16, SA_DTYPE_BF16})
    for (int64_t P : {1, 16})
      for (bool sparse : {false, true}) {
        SCOPED_TRACE("dtype " + std::to_string(int(dt)) + " P " + std::to_string(P) + (sparse ? " sparse" : " dense"));
        run_case({{17, 1, 130}, P, dt, true, sparse, false, 1});
      }
}

// Contradictory or malformed per-head positions: a status and a message, nothing written.
TEST_F(PagedHeadPositions, BadCombinationsAreRefused) {
  sat::Rng rng(6);
  PagedCache c = make_cache(rng, {20, 40}, 16, SA_DTYPE_F32);
  std::vector<int64_t> hpos = head_positions(c);
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 4, c.D});
  Tensor out(SA_DTYPE_F32, {2, 4, c.D});
  out.poison();
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = 1;
  o.head_key_positions = hpos.data();
  c.with_positions = true;  // kv->slot_positions too: which positions hold?
  sa_paged_kv kv = c.desc();
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_attend_paged(ctx(), q.t(), nullptr, &kv, nullptr, &o, out.t(), nullptr));
  EXPECT_NE(std::string(sa_last_error()).find("head_key_positions"), std::string::npos) << sa_last_error();
  c.with_positions = false;
  kv = c.desc();
  Tensor mass1(SA_DTYPE_F32, {c.num_slots()});  // a row summed over heads would mix tokens
  o.slot_mass = mass1.t();
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_attend_paged(ctx(), q.t(), nullptr, &kv, nullptr, &o, out.t(), nullptr));
  o.slot_mass = nullptr;
  hpos[size_t(c.num_slots() + 5)] = -2;  // head 1, slot 5
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_attend_paged(ctx(), q.t(), nullptr, &kv, nullptr, &o, out.t(), nullptr));
  o.key_positions = hpos.data();
  hpos[size_t(c.num_slots() + 5)] = 0;
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_attend_paged(ctx(), q.t(), nullptr, &kv, nullptr, &o, out.t(), nullptr));
  EXPECT_TRUE(out.untouched());
}

// ------------------------------------------------------------------ batched selection

sat::IndexPtr index_over(sa_context *ctx, const PagedCache &c, int64_t b, sa_selector_kind kind, bool borrow = false) {
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.kind = kind;
  io.num_kv_heads = int32_t(c.H_kv);
  io.head_dim = int32_t(c.D);
  io.dtype = c.k.dtype();
  io.borrow_keys = borrow;
  sa_index *raw = nullptr;
  EXPECT_SA_OK(sa_index_create(ctx, &io, &raw));
  sat::IndexPtr ix(raw);
  if (!ix) return ix;
  const int64_t len = c.len[size_t(b)];
  Tensor keys(c.k.dtype(), {len, c.H_kv, c.D});
  for (int64_t t = 0; t < len; ++t)
    for (int64_t h = 0; h < c.H_kv; ++h)
      for (int64_t d = 0; d < c.D; ++d) {
        const int64_t s = c.slot(b, t);
        keys.set({t, h, d}, c.k.get({s / c.P, s % c.P, h, d}));
      }
  // Appended in two parts, as an engine appends a prompt and then decoded tokens.
  for (int64_t t0 : {int64_t(0), len / 2}) {
    const int64_t t1 = t0 == 0 ? len / 2 : len;
    Tensor part = rows_of(keys, t0, t1);
    EXPECT_SA_OK(sa_index_append(ix.get(), part.t()));
  }
  return ix;
}

// One index per sequence of c (kind_of(b) for sequence b), owned, with the raw handles that
// sa_select_batch takes.
struct BatchIndexes {
  std::vector<sat::IndexPtr> owned;
  std::vector<sa_index *> handles;
  template <class KindOf>
  BatchIndexes(sa_context *ctx, const PagedCache &c, KindOf kind_of, bool borrow = false) {
    for (int64_t b = 0; b < int64_t(c.len.size()); ++b) {
      owned.push_back(index_over(ctx, c, b, kind_of(b), borrow));
      handles.push_back(owned.back().get());
    }
  }
};

class BatchSelect : public sat::ContextTest {};

TEST_F(BatchSelect, EqualsOneSelectPerSequenceMappedThroughThePageTable) {
  for (sa_selector_kind kind : sat::built_kinds({SA_SELECTOR_EXACT, SA_SELECTOR_PAGE, SA_SELECTOR_LSH, SA_SELECTOR_HNSW}))
    for (int threads : {1, 2}) {
      SCOPED_TRACE("kind " + std::to_string(int(kind)) + " threads " + std::to_string(threads));
      auto ctx = sat::make_context(threads);
      sat::Rng rng(77);
      PagedCache c = make_cache(rng, {0, 1, 63, 300, 129}, 16, SA_DTYPE_F16, true);
      const int64_t B = int64_t(c.len.size()), H_q = 4, qper = 2;
      BatchIndexes batch(ctx.get(), c, [&](int64_t) { return kind; });
      std::vector<sa_index *> &ixs = batch.handles;
      Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {B * qper, H_q, c.D});
      Tensor qs(SA_DTYPE_I32, {B + 1});
      for (int64_t b = 0; b <= B; ++b) qs.set({b}, double(b * qper));
      sa_select_options o = sat::select_options(8, 4, 2);
      const int64_t width = 16;
      Tensor slots(SA_DTYPE_I32, {B * qper, c.H_kv, width}), phys(SA_DTYPE_I32, {B * qper, c.H_kv, width});
      ASSERT_SA_OK(sa_select_batch(ixs.data(), B, q.t(), qs.t(), &o, nullptr, slots.t()));
      sa_paged_kv kv = c.desc();
      ASSERT_SA_OK(sa_select_batch(ixs.data(), B, q.t(), qs.t(), &o, &kv, phys.t()));
      for (int64_t b = 0; b < B; ++b) {
        Tensor qb = rows_of(q, b * qper, (b + 1) * qper), one(SA_DTYPE_I32, {qper, c.H_kv, width});
        ASSERT_SA_OK(sa_select(ixs[size_t(b)], qb.t(), &o, one.t()));
        for (int64_t i = 0; i < qper; ++i)
          for (int64_t h = 0; h < c.H_kv; ++h)
            for (int64_t w = 0; w < width; ++w) {
              const int64_t s = int64_t(one.get({i, h, w}));
              ASSERT_EQ(int64_t(slots.get({b * qper + i, h, w})), s) << "b " << b << " i " << i << " h " << h;
              ASSERT_EQ(int64_t(phys.get({b * qper + i, h, w})), s < 0 ? -1 : c.slot(b, s));
            }
      }
      // The physical lists feed the batched attend directly.
      Tensor out(SA_DTYPE_F32, {B * qper, H_q, c.D});
      std::vector<int64_t> starts;
      for (int64_t b = 0; b <= B; ++b) starts.push_back(b * qper);
      std::vector<int64_t> qpos;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < qper; ++i) qpos.push_back(c.len[size_t(b)] - qper + i);
      ASSERT_SA_OK(sa_attend_paged(ctx.get(), q.t(), qs.t(), &kv, phys.t(), nullptr, out.t(), nullptr));
      const Expected e = reference(c, q, starts, &phys, false, qpos);
      EXPECT_TRUE(sat::close_rel(out.values(), e.out, 1e-4));
    }
}

// Indexes that borrow their keys read them from the paged cache (shuffled and shared pages):
// the same physical slots as indexes that keep a copy.
TEST_F(BatchSelect, BorrowedKeysComeFromThePagedCache) {
  for (sa_selector_kind kind : sat::built_kinds({SA_SELECTOR_EXACT, SA_SELECTOR_PAGE, SA_SELECTOR_LSH, SA_SELECTOR_HNSW})) {
    SCOPED_TRACE("kind " + std::to_string(int(kind)));
    sat::Rng rng(91);
    PagedCache c = make_cache(rng, {300, 0, 17, 129}, 16, SA_DTYPE_F16, true);
    const int64_t B = int64_t(c.len.size()), H_q = 4, width = 16;
    auto same_kind = [&](int64_t) { return kind; };
    BatchIndexes owning_batch(ctx(), c, same_kind), borrowing_batch(ctx(), c, same_kind, true);
    std::vector<sa_index *> &owning = owning_batch.handles, &borrowing = borrowing_batch.handles;
    Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {B, H_q, c.D});
    sa_select_options o = sat::select_options(8, 4, 2);
    Tensor want(SA_DTYPE_I32, {B, c.H_kv, width}), got(SA_DTYPE_I32, {B, c.H_kv, width});
    sa_paged_kv kv = c.desc();
    ASSERT_SA_OK(sa_select_batch(owning.data(), B, q.t(), nullptr, &o, &kv, want.t()));
    ASSERT_SA_OK(sa_select_batch(borrowing.data(), B, q.t(), nullptr, &o, &kv, got.t()));
    EXPECT_EQ(got.values(), want.values());
    EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_select_batch(borrowing.data(), B, q.t(), nullptr, &o, nullptr, got.t()));
    // Not yet for borrowing indexes: refused, never wrong.
    sa_index *copy = nullptr;
    EXPECT_SA_ERR(SA_ERR_UNSUPPORTED, sa_index_truncate(borrowing[0], 5));
    EXPECT_SA_ERR(SA_ERR_UNSUPPORTED, sa_index_clone(borrowing[0], &copy));
    EXPECT_EQ(copy, nullptr);
  }
}

// Known bug 6 of the API fuzzer: borrowing indexes over a paged cache whose head dimension is
// strided (D elements H_kv apart) select like over the same keys laid out contiguously.
TEST_F(BatchSelect, BorrowedKeysWithAStridedHeadDimension) {
  sat::Rng rng(92);
  PagedCache c = make_cache(rng, {70, 0, 33}, 16, SA_DTYPE_BF16);
  const int64_t B = int64_t(c.len.size()), H_q = 4, width = 16;
  auto exact = [&](int64_t) { return SA_SELECTOR_EXACT; };
  BatchIndexes owning_batch(ctx(), c, exact), borrowing_batch(ctx(), c, exact, true);
  // kv->k as [pages, P, H_kv, D] with strides {P * H_kv * D, H_kv * D, 1, H_kv}: heads interleaved.
  Tensor k(c.k.dtype(), {c.num_pages, c.P, c.H_kv, c.D}, {c.P * c.H_kv * c.D, c.H_kv * c.D, 1, c.H_kv});
  for (int64_t pg = 0; pg < c.num_pages; ++pg)
    for (int64_t r = 0; r < c.P; ++r)
      for (int64_t h = 0; h < c.H_kv; ++h)
        for (int64_t d = 0; d < c.D; ++d) k.set({pg, r, h, d}, c.k.get({pg, r, h, d}));
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {B, H_q, c.D});
  sa_select_options o = sat::select_options(8, 4, 2);
  Tensor want(SA_DTYPE_I32, {B, c.H_kv, width}), got(SA_DTYPE_I32, {B, c.H_kv, width});
  sa_paged_kv kv = c.desc();
  ASSERT_SA_OK(sa_select_batch(owning_batch.handles.data(), B, q.t(), nullptr, &o, &kv, want.t()));
  kv.k = *k.t();
  ASSERT_SA_OK(sa_select_batch(borrowing_batch.handles.data(), B, q.t(), nullptr, &o, &kv, got.t()));
  EXPECT_EQ(got.values(), want.values());
}

TEST_F(BatchSelect, BadBatchesAreRefusedAndWriteNothing) {
  sat::Rng rng(3);
  PagedCache c = make_cache(rng, {40, 20}, 16, SA_DTYPE_F16);
  sat::IndexPtr a = index_over(ctx(), c, 0, SA_SELECTOR_EXACT), b = index_over(ctx(), c, 1, SA_SELECTOR_EXACT);
  sa_index *ixs[2] = {a.get(), b.get()};
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {2, 4, c.D});
  Tensor out(SA_DTYPE_I32, {2, 2, 16});
  out.poison();
  sa_select_options o = sat::select_options(8, 4, 2);
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_select_batch(ixs, -1, q.t(), nullptr, &o, nullptr, out.t()));
  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_select_batch(nullptr, 2, q.t(), nullptr, &o, nullptr, out.t()));
  sa_index *with_null[2] = {a.get(), nullptr};
  EXPECT_SA_ERR(SA_ERR_NULL_POINTER, sa_select_batch(with_null, 2, q.t(), nullptr, &o, nullptr, out.t()));
  sa_index *three[3] = {a.get(), b.get(), a.get()};
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_select_batch(three, 3, q.t(), nullptr, &o, nullptr, out.t()));  // 2 queries, 3 sequences
  // An index longer than its sequence's length in the page table.
  PagedCache shorter = c;
  shorter.lens.set({1}, 10);
  sa_paged_kv kv = shorter.desc();
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_select_batch(ixs, 2, q.t(), nullptr, &o, &kv, out.t()));
  sat::IndexPtr other = sat::make_index(ctx(), 1, int32_t(c.D), SA_DTYPE_F16);
  sa_index *mixed[2] = {a.get(), other.get()};
  EXPECT_SA_ERR(SA_ERR_SHAPE, sa_select_batch(mixed, 2, q.t(), nullptr, &o, nullptr, out.t()));
  int32_t qseg[2] = {0, 0}, kseg[64] = {0};
  o.query_segments = qseg;
  o.key_segments = kseg;
  EXPECT_SA_ERR(SA_ERR_INVALID_ARGUMENT, sa_select_batch(ixs, 2, q.t(), nullptr, &o, nullptr, out.t()));
  EXPECT_TRUE(out.untouched());
}

// A host's own OpenMP region of 8 threads runs batched steps on one shared context (2 threads)
// and shared indexes: every thread's output equals a serial run on the main thread.
// A batched decode step from the host's threads (its OpenMP region, then a std::thread pool) on
// one shared context and index set: sa_select_batch, sparse and dense sa_attend_paged, and a
// per-KV-head step (head_key_positions with slot_mass [H_kv, slots], each thread its own mass
// buffer). Every round equals the serial run bit for bit.
TEST_F(BatchSelect, HostThreadsMatchASerialRun) {
  auto ctx = sat::make_context(2);
  ASSERT_NE(ctx, nullptr);
  sat::Rng rng(41);
  PagedCache c = make_cache(rng, {700, 3, 129, 0, 64}, 16, SA_DTYPE_F16, true);
  const int64_t B = int64_t(c.len.size()), H_q = 4, width = 16;
  BatchIndexes batch(ctx.get(), c, [](int64_t b) { return b % 2 ? SA_SELECTOR_PAGE : SA_SELECTOR_EXACT; });
  std::vector<sa_index *> &ixs = batch.handles;
  Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {B, H_q, c.D});
  const std::vector<int64_t> hpos = head_positions(c);
  sa_select_options so = sat::select_options(8, 4, 2);
  struct Step {
    Tensor idx, sparse, dense, per_head, mass;
  };
  auto make_step = [&] {
    Step st{Tensor(SA_DTYPE_I32, {B, c.H_kv, width}), Tensor(SA_DTYPE_F32, {B, H_q, c.D}),
            Tensor(SA_DTYPE_F32, {B, H_q, c.D}), Tensor(SA_DTYPE_F32, {B, H_q, c.D}),
            Tensor(SA_DTYPE_F32, {c.H_kv, c.num_slots()})};
    return st;
  };
  auto step = [&](Step &st) {
    sa_paged_kv kv = c.desc();
    sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
    ao.causal = 1;
    st.mass.set_values(std::vector<double>(size_t(st.mass.numel()), 1.0));  // decayed, then added to
    sa_attend_options ho = ao;
    ho.head_key_positions = hpos.data();
    ho.slot_mass = st.mass.t();
    ho.mass_decay = 0.5f;
    return sa_select_batch(ixs.data(), B, q.t(), nullptr, &so, &kv, st.idx.t()) == SA_OK &&
           sa_attend_paged(ctx.get(), q.t(), nullptr, &kv, st.idx.t(), &ao, st.sparse.t(), nullptr) == SA_OK &&
           sa_attend_paged(ctx.get(), q.t(), nullptr, &kv, nullptr, &ao, st.dense.t(), nullptr) == SA_OK &&
           sa_attend_paged(ctx.get(), q.t(), nullptr, &kv, st.idx.t(), &ho, st.per_head.t(), nullptr) == SA_OK;
  };
  auto same = [](const Step &a, const Step &b) {
    return a.idx.values() == b.idx.values() && a.sparse.values() == b.sparse.values() &&
           a.dense.values() == b.dense.values() && a.per_head.values() == b.per_head.values() &&
           a.mass.values() == b.mass.values();
  };
  Step serial = make_step();
  ASSERT_TRUE(step(serial)) << sa_last_error();
  constexpr int kHost = 8;
  auto on_thread = [&](std::vector<int> &good, int t) {
    Step mine = make_step();
    bool ok = true;
    for (int round = 0; round < 3 && ok; ++round) ok = step(mine) && same(mine, serial);
    good[size_t(t)] = ok ? 1 : 0;
  };
  std::vector<int> good(kHost, 0);
#pragma omp parallel num_threads(kHost)
  on_thread(good, omp_get_thread_num());
  for (int t = 0; t < kHost; ++t) EXPECT_EQ(good[size_t(t)], 1) << "host OpenMP thread " << t;
  good.assign(kHost, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < kHost; ++t) pool.emplace_back([&, t] { on_thread(good, t); });
  for (std::thread &th : pool) th.join();
  for (int t = 0; t < kHost; ++t) EXPECT_EQ(good[size_t(t)], 1) << "host std::thread " << t;
}

// Per-KV-head eviction with a paged cache: exact and page indexes (owning and borrowing keys)
// refilled by sa_index_update_heads so that each head holds its own positions. Each
// sequence's lists equal sa_select on its index mapped through the page table, every entry of
// KV head h is a slot of the sequence whose head-h position is at or before the query's, and
// the lists feed sa_attend_paged with the same per-head positions (against the reference).
TEST_F(BatchSelect, PerHeadPositionsFromIndexUpdateHeads) {
  for (sa_selector_kind kind : sat::built_kinds({SA_SELECTOR_EXACT, SA_SELECTOR_PAGE}))
    for (bool borrow : {false, true}) {
      SCOPED_TRACE("kind " + std::to_string(int(kind)) + (borrow ? " borrowing keys" : ""));
      sat::Rng rng(31);
      PagedCache c = make_cache(rng, {40, 0, 129, 17}, 16, SA_DTYPE_F32);
      const std::vector<int64_t> hpos = head_positions(c, false);  // an index slot always holds a token
      const int64_t B = int64_t(c.len.size()), H_q = 4, S = c.num_slots(), qper = 2, width = 16;
      BatchIndexes batch(ctx(), c, [&](int64_t) { return kind; }, borrow);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t len = c.len[size_t(b)];
        if (len == 0) continue;
        std::vector<int32_t> slots(size_t(c.H_kv * len));
        std::vector<int64_t> pos(size_t(c.H_kv * len));
        Tensor keys(c.k.dtype(), {len, c.H_kv, c.D});
        for (int64_t t = 0; t < len; ++t) {
          const int64_t s = c.slot(b, t);
          for (int64_t h = 0; h < c.H_kv; ++h) {
            slots[size_t(h * len + t)] = int32_t(t);
            pos[size_t(h * len + t)] = hpos[size_t(h * S + s)];
            for (int64_t d = 0; d < c.D; ++d) keys.set({t, h, d}, c.k.get({s / c.P, s % c.P, h, d}));
          }
        }
        ASSERT_SA_OK(sa_index_update_heads(batch.handles[size_t(b)], slots.data(), len, keys.t(), pos.data()));
      }
      // Two queries per sequence: one halfway (the heads see different tokens), one at the end.
      std::vector<int64_t> starts, qpos;
      for (int64_t b = 0; b <= B; ++b) starts.push_back(b * qper);
      for (int64_t b = 0; b < B; ++b) {
        qpos.push_back(3 * (c.len[size_t(b)] / 2));
        qpos.push_back(3 * c.len[size_t(b)]);
      }
      Tensor q = sat::random_tensor(rng, SA_DTYPE_F32, {B * qper, H_q, c.D});
      Tensor qs(SA_DTYPE_I64, {B + 1});
      for (int64_t b = 0; b <= B; ++b) qs.set({b}, double(starts[size_t(b)]));
      sa_select_options o = sat::select_options(6, 4, 2);
      o.query_positions = qpos.data();
      sa_paged_kv kv = c.desc();
      Tensor phys(SA_DTYPE_I32, {B * qper, c.H_kv, width});
      ASSERT_SA_OK(sa_select_batch(batch.handles.data(), B, q.t(), qs.t(), &o, &kv, phys.t()));
      for (int64_t b = 0; b < B; ++b) {
        Tensor qb = rows_of(q, b * qper, (b + 1) * qper), one(SA_DTYPE_I32, {qper, c.H_kv, width});
        sa_select_options ob = o;
        ob.query_positions = &qpos[size_t(b * qper)];
        Tensor keys(c.k.dtype(), {c.len[size_t(b)], c.H_kv, c.D});  // a borrowing index reads them
        for (int64_t t = 0; t < c.len[size_t(b)]; ++t)
          for (int64_t h = 0; h < c.H_kv; ++h)
            for (int64_t d = 0; d < c.D; ++d) keys.set({t, h, d}, c.k.get({c.slot(b, t) / c.P, c.slot(b, t) % c.P, h, d}));
        if (borrow) ob.keys = keys.t();
        ASSERT_SA_OK(sa_select(batch.handles[size_t(b)], qb.t(), &ob, one.t()));
        int64_t kept = 0;
        for (int64_t i = 0; i < qper; ++i)
          for (int64_t h = 0; h < c.H_kv; ++h)
            for (int64_t w = 0; w < width; ++w) {
              const int64_t s = int64_t(one.get({i, h, w})), e = int64_t(phys.get({b * qper + i, h, w}));
              ASSERT_EQ(e, s < 0 ? -1 : c.slot(b, s)) << "b " << b << " i " << i << " h " << h;
              if (e < 0) continue;
              ++kept;
              EXPECT_LE(hpos[size_t(h * S + e)], qpos[size_t(b * qper + i)]) << "b " << b << " i " << i << " h " << h;
            }
        if (c.len[size_t(b)] > 0) {
          EXPECT_GT(kept, 0) << "b " << b;
        }
      }
      sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
      ao.causal = 1;
      ao.query_positions = qpos.data();
      ao.head_key_positions = hpos.data();
      Tensor out(SA_DTYPE_F32, {B * qper, H_q, c.D});
      ASSERT_SA_OK(sa_attend_paged(ctx(), q.t(), qs.t(), &kv, phys.t(), &ao, out.t(), nullptr));
      const Expected e = reference_heads(c, hpos, q, starts, &phys, true, qpos);
      EXPECT_TRUE(sat::close_rel(out.values(), e.out, 1e-4));
    }
}

}  // namespace
