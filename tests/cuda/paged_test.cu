// sa_attend_paged on device tensors: a batch of sequences of different lengths (0 included)
// over shuffled, shared, padded pages, dense and sparse, against the CPU sa_attend_paged on the
// same values and a double-precision reference written here. Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_helpers.cuh"
#include "sparseattn.h"

namespace {

struct PagedCase {
  sa_dtype dtype;
  int D, Hq, Hkv, page_size;
  std::vector<int> lens;  // tokens of each sequence
  int queries_per_seq;    // 1: decode (no query_starts); > 1: query_starts, the last tokens
  int width;              // 0: dense
  bool per_query_head, causal, cells;  // cells: rank-3 [n, H_kv, D] (page_size 1)
  // opt->head_key_positions: each KV head's own random positions (one slot in 9 empty); the
  // device is then judged against the CPU alone (the double reference knows no positions).
  bool head_positions = false;
};

float decode16(uint16_t b, bool bf) {
  if (bf) return from_bf16(b);
  __half h;
  std::memcpy(&h, &b, 2);
  return __half2float(h);
}

// A batch laid out as a host would: pages drawn from a shuffled pool, sequence 1 sharing
// sequence 0's first pages (a common prefix), pages padded by one unused row (the page stride
// is not page_size rows), and page table entries past each length poisoned.
struct Batch {
  int B, P, max_pages, num_pages, pad;
  std::vector<int32_t> table;            // [B, max_pages]
  std::vector<uint16_t> k, v;            // [num_pages, P + pad, Hkv, D]
  std::vector<int32_t> starts;           // [B + 1]
  std::vector<uint16_t> q;               // [n_q, Hq, D]
  std::vector<int32_t> idx;              // [n_q, lists, width]: physical slots, -1, out of range
  int64_t slots() const { return int64_t(num_pages) * P; }
  int32_t slot(int b, int t) const { return table[size_t(b) * max_pages + t / P] * P + t % P; }
};

Batch make_batch(const PagedCase &c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const bool bf = c.dtype == SA_DTYPE_BF16;
  auto enc = [&](float f) { return bf ? to_bf16(f) : to_f16(f); };
  Batch b;
  b.B = int(c.lens.size());
  b.P = c.cells ? 1 : c.page_size;
  b.pad = c.cells ? 0 : 1;
  b.max_pages = 1;
  int needed = 0;
  for (int len : c.lens) {
    b.max_pages = std::max(b.max_pages, (len + b.P - 1) / b.P + 1);  // a spare entry per row
    needed += (len + b.P - 1) / b.P;
  }
  b.num_pages = needed + 5;
  std::vector<int32_t> pool(size_t(b.num_pages));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  b.table.assign(size_t(b.B) * b.max_pages, -9);  // past a length: never read
  size_t next = 0;
  for (int s = 0; s < b.B; ++s) {
    const int used = (c.lens[size_t(s)] + b.P - 1) / b.P;
    for (int j = 0; j < used; ++j) {
      const bool shared = s == 1 && c.lens[0] >= c.lens[1] && j < used / 2;
      b.table[size_t(s) * b.max_pages + j] = shared ? b.table[size_t(j)] : pool[next++];
    }
  }
  const size_t rows = size_t(b.num_pages) * (b.P + b.pad) * c.Hkv * c.D;
  b.k.resize(rows);
  b.v.resize(rows);
  for (auto &x : b.k) x = enc(nd(rng));
  for (auto &x : b.v) x = enc(nd(rng));
  b.starts.assign(1, 0);
  for (int s = 0; s < b.B; ++s) b.starts.push_back(b.starts.back() + std::min(c.queries_per_seq, std::max(c.lens[size_t(s)], 1)));
  const int n_q = b.starts.back();
  b.q.resize(size_t(n_q) * c.Hq * c.D);
  for (auto &x : b.q) x = enc(nd(rng) * 1.5f);
  if (c.width) {
    const int lists = c.per_query_head ? c.Hq : c.Hkv;
    b.idx.resize(size_t(n_q) * lists * c.width);
    for (int s = 0; s < b.B; ++s)
      for (int i = b.starts[size_t(s)]; i < b.starts[size_t(s) + 1]; ++i)
        for (int e = 0; e < lists * c.width; ++e) {
          const int r = int(rng() % 10), len = c.lens[size_t(s)];
          int32_t &x = b.idx[size_t(i) * lists * c.width + e];
          x = r == 0 || len == 0 ? -1 : r == 1 ? int32_t(b.slots() + rng() % 40) : b.slot(s, int(rng() % len));
        }
  }
  return b;
}

// Double-precision attention of query i (sequence s) over the listed slots.
void reference(const PagedCase &c, const Batch &b, std::vector<double> &out, std::vector<double> &lse) {
  const bool bf = c.dtype == SA_DTYPE_BF16;
  const int n_q = b.starts.back(), G = c.Hq / c.Hkv, lists = c.per_query_head ? c.Hq : c.Hkv;
  const double scale = 1.0 / std::sqrt(double(c.D));
  out.assign(size_t(n_q) * c.Hq * c.D, 0.0);
  lse.assign(size_t(n_q) * c.Hq, -INFINITY);
  auto at = [&](const std::vector<uint16_t> &m, int32_t slot, int h, int d) {
    const size_t row = size_t(slot / b.P) * (b.P + b.pad) + slot % b.P;
    return double(decode16(m[(row * c.Hkv + h) * c.D + d], bf));
  };
  for (int s = 0; s < b.B; ++s) {
    const int len = c.lens[size_t(s)], n_s = b.starts[size_t(s) + 1] - b.starts[size_t(s)];
    for (int i = b.starts[size_t(s)]; i < b.starts[size_t(s) + 1]; ++i)
      for (int h = 0; h < c.Hq; ++h) {
        const int hk = h / G;
        std::vector<int32_t> keys;
        if (c.width) {
          const int list = c.per_query_head ? h : hk;
          for (int e = 0; e < c.width; ++e) {
            const int32_t x = b.idx[(size_t(i) * lists + list) * c.width + e];
            if (x >= 0 && x < b.slots()) keys.push_back(x);
          }
        } else {
          const int visible = c.causal ? len - n_s + (i - b.starts[size_t(s)]) + 1 : len;
          for (int t = 0; t < visible; ++t) keys.push_back(b.slot(s, t));
        }
        if (keys.empty()) continue;
        std::vector<double> sc(keys.size());
        double mx = -INFINITY;
        for (size_t j = 0; j < keys.size(); ++j) {
          double dot = 0;
          for (int d = 0; d < c.D; ++d)
            dot += double(decode16(b.q[(size_t(i) * c.Hq + h) * c.D + d], bf)) * at(b.k, keys[j], hk, d);
          sc[j] = dot * scale;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (double &x : sc) sum += (x = std::exp(x - mx));
        for (int d = 0; d < c.D; ++d) {
          double acc = 0;
          for (size_t j = 0; j < keys.size(); ++j) acc += sc[j] * at(b.v, keys[j], hk, d);
          out[(size_t(i) * c.Hq + h) * c.D + d] = acc / sum;
        }
        lse[size_t(i) * c.Hq + h] = mx + std::log(sum);
      }
  }
}

// K/V, page table and lengths described on `dev` (rank 4 with the padded page stride, or the
// rank-3 cells form).
struct Described {
  sa_paged_kv kv = SA_PAGED_KV_INIT;
  sa_tensor starts{}, idx{};
};

Described describe_batch(const PagedCase &c, const Batch &b, void *k, void *v, void *table, void *lens, void *starts,
                         void *idx, sa_device_type dev) {
  Described r;
  const int64_t H = c.Hkv, D = c.D, P = b.P;
  if (c.cells) {
    r.kv.k = desc(k, c.dtype, {b.num_pages, H, D}, dev);
    r.kv.v = desc(v, c.dtype, {b.num_pages, H, D}, dev);
  } else {
    r.kv.k = desc(k, c.dtype, {b.num_pages, P, H, D}, dev);
    r.kv.v = desc(v, c.dtype, {b.num_pages, P, H, D}, dev);
    for (sa_tensor *t : {&r.kv.k, &r.kv.v}) {
      t->strides[0] = (P + b.pad) * H * D;
      t->strides[1] = H * D;
      t->strides[2] = D;
      t->strides[3] = 1;
    }
  }
  r.kv.page_table = desc(table, SA_DTYPE_I32, {b.B, b.max_pages}, dev);
  r.kv.seq_lens = desc(lens, SA_DTYPE_I32, {b.B}, dev);
  r.starts = desc(starts, SA_DTYPE_I32, {b.B + 1}, dev);
  r.idx = desc(idx, SA_DTYPE_I32, {b.starts.back(), c.per_query_head ? c.Hq : c.Hkv, c.width}, dev);
  return r;
}

void check_paged(Ctx &ctx, const PagedCase &c, uint64_t seed) {
  const Batch b = make_batch(c, seed);
  const int n_q = b.starts.back();
  const bool with_starts = c.queries_per_seq > 1;
  std::vector<int32_t> lens(c.lens.begin(), c.lens.end());
  std::vector<double> ref_out, ref_lse;
  reference(c, b, ref_out, ref_lse);

  // The CPU's sa_attend_paged on the same values (out-of-range entries are refused there).
  std::vector<int32_t> idx_cpu = b.idx;
  for (auto &x : idx_cpu)
    if (x >= b.slots()) x = -1;
  std::vector<int32_t> table = b.table;
  for (auto &x : table) x = x < 0 ? 0 : x;  // the CPU reads no entry past a length either
  std::vector<uint16_t> kh = b.k, vh = b.v, qh = b.q;
  std::vector<int32_t> starts_h = b.starts;
  Described hc = describe_batch(c, b, kh.data(), vh.data(), table.data(), lens.data(), starts_h.data(), idx_cpu.data(),
                                SA_DEVICE_CPU);
  std::vector<float> out_cpu(size_t(n_q) * c.Hq * c.D), lse_cpu(size_t(n_q) * c.Hq);
  sa_tensor tq = desc(qh.data(), c.dtype, {n_q, c.Hq, c.D}, SA_DEVICE_CPU);
  sa_tensor to = desc(out_cpu.data(), SA_DTYPE_F32, {n_q, c.Hq, c.D}, SA_DEVICE_CPU);
  sa_tensor tl = desc(lse_cpu.data(), SA_DTYPE_F32, {n_q, c.Hq}, SA_DEVICE_CPU);
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = c.causal;
  std::vector<int64_t> head_pos;
  if (c.head_positions) {
    std::mt19937_64 rng(seed + 1);
    head_pos.resize(size_t(c.Hkv) * b.slots());
    for (auto &x : head_pos) x = rng() % 9 == 0 ? -1 : int64_t(rng() % 2500);
    o.head_key_positions = head_pos.data();
  }
  SA_OK_(sa_attend_paged(ctx.cpu, &tq, with_starts ? &hc.starts : nullptr, &hc.kv, c.width ? &hc.idx : nullptr, &o,
                         &to, &tl));
  int64_t *dhead_pos = c.head_positions ? to_device(head_pos) : nullptr;
  o.head_key_positions = dhead_pos;

  // The device: poisoned outputs, bf16 out for one case in two (out in the dtype of q).
  uint16_t *dk = to_device(b.k), *dv = to_device(b.v), *dq = to_device(b.q);
  int32_t *dtable = to_device(b.table), *dlens = to_device(lens), *dstarts = to_device(b.starts);
  int32_t *didx = c.width ? to_device(b.idx) : nullptr;
  const std::vector<float> poison(out_cpu.size(), NAN), lpoison(lse_cpu.size(), NAN);
  float *dout = to_device(poison), *dlse = to_device(lpoison);
  Described dc = describe_batch(c, b, dk, dv, dtable, dlens, dstarts, didx, SA_DEVICE_CUDA);
  sa_tensor gq = desc(dq, c.dtype, {n_q, c.Hq, c.D}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {n_q, c.Hq, c.D}, SA_DEVICE_CUDA);
  sa_tensor gl = desc(dlse, SA_DTYPE_F32, {n_q, c.Hq}, SA_DEVICE_CUDA);
  SA_OK_(sa_attend_paged(ctx.gpu, &gq, with_starts ? &dc.starts : nullptr, &dc.kv, c.width ? &dc.idx : nullptr, &o,
                         &go, &gl));
  CUDA_OK(cudaDeviceSynchronize());
  const auto out = to_host(dout, out_cpu.size()), lse = to_host(dlse, lse_cpu.size());
  cudaFree(dhead_pos);
  if (c.head_positions) {  // against the CPU: outputs and lse, -inf where no key is seen
    double num_cpu = 0, den = 0, lse_err = 0;
    int empty = 0;
    for (size_t e = 0; e < out.size(); ++e) {
      ASSERT_FALSE(std::isnan(out[e])) << "unwritten output at " << e;
      num_cpu += double(out[e] - out_cpu[e]) * (out[e] - out_cpu[e]);
      den += double(out_cpu[e]) * out_cpu[e];
    }
    for (size_t e = 0; e < lse.size(); ++e) {
      if (std::isinf(lse_cpu[e])) {
        ++empty;
        EXPECT_TRUE(std::isinf(lse[e]) && lse[e] < 0) << "lse " << e << ": " << lse[e];
      } else {
        lse_err = std::max(lse_err, double(std::fabs(lse[e] - lse_cpu[e])));
      }
    }
    EXPECT_LT(std::sqrt(num_cpu / std::max(den, 1e-30)), 2e-6) << "relative difference of out from the CPU";
    EXPECT_LT(lse_err, 1e-4) << "lse against the CPU";
    EXPECT_LT(empty, int(lse.size())) << "every query saw no key";
    cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dtable); cudaFree(dlens); cudaFree(dstarts); cudaFree(didx);
    cudaFree(dout); cudaFree(dlse);
    return;
  }
  double num = 0, num_cpu = 0, den = 0, lse_err = 0;
  for (size_t e = 0; e < out.size(); ++e) {
    ASSERT_FALSE(std::isnan(out[e])) << "unwritten output at " << e;
    num += (out[e] - ref_out[e]) * (out[e] - ref_out[e]);
    num_cpu += double(out[e] - out_cpu[e]) * (out[e] - out_cpu[e]);
    den += ref_out[e] * ref_out[e];
  }
  for (size_t e = 0; e < lse.size(); ++e) {
    ASSERT_FALSE(std::isnan(lse[e])) << "unwritten lse at " << e;
    if (std::isinf(ref_lse[e])) {
      EXPECT_TRUE(std::isinf(lse[e]) && lse[e] < 0) << "lse " << e << " of a query with no key: " << lse[e];
      EXPECT_TRUE(std::isinf(lse_cpu[e]));
    } else {
      lse_err = std::max(lse_err, std::fabs(lse[e] - ref_lse[e]));
    }
  }
  EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), 2e-6) << "relative error of out against the double reference";
  EXPECT_LT(std::sqrt(num_cpu / std::max(den, 1e-30)), 2e-6) << "relative difference of out from the CPU";
  EXPECT_LT(lse_err, 1e-4) << "lse against the double reference";
  cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dtable); cudaFree(dlens); cudaFree(dstarts); cudaFree(didx);
  cudaFree(dout); cudaFree(dlse);
}

