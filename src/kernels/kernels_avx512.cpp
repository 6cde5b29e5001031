// AVX-512 (F/BW/DQ/VL) kernels; built with -mavx512* and used only when the CPU has them.
#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

#define SA_KERNEL_NS avx512
namespace sa {
namespace avx512 {
namespace {
using arch = xsimd::avx512bw;
using Batch = xsimd::batch<float, arch>;
inline Batch load_f32(const float *p) { return Batch::load_unaligned(p); }
inline Batch load_f32(const F16 *p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))); }
inline Batch load_f32(const BF16 *p) {
  __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
// Lane j = sum of rows[j], for 16 rows. (xsimd 8.1's haddp returns the lanes permuted on
// AVX-512, so the reduction is spelled out: pairs, then quads inside 128-bit lanes, then
// across lanes.)
using Codes = __m512i;
using CodeAcc = __m512i;
constexpr int kCodeLanes = 32;
inline CodeAcc code_acc_zero() { return _mm512_setzero_si512(); }
inline Codes load_codes(const int8_t *p) { return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))); }
inline CodeAcc madd_add(CodeAcc a, Codes k, const int16_t *q) {
  return _mm512_add_epi32(a, _mm512_madd_epi16(k, _mm512_loadu_si512(q)));
}
inline int32_t hsum(CodeAcc a) { return _mm512_reduce_add_epi32(a); }
inline Batch transpose_sum(const Batch *r) {
  __m512 s[8], u[4];
  for (int i = 0; i < 8; ++i) {
    __m512 a = r[2 * i], b = r[2 * i + 1];
    s[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  for (int i = 0; i < 4; ++i)
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  __m512 v01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  __m512 v23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(v01, v23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(v01, v23, _MM_SHUFFLE(3, 1, 3, 1)));
}
}  // namespace
}  // namespace avx512
}  // namespace sa
#include "kernels/kernels_simd.hpp"

namespace sa {
extern const KernelTable kernels_avx512 = avx512::table(SA_ISA_AVX512);
}
