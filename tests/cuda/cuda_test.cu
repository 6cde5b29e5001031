// The CUDA plugin on a real GPU: sa_attend on device tensors against the CPU path on the same
// values, and device selection against a double-precision reference of the documented rules.
// Skips cleanly when no plugin or no device is present.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cuda_helpers.cuh"
#include "page_code_reference.hpp"
#include "sparseattn.h"

namespace {

struct AttendCase {
  sa_dtype dtype;
  int D, Hq, Hkv, n_q;
  int64_t n_kv;
  int width;  // 0: dense
  bool per_query_head, causal;
  float ramp = 0.f;  // > 0: key t leans on one direction by ramp * t / n_kv, so scores climb or fall
  bool strided = false;  // on the GPU: K and V views of one [n_kv, 2, H_kv, D] cache, q rows padded
  int calls = 1;         // GPU calls on the same buffers, each checked (state kept between calls)
};

// Runs one case on the GPU and on the CPU (the same 16-bit values), compares out and lse.
void check_attend(Ctx &c, const AttendCase &k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const bool bf = k.dtype == SA_DTYPE_BF16;
  auto enc = [&](float f) { return bf ? to_bf16(f) : to_f16(f); };
  const size_t nq = size_t(k.n_q) * k.Hq * k.D, nkv = size_t(k.n_kv) * k.Hkv * k.D;
  std::vector<uint16_t> q(nq), kk(nkv), v(nkv);
  for (auto &x : q) x = enc(nd(rng) * 1.5f);
  if (k.ramp > 0.f) {
    std::vector<float> dir(size_t(k.D));
    for (auto &x : dir) x = rng() & 1 ? 1.f : -1.f;
    for (size_t e = 0; e < nkv; ++e)
      kk[e] = enc(0.1f * nd(rng) + k.ramp * float(e / (size_t(k.Hkv) * k.D)) / float(k.n_kv) * dir[e % k.D]);
  } else {
    for (auto &x : kk) x = enc(nd(rng));
  }
  for (auto &x : v) x = enc(nd(rng));
  const int lists = k.per_query_head ? k.Hq : k.Hkv;
  std::vector<int32_t> idx, idx_cpu;
  if (k.width) {
    idx.resize(size_t(k.n_q) * lists * k.width);
    for (auto &x : idx) {
      const int r = int(rng() % 10);
      x = r == 0 ? -1 : r == 1 ? int32_t(k.n_kv + rng() % 50) : int32_t(rng() % k.n_kv);  // padding, out of range
    }
    idx_cpu = idx;
    for (auto &x : idx_cpu)
      if (x >= k.n_kv) x = -1;  // the GPU skips what the CPU would refuse
  }
  // CPU reference through the library's CPU path.
  std::vector<float> out_cpu(size_t(k.n_q) * k.Hq * k.D), lse_cpu(size_t(k.n_q) * k.Hq);
  sa_tensor tq = desc(q.data(), k.dtype, {k.n_q, k.Hq, k.D}, SA_DEVICE_CPU);
  sa_tensor tk = desc(kk.data(), k.dtype, {k.n_kv, k.Hkv, k.D}, SA_DEVICE_CPU);
  sa_tensor tv = desc(v.data(), k.dtype, {k.n_kv, k.Hkv, k.D}, SA_DEVICE_CPU);
  sa_tensor ti = desc(idx_cpu.data(), SA_DTYPE_I32, {k.n_q, lists, k.width}, SA_DEVICE_CPU);
  sa_tensor to = desc(out_cpu.data(), SA_DTYPE_F32, {k.n_q, k.Hq, k.D}, SA_DEVICE_CPU);
  sa_tensor tl = desc(lse_cpu.data(), SA_DTYPE_F32, {k.n_q, k.Hq}, SA_DEVICE_CPU);
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = k.causal;
  SA_OK_(sa_attend(c.cpu, &tq, &tk, &tv, k.width ? &ti : nullptr, &o, &to, &tl));

  uint16_t *dq = to_device(q), *dk = to_device(kk), *dv = to_device(v);
  const int64_t row = int64_t(k.Hkv) * k.D, qrow = k.strided ? k.D + 8 : k.D;
  if (k.strided) {
    std::vector<uint16_t> kv(2 * nkv), qp(size_t(k.n_q) * k.Hq * size_t(qrow));
    for (int64_t t = 0; t < k.n_kv; ++t) {
      std::copy_n(kk.begin() + t * row, row, kv.begin() + 2 * t * row);
      std::copy_n(v.begin() + t * row, row, kv.begin() + (2 * t + 1) * row);
    }
    for (size_t r = 0; r < size_t(k.n_q) * k.Hq; ++r) std::copy_n(q.begin() + r * k.D, k.D, qp.begin() + r * qrow);
    cudaFree(dq); cudaFree(dk); cudaFree(dv);
    dq = to_device(qp);
    dk = to_device(kv);
    dv = nullptr;
  }
  int32_t *di = k.width ? to_device(idx) : nullptr;
  std::vector<float> poison(out_cpu.size(), NAN), lpoison(lse_cpu.size(), NAN);
  float *dout = to_device(poison), *dlse = to_device(lpoison);
  sa_tensor gq = desc(dq, k.dtype, {k.n_q, k.Hq, k.D}, SA_DEVICE_CUDA);
  sa_tensor gk = desc(dk, k.dtype, {k.n_kv, k.Hkv, k.D}, SA_DEVICE_CUDA);
  sa_tensor gv = desc(dv, k.dtype, {k.n_kv, k.Hkv, k.D}, SA_DEVICE_CUDA);
  if (k.strided) {
    const int64_t qs[3] = {k.Hq * qrow, qrow, 1}, kvs[3] = {2 * row, k.D, 1};
    std::copy_n(qs, 3, gq.strides);
    std::copy_n(kvs, 3, gk.strides);
    std::copy_n(kvs, 3, gv.strides);
    gv.data = dk + row;
  }
  sa_tensor gi = desc(di, SA_DTYPE_I32, {k.n_q, lists, k.width}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {k.n_q, k.Hq, k.D}, SA_DEVICE_CUDA);
  sa_tensor gl = desc(dlse, SA_DTYPE_F32, {k.n_q, k.Hq}, SA_DEVICE_CUDA);
  for (int call = 0; call < k.calls; ++call) {
    SCOPED_TRACE("GPU call " + std::to_string(call));
    if (call > 0) {
      CUDA_OK(cudaMemcpy(dout, poison.data(), poison.size() * 4, cudaMemcpyHostToDevice));
      CUDA_OK(cudaMemcpy(dlse, lpoison.data(), lpoison.size() * 4, cudaMemcpyHostToDevice));
    }
    SA_OK_(sa_attend(c.gpu, &gq, &gk, &gv, k.width ? &gi : nullptr, &o, &go, &gl));
    CUDA_OK(cudaDeviceSynchronize());
    auto out = to_host(dout, out_cpu.size()), lse = to_host(dlse, lse_cpu.size());
    double num = 0, den = 0, lse_err = 0;
    for (size_t e = 0; e < out.size(); ++e) {
      ASSERT_FALSE(std::isnan(out[e])) << "unwritten output at " << e;
      num += double(out[e] - out_cpu[e]) * (out[e] - out_cpu[e]);
      den += double(out_cpu[e]) * out_cpu[e];
    }
    for (size_t e = 0; e < lse.size(); ++e) {
      ASSERT_FALSE(std::isnan(lse[e])) << "unwritten lse at " << e;
      if (std::isinf(lse_cpu[e])) EXPECT_TRUE(std::isinf(lse[e]));
      else lse_err = std::max(lse_err, double(std::fabs(lse[e] - lse_cpu[e])));
    }
    EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), 1e-5) << "relative error of out";
    EXPECT_LT(lse_err, 1e-4) << "lse";
  }
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(di); cudaFree(dout); cudaFree(dlse);
}