const std::vector<int> kLens = {700, 300, 0, 1, 2049, 64, 17, 1000};

TEST(CudaPaged, DenseDecodeBatchBf16Gqa) {
  NEED_GPU(c);
  check_paged(c, {SA_DTYPE_BF16, 128, 32, 8, 16, kLens, 1, 0, false, false, false}, 1);
}

TEST(CudaPaged, DenseDecodeF16OddPagesD64) {
  NEED_GPU(c);
  check_paged(c, {SA_DTYPE_F16, 64, 6, 2, 7, kLens, 1, 0, false, true, false}, 2);
}

TEST(CudaPaged, DenseCausalQueriesPerSequence) {
  NEED_GPU(c);
  check_paged(c, {SA_DTYPE_BF16, 128, 8, 2, 16, {90, 0, 33, 250, 5}, 4, 0, false, true, false}, 3);
}

TEST(CudaPaged, SparseDecodePerKvHead) {
  NEED_GPU(c);
  check_paged(c, {SA_DTYPE_BF16, 128, 32, 8, 16, kLens, 1, 300, false, false, false}, 4);
}

TEST(CudaPaged, SparsePerQueryHeadF16D256) {
  NEED_GPU(c);
  check_paged(c, {SA_DTYPE_F16, 256, 4, 2, 32, kLens, 1, 150, true, false, false}, 5);
}

