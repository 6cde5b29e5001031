// Device memory the host controls (sa_context_options.cuda_allocator): every byte the plugin
// uses for a context and its indexes comes from the host's hook and goes back to it when they
// are destroyed; a decode loop of one shape allocates nothing after its first step. The hook
// here counts; the device's default pool (which the plugin uses without a hook) shows that
// nothing was allocated around it. Skips cleanly when no plugin or no device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "cuda_helpers.cuh"
#include "sparseattn.h"

namespace {

// A host allocator that counts: cudaMalloc underneath, every live block remembered.
struct Counting {
  std::mutex m;
  std::map<void *, size_t> live;
  size_t live_bytes = 0, limit = SIZE_MAX;
  int64_t allocs = 0, frees = 0, refused = 0;
  int wrong_device = 0, wrong_stream = 0, unknown_frees = 0, misaligned = 0;
  std::vector<void *> streams;  // the streams allocations are expected on
  bool expected(void *s) const { return std::find(streams.begin(), streams.end(), s) != streams.end(); }
};

void *counting_alloc(void *user, size_t bytes, int32_t device_id, void *stream) {
  auto &c = *static_cast<Counting *>(user);
  std::lock_guard<std::mutex> lock(c.m);
  if (bytes == 0 || c.live_bytes + bytes > c.limit) {
    ++c.refused;
    return nullptr;
  }
  int now = -1;
  cudaGetDevice(&now);
  c.wrong_device += device_id != 0 || now != device_id;
  c.wrong_stream += !c.expected(stream);
  void *p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) return nullptr;
  c.misaligned += reinterpret_cast<uintptr_t>(p) % 256 != 0;
  c.live[p] = bytes;
  c.live_bytes += bytes;
  ++c.allocs;
  return p;
}

// cudaFree waits for the device, which satisfies any stream ordering.
void counting_free(void *user, void *p, size_t bytes, int32_t device_id, void *stream) {
  auto &c = *static_cast<Counting *>(user);
  std::lock_guard<std::mutex> lock(c.m);
  auto it = c.live.find(p);
  if (it == c.live.end() || it->second != bytes) {
    ++c.unknown_frees;
    return;
  }
  c.wrong_device += device_id != 0;
  c.wrong_stream += !c.expected(stream) && stream != nullptr;
  c.live.erase(it);
  c.live_bytes -= bytes;
  ++c.frees;
  cudaFree(p);
}

sa_context *hooked_context(Counting &count, cudaStream_t stream) {
  // README: begin
  sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
  o.device = SA_DEVICE_CUDA;
  o.cuda_stream = stream;
  o.cuda_allocator.alloc = counting_alloc;  // void *(void *user, size_t, int32_t device, void *stream)
  o.cuda_allocator.free = counting_free;    // void (void *user, void *, size_t, int32_t device, void *stream)
  o.cuda_allocator.user = &count;
  // README: end
  count.streams.push_back(stream);
  sa_context *ctx = nullptr;
  EXPECT_EQ(sa_context_create(&o, &ctx), SA_OK) << sa_last_error();
  return ctx;
}

std::vector<uint16_t> random_bits(std::mt19937_64 &rng, size_t n, float sd) {
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<uint16_t> v(n);
  for (auto &x : v) x = to_bf16(nd(rng));
  return v;
}

// One layer's decode steps on a context: evict a slot by device slot mass, refill its K row and
// the index slot, select, attend with slot mass. Run on a hooked context and on the default
// one, from the same data: the outputs must agree bit for bit.
struct DecodeLayer {
  static constexpr int Hkv = 2, Hq = 8, D = 128, top_k = 48, window = 16, sinks = 4, width = top_k + window + sinks;
  static constexpr int64_t B = 5000;  // past the 4096 slots an index starts with: it grows once
  sa_context *ctx;
  cudaStream_t stream;
  sa_index *ix = nullptr;
  uint16_t *K = nullptr, *V = nullptr, *q = nullptr;
  int64_t *pos = nullptr;
  float *mass = nullptr, *out = nullptr;
  int32_t *sel = nullptr, *freed = nullptr;

