#include "core/context.hpp"

#include <omp.h>

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
  const int isa = enum_value(opt.isa);
  bool known = isa == SA_ISA_AUTO || isa == SA_ISA_SCALAR || isa == SA_ISA_NEON || isa == SA_ISA_AVX2 ||
               isa == SA_ISA_AVX512;
  if (!known) fail(SA_ERR_INVALID_ARGUMENT, "opt->isa is %d, not an sa_isa value", isa);
  ctx.threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  if (ctx.threads < 1) ctx.threads = 1;
  sa_isa cap = opt.isa;
  sa_isa env = isa_from_environment();
  if (env != SA_ISA_AUTO && (cap == SA_ISA_AUTO || env < cap)) cap = env;
  ctx.kernels = &kernel_table(cap);
  ctx.isa = ctx.kernels->isa;
}

int thread_slot() { return omp_in_parallel() ? omp_get_thread_num() : 0; }

OmpThreadLimit::OmpThreadLimit(int threads) : saved_(omp_get_max_threads()) { omp_set_num_threads(threads); }
OmpThreadLimit::~OmpThreadLimit() { omp_set_num_threads(saved_); }

}  // namespace sa
