// GPU benchmark of the CUDA plugin through the public API (H_q=32, H_kv=8, D=128, bf16):
// sparse decode attend (K=2048 gathered keys), dense decode at 32K, 128K and 512K, page
// select + attend at 128K and 512K, exact select + attend at 32K, 128K and 512K, a batch of
// 64 sequences' gathered attend, and the device's copy bandwidth, all timed with CUDA events
// (warm-up, median of many calls). Index sets are rotated so that repeated calls do not run
// out of L2. Usage: cuda_bench [dense | batch | select | page [128 | 512] | heads | append]
// batch: 64 sequences of 4K-128K keys in a paged cache (pages of 16): sa_attend_paged in one
// call (sparse: top_k 2048 + window 64 + sinks 4 per KV head; dense), against a loop of
// per-sequence sa_attend calls, and per-sequence page selection (torch_bench.py batch times
// SDPA over the same lengths). select: the sparse attend, the one-token append and the
// selection cases only. page: the sparse attend and the page selection cases only (or the one
// of 128K or 512K keys). heads: per-KV-head eviction (run_heads says what). append: where a
// one-token append's time goes (run_append).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "sparseattn.h"
#include "../../tests/cuda/index_options.cuh"

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { std::printf("%s: %s\n", #x, cudaGetErrorString(e_)); std::exit(1); } } while (0)
#define SK(x) do { sa_status s_ = (x); if (s_ != SA_OK) { std::printf("%s: %s\n", #x, sa_last_error()); std::exit(1); } } while (0)

namespace {

constexpr int kHq = 32, kHkv = 8, kD = 128;

sa_tensor desc(void *data, sa_dtype dt, std::vector<int64_t> shape) {
  sa_tensor t{};
  t.data = data;
  t.dtype = dt;
  t.device = SA_DEVICE_CUDA;
  t.rank = int32_t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
  return t;
}

// bf16 bit patterns 0x3a00..0x3dff with a random sign, from a hash of the element number
// (generated on the device: a 1 GB cache takes seconds on the host).
__global__ void fill_random_bits(uint16_t *p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9e3779b1u ^ uint32_t(i >> 32) * 0x85ebca6bu ^ seed * 0xc2b2ae35u;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    p[i] = uint16_t(0x3c00 + (h % 0x0400) - 0x0200) ^ uint16_t((h >> 31) << 15);
  }
}

void *dev_random_bf16(size_t n, uint64_t seed) {
  void *d;
  CK(cudaMalloc(&d, n * 2));
  fill_random_bits<<<4096, 256>>>(static_cast<uint16_t *>(d), n, uint32_t(seed));
  CK(cudaDeviceSynchronize());
  return d;
}

// Median microseconds per call of f(rep) over reps calls, each between two events.
double median_us(cudaStream_t s, int reps, const std::function<void(int)> &f) {
  for (int r = 0; r < 20; ++r) f(r);
  CK(cudaStreamSynchronize(s));
  std::vector<cudaEvent_t> ev(size_t(reps) + 1);
  for (auto &e : ev) CK(cudaEventCreate(&e));
  CK(cudaEventRecord(ev[0], s));
  for (int r = 0; r < reps; ++r) {
    f(r);
    CK(cudaEventRecord(ev[size_t(r) + 1], s));
  }
  CK(cudaStreamSynchronize(s));
  std::vector<double> t(static_cast<size_t>(reps));
  for (int r = 0; r < reps; ++r) {
    float ms;
    CK(cudaEventElapsedTime(&ms, ev[size_t(r)], ev[size_t(r) + 1]));
    t[size_t(r)] = ms * 1e3;
  }
  for (auto &e : ev) cudaEventDestroy(e);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Microseconds per call of f when kCalls calls are captured in one CUDA graph and replayed:
// the device time without the host's per-call cost. Negative when capture fails.
double graph_us(cudaStream_t s, const std::function<void(int)> &f) {
  constexpr int kCalls = 32;
  cudaGraph_t g;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) return -1;
  for (int r = 0; r < kCalls; ++r) f(r);
  if (cudaStreamEndCapture(s, &g) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  cudaGraphExec_t ge;
  if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  const double us = median_us(s, 20, [&](int) { CK(cudaGraphLaunch(ge, s)); }) / kCalls;
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  return us;
}

// Sorted random rows per (query, head): n_q x H_kv lists of k rows in [base_i, base_i + span).
std::vector<int32_t> random_lists(int n_q, int k, int64_t span, bool per_query_base, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> idx(size_t(n_q) * kHkv * k);
  std::vector<int32_t> pick(static_cast<size_t>(span));
  for (int i = 0; i < n_q; ++i)
    for (int h = 0; h < kHkv; ++h) {
      for (int64_t j = 0; j < span; ++j) pick[size_t(j)] = int32_t(j);
      for (int j = 0; j < k; ++j) std::swap(pick[size_t(j)], pick[size_t(j + int64_t(rng() % uint64_t(span - j)))]);
      std::sort(pick.begin(), pick.begin() + k);
      for (int j = 0; j < k; ++j)
        idx[(size_t(i) * kHkv + h) * k + j] = pick[size_t(j)] + int32_t(per_query_base ? i * span : 0);
    }
  return idx;
}


// bf16 values in [-2, 2) from a hash of the element number (a multi-GB cache filled on the device).
__global__ void fill_bf16(uint16_t *p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9e3779b1u ^ uint32_t(i >> 32) * 0x85ebca6bu ^ seed;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    const float f = (float(h >> 8) / float(1u << 24)) * 4.f - 2.f;
    uint32_t u;
    memcpy(&u, &f, 4);
    p[i] = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}

// The batch benchmark's sequence lengths: 4K to 128K, multiples of the page size (torch_bench.py
// batch uses the same formula).
int64_t batch_len(int b, int B, int P) { return (4096 + int64_t(b) * (128 * 1024 - 4096) / (B - 1)) / P * P; }

void run_batch(sa_context *ctx, cudaStream_t s) {
  constexpr int B = 64, P = 16, kTop = 2048, kWindow = 64, kSinks = 4, W = kTop + kWindow + kSinks;
  std::vector<int64_t> len(B), first(B + 1, 0);  // first: each sequence's first slot
  for (int b = 0; b < B; ++b) {
    len[size_t(b)] = batch_len(b, B, P);
    first[size_t(b) + 1] = first[size_t(b)] + len[size_t(b)];
  }
  const int64_t slots = first[B], pages = slots / P, max_pages = len[B - 1] / P;
  std::printf("batch: %d sequences of %lld-%lld keys (%lld in all), pages of %d, H_q %d, H_kv %d, D %d, bf16\n", B,
              (long long)len[0], (long long)len[B - 1], (long long)slots, P, kHq, kHkv, kD);
  const size_t elems = size_t(slots) * kHkv * kD;
  uint16_t *K, *V, *Q;
  CK(cudaMalloc(&K, elems * 2));
  CK(cudaMalloc(&V, elems * 2));
  CK(cudaMalloc(&Q, size_t(B) * kHq * kD * 2));
  fill_bf16<<<4096, 256, 0, s>>>(K, elems, 1);
  fill_bf16<<<4096, 256, 0, s>>>(V, elems, 2);
  fill_bf16<<<64, 256, 0, s>>>(Q, size_t(B) * kHq * kD, 3);
  // Each sequence's pages are consecutive (so that the per-sequence loop can view them as rows).
  std::vector<int32_t> table(size_t(B) * max_pages, 0), lens32(B);
  for (int b = 0; b < B; ++b) {
    lens32[size_t(b)] = int32_t(len[size_t(b)]);
    for (int64_t j = 0; j < len[size_t(b)] / P; ++j) table[size_t(b) * max_pages + j] = int32_t(first[size_t(b)] / P + j);
  }
  // Sparse lists: sinks, 2048 random tokens between them and the window, the window; sorted.
  std::vector<int32_t> local(size_t(B) * kHkv * W), phys(local.size());
  std::mt19937_64 rng(5);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < kHkv; ++h) {
      int32_t *l = &local[(size_t(b) * kHkv + h) * W];
      const int64_t n = len[size_t(b)], mid = n - kWindow - kSinks;
      std::vector<int32_t> pick;
      pick.reserve(kTop);
      std::vector<char> used(static_cast<size_t>(mid), 0);
      while (int(pick.size()) < kTop) {
        const int64_t t = int64_t(rng() % uint64_t(mid));
        if (!used[size_t(t)]) used[size_t(t)] = 1, pick.push_back(int32_t(kSinks + t));
      }
      for (int j = 0; j < kSinks; ++j) l[j] = j;
      std::sort(pick.begin(), pick.end());
      std::copy(pick.begin(), pick.end(), l + kSinks);
      for (int j = 0; j < kWindow; ++j) l[kSinks + kTop + j] = int32_t(n - kWindow + j);
      for (int j = 0; j < W; ++j) phys[(size_t(b) * kHkv + h) * W + j] = int32_t(first[size_t(b)] + l[j]);
    }
  int32_t *dtable, *dlens, *dlocal, *dphys;
  CK(cudaMalloc(&dtable, table.size() * 4));
  CK(cudaMalloc(&dlens, B * 4));
  CK(cudaMalloc(&dlocal, local.size() * 4));
  CK(cudaMalloc(&dphys, phys.size() * 4));
  CK(cudaMemcpy(dtable, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dlens, lens32.data(), B * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dlocal, local.data(), local.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dphys, phys.data(), phys.size() * 4, cudaMemcpyHostToDevice));
  uint16_t *out;
  CK(cudaMalloc(&out, size_t(B) * kHq * kD * 2));
  CK(cudaDeviceSynchronize());

  sa_paged_kv kv = SA_PAGED_KV_INIT;
  kv.k = desc(K, SA_DTYPE_BF16, {pages, P, kHkv, kD});
  kv.v = desc(V, SA_DTYPE_BF16, {pages, P, kHkv, kD});
  kv.page_table = desc(dtable, SA_DTYPE_I32, {B, max_pages});
  kv.seq_lens = desc(dlens, SA_DTYPE_I32, {B});
  sa_tensor q = desc(Q, SA_DTYPE_BF16, {B, kHq, kD}), o = desc(out, SA_DTYPE_BF16, {B, kHq, kD});
  sa_tensor ix = desc(dphys, SA_DTYPE_I32, {B, kHkv, W});
  const double row_bytes = kD * 2.0;
  auto paged_sparse = [&](int) { SK(sa_attend_paged(ctx, &q, nullptr, &kv, &ix, nullptr, &o, nullptr)); };
  const double sparse_us = median_us(s, 100, paged_sparse), sparse_graph = graph_us(s, paged_sparse);
  std::printf("batch sparse sa_attend_paged, one call (%d keys per KV head): %.1f us (%.1f us in a graph), %.2f TB/s of "
              "gathered K/V\n", W, sparse_us, sparse_graph, 2.0 * B * kHkv * W * row_bytes / sparse_us / 1e6);
  const double dense_us = median_us(s, 20, [&](int) { SK(sa_attend_paged(ctx, &q, nullptr, &kv, nullptr, nullptr, &o, nullptr)); });
  std::printf("batch dense sa_attend_paged, one call: %.1f us, %.2f TB/s of K/V\n", dense_us,
              2.0 * slots * kHkv * row_bytes / dense_us / 1e6);

  // The same work as one sa_attend call per sequence (its rows viewed contiguously).
  auto loop = [&](bool sparse) {
    for (int b = 0; b < B; ++b) {
      const size_t row0 = size_t(first[size_t(b)]) * kHkv * kD;
      sa_tensor kb = desc(K + row0, SA_DTYPE_BF16, {len[size_t(b)], kHkv, kD});
      sa_tensor vb = desc(V + row0, SA_DTYPE_BF16, {len[size_t(b)], kHkv, kD});
      sa_tensor qb = desc(Q + size_t(b) * kHq * kD, SA_DTYPE_BF16, {1, kHq, kD});
      sa_tensor ob = desc(out + size_t(b) * kHq * kD, SA_DTYPE_BF16, {1, kHq, kD});
      sa_tensor ib = desc(dlocal + size_t(b) * kHkv * W, SA_DTYPE_I32, {1, kHkv, W});
      SK(sa_attend(ctx, &qb, &kb, &vb, sparse ? &ib : nullptr, nullptr, &ob, nullptr));
    }
  };
  const double loop_sparse = median_us(s, 50, [&](int) { loop(true); });
  const double loop_dense = median_us(s, 10, [&](int) { loop(false); });
  std::printf("batch as %d sa_attend calls: sparse %.1f us, dense %.1f us\n", B, loop_sparse, loop_dense);

  // Page selection per sequence (a device index per sequence, pages of 16, refine 0), top_k
  // 2048 + window + sinks, then the paged attend of the whole batch.
  std::vector<sa_index *> idx(B, nullptr);
  for (int b = 0; b < B; ++b) {
    sa_index_options io = device_index_options(SA_SELECTOR_PAGE, kHkv, kD, P);
    SK(sa_index_create(ctx, &io, &idx[size_t(b)]));
    sa_tensor kb = desc(K + size_t(first[size_t(b)]) * kHkv * kD, SA_DTYPE_BF16, {len[size_t(b)], kHkv, kD});
    SK(sa_index_append(idx[size_t(b)], &kb));
  }
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = kTop;
  so.window = kWindow;
  so.sinks = kSinks;
  auto select_loop = [&]() {
    for (int b = 0; b < B; ++b) {
      sa_tensor qb = desc(Q + size_t(b) * kHq * kD, SA_DTYPE_BF16, {1, kHq, kD});
      sa_tensor ib = desc(dlocal + size_t(b) * kHkv * W, SA_DTYPE_I32, {1, kHkv, W});
      SK(sa_select(idx[size_t(b)], &qb, &so, &ib));
    }
  };
  const double select_us = median_us(s, 20, [&](int) { select_loop(); });
  const double step_us = median_us(s, 20, [&](int r) { select_loop(); paged_sparse(r); });
  std::printf("batch page select as %d sa_select calls: %.1f us; + sparse sa_attend_paged: %.1f us per step\n", B,
              select_us, step_us);
  // sa_select_batch over the same indexes, writing physical slots through the page table.
  auto select_batch = [&]() { SK(sa_select_batch(idx.data(), B, &q, nullptr, &so, &kv, &ix)); };
  const double batch_sel_us = median_us(s, 20, [&](int) { select_batch(); });
  const double batch_step_us = median_us(s, 20, [&](int r) { select_batch(); paged_sparse(r); });
  std::printf("batch page select as one sa_select_batch: %.1f us; + sparse sa_attend_paged: %.1f us per step\n",
              batch_sel_us, batch_step_us);
  for (auto &x : idx) sa_index_destroy(&x);
  CK(cudaFree(K));
  CK(cudaFree(V));
  CK(cudaFree(Q));
  CK(cudaFree(out));
  CK(cudaFree(dtable));
  CK(cudaFree(dlens));
  CK(cudaFree(dlocal));
  CK(cudaFree(dphys));
}

__global__ void empty_kernel() {}

// The append kernel's argument list, no work: what passing them costs at launch.
__global__ void args_kernel(const void *, int, int64_t, int64_t, int64_t, int64_t, int, int, int, uint16_t *, int64_t,
                            int64_t, int64_t, int, uint16_t *, uint16_t *, int64_t, int64_t *, int, int64_t) {}

// Host microseconds per call of f over reps calls that do not wait (the queue is drained first
// and after).
double host_us(cudaStream_t s, int reps, const std::function<void(int)> &f) {
  for (int r = 0; r < 20; ++r) f(r);
  CK(cudaStreamSynchronize(s));
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) f(r);
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
  CK(cudaStreamSynchronize(s));
  return us;
}

// Microseconds per call of f over reps calls queued back to back, one event before and one after
// (the queue is drained first): the larger of the host's and the device's time per call, what a
// host that does not wait between calls (an engine's decode loop) sees.
double queued_us(cudaStream_t s, int reps, const std::function<void(int)> &f) {
  for (int r = 0; r < 20; ++r) f(r);
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int round = 0; round < 5; ++round) {
    CK(cudaStreamSynchronize(s));
    CK(cudaEventRecord(a, s));
    for (int r = 0; r < reps; ++r) f(r);
    CK(cudaEventRecord(b, s));
    CK(cudaStreamSynchronize(s));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e3 / reps);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Where a one-token append's time goes: the CUDA calls it makes, timed alone on this host, then
// sa_index_append on a page and an exact index of 128K keys (per call with an event after
// each, and host time of a loop that does not wait). An empty launch sets the floor.
void run_append(sa_context *ctx, cudaStream_t s) {
  const int64_t N = 128 * 1024 + 4096;
  void *K = dev_random_bf16(size_t(N) * kHkv * kD, 1);
  cudaEvent_t ev;
  CK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  constexpr int kReps = 2000;
  auto both = [&](const char *what, const std::function<void(int)> &f) {
    const double per_call = median_us(s, 200, f), host = host_us(s, kReps, f);
    std::printf("append parts: %-44s %5.2f us per call, host %5.2f us\n", what, per_call, host);
  };
  auto host_only = [&](const char *what, const std::function<void(int)> &f) {
    std::printf("append parts: %-44s host %5.2f us\n", what, host_us(s, kReps, f));
  };
  both("empty kernel <<<1, 32>>>", [&](int) { empty_kernel<<<1, 32, 0, s>>>(); });
  both("20-argument kernel <<<4, 256>>>", [&](int) {
    args_kernel<<<4, 256, 0, s>>>(K, 0, 1, 2, 3, 1, 8, 128, 16, nullptr, 0, 0, 0, 1024, nullptr, nullptr, 0, nullptr,
                                  0, 0);
  });
  both("empty kernel + cudaEventRecord (no timing)", [&](int) {
    empty_kernel<<<1, 32, 0, s>>>();
    CK(cudaEventRecord(ev, s));
  });
  host_only("cudaEventRecord (no timing)", [&](int) { CK(cudaEventRecord(ev, s)); });
  host_only("cudaGetLastError", [&](int) { CK(cudaGetLastError()); });
  host_only("cudaGetDevice", [&](int) {
    int d;
    CK(cudaGetDevice(&d));
  });
  host_only("cudaPointerGetAttributes (device memory)", [&](int r) {
    cudaPointerAttributes at;
    CK(cudaPointerGetAttributes(&at, static_cast<uint16_t *>(K) + size_t(r % 4096) * kHkv * kD));
  });
  host_only("cudaStreamIsCapturing", [&](int) {
    cudaStreamCaptureStatus c;
    CK(cudaStreamIsCapturing(s, &c));
  });
  // A page index, an exact index, and an exact index that borrows the cache's keys (an append
  // then copies nothing and launches no kernel).
  for (int which = 0; which < 3; ++which) {
    const sa_selector_kind kind = which == 0 ? SA_SELECTOR_PAGE : SA_SELECTOR_EXACT;
    const bool borrow = which == 2;
    sa_index_options io = device_index_options(kind, kHkv, kD, 16);
    io.borrow_keys = borrow;
    sa_index *ix = nullptr;
    SK(sa_index_create(ctx, &io, &ix));
    sa_tensor all = desc(K, SA_DTYPE_BF16, {128 * 1024, kHkv, kD});
    SK(sa_index_append(ix, &all));
    int64_t next = 0;
    auto append_one = [&](int) {
      sa_tensor one = desc(static_cast<uint16_t *>(K) + size_t(128 * 1024 + next % 4096) * kHkv * kD, SA_DTYPE_BF16,
                           {1, kHkv, kD});
      ++next;
      SK(sa_index_append(ix, &one));
    };
    both(kind == SA_SELECTOR_PAGE ? "sa_index_append, page index of 128K"
         : borrow                   ? "sa_index_append, borrowing exact index"
                                    : "sa_index_append, exact index of 128K",
         append_one);
    std::printf("append parts: %-44s %5.2f us per call queued back to back\n", "(the same)", queued_us(s, 200, append_one));
    std::printf("append parts: %-44s %5.2f us per call in a graph\n", "(the same)", graph_us(s, append_one));
    sa_index_destroy(&ix);
  }
  CK(cudaEventDestroy(ev));
  CK(cudaFree(K));
}


// Device copy bandwidth, TB/s of bytes read + written.
// heads: per-KV-head eviction at a 128K cache (H_kv 8), each with slot mass [H_kv, 128K]:
// dense and sparse (K=2048) decode attend with and without head_key_positions (device
// positions; causal adds the search for the largest), and sa_cache_evict per head on device
// [8, 128K] scores and positions against the single-set call on the same scores and the
// per-head call on host arrays; one-token refills and selections of device indexes with
// positions per KV head against one position set.
void run_heads(sa_context *ctx, cudaStream_t s) {
  const int64_t N = 128 * 1024;
  const int kTop = 2048, kSets = 16;
  void *K = dev_random_bf16(size_t(N) * kHkv * kD, 1), *V = dev_random_bf16(size_t(N) * kHkv * kD, 2);
  void *Q = dev_random_bf16(size_t(kHq) * kD, 3);
  uint16_t *out;
  float *mass;
  int64_t *dpos, *dpos1;
  int32_t *dfreed;
  CK(cudaMalloc(&out, size_t(kHq) * kD * 2));
  CK(cudaMalloc(&mass, size_t(kHkv) * N * 4));
  CK(cudaMemset(mass, 0, size_t(kHkv) * N * 4));
  // Head h holds the positions 0 .. N-1 rotated by h * 977, one row in 64 empty.
  std::vector<int64_t> hpos(size_t(kHkv) * N), hpos1(static_cast<size_t>(N));
  for (int h = 0; h < kHkv; ++h)
    for (int64_t r = 0; r < N; ++r) hpos[size_t(h * N + r)] = r % 64 == 63 ? -1 : (r + h * 977) % N;
  for (int64_t r = 0; r < N; ++r) hpos1[size_t(r)] = r;
  CK(cudaMalloc(&dpos, hpos.size() * 8));
  CK(cudaMalloc(&dpos1, hpos1.size() * 8));
  CK(cudaMalloc(&dfreed, size_t(kHkv) * 4 * 4));
  CK(cudaMemcpy(dpos, hpos.data(), hpos.size() * 8, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpos1, hpos1.data(), hpos1.size() * 8, cudaMemcpyHostToDevice));
  std::vector<int32_t *> sets(kSets);
  for (int r = 0; r < kSets; ++r) {
    auto h = random_lists(1, kTop, N, false, 100 + r);
    CK(cudaMalloc(&sets[size_t(r)], h.size() * 4));
    CK(cudaMemcpy(sets[size_t(r)], h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  }
  CK(cudaDeviceSynchronize());
  sa_tensor q = desc(Q, SA_DTYPE_BF16, {1, kHq, kD}), o = desc(out, SA_DTYPE_BF16, {1, kHq, kD});
  sa_tensor k = desc(K, SA_DTYPE_BF16, {N, kHkv, kD}), v = desc(V, SA_DTYPE_BF16, {N, kHkv, kD});
  sa_tensor mt = desc(mass, SA_DTYPE_F32, {kHkv, N});
  auto attend_us = [&](bool sparse, const int64_t *head_pos, bool causal) {
    sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
    ao.slot_mass = &mt;
    ao.head_key_positions = head_pos;
    ao.causal = causal;
    return median_us(s, sparse ? 500 : 100, [&](int r) {
      sa_tensor ix = desc(sets[size_t(r % kSets)], SA_DTYPE_I32, {1, kHkv, kTop});
      SK(sa_attend(ctx, &q, &k, &v, sparse ? &ix : nullptr, &ao, &o, nullptr));
    });
  };
  for (bool sparse : {false, true})
    std::printf("%s decode attend with slot mass, 128K cache: %.1f us; with head_key_positions %.1f us, causal %.1f us\n",
                sparse ? "sparse (K=2048)" : "dense", attend_us(sparse, nullptr, false), attend_us(sparse, dpos, false),
                attend_us(sparse, dpos, true));
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.budget = N;
  int64_t n_freed[kHkv];
  sa_tensor p1 = desc(dpos1, SA_DTYPE_I64, {N}), f1 = desc(dfreed, SA_DTYPE_I32, {4});
  const double single_us = median_us(s, 50, [&](int) { SK(sa_cache_evict(ctx, &eo, &mt, &p1, &f1, n_freed)); });
  eo.per_head = 1;
  sa_tensor ph = desc(dpos, SA_DTYPE_I64, {kHkv, N}), fh = desc(dfreed, SA_DTYPE_I32, {kHkv, 4});
  const double heads_us = median_us(s, 50, [&](int) { SK(sa_cache_evict(ctx, &eo, &mt, &ph, &fh, n_freed)); });
  std::vector<float> hmass(size_t(kHkv) * N);
  CK(cudaMemcpy(hmass.data(), mass, hmass.size() * 4, cudaMemcpyDeviceToHost));
  int32_t hfreed[kHkv * 4];
  sa_tensor hm = desc(hmass.data(), SA_DTYPE_F32, {kHkv, N}), hp = desc(hpos.data(), SA_DTYPE_I64, {kHkv, N});
  sa_tensor hf = desc(hfreed, SA_DTYPE_I32, {kHkv, 4});
  hm.device = hp.device = hf.device = SA_DEVICE_CPU;
  const double host_us = median_us(s, 20, [&](int) { SK(sa_cache_evict(ctx, &eo, &hm, &hp, &hf, n_freed)); });
  std::printf("sa_cache_evict at 128K, scores [%d, 128K] on the device: one set %.1f us, per KV head %.1f us; per KV "
              "head on host arrays %.1f us\n", kHkv, single_us, heads_us, host_us);
  // Device indexes over the 128K keys refilled one token at a time: sa_index_update (one
  // position for every head) against sa_index_update_heads (a slot and position per KV head),
  // and sa_select (top_k 2048, window 64, sinks 4) before any refill, with one position set,
  // and with positions per KV head.
  for (sa_selector_kind kind : {SA_SELECTOR_EXACT, SA_SELECTOR_PAGE}) {
    sa_index_options io = device_index_options(kind, kHkv, kD, kind == SA_SELECTOR_PAGE ? 16 : 0);
    io.capacity = N;
    sa_index *ix = nullptr;
    SK(sa_index_create(ctx, &io, &ix));
    SK(sa_index_append(ix, &k));
    const int width = kTop + 64 + 4;
    int32_t *sel;
    CK(cudaMalloc(&sel, size_t(kHkv) * width * 4));
    sa_tensor st = desc(sel, SA_DTYPE_I32, {1, kHkv, width});
    sa_select_options so = SA_SELECT_OPTIONS_INIT;
    so.top_k = kTop;
    so.window = 64;
    so.sinks = 4;
    const int reps = kind == SA_SELECTOR_PAGE ? 200 : 50;
    auto select_us = [&] { return median_us(s, reps, [&](int) { SK(sa_select(ix, &q, &so, &st)); }); };
    const double sel_plain = select_us();
    int64_t next = N;  // positions given by the refills, past every held one
    const double update_us = median_us(s, 200, [&](int r) {
      const int32_t slot = int32_t(1000 + r % 4096);
      const int64_t pos = next++;
      sa_tensor one = desc(static_cast<uint16_t *>(K) + size_t(r % 64) * kHkv * kD, SA_DTYPE_BF16, {1, kHkv, kD});
      SK(sa_index_update(ix, &slot, 1, &one, &pos));
    });
    const double sel_set = select_us();
    const double heads_us = median_us(s, 200, [&](int r) {
      int32_t slots[kHkv];
      int64_t pos[kHkv];
      for (int h = 0; h < kHkv; ++h) {
        slots[h] = int32_t((20000 + r % 4096 + h * 977) % N);
        pos[h] = next + h;
      }
      next += kHkv;
      sa_tensor one = desc(static_cast<uint16_t *>(K) + size_t(r % 64) * kHkv * kD, SA_DTYPE_BF16, {1, kHkv, kD});
      SK(sa_index_update_heads(ix, slots, 1, &one, pos));
    });
    const double sel_heads = select_us();
    std::printf("%s index at 128K, one-token refill: sa_index_update %.1f us, sa_index_update_heads %.1f us; select "
                "%.1f us before refills, %.1f us with one position set, %.1f us with positions per KV head\n",
                kind == SA_SELECTOR_PAGE ? "page" : "exact", update_us, heads_us, sel_plain, sel_set, sel_heads);
    CK(cudaFree(sel));
    sa_index_destroy(&ix);
  }
  for (auto p : sets) CK(cudaFree(p));
  CK(cudaFree(K)); CK(cudaFree(V)); CK(cudaFree(Q)); CK(cudaFree(out)); CK(cudaFree(mass));
  CK(cudaFree(dpos)); CK(cudaFree(dpos1)); CK(cudaFree(dfreed));
}

double copy_bandwidth(cudaStream_t s) {
  const size_t copy_bytes = size_t(2) << 30;
  void *ca, *cb;
  CK(cudaMalloc(&ca, copy_bytes));
  CK(cudaMalloc(&cb, copy_bytes));
  CK(cudaMemset(ca, 1, copy_bytes));
  const double copy_us = median_us(s, 20, [&](int) { CK(cudaMemcpyAsync(cb, ca, copy_bytes, cudaMemcpyDeviceToDevice, s)); });
  const double copy_bw = 2.0 * copy_bytes / copy_us / 1e6;
  CK(cudaFree(ca));
  CK(cudaFree(cb));
  std::printf("copy bandwidth: %.2f TB/s (read + write, %.0f us for %zu MB)\n", copy_bw, copy_us, copy_bytes >> 20);
  return copy_bw;
}

}  // namespace

int main(int argc, char **argv) {
  const bool dense_only = argc > 1 && std::string(argv[1]) == "dense";  // copy bandwidth and dense decode only
  const bool batch_only = argc > 1 && std::string(argv[1]) == "batch";
  const bool page_only = argc > 1 && std::string(argv[1]) == "page";
  const bool select_only = page_only || (argc > 1 && std::string(argv[1]) == "select");
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
  co.device = SA_DEVICE_CUDA;
  co.cuda_stream = s;
  sa_context *ctx = nullptr;
  SK(sa_context_create(&co, &ctx));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  if (argc > 1 && std::string(argv[1]) == "heads") {
    run_heads(ctx, s);
    sa_context_destroy(&ctx);
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "append") {
    run_append(ctx, s);
    sa_context_destroy(&ctx);
    return 0;
  }
  if (batch_only) {
    run_batch(ctx, s);
    sa_context_destroy(&ctx);
    return 0;
  }

  const double copy_bw = select_only ? 0.0 : copy_bandwidth(s);

  const int64_t N = 512 * 1024;  // cache of 512K tokens; the 128K cases use its first rows
  void *K = dev_random_bf16(size_t(N) * kHkv * kD, 1), *V = dev_random_bf16(size_t(N) * kHkv * kD, 2);
  void *Q = dev_random_bf16(size_t(64) * kHq * kD, 3);
  float *out;
  CK(cudaMalloc(&out, size_t(64) * kHq * kD * 4));
  float *lse;
  CK(cudaMalloc(&lse, size_t(64) * kHq * 4));
  uint16_t *out16;
  CK(cudaMalloc(&out16, size_t(64) * kHq * kD * 2));
  const double row_bytes = kD * 2.0;

  // Sparse decode: 2048 gathered keys per KV head out of 128K, 16 index sets in rotation.
  const int kSets = 16, kTop = 2048;
  const int64_t N128 = 128 * 1024;
  std::vector<int32_t *> sets(kSets);
  for (int r = 0; r < kSets; ++r) {
    auto h = random_lists(1, kTop, N128, false, 100 + r);
    CK(cudaMalloc(&sets[size_t(r)], h.size() * 4));
    CK(cudaMemcpy(sets[size_t(r)], h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  }
  sa_tensor q1 = desc(Q, SA_DTYPE_BF16, {1, kHq, kD}), o1 = desc(out16, SA_DTYPE_BF16, {1, kHq, kD});
  sa_tensor l1 = desc(lse, SA_DTYPE_F32, {1, kHq});
  sa_tensor k128 = desc(K, SA_DTYPE_BF16, {N128, kHkv, kD}), v128 = desc(V, SA_DTYPE_BF16, {N128, kHkv, kD});
  auto sparse_call = [&](int r) {
    sa_tensor ix = desc(sets[size_t(r % kSets)], SA_DTYPE_I32, {1, kHkv, kTop});
    SK(sa_attend(ctx, &q1, &k128, &v128, &ix, nullptr, &o1, &l1));
  };
  const double sparse_us = median_us(s, 500, sparse_call);
  const double sparse_graph = graph_us(s, sparse_call);
  const double sparse_bytes = 2.0 * kHkv * kTop * row_bytes;
  std::printf("sparse decode attend (K=2048, 128K cache): %.1f us per call (%.1f us in a graph), %.2f TB/s of gathered K/V\n",
              sparse_us, sparse_graph, sparse_bytes / sparse_us / 1e6);
  std::printf("sparse decode attend: %.1f us per call queued back to back, host %.2f us per call\n",
              queued_us(s, 200, sparse_call), host_us(s, 100, sparse_call));

  // Dense decode at 32K, 128K and 512K.
  double dense128_us = 0;
  for (int64_t n : {N128 / 4, N128, N}) {
    if (select_only) break;
    sa_tensor kn = desc(K, SA_DTYPE_BF16, {n, kHkv, kD}), vn = desc(V, SA_DTYPE_BF16, {n, kHkv, kD});
    const double us = median_us(s, 50, [&](int) { SK(sa_attend(ctx, &q1, &kn, &vn, nullptr, nullptr, &o1, &l1)); });
    if (n == N128) dense128_us = us;
    std::printf("dense decode attend (%lldK): %.1f us, %.2f TB/s\n", (long long)(n / 1024), us,
                2.0 * n * kHkv * row_bytes / us / 1e6);
  }

  // The same cache laid out head-major ([H_kv][512K][D], SDPA's layout; the row-major cache
  // above is the engines' [tokens][H_kv][D]).
  for (int64_t n : {N128, N}) {
    if (select_only) break;
    sa_tensor kh = desc(K, SA_DTYPE_BF16, {n, kHkv, kD}), vh = desc(V, SA_DTYPE_BF16, {n, kHkv, kD});
    for (sa_tensor *t : {&kh, &vh}) {
      t->strides[0] = kD;
      t->strides[1] = N * kD;
      t->strides[2] = 1;
    }
    const double us = median_us(s, 50, [&](int) { SK(sa_attend(ctx, &q1, &kh, &vh, nullptr, nullptr, &o1, &l1)); });
    std::printf("dense decode attend, head-major cache (%lldK): %.1f us, %.2f TB/s\n", (long long)(n / 1024), us,
                2.0 * n * kHkv * row_bytes / us / 1e6);
  }

  if (dense_only) return 0;

  // One-token appends to a page index holding 128K keys (the decode step's append, per layer):
  // per call with an event after each, in a graph (device time), and the host's time per call
  // of a loop that does not wait.
  // An index of `kind` (pages of 16, no refinement) over keys.
  auto index_over = [&](sa_selector_kind kind, const sa_tensor &keys) {
    sa_index_options io = device_index_options(kind, kHkv, kD, 16);
    sa_index *ix = nullptr;
    SK(sa_index_create(ctx, &io, &ix));
    SK(sa_index_append(ix, &keys));
    return ix;
  };
  if (!page_only) {
    sa_index *ix = index_over(SA_SELECTOR_PAGE, k128);
    int64_t next = N128;
    auto append_one = [&](int) {
      sa_tensor one = desc(static_cast<uint16_t *>(K) + size_t(next % N) * kHkv * kD, SA_DTYPE_BF16, {1, kHkv, kD});
      ++next;
      SK(sa_index_append(ix, &one));
    };
    const double per_call = median_us(s, 200, append_one);
    const double in_graph = graph_us(s, append_one);
    CK(cudaStreamSynchronize(s));
    constexpr int kLoop = 2000;
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < kLoop; ++r) append_one(r);
    const double host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kLoop;
    CK(cudaStreamSynchronize(s));
    std::printf("one-token append to a 128K page index: %.1f us per call (%.2f us in a graph), host %.2f us per call\n",
                per_call, in_graph, host_us);
    sa_index_destroy(&ix);
  }

  // Batch of 64 sequences, each its own 16K tokens of a 1M-token pool, 2048 keys per head.
  if (!select_only) {
    const int B = 64;
    const int64_t span = 8 * 1024;  // 64 x 8K = 512K pool rows
    auto h = random_lists(B, kTop, span, true, 7);
    int32_t *bi;
    CK(cudaMalloc(&bi, h.size() * 4));
    CK(cudaMemcpy(bi, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    sa_tensor qb = desc(Q, SA_DTYPE_BF16, {B, kHq, kD}), ob = desc(out16, SA_DTYPE_BF16, {B, kHq, kD});
    sa_tensor kp = desc(K, SA_DTYPE_BF16, {B * span, kHkv, kD}), vp = desc(V, SA_DTYPE_BF16, {B * span, kHkv, kD});
    sa_tensor ix = desc(bi, SA_DTYPE_I32, {B, kHkv, kTop});
    const double us = median_us(s, 50, [&](int) { SK(sa_attend(ctx, &qb, &kp, &vp, &ix, nullptr, &ob, nullptr)); });
    const double bw = 2.0 * B * kHkv * kTop * row_bytes / us / 1e6;
    std::printf("batch 64 gathered attend: %.1f us, %.2f TB/s of gathered K/V = %.0f%% of copy bandwidth\n", us, bw,
                100.0 * bw / copy_bw);
    CK(cudaFree(bi));
  }

  // Page select + attend at 128K and 512K keys, exact select (+ attend) at 32K, 128K and 512K.
  const std::pair<sa_selector_kind, int64_t> select_cases[] = {
      {SA_SELECTOR_PAGE, N128}, {SA_SELECTOR_PAGE, N}, {SA_SELECTOR_EXACT, N128 / 4}, {SA_SELECTOR_EXACT, N128},
      {SA_SELECTOR_EXACT, N}};
  for (const auto &sc : select_cases) {
    const sa_selector_kind kind = sc.first;
    const int64_t n = sc.second;
    if (page_only && (kind != SA_SELECTOR_PAGE || (argc > 2 && n != std::atoll(argv[2]) * 1024))) continue;
    sa_tensor kn = desc(K, SA_DTYPE_BF16, {n, kHkv, kD}), vn = desc(V, SA_DTYPE_BF16, {n, kHkv, kD});
    sa_index *ix = index_over(kind, kn);
    sa_select_options so = SA_SELECT_OPTIONS_INIT;
    so.top_k = kTop;
    so.window = 64;
    so.sinks = 4;
    const int width = kTop + 64 + 4;
    int32_t *sel;
    CK(cudaMalloc(&sel, size_t(kHkv) * width * 4));
    sa_tensor st = desc(sel, SA_DTYPE_I32, {1, kHkv, width});
    const int reps = kind == SA_SELECTOR_PAGE ? 200 : 50;
    const double sel_us = median_us(s, reps, [&](int) { SK(sa_select(ix, &q1, &so, &st)); });
    auto step = [&](int) {
      SK(sa_select(ix, &q1, &so, &st));
      SK(sa_attend(ctx, &q1, &kn, &vn, &st, nullptr, &o1, nullptr));
    };
    const double step_us = median_us(s, reps, step);
    const double step_graph = graph_us(s, step);
    std::printf("%s select at %lldK: %.1f us; select + attend step: %.1f us per call (%.1f us in a graph)\n",
                kind == SA_SELECTOR_PAGE ? "page" : "exact", (long long)(n / 1024), sel_us, step_us, step_graph);
    if (kind == SA_SELECTOR_PAGE)
      std::printf("page step at %lldK: %.1f us per call queued back to back; host per call: step %.2f us, select %.2f, "
                  "attend %.2f\n", (long long)(n / 1024), queued_us(s, reps, step), host_us(s, 100, step),
                  host_us(s, 100, [&](int) { SK(sa_select(ix, &q1, &so, &st)); }),
                  host_us(s, 100, [&](int) { SK(sa_attend(ctx, &q1, &kn, &vn, &st, nullptr, &o1, nullptr)); }));
    if (kind == SA_SELECTOR_EXACT) {  // the same index borrowing the cache's keys (borrow_keys): no copy
      sa_index_options bo = device_index_options(kind, kHkv, kD, 16);
      bo.borrow_keys = 1;
      sa_index *bix = nullptr;
      SK(sa_index_create(ctx, &bo, &bix));
      SK(sa_index_append(bix, &kn));
      sa_select_options bso = so;
      bso.keys = &kn;
      const double borrowed_us = median_us(s, reps, [&](int) { SK(sa_select(bix, &q1, &bso, &st)); });
      std::printf("exact select at %lldK, borrowed keys: %.1f us\n", (long long)(n / 1024), borrowed_us);
      sa_index_destroy(&bix);
    }
    CK(cudaFree(sel));
    sa_index_destroy(&ix);
  }
  // Eviction at a 128K cache: slot mass in the sparse attend, a one-slot refill of an exact
  // device index, and sa_cache_evict on device scores [H_kv, 128K] and positions (the plugin's
  // policy kernel; a plugin without it copies them to the host for the CPU policy), against the
  // same call on host arrays.
  if (!select_only) {
    float *mass;
    CK(cudaMalloc(&mass, size_t(kHkv) * N128 * 4));
    CK(cudaMemset(mass, 0, size_t(kHkv) * N128 * 4));
    sa_tensor mt = desc(mass, SA_DTYPE_F32, {kHkv, N128});
    sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
    ao.slot_mass = &mt;
    auto mass_call = [&](int r) {
      sa_tensor ix = desc(sets[size_t(r % kSets)], SA_DTYPE_I32, {1, kHkv, kTop});
      SK(sa_attend(ctx, &q1, &k128, &v128, &ix, &ao, &o1, &l1));
    };
    const double mass_us = median_us(s, 500, mass_call);
    const double mass_graph = graph_us(s, mass_call);
    std::printf("sparse decode attend with slot mass (K=2048, 128K cache): %.1f us per call (%.1f us in a graph; %.1f "
                "and %.1f without)\n", mass_us, mass_graph, sparse_us, sparse_graph);
    // Dense decode with slot mass per KV head [H_kv, 128K] and one set [128K] (no lse asked:
    // the mass pass reads the stream's), decay 0.99.
    float *mass1;
    CK(cudaMalloc(&mass1, size_t(N128) * 4));
    CK(cudaMemset(mass1, 0, size_t(N128) * 4));
    sa_tensor mt1 = desc(mass1, SA_DTYPE_F32, {N128});
    double dense_mass_us[2];
    for (int r = 0; r < 2; ++r) {
      sa_attend_options dao = SA_ATTEND_OPTIONS_INIT;
      dao.slot_mass = r == 0 ? &mt : &mt1;
      dense_mass_us[r] = median_us(s, 50, [&](int) { SK(sa_attend(ctx, &q1, &k128, &v128, nullptr, &dao, &o1, nullptr)); });
    }
    std::printf("dense decode attend with slot mass (128K): [H_kv, n_kv] %.1f us, [n_kv] %.1f us (%.1f without)\n",
                dense_mass_us[0], dense_mass_us[1], dense128_us);
    CK(cudaFree(mass1));
    sa_index_options io = device_index_options(SA_SELECTOR_EXACT, kHkv, kD);
    sa_index *ix = nullptr;
    SK(sa_index_create(ctx, &io, &ix));
    SK(sa_index_append(ix, &k128));
    const double update_us = median_us(s, 200, [&](int r) {
      const int32_t slot = int32_t(1000 + r);
      const int64_t pos = N128 + r;
      sa_tensor one = desc(static_cast<uint16_t *>(K) + size_t(N128 + r) * kHkv * kD, SA_DTYPE_BF16, {1, kHkv, kD});
      SK(sa_index_update(ix, &slot, 1, &one, &pos));
    });
    sa_index_destroy(&ix);
    std::vector<int64_t> hpos(static_cast<size_t>(N128));
    for (int64_t j = 0; j < N128; ++j) hpos[size_t(j)] = j;
    int64_t *dpos;
    int32_t *dfreed;
    CK(cudaMalloc(&dpos, size_t(N128) * 8));
    CK(cudaMalloc(&dfreed, 16));
    CK(cudaMemcpy(dpos, hpos.data(), size_t(N128) * 8, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());  // s does not wait for the legacy stream's copy
    sa_tensor pt = desc(dpos, SA_DTYPE_I64, {N128}), ft = desc(dfreed, SA_DTYPE_I32, {4});
    sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
    eo.budget = N128;
    int64_t n_freed = 0;
    const double evict_us = median_us(s, 50, [&](int) { SK(sa_cache_evict(ctx, &eo, &mt, &pt, &ft, &n_freed)); });
    std::vector<float> hmass(size_t(kHkv) * N128);
    CK(cudaMemcpy(hmass.data(), mass, hmass.size() * 4, cudaMemcpyDeviceToHost));
    int32_t hfreed[4];
    sa_tensor hm = desc(hmass.data(), SA_DTYPE_F32, {kHkv, N128}), hp = desc(hpos.data(), SA_DTYPE_I64, {N128});
    sa_tensor hf = desc(hfreed, SA_DTYPE_I32, {4});
    hm.device = hp.device = hf.device = SA_DEVICE_CPU;
    const double host_us = median_us(s, 50, [&](int) { SK(sa_cache_evict(ctx, &eo, &hm, &hp, &hf, &n_freed)); });
    std::printf("one-slot sa_index_update of an exact index at 128K: %.1f us; sa_cache_evict on device scores "
                "[%d, 128K]: %.1f us; the same call on host arrays: %.1f us\n",
                update_us, kHkv, evict_us, host_us);
    CK(cudaFree(mass));
    CK(cudaFree(dpos));
    CK(cudaFree(dfreed));
  }
  CK(cudaStreamSynchronize(s));
  sa_context_destroy(&ctx);
  return 0;
}