  DecodeLayer(sa_context *c, cudaStream_t s, uint64_t seed) : ctx(c), stream(s) {
    std::mt19937_64 rng(seed);
    K = to_device(random_bits(rng, size_t(B) * Hkv * D, 1.f));
    V = to_device(random_bits(rng, size_t(B) * Hkv * D, 1.f));
    q = to_device(random_bits(rng, size_t(Hq) * D, 2.f));
    std::vector<int64_t> p(B);
    for (int64_t i = 0; i < B; ++i) p[size_t(i)] = i;
    pos = to_device(p);
    mass = to_device(std::vector<float>(size_t(Hkv) * B, 0.f));
    out = to_device(std::vector<float>(size_t(Hq) * D, 0.f));
    sel = to_device(std::vector<int32_t>(size_t(Hkv) * width, -1));
    freed = to_device(std::vector<int32_t>(4, -1));
    sa_index_options io = device_index_options(SA_SELECTOR_EXACT, Hkv, D);
    EXPECT_EQ(sa_index_create(ctx, &io, &ix), SA_OK) << sa_last_error();
    sa_tensor keys = desc(K, SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CUDA);
    EXPECT_EQ(sa_index_append(ix, &keys), SA_OK) << sa_last_error();
  }
  ~DecodeLayer() {
    sa_index_destroy(&ix);
    for (void *p : {(void *)K, (void *)V, (void *)q, (void *)pos, (void *)mass, (void *)out, (void *)sel, (void *)freed})
      cudaFree(p);
  }

  // Returns the step's output.
  std::vector<float> step(int t) {
    sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
    eo.budget = B;
    eo.incoming = 1;
    eo.window = window;
    sa_tensor gs = desc(mass, SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CUDA);
    sa_tensor gp = desc(pos, SA_DTYPE_I64, {B}, SA_DEVICE_CUDA);
    sa_tensor gf = desc(freed, SA_DTYPE_I32, {4}, SA_DEVICE_CUDA);
    int64_t n_freed = 0;
    EXPECT_EQ(sa_cache_evict(ctx, &eo, &gs, &gp, &gf, &n_freed), SA_OK) << sa_last_error();
    EXPECT_EQ(n_freed, 1);
    const int32_t slot = to_host(freed, 1)[0];
    const int64_t p = B + t;
    EXPECT_EQ(cudaMemcpy(pos + slot, &p, sizeof p, cudaMemcpyHostToDevice), cudaSuccess);
    sa_tensor k1 = desc(K + size_t(slot) * Hkv * D, SA_DTYPE_BF16, {1, Hkv, D}, SA_DEVICE_CUDA);
    EXPECT_EQ(sa_index_update(ix, &slot, 1, &k1, &p), SA_OK) << sa_last_error();
    sa_select_options so = SA_SELECT_OPTIONS_INIT;
    so.top_k = top_k;
    so.window = window;
    so.sinks = sinks;
    sa_tensor tq = desc(q, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
    sa_tensor ts = desc(sel, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
    EXPECT_EQ(sa_select(ix, &tq, &so, &ts), SA_OK) << sa_last_error();
    sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
    sa_tensor tm = desc(mass, SA_DTYPE_F32, {Hkv, B}, SA_DEVICE_CUDA);
    ao.slot_mass = &tm;
    sa_tensor tk = desc(K, SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CUDA);
    sa_tensor tv = desc(V, SA_DTYPE_BF16, {B, Hkv, D}, SA_DEVICE_CUDA);
    sa_tensor to = desc(out, SA_DTYPE_F32, {1, Hq, D}, SA_DEVICE_CUDA);
    EXPECT_EQ(sa_attend(ctx, &tq, &tk, &tv, &ts, &ao, &to, nullptr), SA_OK) << sa_last_error();
    // Dense too: the other kernel path and its split buffers.
    sa_attend_options dense = SA_ATTEND_OPTIONS_INIT;
    EXPECT_EQ(sa_attend(ctx, &tq, &tk, &tv, nullptr, &dense, &to, nullptr), SA_OK) << sa_last_error();
    EXPECT_EQ(sa_attend(ctx, &tq, &tk, &tv, &ts, &ao, &to, nullptr), SA_OK) << sa_last_error();
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    return to_host(out, size_t(Hq) * D);
  }
};

TEST(CudaMemory, EverythingComesFromTheHostsAllocatorAndGoesBack) {
  NEED_GPU(c);
  cudaStream_t s = nullptr, plain_s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&plain_s, cudaStreamNonBlocking));
  CUDA_OK(cudaDeviceSynchronize());
  const size_t pool_before = pool_used();
  Counting count;
  sa_context *ctx = hooked_context(count, s);
  ASSERT_NE(ctx, nullptr);
  auto layer = std::make_unique<DecodeLayer>(ctx, s, 7);
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(pool_used(), pool_before) << "the plugin allocated outside the hook";
  // 5000 keys: one allocation of 8192 slots (4096 doubled until they fit), nothing else yet.
  const size_t key_bytes = size_t(DecodeLayer::Hkv) * 8192 * DecodeLayer::D * 2;
  EXPECT_EQ(count.allocs, 1);
  EXPECT_EQ(count.live_bytes, key_bytes);

