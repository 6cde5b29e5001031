// Device indexes with positions per KV head (sa_index_update_heads): an exact device index fed
// the same appends, per-head refills and single-set refills as a CPU exact index selects the
// same lists; a page device index selects, per KV head, the pages a double-precision Quest
// reference ranks best among that head's usable pages (position ranges per head), over bounds
// widened by each refill (the device keeps no keys to recompute them), with that head's sinks
// and window. Refused refills leave the index as it was. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "cuda_helpers.cuh"
#include "head_page_reference.hpp"

namespace {

constexpr int D = 128;

// One index on each side (the CPU's when cix is set), fed the same calls.
struct Pair {
  sa_index *gix = nullptr, *cix = nullptr;
  ~Pair() {
    sa_index_destroy(&gix);
    sa_index_destroy(&cix);
  }
};

// Keys [n, Hkv, D] to both indexes, through sa_index_update_heads or sa_index_update.
void refill_heads(Pair &p, const Bf16Data &k, int Hkv, const std::vector<int32_t> &slots,
                  const std::vector<int64_t> &pos, int64_t n) {
  uint16_t *dk = to_device(k.bits);
  sa_tensor g = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor cc = desc((void *)k.bits.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_update_heads(p.gix, slots.data(), n, &g, pos.data()));
  if (p.cix) SA_OK_(sa_index_update_heads(p.cix, slots.data(), n, &cc, pos.data()));
  CUDA_OK(cudaDeviceSynchronize());
  cudaFree(dk);
}

// Device selection of one bf16 query into a host row set [Hkv][width]; with cix also the CPU's.
void select_both(Pair &p, const Bf16Data &q, int Hq, int Hkv, const sa_select_options &so, int width,
                 std::vector<int32_t> *got, std::vector<int32_t> *want) {
  got->assign(size_t(Hkv) * width, -7);
  uint16_t *dq = to_device(q.bits);
  int32_t *dout = to_device(*got);
  sa_tensor gq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
  SA_OK_(sa_select(p.gix, &gq, &so, &go));
  CUDA_OK(cudaDeviceSynchronize());
  *got = to_host(dout, got->size());
  cudaFree(dq);
  cudaFree(dout);
  if (!want) return;
  want->assign(got->size(), -7);
  sa_tensor cq = desc((void *)q.bits.data(), SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CPU);
  sa_tensor co = desc(want->data(), SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CPU);
  SA_OK_(sa_select(p.cix, &cq, &so, &co));
}

// Per head, n distinct slots of [0, size) and positions: a mix of the future (past every held
// position, different per head), the past (an old token again) and one sink (a few repeated
// sinks stay within the rows' slack).
void head_refill(std::mt19937_64 &rng, int Hkv, int64_t size, int64_t n, int64_t first_new, std::vector<int32_t> *slots,
                 std::vector<int64_t> *pos) {
  slots->clear();
  pos->clear();
  for (int h = 0; h < Hkv; ++h) {
    std::vector<int32_t> all(static_cast<size_t>(size));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    for (int64_t i = 0; i < n; ++i) {
      slots->push_back(all[size_t(i)]);
      const int kind = i == 0 ? 0 : int(1 + rng() % 7);
      pos->push_back(kind == 0 ? int64_t(rng() % 4) : kind < 3 ? int64_t(rng() % size) : first_new + h * 7 + i * 2);
    }
  }
}

TEST(CudaHeadIndex, ExactSelectionMatchesCpu) {
  NEED_GPU(c);
  constexpr int Hkv = 2, Hq = 8;
  constexpr int64_t n = 3000;
  std::mt19937_64 rng(61);
  const sa_index_options io = device_index_options(SA_SELECTOR_EXACT, Hkv, D);
  Pair p;
  SA_OK_(sa_index_create(c.gpu, &io, &p.gix));
  SA_OK_(sa_index_create(c.cpu, &io, &p.cix));
  const Bf16Data keys = random_bf16(rng, size_t(n) * Hkv * D, 1.f);
  uint16_t *dkeys = to_device(keys.bits);
  sa_tensor gk = desc(dkeys, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor ck = desc((void *)keys.bits.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_append(p.gix, &gk));
  SA_OK_(sa_index_append(p.cix, &ck));

  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 96;
  so.window = 32;
  so.sinks = 4;
  const int width = 4 + 32 + 96 + 40;  // room for sinks repeated in a head
  std::vector<int32_t> got, want;
  auto compare = [&](const char *when) {
    const Bf16Data q = random_bf16(rng, size_t(Hq) * D, 2.f);
    select_both(p, q, Hq, Hkv, so, width, &got, &want);
    EXPECT_EQ(got, want) << when;
  };
  std::vector<int32_t> slots;
  std::vector<int64_t> pos;
  for (int round = 0; round < 3; ++round) {
    head_refill(rng, Hkv, n, 200, n + 1000 * round, &slots, &pos);
    const Bf16Data fresh = random_bf16(rng, size_t(200) * Hkv * D, 1.f);
    ASSERT_NO_FATAL_FAILURE(refill_heads(p, fresh, Hkv, slots, pos, 200));
    compare("after a per-head refill");
  }
  // The heads hold different tokens in the same slots.
  int differ = 0;
  for (int i = 0; i < 200; ++i) differ += slots[size_t(i)] != slots[size_t(200 + i)];
  EXPECT_GT(differ, 150);
  // A single-set refill writes one position into every head; appends continue after the
  // largest position any head holds; the newest token refilled in one head moves it down.
  std::vector<int32_t> one = {5, 17, 2999};
  std::vector<int64_t> one_pos = {9000, 2, 9001};
  const Bf16Data k3 = random_bf16(rng, size_t(3) * Hkv * D, 1.f);
  uint16_t *dk3 = to_device(k3.bits);
  sa_tensor g3 = desc(dk3, SA_DTYPE_BF16, {3, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor c3 = desc((void *)k3.bits.data(), SA_DTYPE_BF16, {3, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_update(p.gix, one.data(), 3, &g3, one_pos.data()));
  SA_OK_(sa_index_update(p.cix, one.data(), 3, &c3, one_pos.data()));
  compare("after a single-set refill");
  sa_tensor gk2 = desc(dkeys, SA_DTYPE_BF16, {40, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor ck2 = desc((void *)keys.bits.data(), SA_DTYPE_BF16, {40, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_append(p.gix, &gk2));
  SA_OK_(sa_index_append(p.cix, &ck2));
  compare("after appends");
  const std::vector<int32_t> newest = {int32_t(n + 39), int32_t(n + 39)};  // position 9041 in both heads
  const std::vector<int64_t> down = {100, 9041};
  const Bf16Data k1 = random_bf16(rng, size_t(1) * Hkv * D, 1.f);
  ASSERT_NO_FATAL_FAILURE(refill_heads(p, k1, Hkv, newest, down, 1));
  compare("after the newest token moved down in one head");

  // Refused (checked by the core): a slot past the size, a slot twice in one head. The index
  // selects as before.
  const std::vector<int32_t> before = got;
  sa_tensor g1 = desc(dk3, SA_DTYPE_BF16, {1, Hkv, D}, SA_DEVICE_CUDA);
  const int32_t bad[2] = {0, int32_t(n + 40)};
  const int64_t bad_pos[2] = {1, 1};
  EXPECT_EQ(sa_index_update_heads(p.gix, bad, 1, &g1, bad_pos), SA_ERR_OUT_OF_RANGE);
  const int32_t twice[4] = {3, 3, 1, 2};
  const int64_t twice_pos[4] = {50, 51, 52, 53};
  sa_tensor g2 = desc(dk3, SA_DTYPE_BF16, {2, Hkv, D}, SA_DEVICE_CUDA);
  EXPECT_EQ(sa_index_update_heads(p.gix, twice, 2, &g2, twice_pos), SA_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(sa_index_update_heads(p.gix, twice + 2, 1, &g1, nullptr), SA_ERR_NULL_POINTER);
  compare("after refused refills");
  cudaFree(dkeys);
  cudaFree(dk3);
}

// A page index refilled per head: each head's list against the double reference.
TEST(CudaHeadIndex, PageSelectionFollowsEachHeadsPositions) {
  NEED_GPU(c);
  constexpr int Hkv = 2, Hq = 8, page = 16;
  constexpr int64_t n = 4096;
  std::mt19937_64 rng(62);
  const sa_index_options io = device_index_options(SA_SELECTOR_PAGE, Hkv, D, page);
  Pair p;
  SA_OK_(sa_index_create(c.gpu, &io, &p.gix));
  Bf16Data keys = random_bf16(rng, size_t(n) * Hkv * D, 1.f);
  uint16_t *dkeys = to_device(keys.bits);
  sa_tensor gk = desc(dkeys, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(p.gix, &gk));
  HeadPages ref(Hkv, D, page);
  ref.append(keys.values, n);

  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 256;
  so.window = 48;
  so.sinks = 4;
  const int width = 4 + 48 + 256 + 64;
  std::vector<int32_t> got;
  int checked_pages = 0;
  auto check = [&](const char *when) {
    const Bf16Data q = random_bf16(rng, size_t(Hq) * D, 2.f);
    select_both(p, q, Hq, Hkv, so, width, &got, nullptr);
    for (int h = 0; h < Hkv; ++h)
      checked_pages += ref.check_row(q.values.data() + size_t(h) * (Hq / Hkv) * D, Hq / Hkv, h, so, ref.max_position(),
                                     &got[size_t(h) * width], width, when);
  };
  check("appends only");
  std::vector<int32_t> slots;
  std::vector<int64_t> pos;
  for (int round = 0; round < 3; ++round) {
    head_refill(rng, Hkv, n, 300, n + 1000 * round, &slots, &pos);
    const Bf16Data fresh = random_bf16(rng, size_t(300) * Hkv * D, 1.5f);
    ASSERT_NO_FATAL_FAILURE(refill_heads(p, fresh, Hkv, slots, pos, 300));
    ref.refill_heads(fresh.values, slots, pos, 300);
    check("after a per-head refill");
  }
  // A single-set refill (every head), then appends continuing after the largest position.
  const std::vector<int32_t> one = {40, 41, 700};
  const std::vector<int64_t> one_pos = {1, 8000, 8001};
  const Bf16Data k3 = random_bf16(rng, size_t(3) * Hkv * D, 1.f);
  uint16_t *dk3 = to_device(k3.bits);
  sa_tensor g3 = desc(dk3, SA_DTYPE_BF16, {3, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_update(p.gix, one.data(), 3, &g3, one_pos.data()));
  std::vector<int32_t> one_heads;
  std::vector<int64_t> one_heads_pos;
  for (int h = 0; h < Hkv; ++h) {
    one_heads.insert(one_heads.end(), one.begin(), one.end());
    one_heads_pos.insert(one_heads_pos.end(), one_pos.begin(), one_pos.end());
  }
  ref.refill_heads(k3.values, one_heads, one_heads_pos, 3);
  check("after a single-set refill");
  sa_tensor gk2 = desc(dkeys, SA_DTYPE_BF16, {40, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(p.gix, &gk2));
  ref.append(keys.values, 40);
  check("after appends");
  EXPECT_GT(checked_pages, 100) << "the reference must have ranked pages";
  cudaFree(dkeys);
  cudaFree(dk3);
}

}  // namespace
