// AVX2 + FMA + F16C kernels; built with those flags and used only when the CPU has them.
#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

#define SA_KERNEL_NS avx2
namespace sa {
namespace avx2 {
namespace {
using arch = xsimd::fma3<xsimd::avx2>;
using Batch = xsimd::batch<float, arch>;
inline Batch load_f32(const float *p) { return Batch::load_unaligned(p); }
inline Batch load_f32(const F16 *p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
inline Batch load_f32(const BF16 *p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline Batch transpose_sum(const Batch *rows) { return xsimd::haddp(rows); }
}  // namespace
}  // namespace avx2
}  // namespace sa
#include "kernels/kernels_simd.hpp"

namespace sa {
extern const KernelTable kernels_avx2 = {SA_ISA_AVX2, avx2::rows_of<float>, avx2::rows_of<F16>,
                                            avx2::rows_of<BF16>, avx2::max_of, avx2::exp2_sum,
                                            avx2::exp2_accumulate};
}
