#include "select/hnsw_distance.hpp"

#include <cstdint>

#include "core/half.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12 warns falsely inside its own AVX-512 intrinsics (as for src/attend's kernels).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace sa {
namespace {

float half_dot_scalar(const void *a, const void *b, const void *length) {
  const size_t n = *static_cast<const size_t *>(length);
  const uint16_t *x = static_cast<const uint16_t *>(a), *y = static_cast<const uint16_t *>(b);
  float acc[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < n; i += 4)
    for (size_t j = 0; j < 4; ++j) acc[j] += f16_to_f32(x[i + j]) * f16_to_f32(y[i + j]);
  return 1.f - ((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) float half_dot_avx2(const void *a, const void *b, const void *length) {
  const size_t n = *static_cast<const size_t *>(length);
  const uint16_t *x = static_cast<const uint16_t *>(a), *y = static_cast<const uint16_t *>(b);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + i)));
    __m256 y0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(y + i)));
    __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + i + 8)));
    __m256 y1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(y + i + 8)));
    acc0 = _mm256_fmadd_ps(x0, y0, acc0);
    acc1 = _mm256_fmadd_ps(x1, y1, acc1);
  }
  __m256 s = _mm256_add_ps(acc0, acc1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return 1.f - _mm_cvtss_f32(h);
}

__attribute__((target("avx512f,avx2,fma,f16c"))) float half_dot_avx512(const void *a, const void *b,
                                                                        const void *length) {
  const size_t n = *static_cast<const size_t *>(length);
  const uint16_t *x = static_cast<const uint16_t *>(a), *y = static_cast<const uint16_t *>(b);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + i))),
                           _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(y + i))), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + i + 16))),
                           _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(y + i + 16))), acc1);
  }
  if (i < n)
    acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + i))),
                           _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(y + i))), acc0);
  return 1.f - _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}
#endif

}  // namespace

HalfDotDistance half_dot_distance(sa_isa isa) {
#if defined(__x86_64__)
  if (isa == SA_ISA_AVX512) return half_dot_avx512;
  if (isa == SA_ISA_AVX2) return half_dot_avx2;
#endif
  (void)isa;
  return half_dot_scalar;
}

}  // namespace sa
