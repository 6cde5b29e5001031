// AVX-512 (F/BW/DQ/VL) kernels; built with -mavx512* and used only when the CPU has them.
#define SA_KERNEL_NS avx512
#include "kernels/arch_avx512.hpp"
#include "kernels/kernels_simd.hpp"

namespace sa {
extern const KernelTable kernels_avx512 = avx512::table(SA_ISA_AVX512);
}
