#include "plugin_state.hpp"

#include <cstdarg>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

namespace sacuda {
namespace {
thread_local std::string t_error;
}  // namespace

void fail(sa_status status, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  throw Failure{status, buf};
}

void check_cuda(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky launch error so later calls start clean
  sa_status s = e == cudaErrorMemoryAllocation ? SA_ERR_OUT_OF_MEMORY
              : (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) ? SA_ERR_BACKEND_UNAVAILABLE
                                                                               : SA_ERR_INTERNAL;
  fail(s, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

void set_error(const std::string &message) { t_error = message; }
const char *last_error() { return t_error.c_str(); }

DeviceGuard::DeviceGuard(int device_id) {
  check_cuda(cudaGetDevice(&saved_), "cudaGetDevice");
  if (saved_ != device_id) check_cuda(cudaSetDevice(device_id), "cudaSetDevice");
}
DeviceGuard::~DeviceGuard() {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now != saved_) cudaSetDevice(saved_);
}

namespace {
struct BufferKey {
  const void *owner;
  int device;
  cudaStream_t stream;
  std::thread::id thread;  // per-thread default streams share one handle
  bool operator<(const BufferKey &o) const {
    return std::tie(owner, device, stream, thread) < std::tie(o.owner, o.device, o.stream, o.thread);
  }
};
struct Allocation {
  void *ptr;
  size_t bytes;
};
struct BufferEntry {
  DeviceMemory memory;  // the owner's, when the entry was made
  StreamBuffers buffers;
  size_t zeroed_bytes = 0, scratch_bytes = 0;
  std::vector<Allocation> retired;  // outgrown buffers: queued or captured work may still use them
};

std::mutex g_mutex;
std::map<BufferKey, BufferEntry> &entries() {
  static auto *m = new std::map<BufferKey, BufferEntry>();  // never destroyed: used until exit
  return *m;
}

// Doubles `have` from 4096 bytes until it holds `want`; returns the new buffer (current is
// retired), or nullptr when current is large enough.
void *grow(BufferEntry &e, void *&current, size_t &have, size_t want, int device, cudaStream_t stream) {
  if (want <= have) return nullptr;
  size_t bytes = have ? have : 4096;
  while (bytes < want) bytes *= 2;
  e.retired.reserve(e.retired.size() + 1);  // no failure after the allocation succeeds
  void *fresh = e.memory.allocate(bytes, device, stream, "stream buffer allocation");
  if (current) e.retired.push_back({current, have});
  current = fresh;
  have = bytes;
  return fresh;
}
}  // namespace

StreamBuffers stream_buffers(const void *owner, int device_id, cudaStream_t stream, size_t zeroed_bytes,
                             size_t scratch_bytes) {
  const bool per_thread = stream == cudaStreamPerThread;
  const BufferKey key{owner, device_id, stream, per_thread ? std::this_thread::get_id() : std::thread::id()};
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = entries().find(key);
  if (it == entries().end()) {
    BufferEntry fresh;
    fresh.memory = owner_memory(owner);
    it = entries().emplace(key, fresh).first;
  }
  BufferEntry &e = it->second;
  if (void *z = grow(e, e.buffers.zeroed, e.zeroed_bytes, zeroed_bytes, device_id, stream))
    check_cuda(cudaMemsetAsync(z, 0, e.zeroed_bytes, stream), "stream buffer zeroing");
  grow(e, e.buffers.scratch, e.scratch_bytes, scratch_bytes, device_id, stream);
  return e.buffers;
}

// The streams themselves may be gone by now: the device's work is waited for, and the
// buffers are released with no stream.
void release_owner(const void *owner) {
  if (!owner) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto &m = entries();
  for (auto it = m.begin(); it != m.end();) {
    if (it->first.owner != owner) {
      ++it;
      continue;
    }
    const BufferEntry &e = it->second;
    const int device = it->first.device;
    wait_for_device(device);
    e.memory.release(e.buffers.zeroed, e.zeroed_bytes, device, nullptr);
    e.memory.release(e.buffers.scratch, e.scratch_bytes, device, nullptr);
    for (const Allocation &r : e.retired) e.memory.release(r.ptr, r.bytes, device, nullptr);
    it = m.erase(it);
  }
  forget_owner_memory(owner);
}

int sm_count(int device_id) {
  static PerDevice counts;
  return once_per_device(counts, device_id, [&] {
    int n = 0;
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device_id), "cudaDeviceGetAttribute");
    return n > 0 ? n : 1;
  });
}

int max_shared_per_block(int device_id) {
  static PerDevice bytes;
  return once_per_device(bytes, device_id, [&] {
    int n = 0;
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_id), "cudaDeviceGetAttribute");
    return n > 0 ? n : 48 * 1024;
  });
}
}  // namespace sacuda
