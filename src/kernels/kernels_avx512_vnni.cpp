// AVX-512 with VNNI: the AVX-512 kernels built again with -mavx512vnni, where the int8-code dot
// products (score_rows_i8, the page bound scan) multiply and add in one instruction; used only
// when the CPU has VNNI (kernel_table.cpp). The float kernels compile as in kernels_avx512.cpp.
#define SA_KERNEL_NS avx512_vnni
#include "kernels/arch_avx512.hpp"
#include "kernels/kernels_simd.hpp"

namespace sa {
extern const KernelTable kernels_avx512_vnni = avx512_vnni::table(SA_ISA_AVX512);
}
