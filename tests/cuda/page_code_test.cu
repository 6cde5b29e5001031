// A device page index holds the CPU page selector's very bounds: after appends of any size (a
// partial page's exact min and max kept between them), each page's int8 codes, scale and
// magnitude equal quantize_page_bound's for its keys (page_code_reference.hpp), including pages
// holding an inf or a NaN and an all-zero page; after refills, each refilled page's bound is its
// decoded bound widened to the new keys and coded again, and still bounds every key the page
// holds, s (c - r) <= key <= s (c + r). These read the index's device arrays: the test loads the
// plugin's table as the core does (the same file, so the same loaded instance) and drives an
// index through it. Then selection: a device page index chooses the pages the CPU page index
// (refine = 0) chooses for the same keys and queries, one sequence at a time and in a batch.
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_index.hpp"
#include "cuda_helpers.cuh"
#include "page_code_reference.hpp"

namespace {

// The plugin's function table, loaded as src/core/plugin_loader.cpp loads it.
const sa_plugin_api *plugin_api() {
  static sa_plugin_api api{};
  static const bool ok = [] {
    std::string path;
    const char *env = std::getenv(SA_CUDA_PLUGIN_ENV);
    Dl_info info{};
    if (env && *env) path = env;
    else if (dladdr(reinterpret_cast<void *>(&sa_version), &info) && info.dli_fname) {
      path = info.dli_fname;
      path = path.substr(0, path.rfind('/') + 1) + SA_CUDA_PLUGIN_FILE;
    }
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    auto init = h ? reinterpret_cast<sa_plugin_init_fn>(dlsym(h, SA_PLUGIN_ENTRY_POINT)) : nullptr;
    api.struct_size = sizeof api;
    return init && init(SA_PLUGIN_ABI_VERSION, &api) == SA_OK;
  }();
  return ok ? &api : nullptr;
}

// bf16 rows [n][H][D] of the host, contiguous, as a device tensor (the device copy in *keep).
sa_tensor device_rows(const std::vector<uint16_t> &rows, int64_t n, int H, int D, uint16_t **keep) {
  *keep = to_device(rows);
  sa_tensor t = desc(*keep, SA_DTYPE_BF16, {n, H, D}, SA_DEVICE_CUDA);
  t.strides[0] = int64_t(H) * D;
  t.strides[1] = D;
  t.strides[2] = 1;
  return t;
}

// A device page index driven through the plugin's table, and what the test expects it to
// hold: every slot's key (floats of the bf16 values), each page's exact min and max while it is
// the partial last page, and each page's coded bound.
class Pages {
 public:
  Pages(const sa_plugin_api &api, int H, int D, int P) : api_(api), H_(H), D_(D), P_(P) {
    sa_plugin_index_args a{};
    a.struct_size = sizeof a;
    a.kind = SA_SELECTOR_PAGE;
    a.num_kv_heads = H;
    a.head_dim = D;
    a.dtype = SA_DTYPE_BF16;
    a.page_size = P;
    a.device_id = 0;
    ok_ = api.index_create(&a, &ix_) == SA_OK;
  }
  ~Pages() {
    if (ix_) api_.index_destroy(ix_);
  }
  bool ok() const { return ok_; }
  int64_t size() const { return int64_t(keys_.size()) / (H_ * D_); }

  // Appends bf16 rows [n][H][D].
  void append(const std::vector<uint16_t> &rows) {
    const int64_t n = int64_t(rows.size()) / (H_ * D_), old = size();
    uint16_t *d = nullptr;
    const sa_tensor t = device_rows(rows, n, H_, D_, &d);
    ASSERT_EQ(api_.index_append(ix_, &t), SA_OK) << api_.last_error();
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(d);
    for (uint16_t b : rows) keys_.push_back(from_bf16(b));
    const int64_t pages = (size() + P_ - 1) / P_;
    coded_.resize(size_t(pages * H_));
    lo_.resize(size_t(pages * H_ * D_), INFINITY);
    hi_.resize(size_t(pages * H_ * D_), -INFINITY);
    for (int64_t s = old; s < size(); ++s)
      for (int h = 0; h < H_; ++h)
        for (int d = 0; d < D_; ++d) {  // the CPU's fold (refresh_bounds): std::min / std::max
          float &lo = lo_[size_t(((s / P_) * H_ + h) * D_ + d)], &hi = hi_[size_t(((s / P_) * H_ + h) * D_ + d)];
          lo = std::min(lo, key(s, h)[d]);
          hi = std::max(hi, key(s, h)[d]);
        }
    for (int64_t p = old / P_; p < pages; ++p)
      for (int h = 0; h < H_; ++h) coded_[size_t(p * H_ + h)] = code_page(&lo_[size_t((p * H_ + h) * D_)], &hi_[size_t((p * H_ + h) * D_)], D_);
  }

