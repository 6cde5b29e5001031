// The CUDA plugin loader, exercised with fake plugins built from tests/plugin/fake_plugin.c:
// which file is loaded (explicit path, SA_CUDA_PLUGIN, beside libsparseattn.so), each way a
// plugin can be refused, and how calls with CUDA tensors reach the plugin's table. No GPU is
// needed: the fakes never touch tensor data, so the tests hand them made-up device addresses.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "sparseattn.h"
#include "sparseattn_plugin.h"

namespace {

std::string fake(const char *name) { return std::string(FAKE_PLUGIN_DIR) + "/lib" + name + ".so"; }

// Reads an exported counter of an already loaded fake plugin.
template <class T>
T &fake_symbol(const std::string &path, const char *symbol) {
  void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  EXPECT_NE(h, nullptr) << path << " is not loaded";
  void *p = h ? dlsym(h, symbol) : nullptr;
  EXPECT_NE(p, nullptr) << symbol;
  static T dummy{};
  if (h) dlclose(h);  // drops only the reference taken here
  return p ? *static_cast<T *>(p) : dummy;
}

struct Ctx {
  sa_context *ctx = nullptr;
  sa_status status;
  std::string message;
  Ctx(const std::string &path, sa_device_type device, int32_t device_id = 0, void *stream = nullptr) {
    sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
    o.threads = 1;
    o.cuda_plugin_path = path.empty() ? nullptr : path.c_str();
    o.device = device;
    o.device_id = device_id;
    o.cuda_stream = stream;
    status = sa_context_create(&o, &ctx);
    message = sa_last_error();
  }
  ~Ctx() { sa_context_destroy(&ctx); }
};

// A descriptor of made-up device memory (never dereferenced by the core or the fakes).
sa_tensor device_tensor(sa_dtype dtype, std::vector<int64_t> shape, uintptr_t address, int32_t device_id = 0) {
  sa_tensor t{};
  t.data = reinterpret_cast<void *>(address);
  t.dtype = dtype;
  t.device = SA_DEVICE_CUDA;
  t.device_id = device_id;
  t.rank = int32_t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
  return t;
}

sa_tensor cpu_tensor(std::vector<float> &data, std::vector<int64_t> shape) {
  sa_tensor t{};
  t.data = data.data();
  t.dtype = SA_DTYPE_F32;
  t.device = SA_DEVICE_CPU;
  t.rank = int32_t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
  return t;
}

void expect_unavailable(const Ctx &c, const std::string &needle) {
  EXPECT_EQ(c.status, SA_ERR_BACKEND_UNAVAILABLE) << sa_status_name(c.status) << ": " << c.message;
  EXPECT_EQ(c.ctx, nullptr);
  EXPECT_NE(c.message.find(needle), std::string::npos) << "message: " << c.message;
}

TEST(PluginLoader, ExplicitPathLoadsAndFillsTheTable) {
  Ctx c(fake("fake_plugin_ok"), SA_DEVICE_CUDA, 1);
  ASSERT_EQ(c.status, SA_OK) << c.message;
  EXPECT_EQ(fake_symbol<int>(fake("fake_plugin_ok"), "fake_init_calls"), 1);
}

TEST(PluginLoader, MissingFileIsReportedWithThePath) {
  const std::string path = "/nonexistent/dir/libsparseattn_cuda.so";
  Ctx c(path, SA_DEVICE_CUDA);
  expect_unavailable(c, path);
  expect_unavailable(c, "could not be loaded");
}

TEST(PluginLoader, OtherAbiVersionIsRefused) {
  Ctx c(fake("fake_plugin_abi99"), SA_DEVICE_CUDA);
  expect_unavailable(c, "speaks plugin ABI version 99");
}

TEST(PluginLoader, MissingEntryPointIsRefused) {
  Ctx c(fake("fake_plugin_no_entry"), SA_DEVICE_CUDA);
  expect_unavailable(c, "has no symbol " SA_PLUGIN_ENTRY_POINT);
}

TEST(PluginLoader, MissingTableEntryIsRefused) {
  Ctx c(fake("fake_plugin_no_attend"), SA_DEVICE_CUDA);
  expect_unavailable(c, "lacks the table entry 'attend'");
}

TEST(PluginLoader, NoRuntimeIsReportedWithThePluginsReason) {
  Ctx c(fake("fake_plugin_no_runtime"), SA_DEVICE_CUDA);
  expect_unavailable(c, "cannot use CUDA: libcudart.so.13");
}

TEST(PluginLoader, NoDeviceIsRefused) {
  Ctx c(fake("fake_plugin_no_device"), SA_DEVICE_CUDA);
  expect_unavailable(c, "found no CUDA device");
}

TEST(PluginLoader, DeviceBeyondTheCountIsRefused) {
  Ctx c(fake("fake_plugin_ok"), SA_DEVICE_CUDA, 2);  // the fake has devices 0 and 1
  expect_unavailable(c, "CUDA device 2 requested");
}

TEST(PluginLoader, AFailureIsRememberedNotRetried) {
  // The second context gets the same answer without touching the file again.
  Ctx a("/nonexistent/again.so", SA_DEVICE_CUDA), b("/nonexistent/again.so", SA_DEVICE_CUDA);
  EXPECT_EQ(a.status, SA_ERR_BACKEND_UNAVAILABLE);
  EXPECT_EQ(b.status, SA_ERR_BACKEND_UNAVAILABLE);
  EXPECT_EQ(a.message, b.message);
}

TEST(PluginLoader, LoadsOnceUnderConcurrentFirstUse) {
  const std::string path = fake("fake_plugin_concurrent");
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      Ctx c(path, SA_DEVICE_CUDA);
      ok += c.status == SA_OK;
    });
  for (auto &t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(fake_symbol<int>(path, "fake_init_calls"), 1);
}

