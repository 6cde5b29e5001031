#include "plugin_state.hpp"

#include <cstdarg>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

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
  int device;
  cudaStream_t stream;
  std::thread::id thread;  // per-thread default streams share one handle
  bool operator<(const BufferKey &o) const {
    return std::tie(device, stream, thread) < std::tie(o.device, o.stream, o.thread);
  }
};
struct BufferEntry {
  StreamBuffers buffers;
  size_t zeroed_bytes = 0, scratch_bytes = 0;
};

void *grow(void *&current, size_t &have, size_t want, const char *what) {
  if (want <= have) return nullptr;
  size_t bytes = have ? have : 4096;
  while (bytes < want) bytes *= 2;
  void *fresh = nullptr;
  check_cuda(cudaMalloc(&fresh, bytes), what);
  current = fresh;  // the old one stays allocated: queued or captured work may use it
  have = bytes;
  return fresh;
}
}  // namespace

StreamBuffers stream_buffers(int device_id, cudaStream_t stream, size_t zeroed_bytes, size_t scratch_bytes) {
  static std::mutex mutex;
  static std::map<BufferKey, BufferEntry> entries;
  const bool per_thread = stream == cudaStreamPerThread;
  const BufferKey key{device_id, stream, per_thread ? std::this_thread::get_id() : std::thread::id()};
  std::lock_guard<std::mutex> lock(mutex);
  BufferEntry &e = entries[key];
  if (zeroed_bytes > e.zeroed_bytes || scratch_bytes > e.scratch_bytes) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone)
      fail(SA_ERR_UNSUPPORTED, "the CUDA plugin needs larger buffers for this stream while it is being captured: "
                               "run one call of this shape on the stream before capturing");
    if (void *z = grow(e.buffers.zeroed, e.zeroed_bytes, zeroed_bytes, "stream buffer allocation")) {
      check_cuda(cudaMemsetAsync(z, 0, e.zeroed_bytes, stream), "stream buffer zeroing");
    }
    grow(e.buffers.scratch, e.scratch_bytes, scratch_bytes, "stream buffer allocation");
  }
  return e.buffers;
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