  // Refills slots[i] with bf16 row i of rows [n][H][D] (every head), at fresh positions.
  void refill(const std::vector<int32_t> &slots, const std::vector<uint16_t> &rows) {
    const int64_t n = int64_t(slots.size());
    uint16_t *d = nullptr;
    const sa_tensor t = device_rows(rows, n, H_, D_, &d);
    std::vector<int64_t> pos(slots.size());
    for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = next_ + i;
    next_ += n;
    sa_plugin_update_args u{};
    u.struct_size = sizeof u;
    u.slots = slots.data();
    u.n = n;
    u.keys = &t;
    u.positions = pos.data();
    u.next_position = next_;
    ASSERT_EQ(api_.index_update(ix_, &u), SA_OK) << api_.last_error();
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(d);
    // Expected: per page, once, the partial last page's exact bounds or the decoded bound,
    // widened to all of the page's new keys.
    std::vector<int64_t> pages;
    for (int32_t s : slots)
      if (std::find(pages.begin(), pages.end(), s / P_) == pages.end()) pages.push_back(s / P_);
    for (int64_t p : pages)
      for (int h = 0; h < H_; ++h) {
        const bool open = size() % P_ != 0 && p == size() / P_;
        std::vector<double> lo(static_cast<size_t>(D_)), hi(static_cast<size_t>(D_));
        decode_page(coded_[size_t(p * H_ + h)], D_, lo.data(), hi.data());
        for (int64_t i = 0; i < n; ++i) {
          if (slots[size_t(i)] / P_ != p) continue;
          for (int d = 0; d < D_; ++d) {
            const float v = from_bf16(rows[size_t((i * H_ + h) * D_ + d)]);
            float &elo = lo_[size_t((p * H_ + h) * D_ + d)], &ehi = hi_[size_t((p * H_ + h) * D_ + d)];
            elo = std::min(elo, v);
            ehi = std::max(ehi, v);
            lo[size_t(d)] = std::min(lo[size_t(d)], double(v));
            hi[size_t(d)] = std::max(hi[size_t(d)], double(v));
          }
        }
        coded_[size_t(p * H_ + h)] = open ? code_page(&lo_[size_t((p * H_ + h) * D_)], &hi_[size_t((p * H_ + h) * D_)], D_)
                                          : code_page(lo.data(), hi.data(), D_);
      }
    for (int64_t i = 0; i < n; ++i)
      for (int h = 0; h < H_; ++h)
        for (int d = 0; d < D_; ++d)
          keys_[size_t((slots[size_t(i)] * int64_t(H_) + h) * D_ + d)] = from_bf16(rows[size_t((i * H_ + h) * D_ + d)]);
  }