  // The same steps on a context without a hook, from the same data: the same outputs.
  sa_context_options po = SA_CONTEXT_OPTIONS_INIT;
  po.device = SA_DEVICE_CUDA;
  po.cuda_stream = plain_s;
  sa_context *plain = nullptr;
  SA_OK_(sa_context_create(&po, &plain));
  int64_t after_first = 0;
  {
    DecodeLayer ref(plain, plain_s, 7);
    for (int t = 0; t < 12; ++t) {
      const std::vector<float> got = layer->step(t), want = ref.step(t);
      ASSERT_EQ(got, want) << "step " << t;
      bool finite = true;
      for (float x : got) finite &= std::isfinite(x);
      ASSERT_TRUE(finite) << "step " << t;
      if (t == 0) {
        after_first = count.allocs;
        EXPECT_GT(count.allocs, 4) << "a step needs buffers (positions, staging, selection, attention, eviction)";
      }
    }
  }
  sa_context_destroy(&plain);
  EXPECT_EQ(count.allocs, after_first) << "steps of one shape allocate after the first";
  EXPECT_EQ(pool_used(), pool_before) << "the plugin allocated outside the hook";

  // The index's storage goes back with it: keys, positions (8 bytes a slot since the first
  // update), staging (256 updates' slots and positions); the context's buffers stay.
  const size_t live_with_index = count.live_bytes;
  layer.reset();
  EXPECT_EQ(live_with_index - count.live_bytes, key_bytes + 8192 * 8 + 256 * (4 + 8));
  const int64_t live_blocks = int64_t(count.live.size());
  EXPECT_GT(live_blocks, 0) << "the context keeps its stream buffers until it is destroyed";
  sa_context_destroy(&ctx);
  std::printf("hooked context: %lld allocations, %lld frees, %lld blocks live before destroy, %zu bytes live with the index\n",
              (long long)count.allocs, (long long)count.frees, (long long)live_blocks, live_with_index);
  EXPECT_EQ(count.live_bytes, 0u) << "destroy gave everything back";
  EXPECT_EQ(count.allocs, count.frees);
  EXPECT_EQ(count.unknown_frees, 0);
  EXPECT_EQ(count.wrong_device, 0);
  EXPECT_EQ(count.wrong_stream, 0);
  EXPECT_EQ(count.misaligned, 0);
  EXPECT_EQ(count.refused, 0);
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(pool_used(), pool_before);
  cudaStreamDestroy(s);
  cudaStreamDestroy(plain_s);
}

// Without a hook, the context's buffers and the index's storage come from the default pool
// and are all back in it after destroy.
TEST(CudaMemory, DefaultPoolIsEmptiedByDestroy) {
  NEED_GPU(c);
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CUDA_OK(cudaDeviceSynchronize());
  const size_t before = pool_used();
  sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
  o.device = SA_DEVICE_CUDA;
  o.cuda_stream = s;
  sa_context *ctx = nullptr;
  SA_OK_(sa_context_create(&o, &ctx));
  {
    DecodeLayer layer(ctx, s, 9);
    for (int t = 0; t < 3; ++t) layer.step(t);
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_GT(pool_used(), before) << "storage and buffers from cudaMallocAsync";
  }
  sa_context_destroy(&ctx);
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(pool_used(), before) << "sa_index_destroy and sa_context_destroy gave everything back";
  cudaStreamDestroy(s);
}

