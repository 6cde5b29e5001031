// sa_index_append, sa_index_update, sa_index_truncate and sa_index_clone when an allocation
// fails partway. This executable replaces the global operator new (global_new.hpp) so that
// the k-th allocation from a chosen moment throws std::bad_alloc. The first 64 k, then a
// sample of the later ones (all of them in the slow tier: next_failure), are tried until the
// call succeeds. After each failure the index must either be exactly as it was (same size,
// same selection as an index that never failed) or refuse every later append, update,
// truncate, clone and select with SA_ERR_INVALID_ARGUMENT and a message saying why; never a
// crash, a hang or a silently wrong selection. A failed clone leaves its source as it was.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include "global_new.hpp"
#include "build_features.hpp"
#include "test_util.hpp"

namespace {

std::atomic<long> g_allocations_left{-1};  // allocations before one fails; < 0: none fails

}  // namespace

void *global_new::allocate(size_t n, size_t align) {
  if (g_allocations_left.load(std::memory_order_relaxed) >= 0 && g_allocations_left.fetch_sub(1) == 0)
    throw std::bad_alloc();
  if (n == 0) n = 1;
  return align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align) : std::malloc(n);
}
void global_new::release(void *p) noexcept { std::free(p); }

namespace {

using namespace sat;

// Which allocation fails next. Every one of the first 64, then every (k / 16)-th: a call that
// makes thousands of allocations (HNSW, LSH) is swept in linear rather than quadratic time.
// The slow tier (SA_TEST_TIER=slow, meson suite `slow`) tries every one.
long next_failure(long k) {
  static const bool every = [] {
    const char *tier = std::getenv("SA_TEST_TIER");
    return tier && std::string(tier) == "slow";
  }();
  return every || k < 64 ? k + 1 : k + std::max(1L, k / 16);
}

constexpr int kHkv = 2, kHq = 4, kD = 32, kFirst = 120, kMore = 24;
constexpr int kRefill = 4;  // slots an update refills (few: an HNSW update allocates a lot per slot)
constexpr int kTopK = 16, kWindow = 8, kSinks = 2, kWidth = kTopK + kWindow + kSinks;

struct Case {
  sa_selector_kind kind;
  bool update;  // refill slots with sa_index_update instead of appending
};

Tensor select_all(sa_index *ix, const Tensor &q, sa_status *status) {
  Tensor out(SA_DTYPE_I32, {1, kHkv, kWidth});
  const sa_select_options so = select_options(kTopK, kWindow, kSinks);
  *status = sa_select(ix, q.t(), &so, out.t());
  return out;
}

IndexPtr build(sa_context *ctx, sa_selector_kind kind, const Tensor &first) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = kind;
  o.num_kv_heads = kHkv;
  o.head_dim = kD;
  o.dtype = SA_DTYPE_F32;
  if (kind == SA_SELECTOR_PAGE) o.page.page_size = 8;
  sa_index *ix = nullptr;
  EXPECT_EQ(sa_index_create(ctx, &o, &ix), SA_OK) << sa_last_error();
  EXPECT_EQ(sa_index_append(ix, first.t()), SA_OK) << sa_last_error();
  return IndexPtr(ix);
}

class IndexFailure : public ::testing::TestWithParam<Case> {};

