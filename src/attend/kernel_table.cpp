// Picks the kernel table: the best instruction set the CPU has, capped by the context's
// option and by the SA_ISA environment variable (so tests can run every path on one machine).
#include "attend/kernels.hpp"

namespace sa {

sa_isa cpu_best_isa() {
#if defined(SA_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c"))
    return SA_ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return SA_ISA_AVX2;
#elif defined(SA_HAVE_NEON_KERNELS)
  return SA_ISA_NEON;
#endif
  return SA_ISA_SCALAR;
}

const KernelTable &kernel_table(sa_isa cap) {
  sa_isa best = cpu_best_isa();
  sa_isa isa = (cap == SA_ISA_AUTO || cap > best) ? best : cap;
#if defined(SA_HAVE_X86_KERNELS)
  if (isa == SA_ISA_AVX512) return kernels_avx512;
  if (isa >= SA_ISA_AVX2) return kernels_avx2;
#elif defined(SA_HAVE_NEON_KERNELS)
  if (isa >= SA_ISA_NEON) return kernels_neon;
#endif
  return kernels_scalar;
}

}  // namespace sa