TEST(PluginLoader, CpuWorkNeverNeedsThePlugin) {
  // A context naming a missing plugin still serves CPU tensors.
  Ctx c("/nonexistent/cpu-only.so", SA_DEVICE_CPU);
  ASSERT_EQ(c.status, SA_OK) << c.message;
  std::vector<float> q = {1, 0}, k = {1, 0, 0, 1}, v = {2, 0, 0, 4}, out = {-1, -1};
  sa_tensor tq = cpu_tensor(q, {1, 1, 2}), tk = cpu_tensor(k, {2, 1, 2}), tv = cpu_tensor(v, {2, 1, 2});
  sa_tensor to = cpu_tensor(out, {1, 1, 2});
  ASSERT_EQ(sa_attend(c.ctx, &tq, &tk, &tv, nullptr, nullptr, &to, nullptr), SA_OK) << sa_last_error();
  // softmax([1, 0] / sqrt(2)) . [[2, 0], [0, 4]]
  const double w1 = std::exp(1 / std::sqrt(2.0)), p1 = w1 / (w1 + 1);
  EXPECT_NEAR(out[0], 2 * p1, 1e-6);
  EXPECT_NEAR(out[1], 4 * (1 - p1), 1e-6);
  // The same context with a CUDA tensor reports the loader's reason.
  sa_tensor dq = device_tensor(SA_DTYPE_F32, {1, 1, 2}, 0x1000);
  EXPECT_EQ(sa_attend(c.ctx, &dq, &tk, &tv, nullptr, nullptr, &to, nullptr), SA_ERR_BACKEND_UNAVAILABLE);
  EXPECT_NE(std::string(sa_last_error()).find("/nonexistent/cpu-only.so"), std::string::npos) << sa_last_error();
}

// ------------------------------------------------------------------ dispatch to the table

struct AttendFx {
  sa_tensor q = device_tensor(SA_DTYPE_BF16, {2, 8, 64}, 0x10000);
  sa_tensor k = device_tensor(SA_DTYPE_BF16, {100, 2, 64}, 0x20000);
  sa_tensor v = device_tensor(SA_DTYPE_BF16, {100, 2, 64}, 0x30000);
  sa_tensor idx = device_tensor(SA_DTYPE_I32, {2, 2, 16}, 0x40000);
  sa_tensor out = device_tensor(SA_DTYPE_F32, {2, 8, 64}, 0x50000);
  sa_tensor lse = device_tensor(SA_DTYPE_F32, {2, 8}, 0x60000);
};

