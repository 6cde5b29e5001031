// Eviction on the GPU: slot mass accumulated by the device attend, sa_index_update on a device
// index, sa_cache_evict on device scores, and a fixed-budget decode loop run on the device
// beside the CPU path on the same values (same freed slots, same selections, outputs within
// tolerance of a double reference). Skips cleanly when no plugin or no device is present.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_helpers.cuh"
#include "sparseattn.h"

namespace {

// ------------------------------------------------------------------------------ slot mass

struct MassCase {
  int Hq, Hkv, n_q;
  int64_t n_kv;
  int width;  // 0: dense
  bool per_query_head, causal, rank1, with_lse;
  float decay;
  bool q_f32;  // F32 queries (the kernels without tensor cores)
};

// The device's slot mass against the CPU's on the same values, from a nonzero start.
void check_mass(Ctx &c, const MassCase &k, uint64_t seed) {
  constexpr int D = 128;
  std::mt19937_64 rng(seed);
  const Bf16Data q = random_bf16(rng, size_t(k.n_q) * k.Hq * D, 1.5f);
  const Bf16Data kk = random_bf16(rng, size_t(k.n_kv) * k.Hkv * D, 1.f);
  const Bf16Data v = random_bf16(rng, size_t(k.n_kv) * k.Hkv * D, 1.f);
  const int lists = k.per_query_head ? k.Hq : k.Hkv;
  std::vector<int32_t> idx(size_t(k.n_q) * lists * std::max(k.width, 1));
  for (auto &x : idx) {
    const int r = int(rng() % 12);
    x = r == 0 ? -1 : int32_t(rng() % k.n_kv);  // padding; duplicates happen and count twice
  }
  const int rows = k.rank1 ? 1 : k.Hkv;
  std::vector<float> mass0(size_t(rows) * k.n_kv);
  for (auto &m : mass0) m = float(rng() % 1000) / 1000.f;
  std::vector<float> mass_cpu = mass0, out(size_t(k.n_q) * k.Hq * D), lse(size_t(k.n_q) * k.Hq);

  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = k.causal;
  o.mass_decay = k.decay;
  const std::vector<int64_t> ms = k.rank1 ? std::vector<int64_t>{k.n_kv} : std::vector<int64_t>{k.Hkv, k.n_kv};
  sa_tensor cm = desc(mass_cpu.data(), SA_DTYPE_F32, ms, SA_DEVICE_CPU);
  o.slot_mass = &cm;
  sa_tensor tq = k.q_f32 ? desc((void *)q.values.data(), SA_DTYPE_F32, {k.n_q, k.Hq, D}, SA_DEVICE_CPU)
                         : desc((void *)q.bits.data(), SA_DTYPE_BF16, {k.n_q, k.Hq, D}, SA_DEVICE_CPU);
  sa_tensor tk = desc((void *)kk.bits.data(), SA_DTYPE_BF16, {k.n_kv, k.Hkv, D}, SA_DEVICE_CPU);
  sa_tensor tv = desc((void *)v.bits.data(), SA_DTYPE_BF16, {k.n_kv, k.Hkv, D}, SA_DEVICE_CPU);
  sa_tensor ti = desc(idx.data(), SA_DTYPE_I32, {k.n_q, lists, k.width}, SA_DEVICE_CPU);
  sa_tensor to = desc(out.data(), SA_DTYPE_F32, {k.n_q, k.Hq, D}, SA_DEVICE_CPU);
  sa_tensor tl = desc(lse.data(), SA_DTYPE_F32, {k.n_q, k.Hq}, SA_DEVICE_CPU);
  SA_OK_(sa_attend(c.cpu, &tq, &tk, &tv, k.width ? &ti : nullptr, &o, &to, k.with_lse ? &tl : nullptr));

  uint16_t *dq = to_device(q.bits), *dk = to_device(kk.bits), *dv = to_device(v.bits);
  float *dqf = to_device(q.values);
  int32_t *di = to_device(idx);
  float *dm = to_device(mass0), *dout = to_device(out), *dlse = to_device(lse);
  sa_tensor gm = desc(dm, SA_DTYPE_F32, ms, SA_DEVICE_CUDA);
  o.slot_mass = &gm;
  sa_tensor gq = k.q_f32 ? desc(dqf, SA_DTYPE_F32, {k.n_q, k.Hq, D}, SA_DEVICE_CUDA)
                         : desc(dq, SA_DTYPE_BF16, {k.n_q, k.Hq, D}, SA_DEVICE_CUDA);
  sa_tensor gk = desc(dk, SA_DTYPE_BF16, {k.n_kv, k.Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor gv = desc(dv, SA_DTYPE_BF16, {k.n_kv, k.Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor gi = desc(di, SA_DTYPE_I32, {k.n_q, lists, k.width}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_F32, {k.n_q, k.Hq, D}, SA_DEVICE_CUDA);
  sa_tensor gl = desc(dlse, SA_DTYPE_F32, {k.n_q, k.Hq}, SA_DEVICE_CUDA);
  SA_OK_(sa_attend(c.gpu, &gq, &gk, &gv, k.width ? &gi : nullptr, &o, &go, k.with_lse ? &gl : nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> mass_gpu = to_host(dm, mass0.size());
  EXPECT_LT(max_rel_diff(mass_gpu, mass_cpu), 2e-5) << "slot mass";
  // The call's own mass is there: the sums moved (a test that cannot pass on decay alone).
  double moved = 0;
  for (size_t i = 0; i < mass0.size(); ++i) moved += std::fabs(mass_gpu[i] - k.decay * mass0[i]);
  if (k.n_q > 0) EXPECT_GT(moved, 0.5 * k.n_q) << "no probability was added";
  cudaFree(dq); cudaFree(dqf); cudaFree(dk); cudaFree(dv); cudaFree(di); cudaFree(dm); cudaFree(dout); cudaFree(dlse);
}

TEST(CudaSlotMass, MatchesCpu) {
  NEED_GPU(c);
  check_mass(c, {8, 2, 1, 3000, 0, false, false, false, true, 0.99f}, 1);     // dense, [H_kv, n_kv]
  check_mass(c, {8, 2, 4, 2000, 0, false, true, true, false, 0.9f}, 2);       // causal, [n_kv], no lse
  check_mass(c, {8, 2, 1, 3000, 600, false, false, false, false, 0.99f}, 3);  // sparse
  check_mass(c, {8, 2, 3, 1000, 200, true, false, true, true, 1.f}, 4);       // per query head, plain sum
  check_mass(c, {4, 4, 2, 500, 100, false, true, false, true, 0.f}, 5);       // causal sparse, decay 0
  check_mass(c, {8, 2, 0, 400, 0, false, false, false, false, 0.5f}, 6);      // no queries: decay only
  // The tensor cores: a decode step's 32 heads over 8 KV heads summed in one [n_kv] row; a
  // group of 8 heads (a full column tile); rows past a tile's end and a strided causal prefix.
  check_mass(c, {32, 8, 1, 1000, 0, false, false, true, true, 0.99f}, 7);    // dense, [n_kv], 8 KV heads
  check_mass(c, {16, 2, 2, 777, 0, false, true, false, false, 0.99f}, 8);    // dense causal, groups of 8
  check_mass(c, {16, 2, 2, 777, 333, false, true, true, true, 0.9f}, 9);     // sparse, groups of 8, [n_kv]
  // The kernels without tensor cores: too many columns to stage (9 queries x 4 heads x 2 KV
  // heads in one row), and F32 queries (dense and sparse).
  check_mass(c, {8, 2, 9, 600, 0, false, true, true, true, 0.99f}, 10);
  check_mass(c, {8, 2, 2, 700, 0, false, false, false, true, 0.9f, true}, 11);
  check_mass(c, {8, 2, 2, 700, 150, false, true, false, true, 0.9f, true}, 12);
}

// ---------------------------------------------------------------- index update

// The same updates on a device index and a CPU index: every selection must agree.
TEST(CudaIndexUpdate, SelectionAfterUpdatesMatchesCpu) {
  NEED_GPU(c);
  constexpr int Hkv = 2, Hq = 8, D = 128;
  constexpr int64_t n = 1500;
  std::mt19937_64 rng(11);
  sa_index_options io = device_index_options(SA_SELECTOR_EXACT, Hkv, D);
  sa_index *gix = nullptr, *cix = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &gix));
  SA_OK_(sa_index_create(c.cpu, &io, &cix));
  const Bf16Data keys = random_bf16(rng, size_t(n) * Hkv * D, 1.f);
  uint16_t *dkeys = to_device(keys.bits);
  sa_tensor gk = desc(dkeys, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor ck = desc((void *)keys.bits.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_append(gix, &gk));
  SA_OK_(sa_index_append(cix, &ck));

  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 64;
  so.window = 32;
  so.sinks = 4;
  const int width = 100;
  auto compare = [&](const char *when) {
    const Bf16Data q = random_bf16(rng, size_t(2) * Hq * D, 2.f);
    std::vector<int32_t> want(size_t(2) * Hkv * width), got(want.size());
    uint16_t *dq = to_device(q.bits);
    int32_t *dout = to_device(got);
    sa_tensor cq = desc((void *)q.bits.data(), SA_DTYPE_BF16, {2, Hq, D}, SA_DEVICE_CPU);
    sa_tensor gq = desc(dq, SA_DTYPE_BF16, {2, Hq, D}, SA_DEVICE_CUDA);
    sa_tensor co = desc(want.data(), SA_DTYPE_I32, {2, Hkv, width}, SA_DEVICE_CPU);
    sa_tensor go = desc(dout, SA_DTYPE_I32, {2, Hkv, width}, SA_DEVICE_CUDA);
    SA_OK_(sa_select(cix, &cq, &so, &co));
    SA_OK_(sa_select(gix, &gq, &so, &go));
    CUDA_OK(cudaDeviceSynchronize());
    got = to_host(dout, got.size());
    EXPECT_EQ(got, want) << when;
    cudaFree(dq);
    cudaFree(dout);
  };
  compare("appends only");

  // Refill 40 slots (the newest among them) with new keys at new positions, shuffled.
  std::vector<int32_t> slots(n);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin() + 10, slots.end(), rng);
  slots.resize(40);
  slots[0] = int32_t(n - 1);  // the largest position is refilled: the next positions are recomputed
  std::vector<int64_t> pos(40);
  for (int i = 0; i < 40; ++i) pos[size_t(i)] = n + 100 + i * 3;
  const Bf16Data fresh = random_bf16(rng, size_t(40) * Hkv * D, 1.f);
  uint16_t *dfresh = to_device(fresh.bits);
  sa_tensor gf = desc(dfresh, SA_DTYPE_BF16, {40, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor cf = desc((void *)fresh.bits.data(), SA_DTYPE_BF16, {40, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_update(gix, slots.data(), 40, &gf, pos.data()));
  SA_OK_(sa_index_update(cix, slots.data(), 40, &cf, pos.data()));
  compare("after an update");

  // Appends continue after the largest position; an update without positions takes the next.
  sa_tensor gk2 = desc(dkeys, SA_DTYPE_BF16, {50, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor ck2 = desc((void *)keys.bits.data(), SA_DTYPE_BF16, {50, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_append(gix, &gk2));
  SA_OK_(sa_index_append(cix, &ck2));
  sa_tensor gf3 = desc(dfresh, SA_DTYPE_BF16, {3, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor cf3 = desc((void *)fresh.bits.data(), SA_DTYPE_BF16, {3, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_update(gix, slots.data() + 5, 3, &gf3, nullptr));
  SA_OK_(sa_index_update(cix, slots.data() + 5, 3, &cf3, nullptr));
  compare("after appends and a default-position update");

  // Refused: bad slots (checked by the core). A page index takes updates too (its selection
  // after them: head_index_test.cu).
  EXPECT_EQ(sa_index_update(gix, slots.data(), 1, &gf, nullptr), SA_ERR_SHAPE);  // keys hold 40 rows
  int32_t bad = int32_t(n + 50);
  sa_tensor g1 = desc(dfresh, SA_DTYPE_BF16, {1, Hkv, D}, SA_DEVICE_CUDA);
  EXPECT_EQ(sa_index_update(gix, &bad, 1, &g1, nullptr), SA_ERR_OUT_OF_RANGE);
  io.kind = SA_SELECTOR_PAGE;
  io.page.refine = 0;
  sa_index *pix = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &pix));
  SA_OK_(sa_index_append(pix, &gk));
  int32_t zero = 0;
  SA_OK_(sa_index_update(pix, &zero, 1, &g1, nullptr));
  sa_index_destroy(&pix);
  sa_index_destroy(&gix);
  sa_index_destroy(&cix);
  cudaFree(dkeys);
  cudaFree(dfresh);
}

// ------------------------------------------------------------------------------- evict

// sa_cache_evict on device scores and positions chooses what the CPU chooses from the same
// values, into a device or a host `freed`.
TEST(CudaEvict, DeviceScoresChooseAsTheCpu) {
  NEED_GPU(c);
  std::mt19937_64 rng(21);
  constexpr int64_t n = 700;
  constexpr int H = 2;
  std::vector<float> scores(size_t(H) * n);
  for (auto &s : scores) s = float(rng() % 100000) / 1000.f;
  std::vector<int64_t> pos(n);
  for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = i * 2;
  std::shuffle(pos.begin(), pos.end(), rng);
  pos[17] = -1;  // an empty slot
  pos[300] = -1;
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.budget = 600;
  eo.incoming = 3;
  std::vector<int32_t> want(200, -7), got_host(200, -7);
  int64_t n_want = 0, n_got = 0, n_host = 0;
  sa_tensor cs = desc(scores.data(), SA_DTYPE_F32, {H, n}, SA_DEVICE_CPU);
  sa_tensor cp = desc(pos.data(), SA_DTYPE_I64, {n}, SA_DEVICE_CPU);
  sa_tensor cf = desc(want.data(), SA_DTYPE_I32, {200}, SA_DEVICE_CPU);
  SA_OK_(sa_cache_evict(c.cpu, &eo, &cs, &cp, &cf, &n_want));
  ASSERT_GT(n_want, 100);
  float *ds = to_device(scores);
  int64_t *dp = to_device(pos);
  int32_t *dfreed = to_device(std::vector<int32_t>(400, -7));
  sa_tensor gs = desc(ds, SA_DTYPE_F32, {H, n}, SA_DEVICE_CUDA);
  sa_tensor gp = desc(dp, SA_DTYPE_I64, {n}, SA_DEVICE_CUDA);
  sa_tensor gf = desc(dfreed, SA_DTYPE_I32, {200}, SA_DEVICE_CUDA);
  gf.strides[0] = 2;  // strided: written element by element
  SA_OK_(sa_cache_evict(c.gpu, &eo, &gs, &gp, &gf, &n_got));
  EXPECT_EQ(n_got, n_want);
  const std::vector<int32_t> dev = to_host(dfreed, 400);
  for (int64_t i = 0; i < 200; ++i) {
    EXPECT_EQ(dev[size_t(2 * i)], i < n_want ? want[size_t(i)] : -7) << i;
    EXPECT_EQ(dev[size_t(2 * i + 1)], -7) << "written between the strided entries at " << i;
  }
  sa_tensor hf = desc(got_host.data(), SA_DTYPE_I32, {200}, SA_DEVICE_CPU);
  SA_OK_(sa_cache_evict(c.gpu, &eo, &gs, &cp, &hf, &n_host));  // device scores, host positions and freed
  EXPECT_EQ(n_host, n_want);
  EXPECT_EQ(got_host, want);
  cudaFree(ds);
  cudaFree(dp);
  cudaFree(dfreed);
}

// ----------------------------------------------------------------- fixed-budget decode loop

// A cache of `budget` slots filled by a prompt, then decode steps: evict one slot (device
// scores and positions), write the new token's K/V there, refill the index slot, select, and
// attend with slot mass. The CPU runs the same steps on host copies of the same values.
TEST(CudaDecode, FixedBudgetLoopMatchesCpu) {
  NEED_GPU(c);
  constexpr int Hkv = 2, Hq = 8, G = Hq / Hkv, D = 128, steps = 120;
  constexpr int64_t B = 256;
  std::mt19937_64 rng(31);
  const size_t row = size_t(Hkv) * D;
  Bf16Data K = random_bf16(rng, size_t(B) * row, 1.f), V = random_bf16(rng, size_t(B) * row, 1.f);
  std::vector<int64_t> positions(B);
  std::iota(positions.begin(), positions.end(), 0);
  std::vector<float> mass_cpu(size_t(Hkv) * B, 0.f);

  uint16_t *dK = to_device(K.bits), *dV = to_device(V.bits);
  int64_t *dpos = to_device(positions);
  float *dmass = to_device(mass_cpu);
  int32_t *dfreed = to_device(std::vector<int32_t>(4, -1));

  sa_index_options io = device_index_options(SA_SELECTOR_EXACT, Hkv, D);
  sa_index *gix = nullptr, *cix = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &gix));
  SA_OK_(sa_index_create(c.cpu, &io, &cix));
  sa_tensor gK = desc(dK, SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CUDA), gV = desc(dV, SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor cK = desc(K.bits.data(), SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CPU);
  sa_tensor cV = desc(V.bits.data(), SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CPU);
  SA_OK_(sa_index_append(gix, &gK));
  SA_OK_(sa_index_append(cix, &cK));

  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 48;
  so.window = 16;
  so.sinks = 4;
  const int width = 48 + 16 + 4;
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.budget = B;
  eo.incoming = 1;
  eo.window = 16;
  eo.recent_share = 0.25f;  // leaves room for the mass to decide
  sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;  // mass_decay 0.99, the eviction's default

  std::vector<int32_t> sel_cpu(size_t(Hkv) * width), freed_cpu(4);
  std::vector<float> out_cpu(size_t(Hq) * D);
  int32_t *dsel = to_device(sel_cpu);
  float *dout = to_device(out_cpu);
  int evicted_by_mass = 0;
  double worst_out = 0, worst_mass = 0;
  for (int t = 0; t < steps; ++t) {
    const int64_t p = B + t;
    const Bf16Data q = random_bf16(rng, size_t(Hq) * D, 2.f);
    const Bf16Data k_new = random_bf16(rng, row, 1.f), v_new = random_bf16(rng, row, 1.f);

    // 1. Evict: the device from its own scores and positions, the CPU from its copies.
    int64_t n_cpu = 0, n_gpu = 0;
    sa_tensor cs = desc(mass_cpu.data(), SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CPU);
    sa_tensor cp = desc(positions.data(), SA_DTYPE_I64, {B}, SA_DEVICE_CPU);
    sa_tensor cf = desc(freed_cpu.data(), SA_DTYPE_I32, {4}, SA_DEVICE_CPU);
    SA_OK_(sa_cache_evict(c.cpu, &eo, &cs, &cp, &cf, &n_cpu));
    sa_tensor gs = desc(dmass, SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CUDA);
    sa_tensor gp = desc(dpos, SA_DTYPE_I64, {B}, SA_DEVICE_CUDA);
    sa_tensor gf = desc(dfreed, SA_DTYPE_I32, {4}, SA_DEVICE_CUDA);
    SA_OK_(sa_cache_evict(c.gpu, &eo, &gs, &gp, &gf, &n_gpu));
    ASSERT_EQ(n_cpu, 1) << "step " << t;
    ASSERT_EQ(n_gpu, 1) << "step " << t;
    const int32_t slot = to_host(dfreed, 1)[0];
    ASSERT_EQ(slot, freed_cpu[0]) << "freed slot at step " << t;
    ASSERT_GE(positions[size_t(slot)], 4) << "a sink was evicted";
    int64_t oldest = INT64_MAX;  // what StreamingLLM would evict
    for (int64_t x : positions)
      if (x >= 4) oldest = std::min(oldest, x);
    evicted_by_mass += positions[size_t(slot)] != oldest;

    // 2. The new token takes the slot: K/V rows, its position, zero mass, the index slot.
    std::copy(k_new.bits.begin(), k_new.bits.end(), K.bits.begin() + size_t(slot) * row);
    std::copy(k_new.values.begin(), k_new.values.end(), K.values.begin() + size_t(slot) * row);
    std::copy(v_new.bits.begin(), v_new.bits.end(), V.bits.begin() + size_t(slot) * row);
    std::copy(v_new.values.begin(), v_new.values.end(), V.values.begin() + size_t(slot) * row);
    positions[size_t(slot)] = p;
    for (int h = 0; h < Hkv; ++h) mass_cpu[size_t(h) * B + slot] = 0.f;
    CUDA_OK(cudaMemcpy(dK + size_t(slot) * row, k_new.bits.data(), row * 2, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dV + size_t(slot) * row, v_new.bits.data(), row * 2, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dpos + slot, &p, sizeof p, cudaMemcpyHostToDevice));
    const float zero = 0.f;
    for (int h = 0; h < Hkv; ++h) CUDA_OK(cudaMemcpy(dmass + size_t(h) * B + slot, &zero, 4, cudaMemcpyHostToDevice));
    sa_tensor gk1 = desc(dK + size_t(slot) * row, SA_DTYPE_BF16, {1, Hkv, D}, SA_DEVICE_CUDA);
    sa_tensor ck1 = desc(K.bits.data() + size_t(slot) * row, SA_DTYPE_BF16, {1, Hkv, D}, SA_DEVICE_CPU);
    SA_OK_(sa_index_update(gix, &slot, 1, &gk1, &p));
    SA_OK_(sa_index_update(cix, &slot, 1, &ck1, &p));

    // 3. Select for the new token's query (default position: the index's largest, p).
    uint16_t *dq = to_device(q.bits);
    sa_tensor gq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
    sa_tensor cq = desc((void *)q.bits.data(), SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CPU);
    sa_tensor gsel = desc(dsel, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
    sa_tensor csel = desc(sel_cpu.data(), SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CPU);
    SA_OK_(sa_select(gix, &gq, &so, &gsel));
    SA_OK_(sa_select(cix, &cq, &so, &csel));
    CUDA_OK(cudaDeviceSynchronize());
    ASSERT_EQ(to_host(dsel, sel_cpu.size()), sel_cpu) << "selection at step " << t;

    // 4. Attend over the selection, accumulating slot mass (decayed 0.99 each step).
    sa_tensor cm = desc(mass_cpu.data(), SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CPU);
    sa_tensor co = desc(out_cpu.data(), SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CPU);
    ao.slot_mass = &cm;
    SA_OK_(sa_attend(c.cpu, &cq, &cK, &cV, &csel, &ao, &co, nullptr));
    sa_tensor gm = desc(dmass, SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CUDA);
    sa_tensor go = desc(dout, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA);
    ao.slot_mass = &gm;
    SA_OK_(sa_attend(c.gpu, &gq, &gK, &gV, &gsel, &ao, &go, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<float> out_gpu = to_host(dout, out_cpu.size()), mass_gpu = to_host(dmass, mass_cpu.size());
    for (int h = 0; h < Hq; ++h) {
      const std::vector<double> want = reference_attention(q.values.data() + size_t(h) * D, K.values, V.values, Hkv, D,
                                                           h / G, sel_cpu.data() + size_t(h / G) * width, width);
      for (int d = 0; d < D; ++d) {
        worst_out = std::max(worst_out, std::fabs(out_gpu[size_t(h) * D + d] - want[size_t(d)]));
        worst_out = std::max(worst_out, std::fabs(out_cpu[size_t(h) * D + d] - want[size_t(d)]));
      }
    }
    worst_mass = std::max(worst_mass, max_rel_diff(mass_gpu, mass_cpu));
    cudaFree(dq);
  }
  std::printf("decode loop: %d steps, %d evictions other than the oldest slot, worst |out - double| %.3g, "
              "worst slot-mass relative difference device/CPU %.3g\n", steps, evicted_by_mass, worst_out, worst_mass);
  EXPECT_LT(worst_out, 2e-5) << "outputs against the double reference";
  EXPECT_LT(worst_mass, 1e-4) << "slot mass, device against CPU";
  EXPECT_GT(evicted_by_mass, steps / 4) << "the loop must exercise the mass ranking, not only the oldest slot";
  sa_index_destroy(&gix);
  sa_index_destroy(&cix);
  cudaFree(dK); cudaFree(dV); cudaFree(dpos); cudaFree(dmass); cudaFree(dfreed); cudaFree(dsel); cudaFree(dout);
}

}  // namespace