TEST(CudaAttend, SparseDecodeBf16GqaMatchesCpu) {
  NEED_GPU(c);
  check_attend(c, {SA_DTYPE_BF16, 128, 32, 8, 1, 4096, 2048, false, false}, 1);
  check_attend(c, {SA_DTYPE_BF16, 128, 8, 2, 5, 3000, 700, false, false}, 2);
}
TEST(CudaAttend, SparseDecodeF16OtherShapes) {
  NEED_GPU(c);
  check_attend(c, {SA_DTYPE_F16, 64, 6, 2, 3, 1000, 300, false, false}, 3);   // G = 3
  check_attend(c, {SA_DTYPE_F16, 256, 4, 2, 2, 500, 100, false, false}, 4);   // G = 2, D = 256
  check_attend(c, {SA_DTYPE_BF16, 128, 8, 2, 2, 800, 64, true, false}, 5);    // per query head
  check_attend(c, {SA_DTYPE_BF16, 64, 4, 4, 70, 300, 40, false, false}, 6);   // many queries
}
TEST(CudaAttend, DenseDecodeMatchesCpuManySplits) {
  NEED_GPU(c);
  check_attend(c, {SA_DTYPE_BF16, 128, 32, 8, 1, 100000, 0, false, false}, 7);
  check_attend(c, {SA_DTYPE_F16, 128, 8, 2, 4, 5000, 0, false, true}, 8);  // causal prefill tail
  check_attend(c, {SA_DTYPE_BF16, 64, 2, 1, 1, 0, 0, false, false}, 9);    // no keys: 0, -inf
}
// Dense edges: chunk tails shorter than a step, a single key, queries that see nothing,
// groups of 8, and a 128K cache with a tail.
TEST(CudaAttend, DenseDecodeEdges) {
  NEED_GPU(c);
  check_attend(c, {SA_DTYPE_BF16, 128, 8, 2, 1, 37, 0, false, false}, 41);
  check_attend(c, {SA_DTYPE_F16, 128, 4, 1, 1, 1, 0, false, false}, 42);
  check_attend(c, {SA_DTYPE_F16, 128, 4, 1, 3, 2, 0, false, true}, 43);      // the first query sees no key
  check_attend(c, {SA_DTYPE_BF16, 128, 16, 2, 5, 20011, 0, false, true}, 44);  // G = 8: two units a KV head
  check_attend(c, {SA_DTYPE_BF16, 128, 32, 8, 1, 131072 + 77, 0, false, false}, 45);
}

// The dense tensor-core kernel's other group sizes (1: a block per query head; 3: a KV head's
// heads in three units of one) and head dimension 64, and K/V as strided views of one cache
// (rows 2 * H_kv * D apart, V at an offset) with padded query rows.
TEST(CudaAttend, DenseDecodeGroupsAndStrides) {
  NEED_GPU(c);
  check_attend(c, {SA_DTYPE_BF16, 128, 4, 4, 1, 30000, 0, false, false}, 61);  // G = 1
  check_attend(c, {SA_DTYPE_F16, 64, 6, 2, 2, 3001, 0, false, true}, 62);      // G = 3, causal
  check_attend(c, {SA_DTYPE_BF16, 64, 16, 2, 1, 50000, 0, false, false}, 63);  // G = 8, D = 64
  check_attend(c, {SA_DTYPE_BF16, 128, 32, 8, 1, 40000, 0, false, false, 0.f, true}, 64);
  check_attend(c, {SA_DTYPE_F16, 64, 8, 2, 3, 777, 0, false, true, 20.f, true}, 65);
}

// Dense decode keeps state on the device between calls (the counters of finished splits per
// query and group, which the last block zeroes, and, on long splits, of the pieces the warps
// claimed, which the last claim zeroes): each of several calls in a row must see all the keys
// again, and each query of a causal batch its own.
TEST(CudaAttend, DenseDecodeCallsAfterCallsSeeEveryKey) {
  NEED_GPU(c);
  check_attend(c, {SA_DTYPE_BF16, 128, 32, 8, 1, 150001, 0, false, false, 0.f, false, 3}, 71);
  check_attend(c, {SA_DTYPE_F16, 128, 8, 2, 3, 150000, 0, false, true, 0.f, false, 3}, 72);  // causal, G = 4
  check_attend(c, {SA_DTYPE_F16, 128, 8, 2, 3, 20000, 0, false, true, 0.f, false, 2}, 74);   // short splits
  check_attend(c, {SA_DTYPE_BF16, 64, 4, 2, 1, 333, 0, false, false, 0.f, false, 2}, 73);     // few keys
  check_attend(c, {SA_DTYPE_BF16, 64, 16, 2, 1, 300001, 0, false, false, 0.f, false, 2}, 75);  // D = 64, claims
  // Many waves of blocks (no claims), a causal batch whose first queries see fewer keys.
  check_attend(c, {SA_DTYPE_BF16, 64, 1, 1, 4000, 16448, 0, false, true, 0.f, false, 2}, 76);
}

