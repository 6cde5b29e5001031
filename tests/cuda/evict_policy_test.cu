// sa_cache_evict with scores, positions and freed all on the device runs the policy there: the
// same slots in the same order as the CPU policy on the same values, and the same refusals
// (status and message), over randomized requests full of ties (repeated scores, -0 and +0,
// infinities, repeated positions) and every option of the single-set policy. Skips cleanly
// when no plugin or no device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda_helpers.cuh"
#include "sparseattn.h"

namespace {

struct Outcome {
  sa_status status;
  std::string message;
  int64_t n_freed = -1;
  std::vector<int32_t> freed;
};

// One request on both sides; freed has `cap` entries `stride` apart (device side).
void compare(Ctx &c, const sa_evict_options &eo, const std::vector<float> &scores, int rows,
             const std::vector<int64_t> &pos, int64_t cap, int64_t stride, const char *what) {
  const int64_t n = int64_t(pos.size());
  const std::vector<int64_t> shape = rows ? std::vector<int64_t>{rows, n} : std::vector<int64_t>{n};
  Outcome cpu, gpu;
  {
    std::vector<int32_t> freed(size_t(cap), -7);
    sa_tensor s = desc(const_cast<float *>(scores.data()), SA_DTYPE_F32, shape, SA_DEVICE_CPU);
    sa_tensor p = desc(const_cast<int64_t *>(pos.data()), SA_DTYPE_I64, {n}, SA_DEVICE_CPU);
    sa_tensor f = desc(freed.data(), SA_DTYPE_I32, {cap}, SA_DEVICE_CPU);
    cpu.status = sa_cache_evict(c.cpu, &eo, &s, &p, &f, &cpu.n_freed);
    cpu.message = sa_last_error();
    cpu.freed = freed;
  }
  {
    float *ds = to_device(scores);
    int64_t *dp = to_device(pos);
    int32_t *df = to_device(std::vector<int32_t>(size_t(cap * stride), -7));
    sa_tensor s = desc(ds, SA_DTYPE_F32, shape, SA_DEVICE_CUDA);
    sa_tensor p = desc(dp, SA_DTYPE_I64, {n}, SA_DEVICE_CUDA);
    sa_tensor f = desc(df, SA_DTYPE_I32, {cap}, SA_DEVICE_CUDA);
    f.strides[0] = stride;
    gpu.status = sa_cache_evict(c.gpu, &eo, &s, &p, &f, &gpu.n_freed);
    gpu.message = sa_last_error();
    CUDA_OK(cudaDeviceSynchronize());
    const auto all = to_host(df, size_t(cap * stride));
    for (int64_t k = 0; k < cap * stride; ++k) {
      if (k % stride == 0) gpu.freed.push_back(all[size_t(k)]);
      else ASSERT_EQ(all[size_t(k)], -7) << what << ": written between strided entries";
    }
    cudaFree(ds); cudaFree(dp); cudaFree(df);
  }
  ASSERT_EQ(gpu.status, cpu.status) << what << ": cpu says " << cpu.message << "; gpu says " << gpu.message;
  if (cpu.status != SA_OK) {
    EXPECT_EQ(gpu.message, cpu.message) << what;
    EXPECT_EQ(gpu.freed, std::vector<int32_t>(size_t(cap), -7)) << what << ": written although refused";
    return;
  }
  EXPECT_EQ(gpu.n_freed, cpu.n_freed) << what;
  EXPECT_EQ(gpu.freed, cpu.freed) << what;
}

TEST(CudaEvict, DevicePolicyChoosesAsTheCpuPolicy) {
  NEED_GPU(c);
  std::mt19937_64 rng(77);
  const float palette[] = {0.f, -0.f, 0.25f, 0.5f, 1.f, -1.f, 3.f, 1e-30f, INFINITY, -INFINITY};
  int refused = 0, chosen = 0;
  for (int round = 0; round < 60; ++round) {
    const int64_t n = round == 0 ? 131072 : round % 7 == 0 ? 1 : int64_t(1 + rng() % 3000);
    const int rows = int(rng() % 4);  // 0: one-dimensional scores
    std::vector<float> scores(size_t(std::max(rows, 1)) * n);
    const bool infinite = round % 5 == 4;  // +inf and -inf on one slot's rows are refused
    for (auto &x : scores) {
      const uint64_t r = rng() % 16;
      x = r < 10 && (infinite || r < 8) ? palette[r] : float(rng() % 1000) / 64.f;
    }
    std::vector<int64_t> pos(static_cast<size_t>(n));
    for (int64_t s = 0; s < n; ++s) {
      const uint64_t r = rng() % 20;
      pos[size_t(s)] = r == 0 ? -1 : r == 1 ? int64_t(rng() % 8) : int64_t(rng() % uint64_t(2 * n));  // empty, repeats
    }
    if (round % 11 == 10) pos[size_t(rng() % n)] = -5;  // out of range
    if (round % 13 == 12) scores[size_t(rng() % scores.size())] = NAN;
    sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
    eo.sinks = int32_t(rng() % 5);
    eo.window = int32_t(rng() % 17);
    eo.incoming = int64_t(rng() % 6);
    const int64_t floor = eo.sinks + eo.window + eo.incoming;
    eo.budget = std::max<int64_t>(1, floor + int64_t(rng() % uint64_t(n + 8)));
    eo.score_mean = int32_t(rng() % 2);
    const float decays[] = {1.f, 0.9f, 0.5f, 0.f};
    eo.mass_decay = decays[rng() % 4];
    eo.head_max = int32_t(rng() % 2);
    eo.recent_share = round % 9 == 8 ? 0.25f : 0.f;
    const int64_t cap = round % 17 == 16 ? 1 : n + 8;
    const int64_t stride = round % 3 == 2 ? 3 : 1;
    const std::string what = "round " + std::to_string(round) + " n " + std::to_string(n);
    compare(c, eo, scores, rows, pos, cap, stride, what.c_str());
    if (HasFatalFailure()) return;
    sa_status s = SA_OK;  // what the CPU said, for the coverage counts
    {
      std::vector<int32_t> f(static_cast<size_t>(cap));
      int64_t k = 0;
      const std::vector<int64_t> shape = rows ? std::vector<int64_t>{rows, n} : std::vector<int64_t>{n};
      sa_tensor ts = desc(scores.data(), SA_DTYPE_F32, shape, SA_DEVICE_CPU);
      sa_tensor tp = desc(pos.data(), SA_DTYPE_I64, {n}, SA_DEVICE_CPU);
      sa_tensor tf = desc(f.data(), SA_DTYPE_I32, {cap}, SA_DEVICE_CPU);
      s = sa_cache_evict(c.cpu, &eo, &ts, &tp, &tf, &k);
      if (s == SA_OK && k > 0) ++chosen;
    }
    if (s != SA_OK) ++refused;
  }
  EXPECT_GT(chosen, 20) << "requests that freed slots";
  EXPECT_GT(refused, 5) << "refused requests";
}

}  // namespace
