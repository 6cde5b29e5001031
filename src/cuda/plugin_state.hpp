// Shared pieces of the CUDA plugin: errors (thrown inside, turned into an sa_status and a
// thread-local message at the table boundary), the current-device guard, and the
// per-stream buffers.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "device_memory.hpp"
#include "sparseattn_plugin.h"

namespace sacuda {

struct Failure {
  sa_status status;
  std::string message;
};

[[noreturn]] void fail(sa_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void check_cuda(cudaError_t e, const char *what);
void set_error(const std::string &message);
const char *last_error();

// Runs f, translating failures into a status and the thread's message.
template <class F>
sa_status guarded(F &&f) noexcept {
  try {
    f();
    return SA_OK;
  } catch (const Failure &e) {
    set_error(e.message);
    return e.status;
  } catch (const std::bad_alloc &) {
    set_error("out of host memory");
    return SA_ERR_OUT_OF_MEMORY;
  } catch (...) {
    set_error("internal error");
    return SA_ERR_INTERNAL;
  }
}

// Makes device_id current for the calling thread while alive, then restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device_id);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard &) = delete;
  DeviceGuard &operator=(const DeviceGuard &) = delete;

 private:
  int saved_ = -1;
};

// Device buffers the plugin keeps per (owner, device, stream), so a call allocates nothing once
// its stream has seen a call as large from the same owner (an sa_context; release_owner frees
// its buffers when the context is destroyed; a NULL owner's are kept for the process). They
// come from the owner's DeviceMemory. `zeroed` is all zeros between calls: a kernel that uses
// it (split counters, claimed pieces, running maxima) puts the zeros back before it ends.
// `scratch` holds nothing between calls. Calls on one stream run in order, so they share the
// buffers; a larger request allocates new ones and keeps the old ones alive until the owner
// is released, since work already queued, or captured in a CUDA graph, may still use them.
// Allocating is refused while the stream is being captured: run one call of each shape before
// capturing.
struct StreamBuffers {
  void *zeroed = nullptr;
  void *scratch = nullptr;
};
StreamBuffers stream_buffers(const void *owner, int device_id, cudaStream_t stream, size_t zeroed_bytes,
                             size_t scratch_bytes);

// Frees every buffer kept for owner, once the device has finished the work queued so far, and
// forgets owner's allocator.
void release_owner(const void *owner);

// A value per device asked of the runtime once (0: not asked yet). Hosts call from many threads
// at once, so the slots are atomic: two first callers may both ask, and store the same value.
constexpr int kMaxDevices = 64;
using PerDevice = std::atomic<int>[kMaxDevices];
template <class Ask>
int once_per_device(PerDevice &slots, int device_id, Ask ask) {
  if (device_id < 0 || device_id >= kMaxDevices) return ask();
  int v = slots[device_id].load(std::memory_order_relaxed);
  if (!v) {
    v = ask();
    slots[device_id].store(v, std::memory_order_relaxed);
  }
  return v;
}

// Blocks of Kernel, Threads threads each, resident on one multiprocessor of a device (at least
// 1; asked once per device and kernel).
template <auto Kernel, int Threads>
int resident_blocks(int device_id) {
  static PerDevice cached;
  return once_per_device(cached, device_id, [] {
    int n = 0;
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, Kernel, Threads, 0),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    return n > 0 ? n : 1;
  });
}

// Lets kernel take `bytes` of dynamic shared memory per block on the current device, once per
// device and size (opted: the largest size each device was opted into).
template <class K>
void opt_in_shared(K kernel, PerDevice &opted, int device_id, int bytes) {
  if (device_id >= 0 && device_id < kMaxDevices && opted[device_id].load(std::memory_order_relaxed) >= bytes) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), "cudaFuncSetAttribute");
  if (device_id >= 0 && device_id < kMaxDevices) opted[device_id].store(bytes, std::memory_order_relaxed);
}

// Multiprocessors of a device (cached).
int sm_count(int device_id);

// Optional-in shared memory per block of a device (cached).
int max_shared_per_block(int device_id);

// dtype of a tensor as the kernels see it.
inline bool is_half_type(sa_dtype d) { return d == SA_DTYPE_F16 || d == SA_DTYPE_BF16; }

}  // namespace sacuda