TEST(PluginDispatch, CudaTensorsGoToThePluginWithResolvedStrides) {
  const std::string path = fake("fake_plugin_ok");
  int dummy_stream = 0;
  Ctx c(path, SA_DEVICE_CPU, 0, &dummy_stream);  // a CPU context still serves CUDA tensors
  ASSERT_EQ(c.status, SA_OK) << c.message;
  AttendFx f;
  const int before = fake_symbol<int>(path, "fake_attend_calls");
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.scale = 0.25f;
  ASSERT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, &o, &f.out, &f.lse), SA_OK) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_attend_calls"), before + 1);
  const auto &a = fake_symbol<sa_plugin_attend_args>(path, "fake_last_attend");
  EXPECT_EQ(a.scale, 0.25f);
  EXPECT_EQ(a.stream, &dummy_stream) << "the context's stream when the call names none";
  EXPECT_EQ(a.per_query_head, 0);
  const auto &q = fake_symbol<sa_tensor>(path, "fake_last_q");
  EXPECT_EQ(q.data, f.q.data);
  EXPECT_EQ(q.strides[0], 8 * 64);  // contiguous shorthand resolved
  EXPECT_EQ(q.strides[1], 64);
  EXPECT_EQ(q.strides[2], 1);

  int call_stream = 0;
  o.cuda_stream = &call_stream;
  o.scale = 0.f;
  ASSERT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, nullptr, &o, &f.out, nullptr), SA_OK) << sa_last_error();
  const auto &b = fake_symbol<sa_plugin_attend_args>(path, "fake_last_attend");
  EXPECT_EQ(b.stream, &call_stream);
  EXPECT_EQ(b.indices, nullptr);
  EXPECT_EQ(b.lse, nullptr);
  EXPECT_FLOAT_EQ(b.scale, 1.f / 8.f);  // 1/sqrt(64)
}

// Eviction with device tensors needs the plugin's appended entries (index_update reads the
// attend's slot mass; copy brings scores to the host): a plugin without them is refused with
// a message, not handed fields it would not read.
TEST(PluginDispatch, DeviceEvictionNeedsThePluginsEvictionEntries) {
  const std::string path = fake("fake_plugin_ok");
  Ctx c(path, SA_DEVICE_CUDA);  // loads the plugin now, so that its counters can be read
  ASSERT_EQ(c.status, SA_OK) << c.message;
  AttendFx f;
  sa_tensor mass = device_tensor(SA_DTYPE_F32, {2, 100}, 0x70000);
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.slot_mass = &mass;
  const int before = fake_symbol<int>(path, "fake_attend_calls");
  EXPECT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, &o, &f.out, nullptr), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("predates"), std::string::npos) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_attend_calls"), before);
  // Per-KV-head positions go only to a plugin that reads them (its table holds evict_heads).
  const int64_t *device_positions = reinterpret_cast<const int64_t *>(uintptr_t(0xa0000));
  o.slot_mass = nullptr;
  o.head_key_positions = device_positions;
  EXPECT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, &o, &f.out, nullptr), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("predates opt->head_key_positions"), std::string::npos) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_attend_calls"), before);
  sa_tensor pos = device_tensor(SA_DTYPE_I64, {100}, 0x80000), freed = device_tensor(SA_DTYPE_I32, {4}, 0x90000);
  sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
  eo.budget = 90;
  int64_t n_freed = -1;
  EXPECT_EQ(sa_cache_evict(c.ctx, &eo, &mass, &pos, &freed, &n_freed), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("predates"), std::string::npos) << sa_last_error();
  EXPECT_EQ(n_freed, -1);
  // So does per-KV-head eviction on device tensors.
  sa_tensor head_pos = device_tensor(SA_DTYPE_I64, {2, 100}, 0x80000);
  sa_tensor head_freed = device_tensor(SA_DTYPE_I32, {2, 4}, 0x90000);
  int64_t head_n_freed[2] = {-1, -1};
  eo.per_head = 1;
  EXPECT_EQ(sa_cache_evict(c.ctx, &eo, &mass, &head_pos, &head_freed, head_n_freed), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("predates"), std::string::npos) << sa_last_error();
  EXPECT_EQ(head_n_freed[0], -1);
}