TEST(CudaPaged, LlamaCppCellsDenseAndSparse) {
  NEED_GPU(c);
  check_paged(c, {SA_DTYPE_F16, 128, 8, 4, 1, {40, 0, 129, 3}, 1, 0, false, true, true}, 6);
  check_paged(c, {SA_DTYPE_BF16, 128, 8, 4, 1, {40, 0, 129, 3}, 1, 64, false, false, true}, 7);
}

TEST(CudaPaged, LongSequencesManySplits) {
  NEED_GPU(c);
  check_paged(c, {SA_DTYPE_BF16, 128, 8, 1, 64, {20000, 3, 9000}, 1, 0, false, false, false}, 8);
}

// The core cannot read device page tables: pages outside [0, num_pages), lengths past the
// table and query starts out of order are skipped or clamped on the device, never read through
// (compute-sanitizer memcheck runs this test).
TEST(CudaPaged, BadDeviceTablesAreNeverReadThrough) {
  NEED_GPU(c);
  PagedCase pc{SA_DTYPE_BF16, 128, 8, 2, 16, {100, 50, 40}, 1, 0, false, false, false};
  Batch b = make_batch(pc, 9);
  const int32_t bad_pages[] = {-3, b.num_pages, 1 << 30};
  for (int j = 0; j < 3; ++j) b.table[size_t(j) * b.max_pages + 1] = bad_pages[j];  // tokens 16..31 of each
  std::vector<int32_t> lens = {100, 50, 40}, bad_lens = {100, int32_t(b.max_pages * 16 + 1000), -5};
  std::vector<int32_t> bad_starts = {0, 7, -2, 3};  // not a valid split of 3 queries
  uint16_t *dk = to_device(b.k), *dv = to_device(b.v), *dq = to_device(b.q);
  int32_t *dtable = to_device(b.table), *dlens = to_device(bad_lens), *dstarts = to_device(bad_starts);
  const std::vector<float> poison(size_t(3) * 8 * 128, NAN), lpoison(3 * 8, NAN);
  float *dout = to_device(poison), *dlse = to_device(lpoison);
  Described dc = describe_batch(pc, b, dk, dv, dtable, dlens, dstarts, nullptr, SA_DEVICE_CUDA);
  sa_tensor gq = desc(dq, pc.dtype, {3, 8, 128}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {3, 8, 128}, SA_DEVICE_CUDA);
  sa_tensor gl = desc(dlse, SA_DTYPE_F32, {3, 8}, SA_DEVICE_CUDA);
  SA_OK_(sa_attend_paged(c.gpu, &gq, &dc.starts, &dc.kv, nullptr, nullptr, &go, &gl));
  CUDA_OK(cudaDeviceSynchronize());
  // Without query_starts, the well-formed lengths: the tokens on bad pages are skipped, so
  // sequence s equals the reference over its other tokens.
  CUDA_OK(cudaMemcpy(dlens, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
  SA_OK_(sa_attend_paged(c.gpu, &gq, nullptr, &dc.kv, nullptr, nullptr, &go, &gl));
  CUDA_OK(cudaDeviceSynchronize());
  const auto out = to_host(dout, poison.size()), lse = to_host(dlse, lpoison.size());
  // The reference: the same batch with the bad page's tokens taken out (moved to the end
  // of a shorter sequence would change positions; attention without causality ignores order).
  const double scale = 1.0 / std::sqrt(128.0);
  for (int s = 0; s < 3; ++s)
    for (int h = 0; h < 8; ++h) {
      std::vector<double> sc, acc(128, 0.0);
      std::vector<int32_t> keys;
      for (int t = 0; t < lens[size_t(s)]; ++t)
        if (t / 16 != 1) keys.push_back(b.slot(s, t));
      double mx = -INFINITY;
      for (int32_t k : keys) {
        const size_t row = size_t(k / 16) * 17 + k % 16;
        double dot = 0;
        for (int d = 0; d < 128; ++d)
          dot += double(from_bf16(b.q[(size_t(s) * 8 + h) * 128 + d])) * from_bf16(b.k[(row * 2 + h / 4) * 128 + d]);
        sc.push_back(dot * scale);
        mx = std::max(mx, sc.back());
      }
      double sum = 0;
      for (size_t j = 0; j < keys.size(); ++j) {
        const double w = std::exp(sc[j] - mx);
        sum += w;
        const size_t row = size_t(keys[j] / 16) * 17 + keys[j] % 16;
        for (int d = 0; d < 128; ++d) acc[size_t(d)] += w * from_bf16(b.v[(row * 2 + h / 4) * 128 + d]);
      }
      for (int d = 0; d < 128; ++d)
        ASSERT_NEAR(out[(size_t(s) * 8 + h) * 128 + d], acc[size_t(d)] / sum, 2e-5) << "seq " << s << " head " << h;
      ASSERT_NEAR(lse[size_t(s) * 8 + h], mx + std::log(sum), 1e-4);
    }
  cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dtable); cudaFree(dlens); cudaFree(dstarts);
  cudaFree(dout); cudaFree(dlse);
}

// A decode step captured in a CUDA graph after a first call of its shape, replayed after the
// lengths changed on the device (a host's next step).
TEST(CudaPaged, CapturedInAGraph) {
  NEED_GPU(c);
  PagedCase pc{SA_DTYPE_BF16, 128, 8, 2, 16, {300, 1200, 0, 77}, 1, 0, false, false, false};
  const Batch b = make_batch(pc, 10);
  std::vector<int32_t> lens(pc.lens.begin(), pc.lens.end());
  uint16_t *dk = to_device(b.k), *dv = to_device(b.v), *dq = to_device(b.q);
  int32_t *dtable = to_device(b.table), *dlens = to_device(lens);
  const std::vector<float> poison(size_t(4) * 8 * 128, NAN);
  float *dout = to_device(poison);
  Described dc = describe_batch(pc, b, dk, dv, dtable, dlens, nullptr, nullptr, SA_DEVICE_CUDA);
  sa_tensor gq = desc(dq, pc.dtype, {4, 8, 128}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {4, 8, 128}, SA_DEVICE_CUDA);
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.cuda_stream = s;
  SA_OK_(sa_attend_paged(c.gpu, &gq, nullptr, &dc.kv, nullptr, &o, &go, nullptr));
  CUDA_OK(cudaStreamSynchronize(s));
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  const sa_status st = sa_attend_paged(c.gpu, &gq, nullptr, &dc.kv, nullptr, &o, &go, nullptr);
  const std::string msg = sa_last_error();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(s, &graph);
  ASSERT_EQ(st, SA_OK) << msg;
  ASSERT_EQ(ended, cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  const std::vector<int32_t> lens2 = {301, 1100, 5, 77};  // within each table row
  CUDA_OK(cudaMemcpy(dlens, lens2.data(), 16, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dout, poison.data(), poison.size() * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaGraphLaunch(exec, s));
  CUDA_OK(cudaStreamSynchronize(s));
  const auto replayed = to_host(dout, poison.size());
  // The same step run directly.
  SA_OK_(sa_attend_paged(c.gpu, &gq, nullptr, &dc.kv, nullptr, &o, &go, nullptr));
  CUDA_OK(cudaStreamSynchronize(s));
  const auto direct = to_host(dout, poison.size());
  for (size_t e = 0; e < direct.size(); ++e) ASSERT_EQ(replayed[e], direct[e]) << e;
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
  cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dtable); cudaFree(dlens); cudaFree(dout);
}

// Per-KV-head positions over the physical slots: dense and sparse, causal (each sequence's
// queries counted back from the largest position its slots hold in any head) or not.
TEST(CudaPaged, HeadKeyPositionsMatchCpu) {
  NEED_GPU(c);
  check_paged(c, {SA_DTYPE_BF16, 128, 8, 2, 16, kLens, 1, 0, false, true, false, true}, 71);    // dense causal decode
  check_paged(c, {SA_DTYPE_BF16, 128, 8, 2, 16, kLens, 3, 0, false, true, false, true}, 72);    // dense, 3 queries each
  check_paged(c, {SA_DTYPE_BF16, 128, 8, 2, 16, kLens, 1, 300, false, true, false, true}, 73);  // sparse causal
  check_paged(c, {SA_DTYPE_F16, 64, 8, 4, 16, kLens, 2, 200, true, false, false, true}, 74);    // per query head
  check_paged(c, {SA_DTYPE_BF16, 128, 8, 2, 1, kLens, 1, 0, false, true, true, true}, 75);      // llama.cpp cells
}

TEST(CudaPaged, UnsupportedRequestsAreRefused) {
  NEED_GPU(c);
  PagedCase pc{SA_DTYPE_BF16, 128, 8, 2, 16, {30, 20}, 1, 0, false, false, false};
  const Batch b = make_batch(pc, 11);
  std::vector<int32_t> lens(pc.lens.begin(), pc.lens.end());
  uint16_t *dk = to_device(b.k), *dv = to_device(b.v), *dq = to_device(b.q);
  int32_t *dtable = to_device(b.table), *dlens = to_device(lens);
  std::vector<int64_t> pos(size_t(b.slots()), 0);
  int64_t *dpos = to_device(pos);
  std::vector<float> zeros(size_t(2) * 8 * 128 + b.slots(), 0.f);
  float *dout = to_device(zeros), *dmass = dout + 2 * 8 * 128;
  Described dc = describe_batch(pc, b, dk, dv, dtable, dlens, nullptr, nullptr, SA_DEVICE_CUDA);
  sa_tensor gq = desc(dq, pc.dtype, {2, 8, 128}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {2, 8, 128}, SA_DEVICE_CUDA);
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  sa_tensor mass = desc(dmass, SA_DTYPE_F32, {b.slots()}, SA_DEVICE_CUDA);
  o.slot_mass = &mass;
  EXPECT_EQ(sa_attend_paged(c.gpu, &gq, nullptr, &dc.kv, nullptr, &o, &go, nullptr), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("slot_mass"), std::string::npos) << sa_last_error();
  o.slot_mass = nullptr;
  o.causal = 1;
  dc.kv.slot_positions = desc(dpos, SA_DTYPE_I64, {b.slots()}, SA_DEVICE_CUDA);
  EXPECT_EQ(sa_attend_paged(c.gpu, &gq, nullptr, &dc.kv, nullptr, &o, &go, nullptr), SA_ERR_UNSUPPORTED);
  // A host page table with device K/V: one device for every tensor.
  dc.kv.slot_positions = sa_tensor{};
  dc.kv.page_table = desc(const_cast<int32_t *>(b.table.data()), SA_DTYPE_I32, {b.B, b.max_pages}, SA_DEVICE_CPU);
  EXPECT_EQ(sa_attend_paged(c.gpu, &gq, nullptr, &dc.kv, nullptr, nullptr, &go, nullptr), SA_ERR_INVALID_ARGUMENT);
  cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dtable); cudaFree(dlens); cudaFree(dpos); cudaFree(dout);
}

}  // namespace

