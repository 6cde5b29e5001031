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
using Codes = __m256i;
using CodeAcc = __m256i;
constexpr int kCodeRows = 2;
constexpr int kCodeLanes = 16;
inline CodeAcc code_acc_zero() { return _mm256_setzero_si256(); }
inline Codes load_codes(const int8_t *p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
inline CodeAcc madd_add(CodeAcc a, Codes k, const int16_t *q) {
  return _mm256_add_epi32(a, _mm256_madd_epi16(k, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q))));
}
inline int32_t hsum(CodeAcc a) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
// out[i] = hsum(a[i]) for 8 accumulators, reduced together by horizontal adds.
inline void hsum8(const CodeAcc *a, int32_t *out) {
  const __m256i p0 = _mm256_hadd_epi32(a[0], a[1]), p1 = _mm256_hadd_epi32(a[2], a[3]);
  const __m256i p2 = _mm256_hadd_epi32(a[4], a[5]), p3 = _mm256_hadd_epi32(a[6], a[7]);
  // Per 128-bit lane: the lane's sums of a[0..3] (q0) and a[4..7] (q1).
  const __m256i q0 = _mm256_hadd_epi32(p0, p1), q1 = _mm256_hadd_epi32(p2, p3);
  const __m256i lo = _mm256_permute2x128_si256(q0, q1, 0x20), hi = _mm256_permute2x128_si256(q0, q1, 0x31);
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(out), _mm256_add_epi32(lo, hi));
}
inline Batch transpose_sum(const Batch *rows) { return xsimd::haddp(rows); }
}  // namespace
}  // namespace avx2
}  // namespace sa
#include "kernels/kernels_simd.hpp"

namespace sa {
extern const KernelTable kernels_avx2 = avx2::table(SA_ISA_AVX2);
}