// Scores that climb along the keys (heads whose query leans on the ramp's direction) pass
// the running max again and again, so the weighted V is rescaled many times in a chunk; the
// other heads' scores fall, and their max is set by the first keys.
TEST(CudaAttend, RisingScoresRescaleExactly) {
  NEED_GPU(c);
  check_attend(c, {SA_DTYPE_BF16, 128, 32, 8, 1, 60000, 0, false, false, 40.f}, 51);
  check_attend(c, {SA_DTYPE_F16, 64, 8, 4, 3, 9000, 0, false, true, 30.f}, 52);   // causal, G = 2
  check_attend(c, {SA_DTYPE_BF16, 256, 4, 4, 2, 3000, 0, false, false, 30.f}, 53);  // G = 1
  check_attend(c, {SA_DTYPE_BF16, 128, 16, 4, 2, 20000, 1500, false, false, 40.f}, 54);  // sparse
}

// ---------------------------------------------------------------- selection

struct SelCase {
  sa_selector_kind kind;
  int D, Hq, Hkv, n_q, page;
  int64_t n;
  int top_k, window, sinks;
};

// Masses by the documented rules, in double. exact: per slot, the group's mean softmax
// probability over visible slots; page: per page, sum_g 2^(bound - max bound), the bound the
// CPU page selector's coded one (a base-2 logit).
void check_select(Ctx &c, const SelCase &k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int G = k.Hq / k.Hkv;
  std::vector<uint16_t> keys(size_t(k.n) * k.Hkv * k.D), q(size_t(k.n_q) * k.Hq * k.D);
  for (auto &x : keys) x = to_bf16(nd(rng));
  for (auto &x : q) x = to_bf16(nd(rng) * 2.f);
  sa_index_options io = device_index_options(k.kind, k.Hkv, k.D, k.page);
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &ix));
  uint16_t *dk = to_device(keys), *dq = to_device(q);
  // Two appends, the second partly filling a page.
  const int64_t first = k.n / 3;
  sa_tensor a1 = desc(dk, SA_DTYPE_BF16, {first, k.Hkv, k.D}, SA_DEVICE_CUDA);
  sa_tensor a2 = desc(dk + first * k.Hkv * k.D, SA_DTYPE_BF16, {k.n - first, k.Hkv, k.D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(ix, &a1));
  SA_OK_(sa_index_append(ix, &a2));
  const int width = k.sinks + k.window + k.top_k + 3;
  std::vector<int32_t> poison(size_t(k.n_q) * k.Hkv * width, -7);
  int32_t *dout = to_device(poison);
  sa_tensor tq = desc(dq, SA_DTYPE_BF16, {k.n_q, k.Hq, k.D}, SA_DEVICE_CUDA);
  sa_tensor to = desc(dout, SA_DTYPE_I32, {k.n_q, k.Hkv, width}, SA_DEVICE_CUDA);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = k.top_k;
  so.window = k.window;
  so.sinks = k.sinks;
  SA_OK_(sa_select(ix, &tq, &so, &to));
  CUDA_OK(cudaDeviceSynchronize());
  auto got = to_host(dout, poison.size());
  const double scale = 1.0 / std::sqrt(double(k.D));
  for (int i = 0; i < k.n_q; ++i)
    for (int h = 0; h < k.Hkv; ++h) {
      const int64_t pos = k.n - k.n_q + i, lo = k.sinks, hi = std::min<int64_t>(pos - k.window, k.n - 1);
      const bool exact = k.kind == SA_SELECTOR_EXACT;
      const int item = exact ? 1 : k.page;
      const int64_t n_items = (k.n + item - 1) / item;
      std::vector<double> mass(size_t(n_items), -1.0);
      std::vector<std::vector<double>> sc(size_t(G), std::vector<double>(size_t(n_items), -INFINITY));
      for (int g = 0; g < G; ++g) {
        const uint16_t *qq = &q[(size_t(i) * k.Hq + h * G + g) * k.D];
        for (int64_t r = 0; r < n_items; ++r) {
          double s = 0;
          if (exact) {
            if (r > pos) continue;
            for (int d = 0; d < k.D; ++d) s += double(from_bf16(qq[d])) * from_bf16(keys[(size_t(r) * k.Hkv + h) * k.D + d]);
          } else {
            if (!(r * item <= hi && (r + 1) * item - 1 >= lo && lo <= hi)) continue;
            std::vector<float> mn(size_t(k.D), INFINITY), mx(size_t(k.D), -INFINITY), qf(size_t(k.D));
            for (int d = 0; d < k.D; ++d) {
              for (int64_t sl = r * item; sl < std::min<int64_t>((r + 1) * item, k.n); ++sl) {
                const float kv = from_bf16(keys[(size_t(sl) * k.Hkv + h) * k.D + d]);
                mn[size_t(d)] = std::min(mn[size_t(d)], kv);
                mx[size_t(d)] = std::max(mx[size_t(d)], kv);
              }
              qf[size_t(d)] = from_bf16(qq[d]);
            }
            // The coded bound, a base-2 logit (page_code_reference.hpp).
            sc[size_t(g)][size_t(r)] = coded_bound(code_page(mn.data(), mx.data(), k.D),
                                                   code_query(qf.data(), k.D, default_scale(k.D)));
            continue;
          }
          sc[size_t(g)][size_t(r)] = s * scale;
        }
      }
      for (int g = 0; g < G; ++g) {
        double m = -INFINITY, z = 0;
        for (double s : sc[size_t(g)]) m = std::max(m, s);
        for (double s : sc[size_t(g)]) z += exact ? std::exp(s - m) : 0.0;
        for (int64_t r = 0; r < n_items; ++r) {
          const bool cand = lo <= hi && r * item <= hi && (r + 1) * item - 1 >= lo;
          if (!cand) continue;
          if (mass[size_t(r)] < 0) mass[size_t(r)] = 0;
          const double s = sc[size_t(g)][size_t(r)];
          mass[size_t(r)] += exact ? std::exp(s - m) / z / G : std::exp2(s - m);
        }
      }
      // Threshold: the n_sel-th largest reference mass.
      std::vector<double> sorted;
      for (double m : mass)
        if (m >= 0) sorted.push_back(m);
      std::sort(sorted.rbegin(), sorted.rend());
      const size_t n_sel = exact ? size_t(k.top_k) : size_t(std::max(1, k.top_k / item));
      const double thr = sorted.size() > n_sel ? sorted[n_sel - 1] : -1;
      // Expected forced slots and the count.
      std::set<int32_t> forced;
      for (int64_t j = 0; j <= pos && j < k.n; ++j)
        if (j < k.sinks || j > pos - k.window) forced.insert(int32_t(j));
      const int32_t *row = &got[(size_t(i) * k.Hkv + h) * width];
      std::set<int64_t> items;
      int count = 0;
      for (int e = 0; e < width; ++e) {
        if (row[e] == -1) {
          for (int f = e; f < width; ++f) ASSERT_EQ(row[f], -1) << "padding then a slot";
          break;
        }
        ASSERT_GE(row[e], 0) << "entry " << e << " unwritten";
        ASSERT_LE(row[e], pos);
        if (e > 0) ASSERT_GT(row[e], row[e - 1]) << "not ascending";
        ++count;
        if (!forced.count(row[e])) items.insert(row[e] / item);
      }
      for (int32_t f : forced) EXPECT_TRUE(std::binary_search(row, row + count, f)) << "forced slot " << f << " missing";
      EXPECT_EQ(items.size(), std::min(n_sel, sorted.size())) << "items chosen";
      for (int64_t it : items) EXPECT_GE(mass[size_t(it)], thr * (1 - 1e-3) - 1e-7) << "item " << it << " below the threshold";
    }
  sa_index_destroy(&ix);
  cudaFree(dk); cudaFree(dq); cudaFree(dout);
}

