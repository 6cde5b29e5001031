// Device exact indexes that borrow the host's keys (borrow_keys): they keep no copy (positions
// only, once refilled) and each sa_select reads K from opt->keys, which may be any view of the
// host's cache (token-major K/V blocks, padded heads). They must select exactly what an owning
// device index and the CPU exact index select, per KV head and per query head, before and after
// sa_index_update / sa_index_update_heads and appends, on both top-k paths (one block under
// 16K slots, passes over many blocks from there). Bad keys are refused with the CPU's codes
// and leave the output alone. Skips without a GPU.
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_helpers.cuh"

namespace {

constexpr int D = 128, Hkv = 2, Hq = 8;

// The host's K cache on the device and on the host: slot s of head h at
// s * row + h * head + d (row >= Hkv * head, head >= D), the rest filler.
struct HostCache {
  int64_t slots = 0, row = 0, head = 0;
  std::vector<uint16_t> bits;  // the host copy, same layout
  uint16_t *dev = nullptr;
  HostCache(int64_t n, int64_t row_, int64_t head_) : slots(n), row(row_), head(head_) {
    bits.assign(size_t(n * row), to_bf16(7.f));  // filler: never read as a key
    dev = to_device(bits);
  }
  ~HostCache() { cudaFree(dev); }
  // Host copy first; upload() sends the whole cache.
  void put(int64_t slot, int h, const uint16_t *key) { std::copy_n(key, D, bits.begin() + slot * row + h * head); }
  void upload() { cudaMemcpy(dev, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice); }
  sa_tensor view(int64_t n) const {
    sa_tensor t = desc(dev, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
    t.strides[0] = row;
    t.strides[1] = head;
    t.strides[2] = 1;
    return t;
  }
};

// Three indexes fed the same calls: device owning, device borrowing, CPU owning.
struct Trio {
  sa_index *own = nullptr, *borrow = nullptr, *cpu = nullptr;
  ~Trio() {
    sa_index_destroy(&own);
    sa_index_destroy(&borrow);
    sa_index_destroy(&cpu);
  }
};

// keys [n, Hkv, D] contiguous bf16: appended to all three (the borrowing one through the
// cache's strided view, which it only validates), and written into the cache at slots
// first .. first + n - 1.
void append_all(Trio &t, HostCache &cache, const Bf16Data &k, int64_t first, int64_t n) {
  for (int64_t s = 0; s < n; ++s)
    for (int h = 0; h < Hkv; ++h) cache.put(first + s, h, &k.bits[size_t((s * Hkv + h) * D)]);
  cache.upload();
  uint16_t *dk = to_device(k.bits);
  sa_tensor g = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor c = desc((void *)k.bits.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
  sa_tensor v = cache.view(first + n);
  v.data = cache.dev + first * cache.row;
  v.shape[0] = n;
  SA_OK_(sa_index_append(t.own, &g));
  SA_OK_(sa_index_append(t.borrow, &v));
  SA_OK_(sa_index_append(t.cpu, &c));
  CUDA_OK(cudaDeviceSynchronize());
  cudaFree(dk);
}

// A refill of n slots: single set (per_head false: slots[i] and pos[i] for every head) or per
// KV head (Hkv * n each). The cache gets the new keys in the same places.
void refill_all(Trio &t, HostCache &cache, const Bf16Data &k, const std::vector<int32_t> &slots,
                const std::vector<int64_t> &pos, int64_t n, bool per_head) {
  for (int h = 0; h < Hkv; ++h)
    for (int64_t i = 0; i < n; ++i)
      cache.put(slots[size_t(per_head ? h * n + i : i)], h, &k.bits[size_t((i * Hkv + h) * D)]);
  cache.upload();
  uint16_t *dk = to_device(k.bits);
  sa_tensor g = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  sa_tensor c = desc((void *)k.bits.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
  auto update = per_head ? sa_index_update_heads : sa_index_update;
  SA_OK_(update(t.own, slots.data(), n, &g, pos.data()));
  SA_OK_(update(t.borrow, slots.data(), n, &g, pos.data()));
  SA_OK_(update(t.cpu, slots.data(), n, &c, pos.data()));
  CUDA_OK(cudaDeviceSynchronize());
  cudaFree(dk);
}

// n_q bf16 queries selected by all three; the borrowing index reads the whole cache's view
// (longer than the index). Returns the three row sets [n_q][lists][width].
void select_all(Trio &t, const HostCache &cache, const Bf16Data &q, int n_q, sa_select_options so, int width,
                std::vector<int32_t> (&rows)[3]) {
  const int lists = so.per_query_head ? Hq : Hkv;
  const std::vector<int32_t> poison(size_t(n_q) * lists * width, -7);
  uint16_t *dq = to_device(q.bits);
  sa_tensor gq = desc(dq, SA_DTYPE_BF16, {n_q, Hq, D}, SA_DEVICE_CUDA);
  const sa_tensor keys = cache.view(cache.slots);  // longer than the index: rows past its size are not read
  for (int k = 0; k < 2; ++k) {
    int32_t *dout = to_device(poison);
    sa_tensor go = desc(dout, SA_DTYPE_I32, {n_q, lists, width}, SA_DEVICE_CUDA);
    so.keys = k == 1 ? &keys : nullptr;
    SA_OK_(sa_select(k == 0 ? t.own : t.borrow, &gq, &so, &go));
    CUDA_OK(cudaDeviceSynchronize());
    rows[k] = to_host(dout, poison.size());
    cudaFree(dout);
  }
  cudaFree(dq);
  rows[2] = poison;
  sa_tensor cq = desc((void *)q.bits.data(), SA_DTYPE_BF16, {n_q, Hq, D}, SA_DEVICE_CPU);
  sa_tensor co = desc(rows[2].data(), SA_DTYPE_I32, {n_q, lists, width}, SA_DEVICE_CPU);
  so.keys = nullptr;
  SA_OK_(sa_select(t.cpu, &cq, &so, &co));
}

// One run over a cache of n slots laid out as (row, head) strides.
void check_borrowed(Ctx &c, int64_t n, int64_t row, int64_t head, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t extra = 64;  // appended at the end
  HostCache cache(n + extra, row, head);
  sa_index_options io = device_index_options(SA_SELECTOR_EXACT, Hkv, D);
  Trio t;
  SA_OK_(sa_index_create(c.gpu, &io, &t.own));
  SA_OK_(sa_index_create(c.cpu, &io, &t.cpu));
  io.borrow_keys = 1;
  SA_OK_(sa_index_create(c.gpu, &io, &t.borrow));

  // The first append: the owning index stores n keys (at least 2 bytes each), the borrowing
  // one nothing.
  const Bf16Data k0 = random_bf16(rng, size_t(n) * Hkv * D, 1.f);
  {
    uint16_t *dk = to_device(k0.bits);
    sa_tensor g = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
    for (int64_t s = 0; s < n; ++s)
      for (int h = 0; h < Hkv; ++h) cache.put(s, h, &k0.bits[size_t((s * Hkv + h) * D)]);
    cache.upload();
    CUDA_OK(cudaDeviceSynchronize());
    const size_t before = pool_used();
    const sa_tensor v = cache.view(n);
    SA_OK_(sa_index_append(t.borrow, &v));
    CUDA_OK(cudaDeviceSynchronize());
    const size_t borrowed = pool_used() - before;
    SA_OK_(sa_index_append(t.own, &g));
    CUDA_OK(cudaDeviceSynchronize());
    const size_t owned = pool_used() - before - borrowed;
    EXPECT_EQ(borrowed, 0u) << "a borrowing exact index keeps no keys";
    EXPECT_GE(owned, size_t(n) * Hkv * D * 2) << "the owning index's copy";
    sa_tensor cc = desc((void *)k0.bits.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
    SA_OK_(sa_index_append(t.cpu, &cc));
    cudaFree(dk);
  }

  int64_t size = n;
  auto compare = [&](const char *when) {
    for (int per_head = 0; per_head < 2; ++per_head) {
      SCOPED_TRACE(std::string(when) + (per_head ? ", per query head" : ", per KV head"));
      sa_select_options so = SA_SELECT_OPTIONS_INIT;
      so.top_k = 300;
      so.window = 32;
      so.sinks = 4;
      so.per_query_head = per_head;
      const int width = 4 + 32 + 300 + 40;  // room for repeated sinks after refills
      const int n_q = 2;
      const Bf16Data q = random_bf16(rng, size_t(n_q) * Hq * D, 2.f);
      std::vector<int32_t> rows[3];
      ASSERT_NO_FATAL_FAILURE(select_all(t, cache, q, n_q, so, width, rows));
      EXPECT_EQ(rows[1], rows[0]) << "borrowing against owning device index";
      EXPECT_EQ(rows[1], rows[2]) << "borrowing device index against the CPU's";
      int listed = 0;
      for (int32_t x : rows[1]) listed += x >= 0;
      EXPECT_GE(listed, n_q * (per_head ? Hq : Hkv) * 300) << "top_k scored slots in every list";
    }
  };
  compare("after the first append");

  // A single-set refill: old tokens again, a sink, and new ones past every position.
  std::vector<int32_t> slots(120);
  std::vector<int64_t> pos(120);
  {
    std::vector<int32_t> all(static_cast<size_t>(size));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    for (size_t i = 0; i < slots.size(); ++i) {
      slots[i] = all[i];
      pos[i] = i == 0 ? 1 : i % 3 == 0 ? int64_t(rng() % size) : size + 10 + int64_t(i);
    }
    const Bf16Data k = random_bf16(rng, slots.size() * Hkv * D, 1.f);
    ASSERT_NO_FATAL_FAILURE(refill_all(t, cache, k, slots, pos, int64_t(slots.size()), false));
  }
  compare("after sa_index_update");
  // Per KV head: different slots and positions in each head.
  {
    const int64_t m = 80;
    std::vector<int32_t> hs;
    std::vector<int64_t> hp;
    for (int h = 0; h < Hkv; ++h) {
      std::vector<int32_t> all(static_cast<size_t>(size));
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      for (int64_t i = 0; i < m; ++i) {
        hs.push_back(all[size_t(i)]);
        hp.push_back(i % 2 ? int64_t(rng() % size) : size + 500 + h * 3 + i * 2);
      }
    }
    const Bf16Data k = random_bf16(rng, size_t(m) * Hkv * D, 1.f);
    ASSERT_NO_FATAL_FAILURE(refill_all(t, cache, k, hs, hp, m, true));
  }
  compare("after sa_index_update_heads");
  const Bf16Data k2 = random_bf16(rng, size_t(extra) * Hkv * D, 1.f);
  ASSERT_NO_FATAL_FAILURE(append_all(t, cache, k2, size, extra));
  size += extra;
  compare("after more appends");
}

TEST(CudaBorrow, ExactIndexSelectsAsOwningOnesFromTheHostsKeys) {
  NEED_GPU(c);
  {
    SCOPED_TRACE("K of a token-major [n, 2 H_kv, D] K/V block, 3000 slots (one-block top-k)");
    check_borrowed(c, 3000, 2 * Hkv * D, D, 71);
  }
  {
    SCOPED_TRACE("heads padded to D + 8, rows to one more head, 40000 slots (passes over many blocks)");
    check_borrowed(c, 40000, (Hkv + 1) * (D + 8), D + 8, 72);
  }
}

TEST(CudaBorrow, BadKeysAreRefusedAndLeaveTheOutput) {
  NEED_GPU(c);
  std::mt19937_64 rng(73);
  const int64_t n = 500;
  sa_index_options io = device_index_options(SA_SELECTOR_EXACT, Hkv, D);
  io.borrow_keys = 1;
  sa_index *ix = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &ix));
  const Bf16Data k = random_bf16(rng, size_t(n) * Hkv * D, 1.f);
  uint16_t *dk = to_device(k.bits);
  sa_tensor keys = desc(dk, SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(ix, &keys));
  const Bf16Data q = random_bf16(rng, size_t(Hq) * D, 1.f);
  uint16_t *dq = to_device(q.bits);
  const int width = 64 + 64 + 4;
  const std::vector<int32_t> poison(size_t(Hkv) * width, -7);
  int32_t *dout = to_device(poison);
  float *df = to_device(std::vector<float>(size_t(n) * Hkv * D, 0.f));
  sa_tensor tq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor to = desc(dout, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  auto expect = [&](const sa_tensor *kt, sa_status want, const char *what, const char *in_message) {
    so.keys = kt;
    EXPECT_EQ(sa_select(ix, &tq, &so, &to), want) << what << ": " << sa_last_error();
    EXPECT_NE(std::string(sa_last_error()).find(in_message), std::string::npos) << what << ": " << sa_last_error();
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(to_host(dout, poison.size()), poison) << what << ": the output was written";
  };
  expect(nullptr, SA_ERR_NULL_POINTER, "no keys", "opt->keys");
  sa_tensor shorter = keys;
  shorter.shape[0] = n - 1;
  expect(&shorter, SA_ERR_SHAPE, "fewer rows than slots", "opt->keys");
  sa_tensor heads = desc(dk, SA_DTYPE_BF16, {n / 2, 2 * Hkv, D}, SA_DEVICE_CUDA);
  expect(&heads, SA_ERR_SHAPE, "other KV heads", "opt->keys");
  sa_tensor dim = desc(dk, SA_DTYPE_BF16, {n, Hkv, D / 2}, SA_DEVICE_CUDA);
  expect(&dim, SA_ERR_SHAPE, "other head_dim", "opt->keys");
  sa_tensor on_cpu = desc((void *)k.bits.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CPU);
  expect(&on_cpu, SA_ERR_INVALID_ARGUMENT, "CPU keys for a device index", "opt->keys");
  sa_tensor pageable = desc((void *)k.bits.data(), SA_DTYPE_BF16, {n, Hkv, D}, SA_DEVICE_CUDA);
  expect(&pageable, SA_ERR_INVALID_ARGUMENT, "host memory described as CUDA", "opt->keys");
  sa_tensor f32 = desc(df, SA_DTYPE_F32, {n, Hkv, D}, SA_DEVICE_CUDA);
  expect(&f32, SA_ERR_UNSUPPORTED, "f32 keys", "f16 or bf16");
  sa_tensor strided_d = desc(dk, SA_DTYPE_BF16, {n / 2, Hkv, D / 2}, SA_DEVICE_CUDA);
  io.head_dim = D / 2;  // an index of D / 2 whose keys take every other element
  sa_index *half = nullptr;
  SA_OK_(sa_index_create(c.gpu, &io, &half));
  sa_tensor half_keys = desc(dk, SA_DTYPE_BF16, {n / 2, Hkv, D / 2}, SA_DEVICE_CUDA);
  SA_OK_(sa_index_append(half, &half_keys));
  strided_d.strides[0] = 2 * Hkv * D;
  strided_d.strides[1] = D;
  strided_d.strides[2] = 2;
  sa_tensor tq_half = desc(dq, SA_DTYPE_BF16, {1, Hq, D / 2}, SA_DEVICE_CUDA);
  so.keys = &strided_d;
  EXPECT_EQ(sa_select(half, &tq_half, &so, &to), SA_ERR_UNSUPPORTED) << sa_last_error();
  EXPECT_NE(std::string(sa_last_error()).find("strides[2]"), std::string::npos) << sa_last_error();
  sa_index_destroy(&half);
  // n rows one element past a 16-byte boundary: inside df's 4-byte elements, twice the bytes.
  sa_tensor misaligned = keys;
  misaligned.data = reinterpret_cast<uint16_t *>(df) + 1;
  expect(&misaligned, SA_ERR_UNSUPPORTED, "rows off 16-byte boundaries", "16-byte");
  // The index still selects with good keys.
  so.keys = &keys;
  SA_OK_(sa_select(ix, &tq, &so, &to));
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_NE(to_host(dout, poison.size()), poison);
  // sa_select_batch does not read borrowed keys on the device.
  EXPECT_EQ(sa_select_batch(&ix, 1, &tq, nullptr, &so, nullptr, &to), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("borrow"), std::string::npos) << sa_last_error();
  // Per query head: exact device indexes only.
  sa_index_options po = device_index_options(SA_SELECTOR_PAGE, Hkv, D, 16);
  sa_index *page = nullptr;
  SA_OK_(sa_index_create(c.gpu, &po, &page));
  SA_OK_(sa_index_append(page, &keys));
  so.per_query_head = 1;
  sa_tensor to_q = desc(dout, SA_DTYPE_I32, {1, Hq, width / 4}, SA_DEVICE_CUDA);
  so.top_k = 16;
  so.window = 8;
  EXPECT_EQ(sa_select(page, &tq, &so, &to_q), SA_ERR_UNSUPPORTED) << sa_last_error();
  EXPECT_NE(std::string(sa_last_error()).find("per_query_head"), std::string::npos) << sa_last_error();
  sa_index_destroy(&page);
  sa_index_destroy(&ix);
  cudaFree(dk);
  cudaFree(dq);
  cudaFree(dout);
  cudaFree(df);
}

}  // namespace
