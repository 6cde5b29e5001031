#include "core/plugin_loader.hpp"

#include <dlfcn.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "core/context.hpp"
#include "core/error.hpp"

namespace sa {
namespace {

struct LoadResult {
  std::unique_ptr<Plugin> plugin;
  std::string reason;  // why it failed, when plugin is null
};

std::string directory_of_this_library() {
  Dl_info info{};
  // Any function of libsparseattn locates the file it was loaded from.
  if (!dladdr(reinterpret_cast<void *>(&sa_version), &info) || !info.dli_fname) return "";
  std::string file = info.dli_fname;
  size_t slash = file.rfind('/');
  return slash == std::string::npos ? "" : file.substr(0, slash + 1);
}

std::string resolve_path(const std::string &explicit_path) {
  if (!explicit_path.empty()) return explicit_path;
  const char *env = std::getenv(SA_CUDA_PLUGIN_ENV);
  if (env && *env) return env;
  return directory_of_this_library() + SA_CUDA_PLUGIN_FILE;
}

// Null entries make the plugin unusable; name the first one missing.
const char *missing_entry(const sa_plugin_api &a) {
  if (!a.last_error) return "last_error";
  if (!a.device_count) return "device_count";
  if (!a.device_name) return "device_name";
  if (!a.attend) return "attend";
  if (!a.index_create) return "index_create";
  if (!a.index_destroy) return "index_destroy";
  if (!a.index_append) return "index_append";
  if (!a.select) return "select";
  if (!a.stream_synchronize) return "stream_synchronize";
  return nullptr;
}

LoadResult load(const std::string &path) {
  LoadResult r;
  auto refuse = [&](std::string why) {
    r.reason = "the CUDA plugin '" + path + "' " + why;
    return std::move(r);
  };
  dlerror();
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *e = dlerror();
    return refuse(std::string("could not be loaded: ") + (e ? e : "unknown dlopen error"));
  }
  // Plugins stay loaded for the life of the process: device state and handed-out
  // indexes may outlive any one call, so a failed candidate is the only one closed.
  auto init = reinterpret_cast<sa_plugin_init_fn>(dlsym(handle, SA_PLUGIN_ENTRY_POINT));
  if (!init) {
    dlclose(handle);
    return refuse("has no symbol " SA_PLUGIN_ENTRY_POINT " (not a sparseattn plugin)");
  }
  auto p = std::make_unique<Plugin>();
  p->path = path;
  p->api.struct_size = sizeof(sa_plugin_api);
  p->api.abi_version = 0;
  const sa_status s = init(SA_PLUGIN_ABI_VERSION, &p->api);
  if (s != SA_OK || p->api.abi_version != SA_PLUGIN_ABI_VERSION) {
    dlclose(handle);
    return refuse("speaks plugin ABI version " + std::to_string(p->api.abi_version) + ", this libsparseattn speaks " +
                  std::to_string(SA_PLUGIN_ABI_VERSION) + " (status " + sa_status_name(s) + ")");
  }
  if (const char *missing = missing_entry(p->api)) {
    dlclose(handle);
    return refuse(std::string("lacks the table entry '") + missing + "'");
  }
  int32_t count = 0;
  if (p->api.device_count(&count) != SA_OK) {
    std::string why = p->api.last_error();
    dlclose(handle);
    return refuse("cannot use CUDA: " + why);
  }
  if (count < 1) {
    dlclose(handle);
    return refuse("found no CUDA device");
  }
  p->device_count = count;
  r.plugin = std::move(p);
  return r;
}

// Published once, after the plugin is complete; read without the loader's lock.
std::atomic<const Plugin *> g_first_loaded{nullptr};

std::mutex g_loader_mutex;
std::map<std::string, LoadResult> &loaded_plugins() {
  static auto *loaded = new std::map<std::string, LoadResult>();  // never freed: plugins may be
  return *loaded;                                                  // used by other static destructors
}

}  // namespace