TEST_P(IndexFailure, EveryAllocationFailureLeavesTheIndexIntactOrRefused) {
  const Case c = GetParam();
  ContextPtr ctx = make_context(2);
  ASSERT_NE(ctx, nullptr);
  Rng rng(7);
  const Tensor first = random_tensor(rng, SA_DTYPE_F32, {kFirst, kHkv, kD});
  const Tensor more = random_tensor(rng, SA_DTYPE_F32, {kMore, kHkv, kD});
  const Tensor q = random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  const Tensor refill = random_tensor(rng, SA_DTYPE_F32, {kRefill, kHkv, kD});
  std::vector<int32_t> slots(kRefill);
  for (int i = 0; i < kRefill; ++i) slots[size_t(i)] = 29 * i + 1;  // refilled slots, spread out

  // The selection of an index that never failed, before the change.
  IndexPtr reference = build(ctx.get(), c.kind, first);
  ASSERT_NE(reference, nullptr);
  sa_status st;
  const Tensor before = select_all(reference.get(), q, &st);
  ASSERT_SA_OK(st);

  long failures = 0, refused = 0;
  for (long k = 0;; k = next_failure(k)) {
    ASSERT_LT(k, 1000000) << "the change never succeeded";
    IndexPtr ix = build(ctx.get(), c.kind, first);
    ASSERT_NE(ix, nullptr);
    g_allocations_left = k;
    st = c.update ? sa_index_update(ix.get(), slots.data(), kRefill, refill.t(), nullptr) : sa_index_append(ix.get(), more.t());
    g_allocations_left = -1;
    if (st == SA_OK) break;
    ++failures;
    ASSERT_EQ(st, SA_ERR_OUT_OF_MEMORY) << "allocation " << k << ": " << sa_last_error();
    const Tensor after = select_all(ix.get(), q, &st);
    if (st == SA_OK) {  // intact: as it was before the call
      int64_t size = -1;
      ASSERT_SA_OK(sa_index_size(ix.get(), &size));
      EXPECT_EQ(size, kFirst) << "allocation " << k;
      for (int h = 0; h < kHkv; ++h) EXPECT_EQ(row_of(after, 0, h), row_of(before, 0, h)) << "allocation " << k;
      continue;
    }
    ++refused;
    ASSERT_EQ(st, SA_ERR_INVALID_ARGUMENT) << "allocation " << k << ": " << sa_last_error();
    EXPECT_NE(std::string(sa_last_error()).find("destroy it"), std::string::npos) << sa_last_error();
    EXPECT_EQ(sa_index_append(ix.get(), more.t()), SA_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(sa_index_update(ix.get(), slots.data(), kRefill, refill.t(), nullptr), SA_ERR_INVALID_ARGUMENT);
  }
  // The loop must have injected failures, and most of them land inside the change.
  EXPECT_GT(failures, 0);
  EXPECT_GT(refused, 0);
}

INSTANTIATE_TEST_SUITE_P(Kinds, IndexFailure,
                         ::testing::ValuesIn(sat::built_only<Case>(
                             {Case{SA_SELECTOR_EXACT, false}, Case{SA_SELECTOR_PAGE, false}, Case{SA_SELECTOR_LSH, false},
                              Case{SA_SELECTOR_HNSW, false}, Case{SA_SELECTOR_HNSW, true}, Case{SA_SELECTOR_PAGE, true}},
                             [](const Case &c) { return c.kind; })),
                         [](const ::testing::TestParamInfo<Case> &i) {
                           const char *k = i.param.kind == SA_SELECTOR_EXACT  ? "exact"
                                           : i.param.kind == SA_SELECTOR_PAGE ? "page"
                                           : i.param.kind == SA_SELECTOR_LSH  ? "lsh"
                                                                              : "hnsw";
                           return std::string(k) + (i.param.update ? "_update" : "_append");
                         });

// sa_index_truncate under every allocation failure: the index is intact (as before the call)
// or refuses every later call, truncate and clone included; once the truncation succeeds it
// selects like an index truncated without failures. A truncation that LSH must rebuild for
// (a rebuild ran past the cut) and HNSW's new graphs are the allocating cases.
class TruncateFailure : public ::testing::TestWithParam<sa_selector_kind> {};

TEST_P(TruncateFailure, EveryAllocationFailureLeavesTheIndexIntactOrRefused) {
  const sa_selector_kind kind = GetParam();
  ContextPtr ctx = make_context(1);  // quick: every allocation is tried, each on a fresh index
  ASSERT_NE(ctx, nullptr);
  Rng rng(8);
  const Tensor first = random_tensor(rng, SA_DTYPE_F32, {kFirst, kHkv, kD});
  // LSH: drafts past its next rebuild, so the truncation draws the tables of the first again.
  const int64_t n_drafts = kind == SA_SELECTOR_LSH ? kFirst + 20 : kMore;
  const Tensor drafts = random_tensor(rng, SA_DTYPE_F32, {n_drafts, kHkv, kD});
  const Tensor q = random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  // HNSW builds its graphs again: keep few keys so every allocation can be tried.
  const int64_t cut = kind == SA_SELECTOR_HNSW ? 12 : kFirst + 10;
  auto build_all = [&] {
    IndexPtr ix = build(ctx.get(), kind, first);
    EXPECT_EQ(sa_index_append(ix.get(), drafts.t()), SA_OK) << sa_last_error();
    return ix;
  };
  IndexPtr reference = build_all();
  sa_status st;
  const Tensor before = select_all(reference.get(), q, &st);
  ASSERT_SA_OK(st);
  ASSERT_SA_OK(sa_index_truncate(reference.get(), cut));
  const Tensor truncated = select_all(reference.get(), q, &st);
  ASSERT_SA_OK(st);

  long failures = 0;
  for (long k = 0;; k = next_failure(k)) {
    ASSERT_LT(k, 1000000) << "the truncation never succeeded";
    IndexPtr ix = build_all();
    g_allocations_left = k;
    st = sa_index_truncate(ix.get(), cut);
    g_allocations_left = -1;
    if (st == SA_OK) {
      const Tensor after = select_all(ix.get(), q, &st);
      ASSERT_SA_OK(st);
      for (int h = 0; h < kHkv; ++h) EXPECT_EQ(row_of(after, 0, h), row_of(truncated, 0, h));
      break;
    }
    ++failures;
    ASSERT_EQ(st, SA_ERR_OUT_OF_MEMORY) << "allocation " << k << ": " << sa_last_error();
    const Tensor after = select_all(ix.get(), q, &st);
    if (st == SA_OK) {
      int64_t size = -1;
      ASSERT_SA_OK(sa_index_size(ix.get(), &size));
      EXPECT_EQ(size, kFirst + n_drafts) << "allocation " << k;
      for (int h = 0; h < kHkv; ++h) EXPECT_EQ(row_of(after, 0, h), row_of(before, 0, h)) << "allocation " << k;
      continue;
    }
    ASSERT_EQ(st, SA_ERR_INVALID_ARGUMENT) << "allocation " << k << ": " << sa_last_error();
    EXPECT_EQ(sa_index_truncate(ix.get(), cut), SA_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(sa_last_error()).find("destroy it"), std::string::npos) << sa_last_error();
    sa_index *out = nullptr;
    EXPECT_EQ(sa_index_clone(ix.get(), &out), SA_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(out, nullptr);
  }
  if (kind == SA_SELECTOR_EXACT)
    EXPECT_EQ(failures, 0) << "the exact selector's truncation only shrinks: it cannot fail";
  else
    EXPECT_GT(failures, 0);
}

// sa_index_clone under every allocation failure: SA_ERR_OUT_OF_MEMORY, *out not written and
// the source as it was; the clone that succeeds selects like the source.
class CloneFailure : public ::testing::TestWithParam<sa_selector_kind> {};

TEST_P(CloneFailure, EveryAllocationFailureLeavesTheSourceAndOutAlone) {
  ContextPtr ctx = make_context(1);
  ASSERT_NE(ctx, nullptr);
  Rng rng(9);
  const Tensor first = random_tensor(rng, SA_DTYPE_F32, {kFirst, kHkv, kD});
  const Tensor q = random_tensor(rng, SA_DTYPE_F32, {1, kHq, kD});
  IndexPtr ix = build(ctx.get(), GetParam(), first);
  sa_status st;
  const Tensor before = select_all(ix.get(), q, &st);
  ASSERT_SA_OK(st);
  sa_index *const sentinel = reinterpret_cast<sa_index *>(uintptr_t(0x5a));
  long failures = 0;
  for (long k = 0;; k = next_failure(k)) {
    ASSERT_LT(k, 1000000) << "the clone never succeeded";
    sa_index *out = sentinel;
    g_allocations_left = k;
    const sa_status cloned_status = sa_index_clone(ix.get(), &out);
    g_allocations_left = -1;
    if (cloned_status == SA_OK) {
      IndexPtr copy(out);
      const Tensor cloned = select_all(copy.get(), q, &st);
      ASSERT_SA_OK(st);
      for (int h = 0; h < kHkv; ++h) EXPECT_EQ(row_of(cloned, 0, h), row_of(before, 0, h));
      break;
    }
    ++failures;
    ASSERT_EQ(cloned_status, SA_ERR_OUT_OF_MEMORY) << "allocation " << k << ": " << sa_last_error();
    EXPECT_EQ(out, sentinel) << "allocation " << k;
    const Tensor source = select_all(ix.get(), q, &st);
    ASSERT_SA_OK(st);  // the source is usable and as it was
    for (int h = 0; h < kHkv; ++h) EXPECT_EQ(row_of(source, 0, h), row_of(before, 0, h)) << "allocation " << k;
  }
  EXPECT_GT(failures, 0);
}

const std::vector<sa_selector_kind> kLifecycleKinds =
    sat::built_kinds({SA_SELECTOR_EXACT, SA_SELECTOR_PAGE, SA_SELECTOR_LSH, SA_SELECTOR_HNSW});
std::string kind_name(const ::testing::TestParamInfo<sa_selector_kind> &i) {
  return i.param == SA_SELECTOR_EXACT ? "exact" : i.param == SA_SELECTOR_PAGE ? "page" : i.param == SA_SELECTOR_LSH ? "lsh" : "hnsw";
}
// sa_select under every allocation failure, with 2 threads and a block of queries (work split
// across threads): SA_ERR_OUT_OF_MEMORY leaves every element of `indices` as it was (it wrote
// part of them for LSH, HNSW and page), SA_OK gives the selection of a run that never failed.
class SelectFailure : public ::testing::TestWithParam<sa_selector_kind> {};

TEST_P(SelectFailure, OutOfMemoryWritesNothing) {
  ContextPtr ctx = make_context(2);
  Rng rng(11);
  const Tensor first = random_tensor(rng, SA_DTYPE_F32, {kFirst, kHkv, kD});
  const Tensor q = random_tensor(rng, SA_DTYPE_F32, {8, kHq, kD});
  IndexPtr ix = build(ctx.get(), GetParam(), first);
  const sa_select_options so = select_options(kTopK, kWindow, kSinks);
  Tensor want(SA_DTYPE_I32, {8, kHkv, kWidth});
  ASSERT_SA_OK(sa_select(ix.get(), q.t(), &so, want.t()));
  long failures = 0;
  for (long k = 0;; k = next_failure(k)) {
    ASSERT_LT(k, 1000000) << "the selection never succeeded";
    Tensor out(SA_DTYPE_I32, {8, kHkv, kWidth});
    out.poison();
    g_allocations_left = k;
    const sa_status st = sa_select(ix.get(), q.t(), &so, out.t());
    g_allocations_left = -1;
    if (st == SA_OK) {
      EXPECT_EQ(out.values(), want.values()) << "allocation " << k;
      break;
    }
    ++failures;
    ASSERT_EQ(st, SA_ERR_OUT_OF_MEMORY) << "allocation " << k << ": " << sa_last_error();
    ASSERT_TRUE(out.untouched()) << "allocation " << k << ": indices written by a failed call";
  }
  EXPECT_GT(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Kinds, SelectFailure, ::testing::ValuesIn(kLifecycleKinds), kind_name);
INSTANTIATE_TEST_SUITE_P(Kinds, TruncateFailure, ::testing::ValuesIn(kLifecycleKinds), kind_name);
INSTANTIATE_TEST_SUITE_P(Kinds, CloneFailure, ::testing::ValuesIn(kLifecycleKinds), kind_name);

}  // namespace
