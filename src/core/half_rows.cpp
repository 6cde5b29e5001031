#include "core/half_rows.hpp"

#include "core/half.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SA_HALF_F16C 1
#endif

namespace sa {
namespace {

#if defined(SA_HALF_F16C)
__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(const uint16_t *in, int64_t n, float *out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(in + i))));
  for (; i < n; ++i) out[i] = f16_to_f32(in[i]);
}
#endif

}  // namespace

void f16_to_f32_n(const uint16_t *in, int64_t n, float *out, bool f16c) {
#if defined(SA_HALF_F16C)
  if (f16c) return f16_to_f32_f16c(in, n, out);
#endif
  (void)f16c;
  for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(in[i]);
}

}  // namespace sa