namespace {

// sa_select_batch on device indexes (page with refine 0: batched in the plugin; exact: per
// sequence) over a paged cache: each sequence's row equals sa_select on its own index, mapped
// through its page table row here (a page out of range gives -1); the result feeds
// sa_attend_paged directly. Sequence 2 must hold at least 64 tokens.
void check_select_batch(Ctx &c, sa_selector_kind kind, const std::vector<int> &seq_lens) {
  PagedCase pc{SA_DTYPE_BF16, 128, 8, 2, 16, seq_lens, 1, 0, false, false, false};
  Batch b = make_batch(pc, 12);
  b.table[size_t(2) * b.max_pages + 3] = b.num_pages + 4;  // sequence 2's tokens 48..63: a bad page
  const int B = b.B, top_k = 256, window = 32, sinks = 4, W = top_k + window + sinks;
  uint16_t *dk = to_device(b.k), *dq = to_device(b.q);
  int32_t *dtable = to_device(b.table);
  std::vector<int32_t> lens(pc.lens.begin(), pc.lens.end());
  int32_t *dlens = to_device(lens);
  // Each sequence's keys, contiguous, appended to its own device index.
  std::vector<sa_index *> ix(size_t(B), nullptr);
  std::vector<uint16_t *> seq_keys(size_t(B), nullptr);
  for (int s = 0; s < B; ++s) {
    sa_index_options io = device_index_options(kind, 2, 128, 16);
    SA_OK_(sa_index_create(c.gpu, &io, &ix[size_t(s)]));
    const int len = pc.lens[size_t(s)];
    if (len == 0) continue;
    std::vector<uint16_t> rows(size_t(len) * 2 * 128);
    for (int t = 0; t < len; ++t) {
      const int32_t slot = b.slot(s, t) >= 0 && b.table[size_t(s) * b.max_pages + t / 16] < b.num_pages ? b.slot(s, t) : 0;
      const size_t row = size_t(slot / 16) * 17 + slot % 16;
      std::copy_n(&b.k[row * 2 * 128], 2 * 128, &rows[size_t(t) * 2 * 128]);
    }
    seq_keys[size_t(s)] = to_device(rows);
    sa_tensor kt = desc(seq_keys[size_t(s)], SA_DTYPE_BF16, {len, 2, 128}, SA_DEVICE_CUDA);
    SA_OK_(sa_index_append(ix[size_t(s)], &kt));
  }
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = top_k;
  so.window = window;
  so.sinks = sinks;
  // Per sequence, sa_select on its index: the expected rows, before the page table.
  std::vector<int32_t> expected(size_t(B) * 2 * W);
  const std::vector<int32_t> poison(size_t(B) * 2 * W, -7);
  int32_t *dsel = to_device(poison);
  for (int s = 0; s < B; ++s) {
    sa_tensor qs = desc(dq + size_t(s) * 8 * 128, SA_DTYPE_BF16, {1, 8, 128}, SA_DEVICE_CUDA);
    sa_tensor os = desc(dsel + size_t(s) * 2 * W, SA_DTYPE_I32, {1, 2, W}, SA_DEVICE_CUDA);
    SA_OK_(sa_select(ix[size_t(s)], &qs, &so, &os));
  }
  CUDA_OK(cudaDeviceSynchronize());
  const auto local = to_host(dsel, expected.size());
  for (int s = 0; s < B; ++s)
    for (int e = 0; e < 2 * W; ++e) {
      const int32_t x = local[size_t(s) * 2 * W + e];
      int32_t &y = expected[size_t(s) * 2 * W + e];
      ASSERT_GE(x, -1);
      const int32_t page = x < 0 ? -1 : b.table[size_t(s) * b.max_pages + x / 16];
      y = page < 0 || page >= b.num_pages ? -1 : page * 16 + x % 16;
    }
  // The batch in one call.
  CUDA_OK(cudaMemcpy(dsel, poison.data(), poison.size() * 4, cudaMemcpyHostToDevice));
  Described dc = describe_batch(pc, b, dk, dk, dtable, dlens, nullptr, nullptr, SA_DEVICE_CUDA);
  sa_tensor gq = desc(dq, SA_DTYPE_BF16, {B, 8, 128}, SA_DEVICE_CUDA);
  sa_tensor gsel = desc(dsel, SA_DTYPE_I32, {B, 2, W}, SA_DEVICE_CUDA);
  SA_OK_(sa_select_batch(ix.data(), B, &gq, nullptr, &so, &dc.kv, &gsel));
  CUDA_OK(cudaDeviceSynchronize());
  const auto got = to_host(dsel, expected.size());
  for (size_t e = 0; e < got.size(); ++e) ASSERT_EQ(got[e], expected[e]) << "entry " << e;
  int physical = 0;
  for (int32_t x : got) physical += x >= 0;
  EXPECT_GT(physical, 2 * W);  // not all padding
  // Refused: several queries per sequence; an index longer than its page table row.
  std::vector<int32_t> starts(size_t(B) + 1);
  std::iota(starts.begin(), starts.end(), 0);
  int32_t *dstarts = to_device(starts);
  sa_tensor st = desc(dstarts, SA_DTYPE_I32, {B + 1}, SA_DEVICE_CUDA);
  EXPECT_EQ(sa_select_batch(ix.data(), B, &gq, &st, &so, &dc.kv, &gsel), SA_ERR_UNSUPPORTED);
  dc.kv.page_table.shape[1] = 2;
  EXPECT_EQ(sa_select_batch(ix.data(), B, &gq, nullptr, &so, &dc.kv, &gsel), SA_ERR_SHAPE);
  for (auto &x : ix) sa_index_destroy(&x);
  for (auto *p : seq_keys) cudaFree(p);
  cudaFree(dk); cudaFree(dq); cudaFree(dtable); cudaFree(dlens); cudaFree(dsel); cudaFree(dstarts);
}

// Mixed lengths: empty, one token, shorter than and exactly sinks + window + top_k (292),
// one page past it, and long ones.
const std::vector<int> kMixedLens = {3000, 0, 700, 4099, 129, 291, 292, 1, 17, 8191, 308, 16};

// More sequences than one launch's table holds (64), many of them short.
std::vector<int> many_lens() {
  std::vector<int> lens(70);
  for (size_t s = 0; s < lens.size(); ++s) lens[s] = int(s * 389 % 1200);
  return lens;
}

TEST(CudaPagedSelect, PageIndexesWriteThroughThePageTable) {
  NEED_GPU(c);
  check_select_batch(c, SA_SELECTOR_PAGE, kMixedLens);
}

TEST(CudaPagedSelect, PageIndexesOverSeveralLaunchChunks) {
  NEED_GPU(c);
  check_select_batch(c, SA_SELECTOR_PAGE, many_lens());
}

TEST(CudaPagedSelect, ExactIndexesWriteThroughThePageTable) {
  NEED_GPU(c);
  check_select_batch(c, SA_SELECTOR_EXACT, kMixedLens);
}

}  // namespace