const Plugin &cuda_plugin(const std::string &explicit_path) {
  std::lock_guard<std::mutex> lock(g_loader_mutex);
  auto *loaded = &loaded_plugins();
  auto it = loaded->find(explicit_path);
  if (it == loaded->end()) it = loaded->emplace(explicit_path, load(resolve_path(explicit_path))).first;
  if (!it->second.plugin) fail(SA_ERR_BACKEND_UNAVAILABLE, "%s", it->second.reason.c_str());
  const Plugin *none = nullptr;
  g_first_loaded.compare_exchange_strong(none, it->second.plugin.get(), std::memory_order_release);
  return *it->second.plugin;
}

void give_allocator(const Plugin &plugin, const sa_context &ctx) {
  const sa_plugin_api &api = plugin.api;
  if (!has_entry(api, &sa_plugin_api::set_allocator))
    fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates host allocators: create the context without "
         "opt->cuda_allocator, or use the plugin built with this libsparseattn", plugin.path.c_str());
  check_plugin(plugin, api.set_allocator(&ctx, &ctx.cuda_allocator), "CUDA allocator");
}

// Plugins loaded for other paths never saw this context's calls: only its own is asked.
void release_plugin_buffers(const sa_context &ctx) {
  const Plugin *p = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_loader_mutex);
    auto it = loaded_plugins().find(ctx.cuda_plugin_path);
    if (it != loaded_plugins().end()) p = it->second.plugin.get();
  }
  if (p && has_entry(p->api, &sa_plugin_api::release))
    p->api.release(&ctx);
}

const Plugin *loaded_cuda_plugin() { return g_first_loaded.load(std::memory_order_acquire); }

void check_memory(const void *data, const char *name, sa_device_type device, int32_t device_id) {
  const Plugin *p = loaded_cuda_plugin();
  if (!p || !data || !has_entry(p->api, &sa_plugin_api::memory_info))
    return;
  sa_plugin_memory_info m{};
  m.struct_size = sizeof m;
  const sa_status s = p->api.memory_info(data, &m);
  if (device == SA_DEVICE_CPU) {
    // A plugin that cannot tell must not stop work on CPU tensors.
    if (s == SA_OK && m.kind == SA_PLUGIN_MEMORY_DEVICE)
      fail(SA_ERR_INVALID_ARGUMENT, "%s is described as a CPU tensor, but its data is memory of CUDA device %d "
           "(set %s.device = SA_DEVICE_CUDA)", name, int(m.device_id), name);
    return;
  }
  check_plugin(*p, s, "pointer check");
  switch (m.kind) {
    case SA_PLUGIN_MEMORY_DEVICE:
      if (m.device_id != device_id)
        fail(SA_ERR_INVALID_ARGUMENT, "%s is described as memory of CUDA device %d, but its data is on CUDA device %d",
             name, int(device_id), int(m.device_id));
      return;
    case SA_PLUGIN_MEMORY_MANAGED:
      return;
    case SA_PLUGIN_MEMORY_HOST:
      if (m.device_addressable) return;
      fail(SA_ERR_INVALID_ARGUMENT, "%s is described as a CUDA tensor, but its data is page-locked host memory that is "
           "not mapped at the same address on the device (pass the address cudaHostGetDevicePointer gives)", name);
    default:
      fail(SA_ERR_INVALID_ARGUMENT, "%s is described as a CUDA tensor, but its data is pageable host memory, which "
           "CUDA kernels cannot read (copy it to the device, or describe it as SA_DEVICE_CPU)", name);
  }
}

void check_plugin(const Plugin &plugin, sa_status s, const char *what) {
  if (s == SA_OK) return;
  const char *msg = plugin.api.last_error();
  fail(s, "%s: %s", what, msg && *msg ? msg : "the CUDA plugin gave no reason");
}

}  // namespace sa