TEST(PluginDispatch, PluginRefusalCarriesItsMessage) {
  Ctx c(fake("fake_plugin_ok"), SA_DEVICE_CPU);
  sa_tensor q = device_tensor(SA_DTYPE_F16, {1, 1, 3}, 0x1000), k = device_tensor(SA_DTYPE_F16, {4, 1, 3}, 0x2000);
  sa_tensor out = device_tensor(SA_DTYPE_F32, {1, 1, 3}, 0x3000);
  EXPECT_EQ(sa_attend(c.ctx, &q, &k, &k, nullptr, nullptr, &out, nullptr), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("head dimension 3 is not supported (fake)"), std::string::npos)
      << sa_last_error();
}

TEST(PluginDispatch, MixedDevicesAreRefusedNamingTheTensor) {
  Ctx c(fake("fake_plugin_ok"), SA_DEVICE_CPU);
  AttendFx f;
  std::vector<float> host(2 * 8 * 64);
  sa_tensor cpu_out = cpu_tensor(host, {2, 8, 64});
  const int before = fake_symbol<int>(fake("fake_plugin_ok"), "fake_attend_calls");
  EXPECT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, nullptr, &cpu_out, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("out is a CPU tensor"), std::string::npos) << sa_last_error();
  f.v.device_id = 1;
  EXPECT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, nullptr, &f.out, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("v is on CUDA device 1"), std::string::npos) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(fake("fake_plugin_ok"), "fake_attend_calls"), before);
}

TEST(PluginDispatch, ShapesAreCheckedBeforeThePluginSeesThem) {
  Ctx c(fake("fake_plugin_ok"), SA_DEVICE_CPU);
  AttendFx f;
  f.idx.shape[1] = 3;  // neither H_kv nor H_q
  EXPECT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, nullptr, &f.out, nullptr), SA_ERR_SHAPE);
  f.idx.shape[1] = 2;
  std::vector<int64_t> qpos = {98, 99};
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  o.causal = 1;
  o.query_positions = qpos.data();  // a host array: not for device calls
  EXPECT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, &o, &f.out, nullptr), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("query_positions"), std::string::npos) << sa_last_error();
}

