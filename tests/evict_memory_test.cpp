// Decoding for ever in constant memory: 100K decode steps in a fixed-budget cache (budget 1024,
// exact selector; each step evicts a slot by accumulated attention, refills it through
// sa_index_update, selects and attends with slot_mass on; fixed_budget_cache.hpp) and the
// memory the library holds must not grow after a warm-up.
//
// Instrumented three ways, all sampled between steps:
// - operator new/delete are replaced in this executable; the library is a shared object, so
//   its C++ allocations resolve to these, and the live byte count is exact;
// - glibc's mallinfo2 (bytes in use by malloc: C code, OpenMP, and the above);
// - the resident set size from /proc/self/statm.
// The test itself allocates nothing inside the loop. Under AddressSanitizer only the first
// counter is checked (its quarantine holds freed memory), and the default step count drops to
// 5K; SA_MEMORY_TEST_STEPS sets the count.
#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "fixed_budget_cache.hpp"
#include "global_new.hpp"
#include "test_util.hpp"

namespace {

std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_allocations{0};

void *counted_alloc(size_t n, size_t align) {
  if (n == 0) n = 1;
  void *p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align) : std::malloc(n);
  if (!p) return nullptr;
  g_live_bytes += int64_t(malloc_usable_size(p));
  ++g_allocations;
  return p;
}

void counted_free(void *p) {
  if (!p) return;
  g_live_bytes -= int64_t(malloc_usable_size(p));
  std::free(p);
}

}  // namespace

void *global_new::allocate(size_t n, size_t align) { return counted_alloc(n, align); }
void global_new::release(void *p) noexcept { counted_free(p); }

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
constexpr int64_t kDefaultSteps = 5000;
#else
constexpr bool kSanitized = false;
constexpr int64_t kDefaultSteps = 100000;
#endif

int64_t malloc_in_use() {
  struct mallinfo2 m = mallinfo2();
  return int64_t(m.uordblks + m.hblkhd);
}

int64_t resident_bytes() {
  std::FILE *f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  long size = 0, resident = -1;
  if (std::fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
  std::fclose(f);
  return resident < 0 ? -1 : int64_t(resident) * 4096;
}

struct Sample {
  int64_t live, allocations, in_use, rss;
};
Sample sample() { return {g_live_bytes.load(), g_allocations.load(), malloc_in_use(), resident_bytes()}; }

TEST(EvictMemory, InstrumentationSeesLibraryAllocations) {
  auto ctx = sat::make_context(1);
  ASSERT_NE(ctx, nullptr);
  const int64_t before = g_live_bytes.load(), count = g_allocations.load();
  sat::IndexPtr ix = sat::make_index(ctx.get(), 2, 16);  // allocated inside libsparseattn
  ASSERT_NE(ix, nullptr);
  EXPECT_GT(g_allocations.load(), count);
  EXPECT_GT(g_live_bytes.load(), before);
  ix.reset();
  EXPECT_EQ(g_live_bytes.load(), before);
}

TEST(EvictMemory, HundredThousandStepsInConstantMemory) {
  int64_t steps = kDefaultSteps;
  if (const char *e = std::getenv("SA_MEMORY_TEST_STEPS")) steps = std::max<int64_t>(2000, std::atoll(e));
  const int64_t warmup = 1000, checkpoints = 10;
  auto ctx = sat::make_context(1);
  ASSERT_NE(ctx, nullptr);
  sat::BudgetConfig c;
  c.kind = SA_SELECTOR_EXACT;
  c.budget = 1024;
  c.h_q = 2, c.h_kv = 1, c.d = 16;
  c.sinks = 4, c.window = 64, c.top_k = 64;
  c.mass_decay = 0.99f;
  sat::FixedBudgetCache cache(ctx.get(), c);
  ASSERT_SA_OK(cache.create_index());
  ASSERT_SA_OK(cache.prefill());
  for (int64_t s = 0; s < warmup; ++s) ASSERT_SA_OK(cache.step());

  const Sample base = sample();
  Sample worst = base;
  int64_t index_size = 0;
  for (int64_t s = warmup; s < steps; ++s) {
    sa_status st = cache.step();
    if (st != SA_OK) FAIL() << "step " << s << ": " << sa_status_name(st) << ": " << sa_last_error();
    if ((s + 1) % ((steps - warmup) / checkpoints) == 0 || s + 1 == steps) {
      const Sample now = sample();
      worst.live = std::max(worst.live, now.live);
      worst.in_use = std::max(worst.in_use, now.in_use);
      worst.rss = std::max(worst.rss, now.rss);
      std::printf("step %7lld: library live %lld B (%lld allocations so far), malloc in use %lld B, RSS %lld KiB\n",
                  (long long)(s + 1), (long long)now.live, (long long)now.allocations, (long long)now.in_use,
                  (long long)(now.rss / 1024));
    }
  }
  ASSERT_SA_OK(sa_index_size(cache.index(), &index_size));
  EXPECT_EQ(index_size, c.budget) << "the index must stay at the budget";
  EXPECT_EQ(cache.next_position(), c.budget + steps);
  // Exactly flat: the library keeps nothing per step.
  EXPECT_EQ(worst.live, base.live) << "live C++ bytes grew after warm-up";
  if (!kSanitized) {
    EXPECT_LE(worst.in_use - base.in_use, 64 * 1024) << "malloc'd bytes grew after warm-up";
    EXPECT_LE(worst.rss - base.rss, 1024 * 1024) << "resident memory grew after warm-up";
  }
  RecordProperty("steps", std::to_string(steps));
  RecordProperty("live_bytes", std::to_string(base.live));
  std::printf("%lld steps: live bytes %lld -> max %lld, malloc in use %lld -> max %lld, RSS %lld -> max %lld KiB\n",
              (long long)steps, (long long)base.live, (long long)worst.live, (long long)base.in_use,
              (long long)worst.in_use, (long long)(base.rss / 1024), (long long)(worst.rss / 1024));
}

}  // namespace
