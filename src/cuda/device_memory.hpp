// Where the plugin's device memory comes from: the host's sa_cuda_allocator, set per owner
// (an sa_context) through set_allocator, or else cudaMallocAsync / cudaFreeAsync. Every
// device allocation of the plugin goes through a DeviceMemory, so that the host's hook sees
// all of it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "sparseattn.h"

namespace sacuda {

class DeviceMemory {
 public:
  DeviceMemory() = default;  // cudaMallocAsync / cudaFreeAsync
  explicit DeviceMemory(const sa_cuda_allocator &hook) : hook_(hook) {}

  // bytes (> 0) on device for work on stream from now on. Refused (SA_ERR_UNSUPPORTED) while
  // stream is being captured: the hook would not be part of the graph. SA_ERR_OUT_OF_MEMORY,
  // naming `what`, when there are none.
  void *allocate(size_t bytes, int device, cudaStream_t stream, const char *what) const;

  // Gives back p (allocate's, with its bytes and device), ordered on stream as cudaFreeAsync
  // is; stream nullptr after wait_for_device. Nothing can be reported: errors are cleared.
  void release(void *p, size_t bytes, int device, cudaStream_t stream) const noexcept;

 private:
  sa_cuda_allocator hook_{};
};

// The memory owner's allocations come from: its hook from set_owner_memory on, else the
// default. forget_owner_memory drops the hook (release(owner)).
void set_owner_memory(const void *owner, const sa_cuda_allocator &hook);
DeviceMemory owner_memory(const void *owner);
void forget_owner_memory(const void *owner);

// Waits for all work queued on device, before memory it may use is released with stream
// nullptr. Best effort, for destroy paths: errors are cleared.
void wait_for_device(int device) noexcept;

}  // namespace sacuda