TEST(PluginDispatch, IndexOfACudaContextLivesOnTheDevice) {
  const std::string path = fake("fake_plugin_ok");
  Ctx c(path, SA_DEVICE_CUDA, 1);
  ASSERT_EQ(c.status, SA_OK) << c.message;
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.kind = SA_SELECTOR_PAGE;
  io.num_kv_heads = 2;
  io.head_dim = 64;
  io.dtype = SA_DTYPE_BF16;
  io.page.page_size = 32;
  sa_index *ix = nullptr;
  const int creates = fake_symbol<int>(path, "fake_index_creates");
  ASSERT_EQ(sa_index_create(c.ctx, &io, &ix), SA_OK) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_index_creates"), creates + 1);
  const auto &ia = fake_symbol<sa_plugin_index_args>(path, "fake_last_index_args");
  EXPECT_EQ(ia.device_id, 1);
  EXPECT_EQ(ia.page_size, 32);
  EXPECT_EQ(ia.kind, SA_SELECTOR_PAGE);

  sa_tensor keys = device_tensor(SA_DTYPE_BF16, {50, 2, 64}, 0x70000, 1);
  ASSERT_EQ(sa_index_append(ix, &keys), SA_OK) << sa_last_error();
  ASSERT_EQ(sa_index_append(ix, &keys), SA_OK) << sa_last_error();
  int64_t n = 0;
  ASSERT_EQ(sa_index_size(ix, &n), SA_OK);
  EXPECT_EQ(n, 100);
  keys.device_id = 0;
  EXPECT_EQ(sa_index_append(ix, &keys), SA_ERR_INVALID_ARGUMENT);
  std::vector<float> host(50 * 2 * 64);
  sa_tensor cpu_keys = cpu_tensor(host, {50, 2, 64});
  EXPECT_EQ(sa_index_append(ix, &cpu_keys), SA_ERR_INVALID_ARGUMENT);
  int32_t slot = 0;
  EXPECT_EQ(sa_index_update(ix, &slot, 1, &cpu_keys, nullptr), SA_ERR_INVALID_ARGUMENT);  // keys on the wrong device
  sa_tensor one_key = device_tensor(SA_DTYPE_BF16, {1, 2, 64}, 0x70000, 1);
  EXPECT_EQ(sa_index_update(ix, &slot, 1, &one_key, nullptr), SA_ERR_UNSUPPORTED);  // this plugin has no index_update
  EXPECT_NE(std::string(sa_last_error()).find("predates"), std::string::npos) << sa_last_error();
  // Per-head refills need the plugin's index_update_heads entry, which this one lacks.
  const int32_t head_slots[2] = {0, 1};
  const int64_t head_positions[2] = {100, 101};
  EXPECT_EQ(sa_index_update_heads(ix, head_slots, 1, &one_key, head_positions), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("predates sa_index_update_heads"), std::string::npos) << sa_last_error();
  ASSERT_EQ(sa_index_size(ix, &n), SA_OK);
  EXPECT_EQ(n, 100);

  sa_tensor q = device_tensor(SA_DTYPE_BF16, {3, 8, 64}, 0x80000, 1);
  sa_tensor out = device_tensor(SA_DTYPE_I32, {3, 2, 40}, 0x90000, 1);
  sa_select_options so = SA_SELECT_OPTIONS_INIT;
  so.top_k = 32;
  so.window = 4;
  so.sinks = 4;
  ASSERT_EQ(sa_select(ix, &q, &so, &out), SA_OK) << sa_last_error();
  const auto &sa = fake_symbol<sa_plugin_select_args>(path, "fake_last_select");
  EXPECT_EQ(sa.first_query_position, 97);  // the last 3 of positions 0..99
  EXPECT_EQ(sa.top_k, 32);
  EXPECT_FLOAT_EQ(sa.scale, 0.125f);
  so.mass_target = 0.5f;
  EXPECT_EQ(sa_select(ix, &q, &so, &out), SA_ERR_UNSUPPORTED);
  so.mass_target = 0.f;
  // Per-query-head lists: exact device indexes only (and plugins with select_keys).
  sa_tensor out_heads = device_tensor(SA_DTYPE_I32, {3, 8, 40}, 0x90000, 1);
  so.per_query_head = 1;
  EXPECT_EQ(sa_select(ix, &q, &so, &out_heads), SA_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(sa_last_error()).find("only exact indexes"), std::string::npos) << sa_last_error();
  so.per_query_head = 0;
  out.shape[2] = 39;  // < sinks + window + top_k
  EXPECT_EQ(sa_select(ix, &q, &so, &out), SA_ERR_SHAPE);

  const int destroys = fake_symbol<int>(path, "fake_index_destroys");
  sa_index_destroy(&ix);
  EXPECT_EQ(fake_symbol<int>(path, "fake_index_destroys"), destroys + 1);
}

void *never_alloc(void *, size_t, int32_t, void *) { return nullptr; }
void never_free(void *, void *, size_t, int32_t, void *) {}

sa_context_options allocator_options(const std::string &path, sa_device_type device, void *user) {
  sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
  o.threads = 1;
  o.cuda_plugin_path = path.c_str();
  o.device = device;
  o.cuda_allocator.alloc = never_alloc;
  o.cuda_allocator.free = never_free;
  o.cuda_allocator.user = user;
  return o;
}

