// Programmatic dependent launch (compute capability 9.0 and later) for the decode step's
// kernels: page bounds, page candidates, and the decode attention over the rows they chose. A
// kernel launched with launch_dependent may be placed while the kernel before it on the stream
// still runs, so its launch overlaps that kernel's tail instead of following its end. Such a
// kernel calls wait_prior_grid() before it touches global memory (every read and write comes
// after the kernel before it has completed and its writes are visible); allow_dependents()
// lets the next kernel be placed. The bounds allow at once (the candidates' blocks fit beside
// them and wait); the candidates only in the row's last block, as it writes the row (decode
// blocks placed earlier sat beside the candidates' blocks: the step was slower, stop 29). On
// older devices the launch is an ordinary one and both calls compile to nothing.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "plugin_state.hpp"

namespace sacuda {

__device__ __forceinline__ void wait_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether a device takes programmatic dependent launches (compute capability 9.0 or later; cached).
inline bool dependent_launch_device(int device_id) {
  static PerDevice major;
  return once_per_device(major, device_id, [&] {
    int m = 0;
    check_cuda(cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, device_id), "cudaDeviceGetAttribute");
    return m > 0 ? m : 1;
  }) >= 9;
}

// kernel<<<grid, block, shared, s>>>(args...), as a programmatic dependent of the kernel before
// it on s where device_id allows.
template <class... P, class... A>
void launch_dependent(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared, cudaStream_t s, int device_id,
                      const char *what, A &&...args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = shared;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = dependent_launch_device(device_id) ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...), what);
}

}  // namespace sacuda
