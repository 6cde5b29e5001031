// Picks the kernel table: the best instruction set the CPU has, capped by the context's
// option and by the SA_ISA environment variable (so tests can run every path on one machine).
#include "kernels/kernels.hpp"

#if defined(SA_HAVE_X86_KERNELS)
#include <cpuid.h>
#endif

namespace sa {

#if defined(SA_HAVE_X86_KERNELS)
namespace {

// CPUID and XGETBV directly rather than __builtin_cpu_supports: clang 14 refuses the "f16c"
// feature name there, and the library must build with it (the TSan tier). Bit numbers: Intel
// SDM vol. 2A, CPUID leaves 1 and 7.
struct X86Features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512vnni = false;
  bool os_ymm = false, os_zmm = false;  // the OS saves YMM / ZMM and opmask state (XCR0)
};

X86Features x86_features() {
  X86Features f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
  if (osxsave && avx) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));  // XCR0; no -mxsave needed
    f.os_ymm = (lo & 0x6) == 0x6;                                 // SSE and AVX state
    f.os_zmm = (lo & 0xe6) == 0xe6;                               // ... plus opmask, ZMM
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b >> 5) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512vnni = (c >> 11) & 1;
  }
  return f;
}

}  // namespace
#endif

sa_isa cpu_best_isa() {
#if defined(SA_HAVE_X86_KERNELS)
  static const X86Features f = x86_features();
  if (f.os_zmm && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx2 && f.fma && f.f16c)
    return SA_ISA_AVX512;
  if (f.os_ymm && f.avx2 && f.fma && f.f16c) return SA_ISA_AVX2;
#elif defined(SA_HAVE_NEON_KERNELS)
  return SA_ISA_NEON;
#endif
  return SA_ISA_SCALAR;
}

bool cpu_has_avx512_vnni() {
#if defined(SA_HAVE_X86_KERNELS)
  static const bool vnni = x86_features().avx512vnni;
  return vnni && cpu_best_isa() == SA_ISA_AVX512;
#else
  return false;
#endif
}

const KernelTable &kernel_table(sa_isa cap) {
  sa_isa best = cpu_best_isa();
  sa_isa isa = (cap == SA_ISA_AUTO || cap > best) ? best : cap;
#if defined(SA_HAVE_X86_KERNELS)
  if (isa == SA_ISA_AVX512) return cpu_has_avx512_vnni() ? kernels_avx512_vnni : kernels_avx512;
  if (isa >= SA_ISA_AVX2) return kernels_avx2;
#elif defined(SA_HAVE_NEON_KERNELS)
  if (isa >= SA_ISA_NEON) return kernels_neon;
#endif
  return kernels_scalar;
}

}  // namespace sa