// The context's allocator reaches the plugin once, before the context's first device work,
// with the context as its owner; indexes name the same owner; destroy releases it.
TEST(PluginAllocator, HandedToThePluginOnceWithTheContextAsOwner) {
  const std::string path = fake("fake_plugin_allocator");
  int user = 0;
  sa_context_options o = allocator_options(path, SA_DEVICE_CUDA, &user);
  sa_context *ctx = nullptr;
  ASSERT_EQ(sa_context_create(&o, &ctx), SA_OK) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_allocator_sets"), 1);
  EXPECT_EQ(fake_symbol<const void *>(path, "fake_allocator_owner"), static_cast<const void *>(ctx));
  const auto &given = fake_symbol<sa_cuda_allocator>(path, "fake_allocator");
  EXPECT_EQ(given.alloc, &never_alloc);
  EXPECT_EQ(given.free, &never_free);
  EXPECT_EQ(given.user, &user);

  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.num_kv_heads = 2;
  io.head_dim = 64;
  io.dtype = SA_DTYPE_BF16;
  sa_index *ix = nullptr;
  ASSERT_EQ(sa_index_create(ctx, &io, &ix), SA_OK) << sa_last_error();
  EXPECT_EQ(fake_symbol<sa_plugin_index_args>(path, "fake_last_index_args").owner, static_cast<const void *>(ctx));
  sa_tensor q = device_tensor(SA_DTYPE_BF16, {1, 4, 64}, 0x1000, 0);
  sa_tensor k = device_tensor(SA_DTYPE_BF16, {8, 2, 64}, 0x2000, 0);
  sa_tensor out = device_tensor(SA_DTYPE_BF16, {1, 4, 64}, 0x3000, 0);
  ASSERT_EQ(sa_attend(ctx, &q, &k, &k, nullptr, nullptr, &out, nullptr), SA_OK) << sa_last_error();
  ASSERT_EQ(sa_attend(ctx, &q, &k, &k, nullptr, nullptr, &out, nullptr), SA_OK) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_allocator_sets"), 1) << "handed over once per context";
  sa_index_destroy(&ix);
  const int releases = fake_symbol<int>(path, "fake_releases");
  const void *owner = ctx;
  sa_context_destroy(&ctx);
  EXPECT_EQ(fake_symbol<int>(path, "fake_releases"), releases + 1);
  EXPECT_EQ(fake_symbol<const void *>(path, "fake_released_owner"), owner);
}

// A CPU context hands its allocator over only when its work first reaches the device.
TEST(PluginAllocator, ACpuContextHandsItOverAtItsFirstDeviceCall) {
  const std::string path = fake("fake_plugin_allocator");
  Ctx loaded(path, SA_DEVICE_CUDA);  // no allocator: hands nothing over
  ASSERT_EQ(loaded.status, SA_OK) << loaded.message;
  const int sets = fake_symbol<int>(path, "fake_allocator_sets");
  sa_context_options o = allocator_options(path, SA_DEVICE_CPU, nullptr);
  sa_context *ctx = nullptr;
  ASSERT_EQ(sa_context_create(&o, &ctx), SA_OK) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_allocator_sets"), sets);
  sa_tensor q = device_tensor(SA_DTYPE_BF16, {1, 4, 64}, 0x1000, 0);
  sa_tensor k = device_tensor(SA_DTYPE_BF16, {8, 2, 64}, 0x2000, 0);
  sa_tensor out = device_tensor(SA_DTYPE_BF16, {1, 4, 64}, 0x3000, 0);
  ASSERT_EQ(sa_attend(ctx, &q, &k, &k, nullptr, nullptr, &out, nullptr), SA_OK) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_allocator_sets"), sets + 1);
  EXPECT_EQ(fake_symbol<const void *>(path, "fake_allocator_owner"), static_cast<const void *>(ctx));
  sa_context_destroy(&ctx);
}

// A plugin without set_allocator cannot honour the hook: refused, never silently ignored.
TEST(PluginAllocator, APluginWithoutAllocatorsIsRefused) {
  const std::string path = fake("fake_plugin_ok");
  sa_context_options o = allocator_options(path, SA_DEVICE_CUDA, nullptr);
  sa_context *ctx = nullptr;
  EXPECT_EQ(sa_context_create(&o, &ctx), SA_ERR_UNSUPPORTED);
  EXPECT_EQ(ctx, nullptr);
  EXPECT_NE(std::string(sa_last_error()).find("predates host allocators"), std::string::npos) << sa_last_error();
  o.device = SA_DEVICE_CPU;
  ASSERT_EQ(sa_context_create(&o, &ctx), SA_OK) << sa_last_error();
  sa_tensor q = device_tensor(SA_DTYPE_BF16, {1, 4, 64}, 0x1000, 0);
  sa_tensor k = device_tensor(SA_DTYPE_BF16, {8, 2, 64}, 0x2000, 0);
  sa_tensor out = device_tensor(SA_DTYPE_BF16, {1, 4, 64}, 0x3000, 0);
  const int attends = fake_symbol<int>(path, "fake_attend_calls");
  EXPECT_EQ(sa_attend(ctx, &q, &k, &k, nullptr, nullptr, &out, nullptr), SA_ERR_UNSUPPORTED);
  EXPECT_EQ(fake_symbol<int>(path, "fake_attend_calls"), attends) << "the plugin never saw the call";
  sa_context_destroy(&ctx);
}