  // The device's codes, scales and magnitudes against the expected ones, bit for bit; and
  // each page's bound against every key it holds.
  void check(const char *when) const {
    const int64_t pages = (size() + P_ - 1) / P_, stride = ix_->capacity / P_;
    ASSERT_EQ(ix_->size, size());
    std::vector<int8_t> codes(size_t(H_ * stride * 2 * D_));
    std::vector<float2> scales(size_t(H_ * stride));
    CUDA_OK(cudaMemcpy(codes.data(), ix_->page_codes, codes.size(), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(scales.data(), ix_->page_scales, scales.size() * sizeof(float2), cudaMemcpyDeviceToHost));
    int wrong = 0;
    for (int h = 0; h < H_; ++h)
      for (int64_t p = 0; p < pages; ++p) {
        const CodedPage &want = coded_[size_t(p * H_ + h)];
        const int8_t *got = &codes[size_t((h * stride + p) * 2 * D_)];
        const float2 gs = scales[size_t(h * stride + p)];
        const bool same = std::memcmp(got, want.row.data(), size_t(2 * D_)) == 0 &&
                          std::memcmp(&gs.x, &want.scale, 4) == 0 && std::memcmp(&gs.y, &want.magnitude, 4) == 0;
        if (!same && ++wrong <= 3)
          ADD_FAILURE() << when << ": head " << h << ", page " << p << " of " << pages << ": scale " << gs.x << " / "
                        << want.scale << ", magnitude " << gs.y << " / " << want.magnitude;
        // A true bound of every key the page holds (NaN coordinates aside).
        const double sc = gs.x;
        if (!(sc < INFINITY)) continue;
        for (int64_t s = p * P_; s < std::min(size(), (p + 1) * P_); ++s)
          for (int d = 0; d < D_; ++d) {
            const double v = key(s, h)[d], c = got[d], r = got[D_ + d];
            if (v != v) continue;
            if (!(sc * (c - r) <= v && v <= sc * (c + r)) && ++wrong <= 3)
              ADD_FAILURE() << when << ": slot " << s << ", head " << h << ", dim " << d << ": " << v
                            << " outside the page's bound";
          }
      }
    EXPECT_EQ(wrong, 0) << when;
  }

  const CodedPage &coded(int64_t page, int h) const { return coded_[size_t(page * H_ + h)]; }

 private:
  const float *key(int64_t s, int h) const { return &keys_[size_t((s * H_ + h) * D_)]; }

  const sa_plugin_api &api_;
  int H_, D_, P_;
  sa_plugin_index *ix_ = nullptr;
  bool ok_ = false;
  int64_t next_ = 1 << 20;
  std::vector<float> keys_;          // [slot][H][D]
  std::vector<float> lo_, hi_;       // [page][H][D]: exact over every key the page has held
  std::vector<CodedPage> coded_;     // [page][H]
};

std::vector<uint16_t> random_rows(std::mt19937_64 &rng, int64_t n, int H, int D, float sd) {
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<uint16_t> r(size_t(n * H * D));
  for (auto &x : r) x = to_bf16(nd(rng));
  return r;
}

TEST(CudaPageCodes, AppendsCodeEveryPageAsTheCpu) {
  NEED_GPU(c);
  const sa_plugin_api *api = plugin_api();
  ASSERT_NE(api, nullptr) << "the plugin's table";
  for (int D : {64, 128, 256}) {
    SCOPED_TRACE(testing::Message() << "D " << D);
    constexpr int H = 3, P = 16;
    Pages ix(*api, H, D, P);
    ASSERT_TRUE(ix.ok()) << api->last_error();
    std::mt19937_64 rng{uint64_t(D)};
    int64_t calls = 0;
    for (int64_t n : {1, 15, 17, 1000, 1, 3, 16, 33, 5000}) {
      std::vector<uint16_t> rows = random_rows(rng, n, H, D, calls % 2 ? 0.01f : 3.f);
      const int64_t at = ix.size();
      for (int64_t s = 0; s < n; ++s) {
        const int64_t slot = at + s;
        for (int h = 0; h < H; ++h) {
          uint16_t *k = &rows[size_t((s * H + h) * D)];
          if (slot / P == 20) std::fill(k, k + D, to_bf16(0.f));          // an all-zero page
          if (slot == 21 * P + 5 && h == 1) k[3] = 0x7f80;                  // +inf: the page's bound is +inf
          if (slot == 22 * P + 7) k[5] = 0x7fc0;                            // NaN: passed over by min and max
          if (slot / P == 23 && h == 2) k[9] = 0x7fc0;                      // a dimension of NaN only: +inf
          if (slot == 24 * P + 2) k[0] = to_bf16(-1e-38f);                  // tiny against the rest
        }
      }
      ix.append(rows);
      ++calls;
      ix.check(("after an append of " + std::to_string(n)).c_str());
      if (testing::Test::HasFailure()) return;
    }
    EXPECT_EQ(ix.coded(20, 0).scale, 0.f);
    EXPECT_EQ(ix.coded(20, 0).magnitude, 0.f);
    EXPECT_EQ(ix.coded(21, 1).scale, INFINITY);
    EXPECT_LT(ix.coded(21, 0).scale, INFINITY);
    EXPECT_LT(ix.coded(22, 0).scale, INFINITY);
    EXPECT_EQ(ix.coded(23, 2).scale, INFINITY);
  }
}

TEST(CudaPageCodes, RefillsWidenTheDecodedBound) {
  NEED_GPU(c);
  const sa_plugin_api *api = plugin_api();
  ASSERT_NE(api, nullptr) << "the plugin's table";
  constexpr int H = 2, D = 128, P = 16;
  Pages ix(*api, H, D, P);
  ASSERT_TRUE(ix.ok()) << api->last_error();
  std::mt19937_64 rng(7);
  ix.append(random_rows(rng, 1000, H, D, 1.f));  // 62 full pages and 8 keys of page 62
  ix.check("after the appends");
  // Closed pages (three slots of page 3, one of page 40), the partial page (slot 995), a key
  // with +inf; keys larger than the page's, so the bounds widen.
  const std::vector<int32_t> slots = {50, 48, 995, 640, 63, 700};
  std::vector<uint16_t> rows = random_rows(rng, int64_t(slots.size()), H, D, 4.f);
  rows[size_t((5 * H + 1) * D + 7)] = 0x7f80;  // slot 700, head 1
  ix.refill(slots, rows);
  ix.check("after a refill");
  ix.refill({48, 49, 995}, random_rows(rng, 3, H, D, 0.5f));  // again: widened twice
  ix.check("after a second refill");
  {  // 700 slots in random order over every page, most pages several times (grouped by page)
    std::vector<int32_t> many(1000);
    for (int32_t i = 0; i < 1000; ++i) many[size_t(i)] = i;
    std::shuffle(many.begin(), many.end(), rng);
    many.resize(700);
    ix.refill(many, random_rows(rng, 700, H, D, 2.f));
    ix.check("after a refill of 700 slots");
  }
  EXPECT_EQ(ix.coded(700 / P, 1).scale, INFINITY);
  ix.refill({701}, random_rows(rng, 1, H, D, 1.f));  // an infinite page stays infinite
  ix.check("after a refill of the infinite page");
  ix.append(random_rows(rng, 30, H, D, 1.f));  // the partial page fills from its widened bounds
  ix.check("after appends");
}

// Rows of the same queries by a CPU page index (refine 0) and a device page index over the
// same keys; sinks 0 and the window ending on a page boundary, so every usable page holds
// page_size candidates and the CPU's whole pages in bound order are top_k / page_size pages.
void check_selection_is_the_cpus(Ctx &c, int D) {
  constexpr int Hkv = 8, Hq = 32, P = 16, top_k = 2048, window = 64;
  const std::vector<int64_t> lens = {32064, 4096 + 64, 20000 + 64 - 16 * 3};
  const int width = top_k + window + 8;
  std::mt19937_64 rng(11);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = top_k;
  so.window = window;
  so.sinks = 0;
  std::vector<sa_index *> cpu(lens.size()), gpu(lens.size());
  std::vector<uint16_t> queries;
  std::vector<int32_t> cpu_rows;
  for (size_t b = 0; b < lens.size(); ++b) {
    const int64_t n = lens[b];
    ASSERT_EQ((n - window) % P, 0);
    std::vector<uint16_t> keys = random_rows(rng, n, Hkv, D, 1.f);
    for (int64_t s = 0; s < n; s += 7)  // some pages stand out
      for (int e = 0; e < D; ++e) keys[size_t(s * Hkv * D + e)] = to_bf16(from_bf16(keys[size_t(s * Hkv * D + e)]) * 3.f);
    sa_index_options io = device_index_options(SA_SELECTOR_PAGE, Hkv, D, P);
    SA_OK_(sa_index_create(c.cpu, &io, &cpu[b]));
    SA_OK_(sa_index_create(c.gpu, &io, &gpu[b]));
    const int64_t first = n / 3 + 5;  // two appends, the first ending inside a page
    sa_tensor h1 = desc(keys.data(), SA_DTYPE_BF16, {first, Hkv, D}, SA_DEVICE_CPU);
    sa_tensor h2 = desc(keys.data() + first * Hkv * D, SA_DTYPE_BF16, {n - first, Hkv, D}, SA_DEVICE_CPU);
    SA_OK_(sa_index_append(cpu[b], &h1));
    SA_OK_(sa_index_append(cpu[b], &h2));
    uint16_t *dk = to_device(keys);
    sa_tensor g1 = desc(dk, SA_DTYPE_BF16, {first, Hkv, D}, SA_DEVICE_CUDA);
    sa_tensor g2 = desc(dk + first * Hkv * D, SA_DTYPE_BF16, {n - first, Hkv, D}, SA_DEVICE_CUDA);
    SA_OK_(sa_index_append(gpu[b], &g1));
    SA_OK_(sa_index_append(gpu[b], &g2));
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(dk);
    // Queries at the sequence's last position: one a sequence, then two more for the first.
    for (int rep = 0; rep < (b == 0 ? 3 : 1); ++rep) {
      std::vector<uint16_t> q = random_rows(rng, 1, Hq, D, 1.f);
      std::vector<int32_t> want(size_t(Hkv) * width, -7);
      sa_tensor cq = desc(q.data(), SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CPU);
      sa_tensor co = desc(want.data(), SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CPU);
      SA_OK_(sa_select(cpu[b], &cq, &so, &co));
      uint16_t *dq = to_device(q);
      int32_t *dout = to_device(std::vector<int32_t>(size_t(Hkv) * width, -7));
      sa_tensor gq = desc(dq, SA_DTYPE_BF16, {1, Hq, D}, SA_DEVICE_CUDA);
      sa_tensor go = desc(dout, SA_DTYPE_I32, {1, Hkv, width}, SA_DEVICE_CUDA);
      SA_OK_(sa_select(gpu[b], &gq, &so, &go));
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<int32_t> got = to_host(dout, want.size());
      for (int h = 0; h < Hkv; ++h)
        EXPECT_EQ(std::vector<int32_t>(got.begin() + h * width, got.begin() + (h + 1) * width),
                  std::vector<int32_t>(want.begin() + h * width, want.begin() + (h + 1) * width))
            << "sequence " << b << ", query " << rep << ", KV head " << h;
      cudaFree(dq);
      cudaFree(dout);
      if (rep == 0) {  // the batch's query of this sequence
        queries.insert(queries.end(), q.begin(), q.end());
        cpu_rows.insert(cpu_rows.end(), want.begin(), want.end());
      }
    }
  }
  // The batch in one call (page indexes of one context: the batch kernels).
  const int64_t B = int64_t(lens.size());
  uint16_t *dq = to_device(queries);
  int32_t *dout = to_device(std::vector<int32_t>(cpu_rows.size(), -7));
  sa_tensor gq = desc(dq, SA_DTYPE_BF16, {B, Hq, D}, SA_DEVICE_CUDA);
  sa_tensor go = desc(dout, SA_DTYPE_I32, {B, Hkv, width}, SA_DEVICE_CUDA);
  SA_OK_(sa_select_batch(gpu.data(), B, &gq, nullptr, &so, nullptr, &go));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<int32_t> got = to_host(dout, cpu_rows.size());
  for (int64_t b = 0; b < B; ++b)
    EXPECT_EQ(std::vector<int32_t>(got.begin() + b * Hkv * width, got.begin() + (b + 1) * Hkv * width),
              std::vector<int32_t>(cpu_rows.begin() + b * Hkv * width, cpu_rows.begin() + (b + 1) * Hkv * width))
        << "batch, sequence " << b;
  cudaFree(dq);
  cudaFree(dout);
  for (auto *ix : cpu) sa_index_destroy(&ix);
  for (auto *ix : gpu) sa_index_destroy(&ix);
}

// Every head dimension the plugin takes (at 256 the CPU's bound once took two f32 roundings).
TEST(CudaPageCodes, SelectionIsTheCpuPageIndexs) {
  NEED_GPU(c);
  for (int D : {64, 128, 256}) {
    SCOPED_TRACE("head dimension " + std::to_string(D));
    ASSERT_NO_FATAL_FAILURE(check_selection_is_the_cpus(c, D));
  }
}

}  // namespace
