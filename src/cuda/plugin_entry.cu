// libsparseattn_cuda.so's one exported symbol and the table behind it. Every entry turns the
// plugin's failures into an sa_status and a message for last_error().
#include <cstdio>
#include <cstring>

#include "attend_decode.hpp"
#include "device_index.hpp"
#include "evict.hpp"
#include "plugin_state.hpp"

namespace sacuda {
namespace {

const char *table_last_error() { return last_error(); }

sa_status table_device_count(int32_t *count) {
  return guarded([&] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      fail(SA_ERR_BACKEND_UNAVAILABLE, "cudaGetDeviceCount failed: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
    *count = n;
  });
}

sa_status table_device_name(int32_t device_id, char *buf, size_t cap) {
  return guarded([&] {
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, device_id), "cudaGetDeviceProperties");
    if (cap) std::snprintf(buf, cap, "%s (sm_%d%d)", prop.name, prop.major, prop.minor);
  });
}

sa_status table_attend(const sa_plugin_attend_args *a) {
  return guarded([&] { attend(*a); });
}

sa_status table_index_create(const sa_plugin_index_args *a, sa_plugin_index **out) {
  return guarded([&] { *out = index_create(*a); });
}

void table_index_destroy(sa_plugin_index *ix) { index_destroy(ix); }

sa_status table_index_append(sa_plugin_index *ix, const sa_tensor *keys) {
  return guarded([&] { index_append(*ix, *keys); });
}

sa_status table_select(sa_plugin_index *ix, const sa_plugin_select_args *a) {
  return guarded([&] { index_select(*ix, *a, false); });
}

sa_status table_select_keys(sa_plugin_index *ix, const sa_plugin_select_args *a) {
  return guarded([&] { index_select(*ix, *a, true); });
}

sa_status table_stream_synchronize(void *stream) {
  return guarded([&] { check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize"); });
}

// cudaPointerGetAttributes names pageable memory cudaMemoryTypeUnregistered (CUDA >= 11).
sa_status table_memory_info(const void *ptr, sa_plugin_memory_info *out) {
  return guarded([&] {
    cudaPointerAttributes at{};
    check_cuda(cudaPointerGetAttributes(&at, ptr), "cudaPointerGetAttributes");
    sa_plugin_memory_info r{};
    r.struct_size = sizeof r;
    r.device_id = -1;
    switch (at.type) {
      case cudaMemoryTypeDevice:
        r.kind = SA_PLUGIN_MEMORY_DEVICE;
        r.device_id = at.device;
        r.device_addressable = 1;
        break;
      case cudaMemoryTypeManaged:
        r.kind = SA_PLUGIN_MEMORY_MANAGED;
        r.device_addressable = 1;
        break;
      case cudaMemoryTypeHost:
        r.kind = SA_PLUGIN_MEMORY_HOST;
        r.device_addressable = at.devicePointer == ptr;
        break;
      default:
        r.kind = SA_PLUGIN_MEMORY_PAGEABLE;
        break;
    }
    const size_t n = out->struct_size < sizeof r ? out->struct_size : sizeof r;
    std::memcpy(reinterpret_cast<char *>(out) + sizeof(size_t), reinterpret_cast<const char *>(&r) + sizeof(size_t),
                n > sizeof(size_t) ? n - sizeof(size_t) : 0);
  });
}

void table_release(const void *owner) { release_owner(owner); }

sa_status table_index_update(sa_plugin_index *ix, const sa_plugin_update_args *a) {
  return guarded([&] { index_update(*ix, *a); });
}

sa_status table_index_update_heads(sa_plugin_index *ix, const sa_plugin_update_args *a) {
  return guarded([&] { index_update_heads(*ix, *a); });
}

// cudaMemcpyDefault: the driver tells host from device memory (unified addressing).
sa_status table_copy(void *dst, const void *src, size_t bytes, void *stream) {
  return guarded([&] {
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s), "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(s), "cudaStreamSynchronize");
  });
}

sa_status table_evict(sa_plugin_evict_args *a) {
  return guarded([&] { evict(*a); });
}

sa_status table_evict_heads(sa_plugin_evict_args *a) {
  return guarded([&] { evict_heads(*a); });
}

sa_status table_set_allocator(const void *owner, const sa_cuda_allocator *allocator) {
  return guarded([&] { set_owner_memory(owner, allocator ? *allocator : sa_cuda_allocator{}); });
}

sa_status table_attend_paged(const sa_plugin_attend_paged_args *a) {
  return guarded([&] { attend_paged(*a); });
}

sa_status table_select_batch(sa_plugin_select_batch_args *a) {
  return guarded([&] { a->served = index_select_batch(*a) ? 1 : 0; });
}

}  // namespace
}  // namespace sacuda

extern "C" SA_PLUGIN_EXPORT sa_status sa_plugin_init(uint32_t abi_version, sa_plugin_api *out) {
  if (!out || out->struct_size < offsetof(sa_plugin_api, name)) return SA_ERR_STRUCT_SIZE;
  out->abi_version = SA_PLUGIN_ABI_VERSION;
  if (abi_version != SA_PLUGIN_ABI_VERSION) return SA_ERR_UNSUPPORTED;
  sa_plugin_api t{};
  t.abi_version = SA_PLUGIN_ABI_VERSION;
  t.name = "cuda";
  t.last_error = sacuda::table_last_error;
  t.device_count = sacuda::table_device_count;
  t.device_name = sacuda::table_device_name;
  t.attend = sacuda::table_attend;
  t.index_create = sacuda::table_index_create;
  t.index_destroy = sacuda::table_index_destroy;
  t.index_append = sacuda::table_index_append;
  t.select = sacuda::table_select;
  t.stream_synchronize = sacuda::table_stream_synchronize;
  t.memory_info = sacuda::table_memory_info;
  t.release = sacuda::table_release;
  t.index_update = sacuda::table_index_update;
  t.copy = sacuda::table_copy;
  t.evict = sacuda::table_evict;
  t.set_allocator = sacuda::table_set_allocator;
  t.attend_paged = sacuda::table_attend_paged;
  t.select_batch = sacuda::table_select_batch;
  t.evict_heads = sacuda::table_evict_heads;
  t.index_update_heads = sacuda::table_index_update_heads;
  t.select_keys = sacuda::table_select_keys;
  const size_t n = out->struct_size < sizeof t ? out->struct_size : sizeof t;
  t.struct_size = n;
  std::memcpy(out, &t, n);
  return SA_OK;
}
