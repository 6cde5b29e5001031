// Per-KV-head eviction on the GPU: sa_attend with head_key_positions on device positions
// (dense and gathered, causal or not, slot mass [H_kv, n_kv]) against a double reference and
// the CPU; sa_cache_evict with per_head on device tensors, freed slots equal to the CPU's; and
// a fixed-budget per-head decode loop run on the device beside the same loop on the CPU,
// attending densely or over the selection of a device page index refilled per KV head.
// Skips cleanly when no plugin or no device is present.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_helpers.cuh"
#include "head_page_reference.hpp"
#include "sparseattn.h"

namespace {

constexpr int D = 128;

// ------------------------------------------------------------------- attend per KV head

struct HeadCase {
  int Hq, Hkv, n_q;
  int64_t n_kv;
  int width;  // 0: dense
  bool per_query_head, causal;
  float decay;
};

// Each head holds its own distinct positions (shuffled, about 1 in 9 rows empty) near one
// another, so that the causal queries before the last miss a few rows of every head.
std::vector<int64_t> head_positions(std::mt19937_64 &rng, int Hkv, int64_t n_kv) {
  std::vector<int64_t> pos(size_t(Hkv) * n_kv);
  for (int h = 0; h < Hkv; ++h) {
    std::vector<int64_t> p(static_cast<size_t>(n_kv));
    std::iota(p.begin(), p.end(), int64_t(h) * 3);
    std::shuffle(p.begin(), p.end(), rng);
    for (int64_t r = 0; r < n_kv; ++r) pos[size_t(h * n_kv + r)] = rng() % 9 == 0 ? -1 : p[size_t(r)];
  }
  return pos;
}

void check_head_attend(Ctx &c, const HeadCase &k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Bf16Data q = random_bf16(rng, size_t(k.n_q) * k.Hq * D, 1.5f);
  const Bf16Data K = random_bf16(rng, size_t(k.n_kv) * k.Hkv * D, 1.f);
  const Bf16Data V = random_bf16(rng, size_t(k.n_kv) * k.Hkv * D, 1.f);
  const std::vector<int64_t> pos = head_positions(rng, k.Hkv, k.n_kv);
  const int lists = k.per_query_head ? k.Hq : k.Hkv, G = k.Hq / k.Hkv;
  std::vector<int32_t> idx(size_t(k.n_q) * lists * std::max(k.width, 1));
  for (auto &x : idx) x = rng() % 12 == 0 ? -1 : int32_t(rng() % k.n_kv);
  std::vector<float> mass0(size_t(k.Hkv) * k.n_kv);
  for (auto &m : mass0) m = float(rng() % 1000) / 1000.f;
  std::vector<float> mass_cpu = mass0, out_cpu(size_t(k.n_q) * k.Hq * D), lse_cpu(size_t(k.n_q) * k.Hq);

  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = k.causal;
  o.mass_decay = k.decay;
  o.head_key_positions = pos.data();
  sa_tensor cm = desc(mass_cpu.data(), SA_DTYPE_F32, {k.Hkv, k.n_kv}, SA_DEVICE_CPU);
  o.slot_mass = &cm;
  sa_tensor tq = desc((void *)q.bits.data(), SA_DTYPE_BF16, {k.n_q, k.Hq, D}, SA_DEVICE_CPU);
  sa_tensor tk = desc((void *)K.bits.data(), SA_DTYPE_BF16, {k.n_kv, k.Hkv, D}, SA_DEVICE_CPU);
  sa_tensor tv = desc((void *)V.bits.data(), SA_DTYPE_BF16, {k.n_kv, k.Hkv, D}, SA_DEVICE_CPU);
  sa_tensor ti = desc(idx.data(), SA_DTYPE_I32, {k.n_q, lists, k.width}, SA_DEVICE_CPU);
  sa_tensor to = desc(out_cpu.data(), SA_DTYPE_F32, {k.n_q, k.Hq, D}, SA_DEVICE_CPU);
  sa_tensor tl = desc(lse_cpu.data(), SA_DTYPE_F32, {k.n_q, k.Hq}, SA_DEVICE_CPU);
  SA_OK_(sa_attend(c.cpu, &tq, &tk, &tv, k.width ? &ti : nullptr, &o, &to, &tl));

  uint16_t *dq = to_device(q.bits), *dk = to_device(K.bits), *dv = to_device(V.bits);
  int32_t *di = to_device(idx);
  int64_t *dpos = to_device(pos);
  float *dm = to_device(mass0), *dout = to_device(out_cpu), *dlse = to_device(lse_cpu);
  sa_tensor gm = desc(dm, SA_DTYPE_F32, {k.Hkv, k.n_kv}, SA_DEVICE_CUDA);
  o.slot_mass = &gm;
  o.head_key_positions = dpos;
  sa_tensor gq = desc(dq, SA_DTYPE_BF16, {k.n_q, k.Hq, D}, SA_DEVICE_CUDA);
  sa_tensor gk = desc(dk, SA_DTYPE_BF16, {k.n_kv, k.Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor gv = desc(dv, SA_DTYPE_BF16, {k.n_kv, k.Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor gi = desc(di, SA_DTYPE_I32, {k.n_q, lists, k.width}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {k.n_q, k.Hq, D}, SA_DEVICE_CUDA);
  sa_tensor gl = desc(dlse, SA_DTYPE_F32, {k.n_q, k.Hq}, SA_DEVICE_CUDA);
  SA_OK_(sa_attend(c.gpu, &gq, &gk, &gv, k.width ? &gi : nullptr, &o, &go, &gl));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> out_gpu = to_host(dout, out_cpu.size()), mass_gpu = to_host(dm, mass0.size());
  const std::vector<float> lse_gpu = to_host(dlse, lse_cpu.size());

  // Against double precision: each query head over its KV head's visible rows.
  int64_t last = -1;
  for (int64_t p : pos) last = std::max(last, p);
  double worst = 0;
  int hidden = 0;  // rows a causal query could not see (the rule is exercised)
  for (int i = 0; i < k.n_q; ++i) {
    const int64_t limit = k.causal ? last - k.n_q + 1 + i : INT64_MAX;
    for (int h = 0; h < k.Hq; ++h) {
      const int hk = h / G, list = k.per_query_head ? h : hk;
      std::vector<int32_t> rows;
      if (k.width) rows.assign(idx.begin() + size_t(i * lists + list) * k.width, idx.begin() + size_t(i * lists + list + 1) * k.width);
      else for (int64_t r = 0; r < k.n_kv; ++r) rows.push_back(int32_t(r));
      for (int64_t r = 0; r < k.n_kv; ++r) hidden += pos[size_t(hk * k.n_kv + r)] > limit;
      const std::vector<double> want = reference_attention(q.values.data() + size_t(i * k.Hq + h) * D, K.values,
                                                           V.values, k.Hkv, D, hk, rows.data(), int64_t(rows.size()),
                                                           pos.data(), k.n_kv, limit);
      for (int d = 0; d < D; ++d) {
        worst = std::max(worst, std::fabs(out_gpu[size_t(i * k.Hq + h) * D + d] - want[size_t(d)]));
        worst = std::max(worst, std::fabs(out_cpu[size_t(i * k.Hq + h) * D + d] - want[size_t(d)]));
      }
    }
  }
  EXPECT_LT(worst, 2e-5) << "outputs against the double reference";
  if (k.causal && k.n_q > 1) EXPECT_GT(hidden, 0) << "no row was past a query's position";
  EXPECT_LT(max_rel_diff(lse_gpu, lse_cpu), 1e-5) << "lse";
  EXPECT_LT(max_rel_diff(mass_gpu, mass_cpu), 2e-5) << "slot mass";
  // Empty rows get no mass: theirs is only the decayed start.
  for (size_t e = 0; e < pos.size(); ++e)
    if (pos[e] < 0) EXPECT_EQ(mass_gpu[e], k.decay == 0.f ? 0.f : mass0[e] * k.decay) << "empty row " << e;
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(di); cudaFree(dpos); cudaFree(dm); cudaFree(dout); cudaFree(dlse);
}

TEST(CudaHeadAttend, MatchesCpuAndDoubleReference) {
  NEED_GPU(c);
  check_head_attend(c, {8, 2, 1, 3000, 0, false, false, 0.99f}, 1);   // dense
  check_head_attend(c, {8, 2, 4, 2000, 0, false, true, 0.9f}, 2);     // dense causal: some rows hidden per query
  check_head_attend(c, {8, 2, 1, 3000, 600, false, false, 0.99f}, 3); // gathered per KV head
  check_head_attend(c, {8, 2, 3, 1000, 200, true, true, 1.f}, 4);     // per query head, causal, plain sum
  check_head_attend(c, {4, 4, 2, 500, 100, false, true, 0.f}, 5);     // causal gathered, decay 0
}

// Positions live where the tensors do: a host array with CUDA tensors, or device memory with
// CPU tensors, is refused with a message saying which memory it takes; so is a slot mass
// summed over heads.
TEST(CudaHeadAttend, RefusesPositionsInTheWrongMemory) {
  NEED_GPU(c);
  constexpr int Hkv = 2, Hq = 4;
  constexpr int64_t n = 64;
  std::vector<uint16_t> kv(size_t(n) * Hkv * D, to_bf16(0.5f)), qh(size_t(Hq) * D, to_bf16(1.f));
  std::vector<int64_t> pos(size_t(Hkv) * n, 3);
  std::vector<float> out(size_t(Hq) * D), mass(static_cast<size_t>(n));
  uint16_t *dkv = to_device(kv), *dq = to_device(qh);
  int64_t *dpos = to_device(pos);
  float *dout = to_device(out), *dm = to_device(mass);
  sa_tensor gq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor gk = desc(dkv, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.head_key_positions = pos.data();  // pageable host memory
  EXPECT_EQ(sa_attend(c.gpu, &gq, &gk, &gk, nullptr, &o, &go, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("with CUDA tensors, I64 [H_kv, n_kv] in memory of their device"),
            std::string::npos) << sa_last_error();
  o.head_key_positions = dpos;
  SA_OK_(sa_attend(c.gpu, &gq, &gk, &gk, nullptr, &o, &go, nullptr));
  sa_tensor gm = desc(dm, SA_DTYPE_F32, {n}, SA_DEVICE_CUDA);
  o.slot_mass = &gm;
  EXPECT_EQ(sa_attend(c.gpu, &gq, &gk, &gk, nullptr, &o, &go, nullptr), SA_ERR_SHAPE);
  o.slot_mass = nullptr;

  sa_tensor cq = desc(qh.data(), SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CPU);
  sa_tensor ck = desc(kv.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
  sa_tensor co = desc(out.data(), SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CPU);
  o.head_key_positions = dpos;  // device memory with CPU tensors
  EXPECT_EQ(sa_attend(c.cpu, &cq, &ck, &ck, nullptr, &o, &co, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("with CPU tensors, a host array"), std::string::npos) << sa_last_error();
  cudaFree(dkv); cudaFree(dq); cudaFree(dpos); cudaFree(dout); cudaFree(dm);
}

// A causal per-head attend with slot mass is captured once and replayed: the graph reads the
// positions at replay (a row emptied after capture is skipped) and allocates nothing.
TEST(CudaHeadAttend, GraphReplayReadsTheCurrentPositions) {
  NEED_GPU(c);
  constexpr int Hkv = 2, Hq = 8;
  constexpr int64_t n = 4096;
  std::mt19937_64 rng(7);
  const Bf16Data q = random_bf16(rng, size_t(Hq) * D, 1.5f), K = random_bf16(rng, size_t(n) * Hkv * D, 1.f);
  const Bf16Data V = random_bf16(rng, size_t(n) * Hkv * D, 1.f);
  std::vector<int64_t> pos = head_positions(rng, Hkv, n);
  uint16_t *dq = to_device(q.bits), *dk = to_device(K.bits), *dv = to_device(V.bits);
  int64_t *dpos = to_device(pos);
  std::vector<float> zeros(size_t(Hq) * D, 0.f), mzeros(size_t(Hkv) * n, 0.f);
  float *dout = to_device(zeros), *dm = to_device(mzeros), *dm2 = to_device(mzeros);
  cudaStream_t s;
  CUDA_OK(cudaStreamCreate(&s));
  sa_tensor gq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor gk = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor gv = desc(dv, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor gm = desc(dm, SA_DTYPE_F32, {Hkv, n}, SA_DEVICE_CUDA);
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = 1;
  o.head_key_positions = dpos;
  o.slot_mass = &gm;
  o.cuda_stream = s;
  SA_OK_(sa_attend(c.gpu, &gq, &gk, &gv, nullptr, &o, &go, nullptr));  // sizes the stream's buffers
  CUDA_OK(cudaStreamSynchronize(s));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  const sa_status st = sa_attend(c.gpu, &gq, &gk, &gv, nullptr, &o, &go, nullptr);
  CUDA_OK(cudaStreamEndCapture(s, &graph));
  ASSERT_EQ(st, SA_OK) << sa_last_error();
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

  // Empty the row holding the largest position (of any head): the causal limit moves too.
  int64_t r_max = 0;
  for (int64_t e = 0; e < int64_t(pos.size()); ++e)
    if (pos[size_t(e)] > pos[size_t(r_max)]) r_max = e;
  pos[size_t(r_max)] = -1;
  CUDA_OK(cudaMemcpy(dpos, pos.data(), pos.size() * 8, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(dm, 0, mzeros.size() * 4));
  CUDA_OK(cudaGraphLaunch(exec, s));
  CUDA_OK(cudaStreamSynchronize(s));
  const std::vector<float> replayed = to_host(dout, zeros.size()), mass_replayed = to_host(dm, mzeros.size());

  // The same call made directly on the changed positions.
  sa_tensor gm2 = desc(dm2, SA_DTYPE_F32, {Hkv, n}, SA_DEVICE_CUDA);
  o.slot_mass = &gm2;
  SA_OK_(sa_attend(c.gpu, &gq, &gk, &gv, nullptr, &o, &go, nullptr));
  CUDA_OK(cudaStreamSynchronize(s));
  EXPECT_EQ(to_host(dout, zeros.size()), replayed) << "the replay used the positions of its capture";
  EXPECT_EQ(to_host(dm2, mzeros.size()), mass_replayed);
  EXPECT_EQ(mass_replayed[size_t(r_max)], 0.f) << "the emptied row got mass";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
  cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dpos); cudaFree(dout); cudaFree(dm); cudaFree(dm2);
}

// --------------------------------------------------------------------- evict per KV head

struct EvictOut {
  sa_status status;
  std::string message;
  std::vector<int32_t> freed;  // [H][cap], -7 where nothing was written
  std::vector<int64_t> counts;
};

// per_head sa_cache_evict on the CPU or the device (scores, positions, freed all there).
EvictOut run_evict(Ctx &c, bool gpu, const sa_evict_options &eo, const std::vector<float> &scores,
                   const std::vector<int64_t> &pos, int H, int64_t n, int64_t cap) {
  EvictOut r;
  r.freed.assign(size_t(H) * cap, -7);
  r.counts.assign(size_t(H), -3);
  sa_device_type dev = gpu ? SA_DEVICE_CUDA : SA_DEVICE_CPU;
  float *ds = gpu ? to_device(scores) : const_cast<float *>(scores.data());
  int64_t *dp = gpu ? to_device(pos) : const_cast<int64_t *>(pos.data());
  int32_t *df = gpu ? to_device(r.freed) : r.freed.data();
  sa_tensor ts = desc(ds, SA_DTYPE_F32, {H, n}, dev), tp = desc(dp, SA_DTYPE_I64, {H, n}, dev);
  sa_tensor tf = desc(df, SA_DTYPE_I32, {H, cap}, dev);
  r.status = sa_cache_evict(gpu ? c.gpu : c.cpu, &eo, &ts, &tp, &tf, r.counts.data());
  r.message = r.status == SA_OK ? "" : sa_last_error();
  if (gpu) {
    r.freed = to_host(df, r.freed.size());
    cudaFree(ds);
    cudaFree(dp);
    cudaFree(df);
  }
  return r;
}

// Every head chosen alone, as the CPU chooses: the same slots in the same order, the same
// counts, and nothing written past them; a refusal in a later head writes nothing and says
// what the CPU says.
TEST(CudaHeadEvict, ChoosesPerHeadAsTheCpu) {
  NEED_GPU(c);
  constexpr int H = 4;
  constexpr int64_t n = 900, cap = 300;
  std::mt19937_64 rng(41);
  std::vector<float> scores(size_t(H) * n);
  for (auto &s : scores) s = float(rng() % 400) / 8.f;  // ties happen: broken by position, then slot
  std::vector<int64_t> pos(size_t(H) * n);
  for (int h = 0; h < H; ++h) {
    std::vector<int64_t> p(static_cast<size_t>(n));
    std::iota(p.begin(), p.end(), int64_t(h) * 7);
    std::shuffle(p.begin(), p.end(), rng);
    for (int64_t r = 0; r < n; ++r) pos[size_t(h * n + r)] = rng() % (5 + h * 20) == 0 ? -1 : p[size_t(r)];
  }
  for (int variant = 0; variant < 3; ++variant) {
    sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
    eo.per_head = 1;
    eo.budget = 700;
    eo.incoming = 2;
    eo.recent_share = 0.3f;
    if (variant == 1) eo.score_mean = 0;      // raw scores
    if (variant == 2) eo.incoming = 0;        // prompt compression
    const EvictOut want = run_evict(c, false, eo, scores, pos, H, n, cap);
    const EvictOut got = run_evict(c, true, eo, scores, pos, H, n, cap);
    ASSERT_EQ(want.status, SA_OK) << want.message;
    ASSERT_EQ(got.status, SA_OK) << got.message;
    EXPECT_EQ(got.counts, want.counts) << "variant " << variant;
    EXPECT_EQ(got.freed, want.freed) << "variant " << variant;
    bool heads_differ = false;
    for (int h = 1; h < H; ++h) heads_differ |= want.counts[size_t(h)] != want.counts[0];
    EXPECT_TRUE(heads_differ) << "every head freed as many slots: the heads' own occupancy is not exercised";
    EXPECT_GT(std::accumulate(want.counts.begin(), want.counts.end(), int64_t(0)), 200);
  }

  // Refusals: a NaN score in head 2, a budget head 1 cannot meet (repeated positions), a
  // short freed. The device refuses as the CPU does and writes nothing.
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.per_head = 1;
  eo.budget = 700;
  eo.incoming = 2;
  std::vector<float> nan_scores = scores;
  nan_scores[size_t(2 * n + 77)] = NAN;
  std::vector<int64_t> crowded = pos;
  for (int64_t r = 0; r < n; ++r) crowded[size_t(1 * n + r)] = 2;  // every slot a sink: nothing evictable
  for (int k = 0; k < 3; ++k) {
    const std::vector<float> &s = k == 0 ? nan_scores : scores;
    const std::vector<int64_t> &p = k == 1 ? crowded : pos;
    const int64_t fcap = k == 2 ? 50 : cap;
    const EvictOut want = run_evict(c, false, eo, s, p, H, n, fcap);
    const EvictOut got = run_evict(c, true, eo, s, p, H, n, fcap);
    EXPECT_NE(want.status, SA_OK) << "case " << k;
    EXPECT_EQ(got.status, want.status) << "case " << k;
    EXPECT_EQ(got.message, want.message) << "case " << k;
    EXPECT_EQ(got.freed, std::vector<int32_t>(size_t(H) * fcap, -7)) << "written although refused, case " << k;
  }
}

// ---------------------------------------------------------- fixed-budget decode per KV head

// Step t's new token into every KV head's freed slot: K/V rows of that head, its position, zero
// mass. The host's "write rows" step, on the device (nothing goes through the host).
__global__ void write_token_kernel(const int32_t *freed, int64_t freed_stride, const uint16_t *k_new,
                                   const uint16_t *v_new, int64_t position, uint16_t *K, uint16_t *V, int64_t *pos,
                                   float *mass, int Hkv, int64_t B) {
  const int h = blockIdx.x;
  const int32_t s = freed[h * freed_stride];
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    K[(size_t(s) * Hkv + h) * D + d] = k_new[h * D + d];
    V[(size_t(s) * Hkv + h) * D + d] = v_new[h * D + d];
  }
  if (threadIdx.x == 0) {
    pos[h * B + s] = position;
    mass[h * B + s] = 0.f;
  }
}

// B slots filled by a prompt, then steps of: evict one slot per KV head (device slot mass and
// positions), write the new token into each head's slot, attend with the per-head positions
// and accumulate slot mass: densely, or (paged_select) over the selection of a device page
// index that learns each head's new token through sa_index_update_heads, every head's list
// judged against the double-precision page reference (head_page_reference.hpp), the CPU
// attending over the same lists. The CPU runs the same loop on host copies; every step's
// freed slots must be equal (or, at most twice, a near tie: the CPU's policy given the device's
// masses chooses the device's slot; the device then follows the CPU), outputs within tolerance
// of a double reference.
void run_head_decode(Ctx &c, bool paged_select) {
  constexpr int Hkv = 2, Hq = 8, G = Hq / Hkv, steps = 120, cap = 4;
  constexpr int64_t B = 256;
  std::mt19937_64 rng(51);
  const size_t row = size_t(Hkv) * D;
  Bf16Data K = random_bf16(rng, size_t(B) * row, 1.f), V = random_bf16(rng, size_t(B) * row, 1.f);
  std::vector<int64_t> pos(size_t(Hkv) * B);
  for (int h = 0; h < Hkv; ++h) std::iota(pos.begin() + h * B, pos.begin() + (h + 1) * B, 0);
  std::vector<float> mass(size_t(Hkv) * B, 0.f), out_cpu(size_t(Hq) * D);
  std::vector<int32_t> freed_cpu(size_t(Hkv) * cap, -1);

  uint16_t *dK = to_device(K.bits), *dV = to_device(V.bits);
  int64_t *dpos = to_device(pos);
  float *dmass = to_device(mass), *dout = to_device(out_cpu);
  int32_t *dfreed = to_device(freed_cpu);
  uint16_t *dnew = to_device(std::vector<uint16_t>(2 * row)), *dq = to_device(std::vector<uint16_t>(size_t(Hq) * D));

  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.per_head = 1;
  eo.budget = B;
  eo.incoming = 1;
  eo.window = 16;
  eo.recent_share = 0.25f;  // leaves room for the mass to decide
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;  // mass_decay 0.99, the eviction's default
  ao.causal = 1;
  sa_tensor cK = desc(K.bits.data(), SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CPU);
  sa_tensor cV = desc(V.bits.data(), SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CPU);
  sa_tensor gK = desc(dK, SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CUDA), gV = desc(dV, SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CUDA);

  // The page index over the cache (paged_select): pages of 16, 4 of the 16 chosen.
  constexpr int page = 16;
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 64;
  so.window = 16;
  so.sinks = 4;
  const int width = 4 + 16 + 64 + 8;
  sa_index *gix = nullptr;
  HeadPages ref(Hkv, D, page);
  std::vector<int32_t> sel(size_t(Hkv) * width, -1);
  int32_t *dsel = to_device(sel);
  if (paged_select) {
    const sa_index_options io = device_index_options(SA_SELECTOR_PAGE, Hkv, D, page);
    SA_OK_(sa_index_create(c.gpu, &io, &gix));
    SA_OK_(sa_index_append(gix, &gK));
    ref.append(K.values, B);
  }

  int by_mass = 0, heads_apart = 0, chosen_pages = 0, near_ties = 0;
  std::vector<float> gpu_mass = mass;  // the device's slot masses after the last step
  double worst_out = 0, worst_mass = 0;
  for (int t = 0; t < steps; ++t) {
    const int64_t p = B + t;
    const Bf16Data q = random_bf16(rng, size_t(Hq) * D, 2.f);
    const Bf16Data kv_new = random_bf16(rng, 2 * row, 1.f);  // K row then V row, [Hkv, D] each

    // 1. Evict one slot per KV head.
    std::vector<int64_t> n_cpu(Hkv), n_gpu(Hkv);
    sa_tensor cs = desc(mass.data(), SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CPU);
    sa_tensor cp = desc(pos.data(), SA_DTYPE_I64, {Hkv, B}, SA_DEVICE_CPU);
    sa_tensor cf = desc(freed_cpu.data(), SA_DTYPE_I32, {Hkv, cap}, SA_DEVICE_CPU);
    SA_OK_(sa_cache_evict(c.cpu, &eo, &cs, &cp, &cf, n_cpu.data()));
    sa_tensor gs = desc(dmass, SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CUDA);
    sa_tensor gp = desc(dpos, SA_DTYPE_I64, {Hkv, B}, SA_DEVICE_CUDA);
    sa_tensor gf = desc(dfreed, SA_DTYPE_I32, {Hkv, cap}, SA_DEVICE_CUDA);
    SA_OK_(sa_cache_evict(c.gpu, &eo, &gs, &gp, &gf, n_gpu.data()));
    ASSERT_EQ(n_gpu, n_cpu) << "step " << t;
    const std::vector<int32_t> freed_gpu = to_host(dfreed, freed_cpu.size());
    bool followed = false;
    for (int h = 0; h < Hkv; ++h) {
      ASSERT_EQ(n_cpu[size_t(h)], 1) << "step " << t;
      const int32_t sg = freed_gpu[size_t(h) * cap], sc = freed_cpu[size_t(h) * cap];
      if (sg != sc) {
        // Only a near tie of the two slots' ranked scores may part them: the CPU's policy given
        // the device's masses (equal to the CPU's within the masses' tolerance) must choose the
        // device's slot. The device then takes the CPU's slot, so the loops stay in step.
        std::vector<int32_t> check(freed_cpu.size(), -1);
        std::vector<int64_t> n_check(Hkv);
        sa_tensor ds = desc(gpu_mass.data(), SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CPU);
        sa_tensor df = desc(check.data(), SA_DTYPE_I32, {Hkv, cap}, SA_DEVICE_CPU);
        SA_OK_(sa_cache_evict(c.cpu, &eo, &ds, &cp, &df, n_check.data()));
        std::printf("step %d, head %d: the device freed slot %d, the CPU slot %d (masses %.9g and %.9g; on the "
                    "device %.9g and %.9g); the CPU given the device's masses: slot %d\n", t, h, sg, sc,
                    mass[size_t(h * B + sg)], mass[size_t(h * B + sc)], gpu_mass[size_t(h * B + sg)],
                    gpu_mass[size_t(h * B + sc)], check[size_t(h) * cap]);
        ASSERT_EQ(check[size_t(h) * cap], sg) << "head " << h << " at step " << t;
        ++near_ties;
        followed = true;
      }
      const int32_t s = freed_cpu[size_t(h) * cap];
      int64_t oldest = INT64_MAX;  // what StreamingLLM would evict
      for (int64_t r = 0; r < B; ++r)
        if (pos[size_t(h * B + r)] >= 4) oldest = std::min(oldest, pos[size_t(h * B + r)]);
      ASSERT_GE(pos[size_t(h * B + s)], 4) << "a sink was evicted";
      by_mass += pos[size_t(h * B + s)] != oldest;
    }
    heads_apart += pos[size_t(freed_cpu[0])] != pos[size_t(B + freed_cpu[cap])];
    if (followed) CUDA_OK(cudaMemcpy(dfreed, freed_cpu.data(), freed_cpu.size() * 4, cudaMemcpyHostToDevice));

    // 2. The new token goes into each head's own slot (host copies; the device by a kernel).
    for (int h = 0; h < Hkv; ++h) {
      const int32_t s = freed_cpu[size_t(h) * cap];
      for (int d = 0; d < D; ++d) {
        const size_t at = (size_t(s) * Hkv + h) * D + d, from = size_t(h) * D + d;
        K.bits[at] = kv_new.bits[from];
        K.values[at] = kv_new.values[from];
        V.bits[at] = kv_new.bits[row + from];
        V.values[at] = kv_new.values[row + from];
      }
      pos[size_t(h * B + s)] = p;
      mass[size_t(h * B + s)] = 0.f;
    }
    CUDA_OK(cudaMemcpy(dnew, kv_new.bits.data(), 2 * row * 2, cudaMemcpyHostToDevice));
    write_token_kernel<<<Hkv, 128>>>(dfreed, cap, dnew, dnew + row, p, dK, dV, dpos, dmass, Hkv, B);
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaMemcpy(dq, q.bits.data(), q.bits.size() * 2, cudaMemcpyHostToDevice));
    sa_tensor gq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
    if (paged_select) {  // the index learns each head's token in that head's slot, then selects
      std::vector<int32_t> slots(Hkv);
      for (int h = 0; h < Hkv; ++h) slots[size_t(h)] = freed_cpu[size_t(h) * cap];
      const std::vector<int64_t> at(Hkv, p);
      sa_tensor knew = desc(dnew, SA_DTYPE_BF16, {1, Hkv, D}, SA_DEVICE_CUDA);
      SA_OK_(sa_index_update_heads(gix, slots.data(), 1, &knew, at.data()));
      ref.refill_heads(kv_new.values, slots, at, 1);
      sa_tensor gs_ = desc(dsel, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
      SA_OK_(sa_select(gix, &gq, &so, &gs_));
      CUDA_OK(cudaDeviceSynchronize());
      sel = to_host(dsel, sel.size());
      for (int h = 0; h < Hkv; ++h)
        chosen_pages += ref.check_row(q.values.data() + size_t(h) * G * D, G, h, so, p, &sel[size_t(h) * width], width,
                                      "decode step");
    }

    // 3. Attend (densely, or over the selection) with the per-head positions (the query at p,
    // the largest any head holds), accumulating slot mass.
    sa_tensor csel = desc(sel.data(), SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CPU);
    sa_tensor gsel = desc(dsel, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
    sa_tensor cq = desc((void *)q.bits.data(), SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CPU);
    sa_tensor cm = desc(mass.data(), SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CPU);
    sa_tensor co = desc(out_cpu.data(), SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CPU);
    ao.slot_mass = &cm;
    ao.head_key_positions = pos.data();
    SA_OK_(sa_attend(c.cpu, &cq, &cK, &cV, paged_select ? &csel : nullptr, &ao, &co, nullptr));
    sa_tensor gm = desc(dmass, SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CUDA);
    sa_tensor go = desc(dout, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA);
    ao.slot_mass = &gm;
    ao.head_key_positions = dpos;
    SA_OK_(sa_attend(c.gpu, &gq, &gK, &gV, paged_select ? &gsel : nullptr, &ao, &go, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> out_gpu = to_host(dout, out_cpu.size()), mass_gpu = to_host(dmass, mass.size());
    ASSERT_EQ(to_host(dpos, pos.size()), pos) << "positions after step " << t;
    std::vector<int32_t> all(B);
    std::iota(all.begin(), all.end(), 0);
    for (int h = 0; h < Hq; ++h) {
      const int32_t *rows = paged_select ? &sel[size_t(h / G) * width] : all.data();
      const std::vector<double> want = reference_attention(q.values.data() + size_t(h) * D, K.values, V.values, Hkv, D,
                                                           h / G, rows, paged_select ? width : B, pos.data(), B, p);
      for (int d = 0; d < D; ++d) {
        worst_out = std::max(worst_out, std::fabs(out_gpu[size_t(h) * D + d] - want[size_t(d)]));
        worst_out = std::max(worst_out, std::fabs(out_cpu[size_t(h) * D + d] - want[size_t(d)]));
      }
    }
    worst_mass = std::max(worst_mass, max_rel_diff(mass_gpu, mass));
    gpu_mass = mass_gpu;
  }
  std::printf("per-head decode loop (%s): %d steps x %d KV heads, %d evictions other than the head's oldest, %d "
              "steps whose heads evicted different tokens, %d pages chosen, %d near ties, worst |out - double| %.3g, "
              "worst slot-mass relative difference device/CPU %.3g\n", paged_select ? "page index" : "dense", steps,
              Hkv, by_mass, heads_apart, chosen_pages, near_ties, worst_out, worst_mass);
  EXPECT_LE(near_ties, 2) << "evictions parted by near ties";
  EXPECT_LT(worst_out, 2e-5) << "outputs against the double reference";
  EXPECT_LT(worst_mass, 1e-4) << "slot mass, device against CPU";
  EXPECT_GT(by_mass, steps / 2) << "the loop must exercise the mass ranking, not only the oldest slot";
  EXPECT_GT(heads_apart, steps / 4) << "the heads must keep different tokens";
  if (paged_select) EXPECT_GE(chosen_pages, steps * Hkv * 2) << "the lists must hold chosen pages";
  sa_index_destroy(&gix);
  cudaFree(dK); cudaFree(dV); cudaFree(dpos); cudaFree(dmass); cudaFree(dout); cudaFree(dfreed); cudaFree(dnew);
  cudaFree(dq); cudaFree(dsel);
}

TEST(CudaHeadDecode, FixedBudgetPerHeadLoopMatchesCpu) {
  NEED_GPU(c);
  run_head_decode(c, false);
}

TEST(CudaHeadDecode, PerHeadLoopSelectingThroughADevicePageIndex) {
  NEED_GPU(c);
  run_head_decode(c, true);
}

}  // namespace
