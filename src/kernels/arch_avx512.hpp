// The AVX-512 (F/BW/DQ/VL) primitives kernels_simd.hpp is written against, for the two objects
// built from them: kernels_avx512.cpp, and kernels_avx512_vnni.cpp (the same with VNNI's fused
// integer multiply-add). The including file defines SA_KERNEL_NS first.
#pragma once

#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

namespace sa {
namespace SA_KERNEL_NS {
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
// Measured (the four-head path over 512 rows of 256 codes, in cache, ns a row): without VNNI 4
// rows a step 6.9, 2 rows 14.0 (the compiler spills the separate multiplies and adds); with
// VNNI 2 rows 5.9, 4 rows 6.3.
#if defined(__AVX512VNNI__)
constexpr int kCodeRows = 2;
#else
constexpr int kCodeRows = 4;
#endif
constexpr int kCodeLanes = 32;
inline CodeAcc code_acc_zero() { return _mm512_setzero_si512(); }
inline Codes load_codes(const int8_t *p) { return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))); }
// With VNNI (kernels_avx512_vnni.cpp) one fused instruction (vpdpwssd).
inline CodeAcc madd_add(CodeAcc a, Codes k, const int16_t *q) {
#if defined(__AVX512VNNI__)
  return _mm512_dpwssd_epi32(a, k, _mm512_loadu_si512(q));
#else
  return _mm512_add_epi32(a, _mm512_madd_epi16(k, _mm512_loadu_si512(q)));
#endif
}
inline int32_t hsum(CodeAcc a) { return _mm512_reduce_add_epi32(a); }
// out[i] = hsum(a[i]) for 8 accumulators, reduced together: interleaved adds within 128-bit
// lanes, then across lanes (25 instructions against about 80 for 8 separate reductions).
inline void hsum8(const CodeAcc *a, int32_t *out) {
  __m512i s[4], t[2];
  for (int i = 0; i < 4; ++i)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] of a[2i], a[2i+1]
    s[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]),
                            _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]));
  for (int j = 0; j < 2; ++j)  // per 128-bit lane: the lane's sums of a[4j .. 4j + 3]
    t[j] = _mm512_add_epi32(_mm512_unpacklo_epi64(s[2 * j], s[2 * j + 1]),
                            _mm512_unpackhi_epi64(s[2 * j], s[2 * j + 1]));
  // Lanes 0, 1: t[0]'s lanes 0 + 2 and 1 + 3; lanes 2, 3: t[1]'s. Then lanes 0 + 1 and 2 + 3.
  const __m512i u = _mm512_add_epi32(_mm512_shuffle_i32x4(t[0], t[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_i32x4(t[0], t[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512i v = _mm512_add_epi32(u, _mm512_shuffle_i32x4(u, u, _MM_SHUFFLE(2, 3, 0, 1)));
  _mm_storeu_si128(reinterpret_cast<__m128i *>(out), _mm512_extracti32x4_epi32(v, 0));
  _mm_storeu_si128(reinterpret_cast<__m128i *>(out + 4), _mm512_extracti32x4_epi32(v, 2));
}
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
}  // namespace SA_KERNEL_NS
}  // namespace sa
