// Appends to a device index one token at a time (the decode step) against one bulk append:
// the page bounds are folded per touched page from the stored ones, so both indexes must give
// the same selections, entry for entry. Skips cleanly when no plugin or no device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "cuda_helpers.cuh"
#include "sparseattn.h"

namespace {

// Selections of `n_q` queries from an index fed in one append and from one fed in the given
// pieces (keys as f32 on the device, so the appends convert to the index's dtype too).
void check_pieces(Ctx &c, sa_selector_kind kind, int page, const std::vector<int64_t> &pieces, uint64_t seed) {
  const int D = 128, Hq = 8, Hkv = 2, n_q = 3, top_k = 64, window = 16, sinks = 4;
  int64_t n = 0;
  for (int64_t p : pieces) n += p;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> keys(size_t(n) * Hkv * D);
  std::vector<uint16_t> q(size_t(n_q) * Hq * D);
  for (auto &x : keys) x = nd(rng);
  for (size_t e = 0; e < keys.size(); e += 97) keys[e] = -0.f;  // signed zeros: ties in the bounds
  for (auto &x : q) x = to_bf16(nd(rng) * 2.f);
  float *dk = to_device(keys);
  uint16_t *dq = to_device(q);
  sa_index_options io = device_index_options(kind, Hkv, D, page);
  sa_index *bulk = nullptr, *step = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &bulk));
  SA_OK_(sa_index_create(c.gpu, &io, &step));
  sa_tensor all = desc(dk, SA_DTYPE_F32, {n, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(bulk, &all));
  int64_t at = 0;
  for (int64_t p : pieces) {
    sa_tensor t = desc(dk + size_t(at) * Hkv * D, SA_DTYPE_F32, {p, Hkv, D}, SA_DEVICE_CUDA);
    SA_OK_(sa_index_append(step, &t));
    at += p;
  }
  const int width = sinks + window + top_k;
  std::vector<int32_t> poison(size_t(n_q) * Hkv * width, -7);
  int32_t *o1 = to_device(poison), *o2 = to_device(poison);
  sa_tensor tq = desc(dq, SA_DTYPE_BF16, {n_q, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor t1 = desc(o1, SA_DTYPE_I32, {n_q, Hkv, width}, SA_DEVICE_CUDA);
  sa_tensor t2 = desc(o2, SA_DTYPE_I32, {n_q, Hkv, width}, SA_DEVICE_CUDA);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = top_k;
  so.window = window;
  so.sinks = sinks;
  SA_OK_(sa_select(bulk, &tq, &so, &t1));
  SA_OK_(sa_select(step, &tq, &so, &t2));
  CUDA_OK(cudaDeviceSynchronize());
  const auto a = to_host(o1, poison.size()), b = to_host(o2, poison.size());
  int chosen = 0;
  for (size_t e = 0; e < a.size(); ++e) {
    ASSERT_EQ(a[e], b[e]) << "entry " << e;
    chosen += a[e] >= 0;
  }
  EXPECT_GT(chosen, n_q * Hkv * (sinks + window)) << "selections beyond the forced slots";
  sa_index_destroy(&bulk);
  sa_index_destroy(&step);
  cudaFree(dk); cudaFree(dq); cudaFree(o1); cudaFree(o2);
}

TEST(CudaAppend, OneTokenAppendsGiveTheBulkIndex) {
  NEED_GPU(c);
  std::vector<int64_t> pieces = {37};  // a partial page first
  for (int s = 0; s < 600; ++s) pieces.push_back(1);
  pieces.push_back(45);  // across page boundaries, ending inside a page
  for (int s = 0; s < 20; ++s) pieces.push_back(1);
  check_pieces(c, SA_SELECTOR_PAGE, 16, pieces, 31);
  check_pieces(c, SA_SELECTOR_PAGE, 32, pieces, 32);
  check_pieces(c, SA_SELECTOR_EXACT, 1, {100, 1, 1, 7, 1, 300}, 33);
  std::vector<int64_t> grow = {4000};  // one-token appends across the storage's first regrowth
  for (int s = 0; s < 200; ++s) grow.push_back(1);
  check_pieces(c, SA_SELECTOR_PAGE, 16, grow, 34);
}

}  // namespace
