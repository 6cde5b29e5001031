// Shared by the CUDA tests: contexts (skipping without a GPU), descriptors, 16-bit encoders
// written independently of the library, device copies, and device index options
// (index_options.cuh).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "index_options.cuh"
#include "sparseattn.h"

namespace {

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x
#define SA_OK_(x) ASSERT_EQ((x), SA_OK) << #x << ": " << sa_last_error()

// Round-to-nearest-even encoders, written here independently of the library.
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}
float from_bf16(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// f16 through CUDA's own host conversions.
uint16_t to_f16(float f) {
  __half h = __float2half_rn(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

struct Ctx {
  sa_context *cpu = nullptr, *gpu = nullptr;
  std::string why;
  Ctx() {
    sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
    o.threads = 4;
    sa_context_create(&o, &cpu);
    o.device = SA_DEVICE_CUDA;
    if (sa_context_create(&o, &gpu) != SA_OK) why = sa_last_error();
  }
  ~Ctx() {
    sa_context_destroy(&cpu);
    sa_context_destroy(&gpu);
  }
};

#define NEED_GPU(c)                                              \
  Ctx c;                                                         \
  if (!c.gpu) GTEST_SKIP() << "no usable CUDA plugin: " << c.why

sa_tensor desc(void *data, sa_dtype dt, std::vector<int64_t> shape, sa_device_type dev) {
  sa_tensor t{};
  t.data = data;
  t.dtype = dt;
  t.device = dev;
  t.rank = int32_t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
  return t;
}

template <class T>
T *to_device(const std::vector<T> &h) {
  void *d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, h.size() * sizeof(T) + 16), cudaSuccess);
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return static_cast<T *>(d);
}
template <class T>
std::vector<T> to_host(const T *d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

}  // namespace