// Selector options are checked once, at sa_index_create, whichever backend the index gets: a
// device index is refused for what a CPU one would be refused for (the fake plugin accepts
// any kind, as a plugin that implemented LSH would).
TEST(PluginDispatch, DeviceIndexOptionsAreCheckedAtCreation) {
  const std::string path = fake("fake_plugin_ok");
  Ctx c(path, SA_DEVICE_CUDA, 1);
  ASSERT_EQ(c.status, SA_OK) << c.message;
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.kind = SA_SELECTOR_LSH;
  io.num_kv_heads = 2;
  io.head_dim = 64;
  io.dtype = SA_DTYPE_BF16;
  io.lsh.rounds = 0;
  sa_index *ix = nullptr;
  const int creates = fake_symbol<int>(path, "fake_index_creates");
  EXPECT_EQ(sa_index_create(c.ctx, &io, &ix), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("opt->lsh.rounds"), std::string::npos) << sa_last_error();
  io.kind = SA_SELECTOR_LEARNED;
  EXPECT_EQ(sa_index_create(c.ctx, &io, &ix), SA_ERR_NULL_POINTER);  // no weights_path
  EXPECT_EQ(ix, nullptr);
  EXPECT_EQ(fake_symbol<int>(path, "fake_index_creates"), creates);  // the plugin never saw them
}

TEST(PluginDispatch, FirstAppendOfCudaKeysMovesAnEmptyIndex) {
  const std::string path = fake("fake_plugin_ok");
  Ctx c(path, SA_DEVICE_CPU);
  sa_index_options io = SA_INDEX_OPTIONS_INIT;
  io.num_kv_heads = 2;
  io.head_dim = 64;
  sa_index *ix = nullptr;
  ASSERT_EQ(sa_index_create(c.ctx, &io, &ix), SA_OK) << sa_last_error();
  const int appends = fake_symbol<int>(path, "fake_appends");
  sa_tensor keys = device_tensor(SA_DTYPE_F16, {10, 2, 64}, 0x70000);
  ASSERT_EQ(sa_index_append(ix, &keys), SA_OK) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_appends"), appends + 1);
  int64_t n = 0;
  ASSERT_EQ(sa_index_size(ix, &n), SA_OK);
  EXPECT_EQ(n, 10);
  sa_index_destroy(&ix);

  // An index with CPU keys stays on the CPU.
  ASSERT_EQ(sa_index_create(c.ctx, &io, &ix), SA_OK) << sa_last_error();
  std::vector<float> host(2 * 2 * 64, 0.5f);
  sa_tensor cpu_keys = cpu_tensor(host, {2, 2, 64});
  ASSERT_EQ(sa_index_append(ix, &cpu_keys), SA_OK) << sa_last_error();
  EXPECT_EQ(sa_index_append(ix, &keys), SA_ERR_UNSUPPORTED);
  sa_index_destroy(&ix);
}

// ------------------------------------------------------------------ default search

// The variable's value when set and non-empty (the loader ignores an empty one).
const char *plugin_env() {
  const char *env = std::getenv(SA_CUDA_PLUGIN_ENV);
  return env && *env ? env : nullptr;
}

