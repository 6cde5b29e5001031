#include "plugin_state.hpp"

#include <cstdarg>
#include <cstdio>
#include <mutex>

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
cudaMemPool_t device_pool(int device_id) {
  static std::mutex mutex;
  static cudaMemPool_t pools[kMaxDevices] = {};
  if (device_id < 0 || device_id >= kMaxDevices) fail(SA_ERR_UNSUPPORTED, "CUDA device %d is beyond %d", device_id, kMaxDevices);
  std::lock_guard<std::mutex> lock(mutex);
  if (!pools[device_id]) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device_id;
    cudaMemPool_t pool;
    check_cuda(cudaMemPoolCreate(&pool, &props), "cudaMemPoolCreate");
    uint64_t keep = UINT64_MAX;
    check_cuda(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
    pools[device_id] = pool;
  }
  return pools[device_id];
}
}  // namespace

void *Workspace::get(size_t bytes) {
  if (n_ == 8) fail(SA_ERR_INTERNAL, "workspace: too many blocks");
  void *p = nullptr;
  check_cuda(cudaMallocFromPoolAsync(&p, bytes ? bytes : 16, device_pool(device_), stream_), "workspace allocation");
  blocks_[n_++] = p;
  return p;
}

Workspace::~Workspace() {
  for (int i = 0; i < n_; ++i) cudaFreeAsync(blocks_[i], stream_);  // after the work queued so far
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

}  // namespace sacuda