TEST(CudaSelect, ExactMatchesReference) {
  NEED_GPU(c);
  check_select(c, {SA_SELECTOR_EXACT, 128, 8, 2, 2, 1, 5000, 200, 32, 4}, 11);
  check_select(c, {SA_SELECTOR_EXACT, 64, 3, 1, 1, 1, 300, 500, 8, 2}, 12);  // fewer candidates than top_k
  check_select(c, {SA_SELECTOR_EXACT, 64, 4, 2, 2, 1, 40000, 700, 16, 4}, 18);  // radix passes over many blocks
}
TEST(CudaSelect, PageMatchesReference) {
  NEED_GPU(c);
  check_select(c, {SA_SELECTOR_PAGE, 128, 8, 2, 2, 16, 5003, 256, 64, 4}, 13);
  check_select(c, {SA_SELECTOR_PAGE, 64, 4, 4, 1, 32, 2000, 100, 16, 0}, 14);
  check_select(c, {SA_SELECTOR_PAGE, 64, 2, 1, 1, 16, 224000, 512, 16, 4}, 15);  // masses over 48 KB of shared memory
  check_select(c, {SA_SELECTOR_PAGE, 64, 2, 1, 1, 1, 60000, 300, 16, 4}, 16);    // too many pages to stage: global masses
  check_select(c, {SA_SELECTOR_PAGE, 64, 12, 2, 2, 16, 3000, 128, 16, 4}, 17);   // G = 6: the wide group kernel
}
// Every key the same: every candidate has the same mass, and the rule (ties: the lower item)
// decides alone. n items chosen out of few (the threshold digit's items gathered in shared
// memory) and out of many (more than the gathered list holds: passes over all items).
void check_ties(Ctx &c, sa_selector_kind kind, int64_t n, int page, int top_k) {
  constexpr int D = 64, Hq = 4, Hkv = 2, window = 16, sinks = 4;
  std::mt19937_64 rng(static_cast<uint64_t>(n));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> keys(size_t(n) * Hkv * D, to_bf16(0.5f)), q(size_t(Hq) * D);
  for (auto &x : q) x = to_bf16(nd(rng));
  const int width = sinks + window + top_k + 5;
  std::vector<int32_t> got;
  ASSERT_NO_FATAL_FAILURE(select_one_query(c, device_index_options(kind, Hkv, D, page), keys, q, n, Hq, top_k, window,
                                           sinks, width, &got));
  // The lowest candidates: slots sinks .. (exact) sinks + top_k - 1, (page) the end of the
  // top_k / page-th page; then the window, then padding.
  const int64_t chosen_end = kind == SA_SELECTOR_EXACT ? sinks + top_k : int64_t(top_k / page) * page;
  std::vector<int32_t> want;
  for (int64_t j = 0; j < chosen_end; ++j) want.push_back(int32_t(j));
  for (int64_t j = n - window; j < n; ++j) want.push_back(int32_t(j));
  want.resize(size_t(width), -1);
  for (int h = 0; h < Hkv; ++h)
    EXPECT_EQ(std::vector<int32_t>(got.begin() + h * width, got.begin() + (h + 1) * width), want) << "KV head " << h;
}

TEST(CudaSelect, EqualMassesTakeTheLowestItems) {
  NEED_GPU(c);
  {
    SCOPED_TRACE("exact, 3000 candidates");
    check_ties(c, SA_SELECTOR_EXACT, 3000, 1, 200);
  }
  {
    SCOPED_TRACE("exact, 20000 candidates");
    check_ties(c, SA_SELECTOR_EXACT, 20000, 1, 700);
  }
  {
    SCOPED_TRACE("page, 1000 candidate pages");
    check_ties(c, SA_SELECTOR_PAGE, 16000, 16, 256);
  }
  {
    SCOPED_TRACE("page, 6000 candidate pages");
    check_ties(c, SA_SELECTOR_PAGE, 96000, 16, 1024);
  }
}

