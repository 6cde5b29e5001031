// The context: thread count and the kernel table chosen for this CPU.
#pragma once

#include <mutex>
#include <string>

#include "kernels/kernels.hpp"
#include "core/plugin_loader.hpp"
#include "sparseattn.h"

struct sa_context {
  int threads = 1;
  sa_isa isa = SA_ISA_SCALAR;
  const sa::KernelTable *kernels = nullptr;
  // Accelerators: the plugin is looked up on first need (see sa_context_options).
  std::string cuda_plugin_path;
  sa_device_type device = SA_DEVICE_CPU;  // where indexes created with this context live
  int32_t device_id = 0;
  void *cuda_stream = nullptr;
  sa_cuda_allocator cuda_allocator{};     // alloc null: the plugin's own (cudaMallocAsync)
  mutable std::once_flag allocator_given;  // to the plugin, before its first call for this context
};

namespace sa {

// The CUDA plugin for this context's settings, loaded on first use; throws
// SA_ERR_BACKEND_UNAVAILABLE when it cannot be, or when it has no device device_id. The first
// time, it hands the plugin the context's cuda_allocator (SA_ERR_UNSUPPORTED from a plugin
// that takes none).
const Plugin &context_plugin(const sa_context &ctx, int32_t device_id);

// A call's stream: its own when given, else the context's.
inline void *call_stream(const sa_context &ctx, void *call) { return call ? call : ctx.cuda_stream; }

// The instruction set named by the SA_ISA environment variable, or SA_ISA_AUTO.
sa_isa isa_from_environment();

// Applies defaults and caps; throws sa::Error on bad options.
void init_context(sa_context &ctx, const sa_context_options &opt);

// The most threads a context may have (sa_context_options documents it): far above any core
// count, and a team the OpenMP runtime can create (a million threads crashed inside libgomp).
constexpr int kMaxThreads = 1024;

// While alive, OpenMP-parallel libraries called from this thread (oneDNN) use at most
// ctx.threads threads; restores the caller's setting afterwards. Inside a parallel region
// (the host's, or ours) it does nothing: there the library runs serially, oneDNN too (it
// checks omp_in_parallel()), and the host's setting is not ours to touch.
class OmpThreadLimit {
 public:
  explicit OmpThreadLimit(int threads);
  ~OmpThreadLimit();
  OmpThreadLimit(const OmpThreadLimit &) = delete;
  OmpThreadLimit &operator=(const OmpThreadLimit &) = delete;

 private:
  bool active_;
  int saved_;
};

}  // namespace sa
