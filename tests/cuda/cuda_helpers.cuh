// Shared by the CUDA tests: contexts (skipping without a GPU), descriptors, 16-bit encoders
// written independently of the library, device copies, and device index options
// (index_options.cuh).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "index_options.cuh"
#include "sparseattn.h"

namespace {

#define CUDA_OK(x) ASSERT_EQ((x), cudaSuccess) << #x
#define SA_OK_(x) ASSERT_EQ((x), SA_OK) << #x << ": " << sa_last_error()

// Device memory in use in device 0's default pool (where the plugin allocates for a context
// without an allocator hook).
inline size_t pool_used() {
  cudaMemPool_t pool = nullptr;
  uint64_t used = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, 0) != cudaSuccess) return 0;
  cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used);
  return size_t(used);
}

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

// Random bf16 values (normal, sd) and the floats they hold, for references in double.
struct Bf16Data {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};

Bf16Data random_bf16(std::mt19937_64 &rng, size_t n, float sd) {
  std::normal_distribution<float> nd(0.f, sd);
  Bf16Data d;
  d.bits.resize(n);
  d.values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    d.bits[i] = to_bf16(nd(rng));
    d.values[i] = from_bf16(d.bits[i]);
  }
  return d;
}

// max |a - b| / max(1e-3, |b|).
double max_rel_diff(const std::vector<float> &a, const std::vector<float> &b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::fabs(double(a[i]) - b[i]) / std::max(1e-3, std::fabs(double(b[i]))));
  return worst;
}

// Double-precision attention (scale 1/sqrt(D)) of one query head, whose KV head is hk of Hkv,
// over the n_rows rows listed (-1 skipped) of K and V [n_kv][Hkv][D]. pos: positions
// [Hkv][n_kv] (row r of head hk kept when pos[hk * n_kv + r] is a token at or before limit),
// or null (every listed row).
std::vector<double> reference_attention(const float *q, const std::vector<float> &K, const std::vector<float> &V,
                                        int Hkv, int D, int hk, const int32_t *rows, int64_t n_rows,
                                        const int64_t *pos = nullptr, int64_t n_kv = 0, int64_t limit = INT64_MAX) {
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> s, out(size_t(D), 0.0);
  std::vector<int32_t> used;
  double mx = -INFINITY;
  for (int64_t w = 0; w < n_rows; ++w) {
    const int32_t r = rows[w];
    if (r < 0) continue;
    if (pos && (pos[hk * n_kv + r] < 0 || pos[hk * n_kv + r] > limit)) continue;
    double dot = 0;
    for (int d = 0; d < D; ++d) dot += double(q[d]) * K[(size_t(r) * Hkv + hk) * D + d];
    s.push_back(dot * scale);
    used.push_back(r);
    mx = std::max(mx, dot * scale);
  }
  double den = 0;
  for (double &x : s) den += (x = std::exp(x - mx));
  for (size_t e = 0; e < used.size(); ++e)
    for (int d = 0; d < D; ++d) out[size_t(d)] += s[e] / den * V[(size_t(used[e]) * Hkv + hk) * D + d];
  return out;
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

// One bf16 query [1, H_q, D] selected (top_k, window, sinks) by a device index made with io
// over bf16 keys [n, H_kv, D], into rows of `width` entries first poisoned with -7 (entries
// left unwritten show); the rows, on the host, into *rows.
void select_one_query(Ctx &c, const sa_index_options &io, const std::vector<uint16_t> &keys,
                      const std::vector<uint16_t> &q, int64_t n, int Hq, int top_k, int window, int sinks,
                      int width, std::vector<int32_t> *rows) {
  const int Hkv = io.num_kv_heads, D = io.head_dim;
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &ix));
  uint16_t *dk = to_device(keys), *dq = to_device(q);
  const std::vector<int32_t> poison(size_t(Hkv) * width, -7);
  int32_t *dout = to_device(poison);
  sa_tensor tk = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor tq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor to = desc(dout, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = top_k;
  so.window = window;
  so.sinks = sinks;
  SA_OK_(sa_index_append(ix, &tk));
  SA_OK_(sa_select(ix, &tq, &so, &to));
  CUDA_OK(cudaDeviceSynchronize());
  *rows = to_host(dout, poison.size());
  sa_index_destroy(&ix);
  cudaFree(dk);
  cudaFree(dq);
  cudaFree(dout);
}

}  // namespace
