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
constexpr int kMaxDevices = 64;
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
struct BufferEntry {
  StreamBuffers buffers;
  size_t zeroed_bytes = 0, scratch_bytes = 0;
  std::vector<void *> retired;  // outgrown buffers: queued or captured work may still use them
};

std::mutex g_mutex;
std::map<BufferKey, BufferEntry> &entries() {
  static auto *m = new std::map<BufferKey, BufferEntry>();  // never destroyed: used until exit
  return *m;
}

void *grow(void *&current, size_t &have, size_t want, std::vector<void *> &retired, const char *what) {
  if (want <= have) return nullptr;
  size_t bytes = have ? have : 4096;
  while (bytes < want) bytes *= 2;
  void *fresh = nullptr;
  retired.reserve(retired.size() + 1);  // no allocation failure after cudaMalloc succeeds
  check_cuda(cudaMalloc(&fresh, bytes), what);
  if (current) retired.push_back(current);
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
  BufferEntry &e = entries()[key];
  if (zeroed_bytes > e.zeroed_bytes || scratch_bytes > e.scratch_bytes) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone)
      fail(SA_ERR_UNSUPPORTED, "the CUDA plugin needs larger buffers for this stream while it is being captured: "
                               "run one call of this shape on the stream before capturing");
    if (void *z = grow(e.buffers.zeroed, e.zeroed_bytes, zeroed_bytes, e.retired, "stream buffer allocation")) {
      check_cuda(cudaMemsetAsync(z, 0, e.zeroed_bytes, stream), "stream buffer zeroing");
    }
    grow(e.buffers.scratch, e.scratch_bytes, scratch_bytes, e.retired, "stream buffer allocation");
  }
  return e.buffers;
}

// cudaFree waits for the work queued on the device before it frees (the streams themselves may
// be gone by now). Nothing can be reported: errors are cleared, a lost context only leaks.
void release_owner(const void *owner) {
  if (!owner) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  auto &m = entries();
  for (auto it = m.begin(); it != m.end();) {
    if (it->first.owner != owner) {
      ++it;
      continue;
    }
    int saved = -1;
    const bool have_saved = cudaGetDevice(&saved) == cudaSuccess;
    if (cudaSetDevice(it->first.device) == cudaSuccess) {
      cudaFree(it->second.buffers.zeroed);
      cudaFree(it->second.buffers.scratch);
      for (void *p : it->second.retired) cudaFree(p);
    }
    cudaGetLastError();
    if (have_saved) cudaSetDevice(saved);
    it = m.erase(it);
  }
}

int sm_count(int device_id) {
  static int counts[kMaxDevices] = {};
  if (device_id < 0 || device_id >= kMaxDevices) return 1;
  if (!counts[device_id]) {
    int n = 0;
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device_id), "cudaDeviceGetAttribute");
    counts[device_id] = n > 0 ? n : 1;
  }
  return counts[device_id];
}


int max_shared_per_block(int device_id) {
  static int bytes[kMaxDevices] = {};
  if (device_id < 0 || device_id >= kMaxDevices) return 48 * 1024;
  if (!bytes[device_id]) {
    int n = 0;
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_id), "cudaDeviceGetAttribute");
    bytes[device_id] = n > 0 ? n : 48 * 1024;
  }
  return bytes[device_id];
}
}  // namespace sacuda
