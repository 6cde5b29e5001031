// Finds, loads and checks the CUDA plugin: once per requested path, thread-safe. The core
// never links CUDA; everything device-side goes through the table this returns.
#pragma once

#include <cstddef>
#include <string>

#include "sparseattn_plugin.h"

namespace sa {

// Whether a plugin fills the table entry `entry`: it lies within the struct_size the plugin
// returned and is not NULL. Entries appended after a plugin was built are absent from it; the
// one rule for every optional entry (the required ones are checked when the plugin loads).
template <class Entry>
bool has_entry(const sa_plugin_api &api, Entry sa_plugin_api::*entry) {
  const auto *base = reinterpret_cast<const char *>(&api);
  const size_t end = size_t(reinterpret_cast<const char *>(&(api.*entry)) - base) + sizeof(Entry);
  return api.struct_size >= end && api.*entry != nullptr;
}

struct Plugin {
  sa_plugin_api api{};
  std::string path;          // the file that was loaded
  int32_t device_count = 0;  // >= 1
};

// The CUDA plugin for explicit_path, or, when it is empty, for the path in SA_CUDA_PLUGIN, or
// else libsparseattn_cuda.so beside libsparseattn.so. The first call for a path loads it;
// later calls return the same plugin or the same failure: SA_ERR_BACKEND_UNAVAILABLE naming
// the path and the reason (file, symbol, ABI version, CUDA runtime, devices).
const Plugin &cuda_plugin(const std::string &explicit_path);

// The first CUDA plugin this process loaded successfully, or nullptr while none has been
// needed. Never loads one: CPU-only work must not start CUDA.
const Plugin *loaded_cuda_plugin();

// Refuses (SA_ERR_INVALID_ARGUMENT, naming `name`) a tensor whose data is not the memory its
// descriptor claims, as far as a loaded plugin's memory_info can tell: device memory
// described as CPU memory; host memory the device cannot address, or another device's
// memory, described as CUDA memory of device_id. Without a plugin, or one without
// memory_info, nothing is checked. sparseattn.h documents which memory each side takes.
void check_memory(const void *data, const char *name, sa_device_type device, int32_t device_id);

// Hands plugin ctx's cuda_allocator for everything it allocates for ctx; SA_ERR_UNSUPPORTED
// when the plugin predates allocators.
void give_allocator(const Plugin &plugin, const sa_context &ctx);

// Frees what a loaded plugin keeps for ctx (its stream buffers); loads nothing.
void release_plugin_buffers(const sa_context &ctx);

// Throws the plugin's failure (its status and message, prefixed with `what`) unless s is SA_OK.
void check_plugin(const Plugin &plugin, sa_status s, const char *what);

}  // namespace sa
