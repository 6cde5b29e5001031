#include "core/context.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/error.hpp"

namespace sa {

sa_isa isa_from_environment() {
  const char *env = std::getenv("SA_ISA");
  if (!env || !*env) return SA_ISA_AUTO;
  if (!std::strcmp(env, "scalar")) return SA_ISA_SCALAR;
  if (!std::strcmp(env, "neon")) return SA_ISA_NEON;
  if (!std::strcmp(env, "avx2")) return SA_ISA_AVX2;
  if (!std::strcmp(env, "avx512")) return SA_ISA_AVX512;
  return SA_ISA_AUTO;  // unknown names do not restrict
}

void init_context(sa_context &ctx, const sa_context_options &opt) {
  if (opt.threads < 0) fail(SA_ERR_INVALID_ARGUMENT, "opt->threads is %d, expected >= 0", int(opt.threads));
  if (opt.threads > kMaxThreads)
    fail(SA_ERR_INVALID_ARGUMENT, "opt->threads is %d; at most %d threads are supported", int(opt.threads),
         kMaxThreads);
  const int isa = enum_value(opt.isa);
  bool known = isa == SA_ISA_AUTO || isa == SA_ISA_SCALAR || isa == SA_ISA_NEON || isa == SA_ISA_AVX2 ||
               isa == SA_ISA_AVX512;
  if (!known) fail(SA_ERR_INVALID_ARGUMENT, "opt->isa is %d, not an sa_isa value", isa);
  ctx.threads = opt.threads > 0 ? opt.threads : std::min(omp_get_max_threads(), kMaxThreads);
  if (ctx.threads < 1) ctx.threads = 1;
  sa_isa cap = opt.isa;
  sa_isa env = isa_from_environment();
  if (env != SA_ISA_AUTO && (cap == SA_ISA_AUTO || env < cap)) cap = env;
  ctx.kernels = &kernel_table(cap);
  ctx.isa = ctx.kernels->isa;

  const int device = enum_value(opt.device);
  if (device != SA_DEVICE_CPU && device != SA_DEVICE_CUDA)
    fail(SA_ERR_INVALID_ARGUMENT, "opt->device is %d, not an sa_device_type value", device);
  if (opt.device_id < 0) fail(SA_ERR_INVALID_ARGUMENT, "opt->device_id is %d, expected >= 0", int(opt.device_id));
  ctx.cuda_plugin_path = opt.cuda_plugin_path ? opt.cuda_plugin_path : "";
  ctx.device = opt.device;
  ctx.device_id = opt.device_id;
  ctx.cuda_stream = opt.cuda_stream;
  const sa_cuda_allocator &a = opt.cuda_allocator;
  if (!a.alloc != !a.free)
    fail(SA_ERR_INVALID_ARGUMENT, "opt->cuda_allocator.%s is set but .%s is NULL (set both, or neither for "
         "cudaMallocAsync)", a.alloc ? "alloc" : "free", a.alloc ? "free" : "alloc");
  ctx.cuda_allocator = a;
  if (ctx.device == SA_DEVICE_CUDA) context_plugin(ctx, ctx.device_id);  // a CUDA context needs it now
}

const Plugin &context_plugin(const sa_context &ctx, int32_t device_id) {
  const Plugin &p = cuda_plugin(ctx.cuda_plugin_path);
  if (device_id < 0 || device_id >= p.device_count)
    fail(SA_ERR_BACKEND_UNAVAILABLE, "CUDA device %d requested, but the plugin '%s' sees %d device(s)", int(device_id),
         p.path.c_str(), int(p.device_count));
  if (ctx.cuda_allocator.alloc) std::call_once(ctx.allocator_given, [&] { give_allocator(p, ctx); });
  return p;
}

OmpThreadLimit::OmpThreadLimit(int threads)
    : active_(!omp_in_parallel()), saved_(active_ ? omp_get_max_threads() : 0) {
  if (active_) omp_set_num_threads(threads);
}
OmpThreadLimit::~OmpThreadLimit() {
  if (active_) omp_set_num_threads(saved_);
}

}  // namespace sa