// A capacity hint sizes the storage once; a selection on another stream than the index's
// makes the growth wait for it, and the grown index selects as one that never grew.
TEST(CudaMemory, CapacitySizesTheIndexAndGrowthKeepsSelections) {
  NEED_GPU(c);
  cudaStream_t s = nullptr, other = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  Counting count;
  count.streams.push_back(other);  // selections there have their buffers there
  sa_context *ctx = hooked_context(count, s);
  ASSERT_NE(ctx, nullptr);
  constexpr int Hkv = 2, Hq = 8, D = 64, P = 16;
  constexpr int64_t N = 9000;
  std::mt19937_64 rng(5);
  uint16_t *K = to_device(random_bits(rng, size_t(N) * Hkv * D, 1.f));
  uint16_t *q = to_device(random_bits(rng, size_t(2) * Hq * D, 2.f));
  sa_index_options io = device_index_options(SA_SELECTOR_PAGE, Hkv, D, P);
  io.capacity = 10000;
  sa_index *sized = nullptr, *grown = nullptr;
  SA_OK_(sa_index_create(ctx, &io, &sized));
  io.capacity = 0;
  SA_OK_(sa_index_create(ctx, &io, &grown));
  EXPECT_EQ(count.allocs, 0) << "nothing before the first append";

  sa_tensor all = desc(K, SA_DTYPE_BF16, {N, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(sized, &all));
  EXPECT_EQ(count.allocs, 3) << "page codes, their scales, the partial page's bounds; a page index keeps no keys";
  // Per page and KV head 2 D int8 codes and an f32 scale and magnitude; the partial last
  // page's f32 min and max twice over (an append reads one copy and writes the other).
  const size_t bound_bytes = size_t(Hkv) * (10000 / P) * (2 * D + 8), open_bytes = size_t(4) * Hkv * D * 4;
  EXPECT_EQ(count.live_bytes, bound_bytes + open_bytes);

  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 128;
  so.window = 16;
  so.sinks = 4;
  so.cuda_stream = other;
  const int width = 128 + 16 + 4;
  int32_t *o1 = to_device(std::vector<int32_t>(size_t(2) * Hkv * width, -7));
  int32_t *o2 = to_device(std::vector<int32_t>(size_t(2) * Hkv * width, -7));
  sa_tensor tq = desc(q, SA_DTYPE_BF16, {2, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor t1 = desc(o1, SA_DTYPE_I32, {2, Hkv, width}, SA_DEVICE_CUDA);
  sa_tensor t2 = desc(o2, SA_DTYPE_I32, {2, Hkv, width}, SA_DEVICE_CUDA);
  // The grown index: 3000 keys, a selection on the other stream, then appends that grow it
  // twice (4096 -> 8192 -> 16384) while that selection may still be queued.
  sa_tensor first = desc(K, SA_DTYPE_BF16, {3000, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(grown, &first));
  SA_OK_(sa_select(grown, &tq, &so, &t2));
  sa_tensor mid = desc(K + size_t(3000) * Hkv * D, SA_DTYPE_BF16, {3000, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(grown, &mid));
  SA_OK_(sa_select(grown, &tq, &so, &t2));
  sa_tensor rest = desc(K + size_t(6000) * Hkv * D, SA_DTYPE_BF16, {N - 6000, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(grown, &rest));
  SA_OK_(sa_select(grown, &tq, &so, &t2));
  SA_OK_(sa_select(sized, &tq, &so, &t1));
  CUDA_OK(cudaDeviceSynchronize());
  const auto a = to_host(o1, size_t(2) * Hkv * width), b = to_host(o2, size_t(2) * Hkv * width);
  EXPECT_EQ(a, b) << "the grown index selects as the sized one";
  int chosen = 0;
  for (int32_t x : a) chosen += x >= 0;
  EXPECT_EQ(chosen, 2 * Hkv * width);
  sa_index_destroy(&sized);
  sa_index_destroy(&grown);
  sa_context_destroy(&ctx);
  EXPECT_EQ(count.live_bytes, 0u);
  EXPECT_EQ(count.allocs, count.frees);
  EXPECT_EQ(count.unknown_frees, 0);
  EXPECT_EQ(count.wrong_stream, 0);
  cudaFree(K); cudaFree(q); cudaFree(o1); cudaFree(o2);
  cudaStreamDestroy(s);
  cudaStreamDestroy(other);
}

// A hook out of memory: the call fails with SA_ERR_OUT_OF_MEMORY and a message, nothing leaks,
// and with memory again the same calls succeed.
TEST(CudaMemory, AHookOutOfMemoryFailsTheCallCleanly) {
  NEED_GPU(c);
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Counting count;
  count.limit = 4096 * 2 * 64 * 2 - 1;  // less than an index's first storage
  sa_context *ctx = hooked_context(count, s);
  ASSERT_NE(ctx, nullptr);
  std::mt19937_64 rng(3);
  uint16_t *K = to_device(random_bits(rng, size_t(100) * 2 * 64, 1.f));
  sa_index_options io = device_index_options(SA_SELECTOR_EXACT, 2, 64);
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(ctx, &io, &ix));
  sa_tensor keys = desc(K, SA_DTYPE_BF16, {100, 2, 64}, SA_DEVICE_CUDA);
  EXPECT_EQ(sa_index_append(ix, &keys), SA_ERR_OUT_OF_MEMORY);
  EXPECT_NE(std::string(sa_last_error()).find("cuda_allocator returned no memory"), std::string::npos)
      << sa_last_error();
  EXPECT_EQ(count.refused, 1);
  EXPECT_EQ(count.live_bytes, 0u);
  sa_index_destroy(&ix);
  count.limit = SIZE_MAX;
  SA_OK_(sa_index_create(ctx, &io, &ix));
  SA_OK_(sa_index_append(ix, &keys));
  sa_index_destroy(&ix);
  sa_context_destroy(&ctx);
  EXPECT_EQ(count.live_bytes, 0u);
  EXPECT_EQ(count.unknown_frees, 0);
  cudaFree(K);
  cudaStreamDestroy(s);
}

}  // namespace