// Run by the 'plugin-env' test with SA_CUDA_PLUGIN naming the fake; skipped otherwise.
TEST(PluginEnv, EnvironmentVariableIsHonoured) {
  const char *env = plugin_env();
  if (!env) GTEST_SKIP() << SA_CUDA_PLUGIN_ENV " is not set";
  Ctx c("", SA_DEVICE_CUDA);
  ASSERT_EQ(c.status, SA_OK) << c.message;
  EXPECT_EQ(fake_symbol<int>(env, "fake_init_calls"), 1) << "loaded once, from the variable's path";
  // An explicit path still wins over the environment.
  Ctx d("/nonexistent/explicit.so", SA_DEVICE_CUDA);
  expect_unavailable(d, "/nonexistent/explicit.so");
}

// Without the variable the plugin is looked for beside libsparseattn.so.
TEST(PluginEnv, BesideTheLibraryByDefault) {
  if (plugin_env()) GTEST_SKIP() << SA_CUDA_PLUGIN_ENV " is set";
  Ctx c("", SA_DEVICE_CUDA);
  if (c.status == SA_OK) GTEST_SKIP() << "a working CUDA plugin and device are present";
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void *>(&sa_version), &info), 0);
  std::string dir = info.dli_fname;
  dir = dir.substr(0, dir.rfind('/') + 1);
  expect_unavailable(c, "'" + dir + SA_CUDA_PLUGIN_FILE + "'");
}

// ------------------------------------------------------------------ pointer checks

// Run alone (meson test plugin-memory), so that the fake with memory_info is the process's
// first plugin, the one the core asks about pointers; in the full run another fake without
// memory_info is loaded first and these tests skip.
TEST(PluginMemory, PointersAreCheckedAgainstTheirDescriptors) {
  if (!std::getenv("SA_TEST_PLUGIN_MEMORY")) GTEST_SKIP() << "run by the plugin-memory test";
  const std::string path = fake("fake_plugin_memory");
  Ctx c(path, SA_DEVICE_CUDA);
  ASSERT_EQ(c.status, SA_OK) << c.message;
  int &queries = fake_symbol<int>(path, "fake_memory_queries");
  AttendFx f;
  ASSERT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, nullptr, &f.out, &f.lse), SA_OK) << sa_last_error();
  EXPECT_GE(queries, 6) << "a question per tensor";
  // Host memory described as CUDA memory is refused before the plugin sees the call.
  const int attends = fake_symbol<int>(path, "fake_attend_calls");
  std::vector<float> host(2 * 8 * 64);
  sa_tensor hq = f.q;
  hq.data = host.data();
  EXPECT_EQ(sa_attend(c.ctx, &hq, &f.k, &f.v, &f.idx, nullptr, &f.out, &f.lse), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("q is described as a CUDA tensor, but its data is pageable host memory"),
            std::string::npos) << sa_last_error();
  // Another device's memory.
  sa_tensor other = f.out;
  other.data = reinterpret_cast<void *>(0x150000);
  EXPECT_EQ(sa_attend(c.ctx, &f.q, &f.k, &f.v, &f.idx, nullptr, &other, &f.lse), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("out is described as memory of CUDA device 0, but its data is on CUDA "
                                              "device 1"), std::string::npos) << sa_last_error();
  EXPECT_EQ(fake_symbol<int>(path, "fake_attend_calls"), attends);
  // Device memory described as CPU memory is refused before the core reads it (the address
  // is made up: reading it would crash).
  std::vector<float> q = {1, 0}, k = {1, 0, 0, 1}, v = {2, 0, 0, 4}, out = {-1, -1};
  sa_tensor tq = cpu_tensor(q, {1, 1, 2}), tk = cpu_tensor(k, {2, 1, 2}), tv = cpu_tensor(v, {2, 1, 2});
  sa_tensor to = cpu_tensor(out, {1, 1, 2});
  sa_tensor dk = tk;
  dk.data = reinterpret_cast<void *>(0x2000);
  EXPECT_EQ(sa_attend(c.ctx, &tq, &dk, &tv, nullptr, nullptr, &to, nullptr), SA_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sa_last_error()).find("k is described as a CPU tensor, but its data is memory of CUDA device 0"),
            std::string::npos) << sa_last_error();
  EXPECT_EQ(out[0], -1.f) << "nothing written";
  ASSERT_EQ(sa_attend(c.ctx, &tq, &tk, &tv, nullptr, nullptr, &to, nullptr), SA_OK) << sa_last_error();
}

}  // namespace