TEST(CudaSelect, SelectThenAttendOnDevice) {
  NEED_GPU(c);
  // The selection feeds sa_attend directly; the result equals the CPU attend over the same list.
  const int D = 128, Hq = 8, Hkv = 2, n = 4000, width = 4 + 32 + 256;
  std::mt19937_64 rng(21);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> keys(size_t(n) * Hkv * D), vals(keys.size()), q(size_t(Hq) * D);
  for (auto &x : keys) x = to_bf16(nd(rng));
  for (auto &x : vals) x = to_bf16(nd(rng));
  for (auto &x : q) x = to_bf16(nd(rng));
  uint16_t *dk = to_device(keys), *dv = to_device(vals), *dq = to_device(q);
  sa_index_options io = device_index_options(SA_SELECTOR_PAGE, Hkv, D);
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &ix));
  sa_tensor tk = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA), tv = desc(dv, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(ix, &tk));
  std::vector<int32_t> none(size_t(Hkv) * width, -7);
  int32_t *di = to_device(none);
  float *dout = to_device(std::vector<float>(size_t(Hq) * D, NAN));
  sa_tensor tq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA), ti = desc(di, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
  sa_tensor to = desc(dout, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 256;
  so.window = 32;
  SA_OK_(sa_select(ix, &tq, &so, &ti));
  SA_OK_(sa_attend(c.gpu, &tq, &tk, &tv, &ti, nullptr, &to, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  auto idx = to_host(di, none.size());
  auto out = to_host(dout, size_t(Hq) * D);
  std::vector<float> ref(out.size());
  sa_tensor cq = desc(q.data(), SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CPU), ck = desc(keys.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
  sa_tensor cv = desc(vals.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU), ci = desc(idx.data(), SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CPU);
  sa_tensor co = desc(ref.data(), SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CPU);
  SA_OK_(sa_attend(c.cpu, &cq, &ck, &cv, &ci, nullptr, &co, nullptr));
  for (size_t e = 0; e < out.size(); ++e) ASSERT_NEAR(out[e], ref[e], 1e-4 * (1 + std::fabs(ref[e])));
  sa_index_destroy(&ix);
  cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(di); cudaFree(dout);
}

TEST(CudaSelect, UnsupportedRequestsAreRefused) {
  NEED_GPU(c);
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.kind = SA_SELECTOR_PAGE;
  io.num_kv_heads = 2;
  io.head_dim = 128;
  io.dtype = SA_DTYPE_BF16;
  sa_index *ix = nullptr;
  EXPECT_EQ(sa_index_create(c.gpu, &io, &ix), SA_ERR_UNSUPPORTED);  // refine = 1
  EXPECT_NE(std::string(sa_last_error()).find("refine"), std::string::npos) << sa_last_error();
  io.kind = SA_SELECTOR_LSH;
  io.page.refine = 0;
  EXPECT_EQ(sa_index_create(c.gpu, &io, &ix), SA_ERR_UNSUPPORTED);
  EXPECT_EQ(ix, nullptr);
}

// ---------------------------------------------------------------- CUDA graphs

// The header's promise: once each shape has run on a stream, sa_select and sa_attend on that
// stream can be captured into a CUDA graph, whatever stream the index appends on. The graph's
// replays must give what the un-captured calls gave.
void check_capture(cudaStream_t index_stream, unsigned capture_flags) {
  sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
  co.device = SA_DEVICE_CUDA;
  co.cuda_stream = index_stream;  // index appends run here
  sa_context *g = nullptr;
  SA_OK_(sa_context_create(&co, &g));
  const int D = 128, Hq = 8, Hkv = 2, n = 3000, width = 4 + 32 + 256;
  std::mt19937_64 rng(31);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> keys(size_t(n) * Hkv * D), vals(keys.size()), q(size_t(Hq) * D);
  for (auto &x : keys) x = to_bf16(nd(rng));
  for (auto &x : vals) x = to_bf16(nd(rng));
  for (auto &x : q) x = to_bf16(nd(rng));
  uint16_t *dk = to_device(keys), *dv = to_device(vals), *dq = to_device(q);
  sa_index_options io = device_index_options(SA_SELECTOR_PAGE, Hkv, D);
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(g, &io, &ix));
  const int64_t first = 1000;
  sa_tensor a1 = desc(dk, SA_DTYPE_BF16, {first, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor a2 = desc(dk + first * Hkv * D, SA_DTYPE_BF16, {n - first, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(ix, &a1));
  SA_OK_(sa_index_append(ix, &a2));

  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, capture_flags));
  const std::vector<int32_t> idx_poison(size_t(Hkv) * width, -7);
  const std::vector<float> out_poison(size_t(Hq) * D, NAN), lse_poison(size_t(Hq), NAN);
  int32_t *di = to_device(idx_poison);
  float *dout = to_device(out_poison), *dlse = to_device(lse_poison);
  sa_tensor tk = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA), tv = desc(dv, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor tq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA), ti = desc(di, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
  sa_tensor to = desc(dout, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA), tl = desc(dlse, SA_DTYPE_F32, {1, Hq}, SA_DEVICE_CUDA);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 256;
  so.window = 32;
  so.cuda_stream = s;
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
  ao.cuda_stream = s;

  // Un-captured: the expected outputs, and the stream's buffers sized for this shape.
  SA_OK_(sa_select(ix, &tq, &so, &ti));
  SA_OK_(sa_attend(g, &tq, &tk, &tv, &ti, &ao, &to, &tl));
  CUDA_OK(cudaStreamSynchronize(s));
  const auto idx_ref = to_host(di, idx_poison.size());
  const auto out_ref = to_host(dout, out_poison.size()), lse_ref = to_host(dlse, lse_poison.size());
  CUDA_OK(cudaMemcpy(di, idx_poison.data(), idx_poison.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dout, out_poison.data(), out_poison.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dlse, lse_poison.data(), lse_poison.size() * 4, cudaMemcpyHostToDevice));

  // Captured. The capture is always ended before anything can return from the test.
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  const sa_status sel = sa_select(ix, &tq, &so, &ti);
  const std::string sel_msg = sa_last_error();
  const sa_status att = sa_attend(g, &tq, &tk, &tv, &ti, &ao, &to, &tl);
  const std::string att_msg = sa_last_error();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &graph);
  cudaGetLastError();
  EXPECT_EQ(sel, SA_OK) << "captured sa_select: " << sel_msg;
  EXPECT_EQ(att, SA_OK) << "captured sa_attend: " << att_msg;
  ASSERT_EQ(ended, cudaSuccess) << cudaGetErrorString(ended);
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    CUDA_OK(cudaGraphLaunch(exec, s));
    CUDA_OK(cudaStreamSynchronize(s));
    const auto idx = to_host(di, idx_poison.size());
    const auto out = to_host(dout, out_poison.size()), lse = to_host(dlse, lse_poison.size());
    for (size_t e = 0; e < idx.size(); ++e) ASSERT_EQ(idx[e], idx_ref[e]) << "replay " << replay << ", index " << e;
    for (size_t e = 0; e < out.size(); ++e)
      ASSERT_NEAR(out[e], out_ref[e], 1e-6 * (1 + std::fabs(out_ref[e]))) << "replay " << replay << ", out " << e;
    for (size_t e = 0; e < lse.size(); ++e) ASSERT_NEAR(lse[e], lse_ref[e], 1e-5) << "replay " << replay << ", lse " << e;
    CUDA_OK(cudaMemcpy(dout, out_poison.data(), out_poison.size() * 4, cudaMemcpyHostToDevice));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  sa_index_destroy(&ix);
  sa_context_destroy(&g);
  cudaStreamDestroy(s);
  cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(di); cudaFree(dout); cudaFree(dlse);
}

// Keeps the stream busy for about `cycles` clocks.
__global__ void spin_kernel(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

// Appends queued behind slow work on the index's stream, then the index's first selection on
// another stream: it must wait for them (the event the appends record).
TEST(CudaSelect, FirstSelectionOnAnotherStreamWaitsForQueuedAppends) {
  NEED_GPU(c);
  cudaStream_t own = nullptr, other = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&own, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
  co.device = SA_DEVICE_CUDA;
  co.cuda_stream = own;
  sa_context *g = nullptr;
  SA_OK_(sa_context_create(&co, &g));
  constexpr int D = 64, Hq = 4, Hkv = 2, n = 4000, width = 4 + 16 + 256;
  std::mt19937_64 rng(77);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<uint16_t> keys(size_t(n) * Hkv * D), q(size_t(Hq) * D);
  for (auto &x : keys) x = to_bf16(nd(rng));
  for (auto &x : q) x = to_bf16(nd(rng));
  uint16_t *dk = to_device(keys), *dq = to_device(q);
  for (sa_selector_kind kind : {SA_SELECTOR_PAGE, SA_SELECTOR_EXACT}) {
    SCOPED_TRACE(kind == SA_SELECTOR_PAGE ? "page" : "exact");
    sa_index_options io = device_index_options(kind, Hkv, D);
    io.capacity = n;
    sa_index *ix = nullptr;
    SA_OK_(sa_index_create(g, &io, &ix));
    sa_tensor head = desc(dk, SA_DTYPE_BF16, {n / 2, Hkv, D}, SA_DEVICE_CUDA);
    sa_tensor tail = desc(dk + size_t(n / 2) * Hkv * D, SA_DTYPE_BF16, {n - n / 2, Hkv, D}, SA_DEVICE_CUDA);
    SA_OK_(sa_index_append(ix, &head));
    CUDA_OK(cudaStreamSynchronize(own));
    spin_kernel<<<1, 1, 0, own>>>(200LL * 1000 * 1000);  // ~0.1 s at 2 GHz
    SA_OK_(sa_index_append(ix, &tail));                  // queued behind the spin
    int32_t *d1 = to_device(std::vector<int32_t>(size_t(Hkv) * width, -7));
    int32_t *d2 = to_device(std::vector<int32_t>(size_t(Hkv) * width, -7));
    sa_tensor tq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
    sa_tensor t1 = desc(d1, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
    sa_tensor t2 = desc(d2, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
    sa_select_options so = SA_SELECT_OPTIONS_INIT;
    so.top_k = 256;
    so.window = 16;
    so.sinks = 4;
    so.cuda_stream = other;
    SA_OK_(sa_select(ix, &tq, &so, &t1));  // the index's first selection on `other`
    CUDA_OK(cudaDeviceSynchronize());
    SA_OK_(sa_select(ix, &tq, &so, &t2));  // every append done
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(to_host(d1, size_t(Hkv) * width), to_host(d2, size_t(Hkv) * width));
    sa_index_destroy(&ix);
    cudaFree(d1);
    cudaFree(d2);
  }
  sa_context_destroy(&g);
  cudaFree(dk); cudaFree(dq);
  cudaStreamDestroy(own);
  cudaStreamDestroy(other);
}

TEST(CudaGraph, SelectAndAttendCapturedOnAnotherStream) {
  NEED_GPU(c);
  {
    SCOPED_TRACE("index on the legacy default stream, capture on a non-blocking stream");
    check_capture(nullptr, cudaStreamNonBlocking);
  }
  {
    SCOPED_TRACE("index on the legacy default stream, capture on a blocking stream");
    check_capture(nullptr, cudaStreamDefault);
  }
  cudaStream_t own = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&own, cudaStreamNonBlocking));
  {
    SCOPED_TRACE("index on a stream of its own, capture on another non-blocking stream");
    check_capture(own, cudaStreamNonBlocking);
  }
  CUDA_OK(cudaStreamSynchronize(own));
  cudaStreamDestroy(own);
}

// ---------------------------------------------------------------- pointer kinds

// A small dense decode: q [1, 2, 64], k/v [64, 1, 64] bf16, out f32 [1, 2, 64].
struct SmallAttend {
  static constexpr int D = 64, Hq = 2, Hkv = 1, n = 64;
  std::vector<uint16_t> q, k, v;
  SmallAttend() {
    std::mt19937_64 rng(41);
    std::normal_distribution<float> nd(0.f, 1.f);
    q.resize(size_t(Hq) * D);
    k.resize(size_t(n) * Hkv * D);
    v.resize(k.size());
    for (auto &x : q) x = to_bf16(nd(rng));
    for (auto &x : k) x = to_bf16(nd(rng));
    for (auto &x : v) x = to_bf16(nd(rng));
  }
  sa_tensor tq(void *p, sa_device_type d) const { return desc(p, SA_DTYPE_BF16, {1, Hq, D}, d); }
  sa_tensor tkv(void *p, sa_device_type d) const { return desc(p, SA_DTYPE_BF16, {n, Hkv, D}, d); }
  sa_tensor tout(void *p, sa_device_type d) const { return desc(p, SA_DTYPE_F32, {1, Hq, D}, d); }
};

bool mentions(const char *msg, const char *what) { return std::string(msg).find(what) != std::string::npos; }

// Host memory described as CUDA memory: before, SA_OK and a CUDA context lost at the next sync.
TEST(CudaPointers, HostMemoryDescribedAsCudaIsRefused) {
  NEED_GPU(c);
  SmallAttend a;
  uint16_t *dq = to_device(a.q), *dk = to_device(a.k), *dv = to_device(a.v);
  float *dout = to_device(std::vector<float>(size_t(SmallAttend::Hq) * SmallAttend::D, NAN));
  std::vector<uint16_t> host_q = a.q;
  std::vector<float> host_out(size_t(SmallAttend::Hq) * SmallAttend::D);
  sa_tensor gq = a.tq(dq, SA_DEVICE_CUDA), gk = a.tkv(dk, SA_DEVICE_CUDA), gv = a.tkv(dv, SA_DEVICE_CUDA);
  sa_tensor go = a.tout(dout, SA_DEVICE_CUDA);
  sa_tensor hq = a.tq(host_q.data(), SA_DEVICE_CUDA), ho = a.tout(host_out.data(), SA_DEVICE_CUDA);
  EXPECT_EQ(sa_attend(c.gpu, &hq, &gk, &gv, nullptr, nullptr, &go, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(mentions(sa_last_error(), "q is described as a CUDA tensor")) << sa_last_error();
  EXPECT_EQ(sa_attend(c.gpu, &gq, &gk, &gv, nullptr, nullptr, &ho, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(mentions(sa_last_error(), "pageable host memory")) << sa_last_error();
  // A device index: host keys to append, host queries and host indices to select into.
  sa_index_options io = device_index_options(SA_SELECTOR_EXACT, SmallAttend::Hkv, SmallAttend::D);
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &ix));
  std::vector<uint16_t> host_k = a.k;
  sa_tensor hk = a.tkv(host_k.data(), SA_DEVICE_CUDA);
  EXPECT_EQ(sa_index_append(ix, &hk), SA_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(mentions(sa_last_error(), "pageable host memory")) << sa_last_error();
  SA_OK_(sa_index_append(ix, &gk));
  std::vector<int32_t> host_idx(size_t(SmallAttend::Hkv) * 16);
  int32_t *di = to_device(host_idx);
  sa_tensor hi = desc(host_idx.data(), SA_DTYPE_I32, {1, SmallAttend::Hkv, 16}, SA_DEVICE_CUDA);
  sa_tensor gi = desc(di, SA_DTYPE_I32, {1, SmallAttend::Hkv, 16}, SA_DEVICE_CUDA);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 8;
  so.window = 4;
  EXPECT_EQ(sa_select(ix, &gq, &so, &hi), SA_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(mentions(sa_last_error(), "pageable host memory")) << sa_last_error();
  EXPECT_EQ(sa_select(ix, &hq, &so, &gi), SA_ERR_INVALID_ARGUMENT);
  // The CUDA context survived: the same calls on device memory still run.
  CUDA_OK(cudaDeviceSynchronize());
  SA_OK_(sa_select(ix, &gq, &so, &gi));
  SA_OK_(sa_attend(c.gpu, &gq, &gk, &gv, nullptr, nullptr, &go, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  for (float x : to_host(dout, host_out.size())) ASSERT_FALSE(std::isnan(x));
  sa_index_destroy(&ix);
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout); cudaFree(di);
}

// Device memory described as CPU memory: before, a segfault (the CPU path read it).
TEST(CudaPointers, DeviceMemoryDescribedAsCpuIsRefused) {
  NEED_GPU(c);  // the plugin is loaded: the core can ask it
  SmallAttend a;
  uint16_t *dq = to_device(a.q), *dk = to_device(a.k);
  float *dout = to_device(std::vector<float>(size_t(SmallAttend::Hq) * SmallAttend::D, 0.f));
  std::vector<uint16_t> hq = a.q, hk = a.k, hv = a.v;
  std::vector<float> hout(size_t(SmallAttend::Hq) * SmallAttend::D);
  sa_tensor cq = a.tq(hq.data(), SA_DEVICE_CPU), ck = a.tkv(hk.data(), SA_DEVICE_CPU), cv = a.tkv(hv.data(), SA_DEVICE_CPU);
  sa_tensor co = a.tout(hout.data(), SA_DEVICE_CPU);
  sa_tensor xq = a.tq(dq, SA_DEVICE_CPU), xk = a.tkv(dk, SA_DEVICE_CPU), xo = a.tout(dout, SA_DEVICE_CPU);
  EXPECT_EQ(sa_attend(c.cpu, &xq, &ck, &cv, nullptr, nullptr, &co, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(mentions(sa_last_error(), "q is described as a CPU tensor, but its data is memory of CUDA device 0"))
      << sa_last_error();
  EXPECT_EQ(sa_attend(c.cpu, &cq, &xk, &cv, nullptr, nullptr, &co, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(sa_attend(c.cpu, &cq, &ck, &cv, nullptr, nullptr, &xo, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(mentions(sa_last_error(), "out is described as a CPU tensor")) << sa_last_error();
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.num_kv_heads = SmallAttend::Hkv;
  io.head_dim = SmallAttend::D;
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(c.cpu, &io, &ix));
  EXPECT_EQ(sa_index_append(ix, &xk), SA_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(mentions(sa_last_error(), "described as a CPU tensor")) << sa_last_error();
  sa_index_destroy(&ix);
  SA_OK_(sa_attend(c.cpu, &cq, &ck, &cv, nullptr, nullptr, &co, nullptr));  // host memory still goes through
  cudaFree(dq); cudaFree(dk); cudaFree(dout);
}

// Managed memory is taken on both sides; page-locked host memory (mapped at the same address,
// as every allocation on a 64-bit UVA system) too. Each result equals the plain one.
TEST(CudaPointers, ManagedAndPinnedMemoryAreAccepted) {
  NEED_GPU(c);
  SmallAttend a;
  const size_t nq = a.q.size(), no = size_t(SmallAttend::Hq) * SmallAttend::D;
  uint16_t *dk = to_device(a.k), *dv = to_device(a.v), *dq = to_device(a.q);
  float *dout = to_device(std::vector<float>(no, NAN));
  std::vector<uint16_t> hq = a.q, hk = a.k, hv = a.v;
  std::vector<float> ref_cpu(no), ref_gpu;
  sa_tensor ck = a.tkv(hk.data(), SA_DEVICE_CPU), cv = a.tkv(hv.data(), SA_DEVICE_CPU);
  sa_tensor gk = a.tkv(dk, SA_DEVICE_CUDA), gv = a.tkv(dv, SA_DEVICE_CUDA), go = a.tout(dout, SA_DEVICE_CUDA);
  sa_tensor cq = a.tq(hq.data(), SA_DEVICE_CPU), co = a.tout(ref_cpu.data(), SA_DEVICE_CPU), gq = a.tq(dq, SA_DEVICE_CUDA);
  SA_OK_(sa_attend(c.cpu, &cq, &ck, &cv, nullptr, nullptr, &co, nullptr));
  SA_OK_(sa_attend(c.gpu, &gq, &gk, &gv, nullptr, nullptr, &go, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  ref_gpu = to_host(dout, no);
  uint16_t *managed = nullptr, *pinned = nullptr;
  CUDA_OK(cudaMallocManaged(&managed, nq * 2));
  CUDA_OK(cudaMallocHost(&pinned, nq * 2));
  std::memcpy(managed, a.q.data(), nq * 2);
  std::memcpy(pinned, a.q.data(), nq * 2);
  for (uint16_t *p : {managed, pinned}) {
    SCOPED_TRACE(p == managed ? "managed" : "pinned");
    std::vector<float> out(no, NAN);
    sa_tensor pq = a.tq(p, SA_DEVICE_CPU), po = a.tout(out.data(), SA_DEVICE_CPU);
    SA_OK_(sa_attend(c.cpu, &pq, &ck, &cv, nullptr, nullptr, &po, nullptr));
    for (size_t e = 0; e < no; ++e) ASSERT_EQ(out[e], ref_cpu[e]);
    pq.device = SA_DEVICE_CUDA;
    CUDA_OK(cudaMemset(dout, 0xff, no * 4));
    SA_OK_(sa_attend(c.gpu, &pq, &gk, &gv, nullptr, nullptr, &go, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const auto got = to_host(dout, no);
    for (size_t e = 0; e < no; ++e) ASSERT_EQ(got[e], ref_gpu[e]);
  }
  cudaFree(managed);
  cudaFreeHost(pinned);
  cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dout);
}

// ---------------------------------------------------------------- memory

// Contexts created and destroyed in a loop, each on a stream of its own that stays alive (an
// engine's stream pool): the plugin's scratch memory must go with each context, so the
// device's free memory ends where it started. Before, each stream's buffers stayed for the
// life of the process.
TEST(CudaMemory, ScratchIsFreedWithTheContext) {
  NEED_GPU(c);
  const int D = 128, Hq = 32, Hkv = 8, n_q = 4, n = 100000, rounds = 16;
  std::vector<uint16_t> q(size_t(n_q) * Hq * D, to_bf16(0.5f)), kv(size_t(n) * Hkv * D, to_bf16(0.25f));
  uint16_t *dq = to_device(q), *dk = to_device(kv), *dv = to_device(kv);
  float *dout = to_device(std::vector<float>(size_t(n_q) * Hq * D));
  sa_tensor tq = desc(dq, SA_DTYPE_BF16, {n_q, Hq, D}, SA_DEVICE_CUDA), tk = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor tv = desc(dv, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA), to = desc(dout, SA_DTYPE_F32, {n_q, Hq, D}, SA_DEVICE_CUDA);
  // The streams exist before the measurement: each holds some device memory of its own.
  std::vector<cudaStream_t> streams(rounds + 1);
  for (auto &s : streams) CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  size_t used = 0;
  auto one_round = [&] {
    cudaStream_t s = streams[used++];
    sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
    o.device = SA_DEVICE_CUDA;
    o.cuda_stream = s;
    sa_context *g = nullptr;
    SA_OK_(sa_context_create(&o, &g));
    SA_OK_(sa_attend(g, &tq, &tk, &tv, nullptr, nullptr, &to, nullptr));  // split: scratch on s
    sa_context_destroy(&g);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  };
  one_round();  // one-time costs (module loading) out of the measurement
  ASSERT_FALSE(HasFatalFailure());
  size_t free0 = 0, free1 = 0, total = 0;
  CUDA_OK(cudaMemGetInfo(&free0, &total));
  for (int r = 0; r < rounds && !HasFatalFailure(); ++r) one_round();
  CUDA_OK(cudaMemGetInfo(&free1, &total));
  const double lost_mib = (double(free0) - double(free1)) / (1 << 20);
  EXPECT_LE(lost_mib, 4.0) << "device memory lost over " << rounds << " contexts";
  for (cudaStream_t s : streams) cudaStreamDestroy(s);
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dout);
}

}  // namespace
