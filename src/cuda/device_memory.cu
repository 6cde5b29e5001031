#include "device_memory.hpp"

#include <map>
#include <mutex>

#include "plugin_state.hpp"

namespace sacuda {
namespace {

std::mutex g_hooks_mutex;
std::map<const void *, sa_cuda_allocator> &hooks() {
  static auto *m = new std::map<const void *, sa_cuda_allocator>();  // never destroyed: used until exit
  return *m;
}

}  // namespace

void *DeviceMemory::allocate(size_t bytes, int device, cudaStream_t stream, const char *what) const {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone)
    fail(SA_ERR_UNSUPPORTED, "%s needs %zu more bytes of device memory while its stream is being captured into a CUDA "
         "graph: run one call of this shape on the stream before capturing (an index: append outside the capture, "
         "or give it a capacity)", what, bytes);
  if (!hook_.alloc) {
    void *p = nullptr;
    check_cuda(cudaMallocAsync(&p, bytes, stream), what);
    return p;
  }
  void *p = hook_.alloc(hook_.user, bytes, device, stream);
  if (!p) fail(SA_ERR_OUT_OF_MEMORY, "%s: the host's cuda_allocator returned no memory for %zu bytes on CUDA device %d",
               what, bytes, device);
  return p;
}

void DeviceMemory::release(void *p, size_t bytes, int device, cudaStream_t stream) const noexcept {
  if (!p) return;
  if (hook_.free) (hook_.free)(hook_.user, p, bytes, device, stream);
  else cudaFreeAsync(p, stream);
  cudaGetLastError();
}

void set_owner_memory(const void *owner, const sa_cuda_allocator &hook) {
  std::lock_guard<std::mutex> lock(g_hooks_mutex);
  hooks()[owner] = hook;
}

DeviceMemory owner_memory(const void *owner) {
  if (!owner) return DeviceMemory();
  std::lock_guard<std::mutex> lock(g_hooks_mutex);
  auto it = hooks().find(owner);
  return it == hooks().end() ? DeviceMemory() : DeviceMemory(it->second);
}

void forget_owner_memory(const void *owner) {
  std::lock_guard<std::mutex> lock(g_hooks_mutex);
  hooks().erase(owner);
}

void wait_for_device(int device) noexcept {
  int saved = -1;
  const bool have_saved = cudaGetDevice(&saved) == cudaSuccess;
  if (cudaSetDevice(device) == cudaSuccess) cudaDeviceSynchronize();
  cudaGetLastError();
  if (have_saved) cudaSetDevice(saved);
}

}  // namespace sacuda
