#include "select/page_bounds.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sa {

void quantize_page_bound(const float *lo, const float *hi, int64_t D, int8_t *centre, int8_t *radius, float *scale,
                         float *magnitude) {
  quantize_page_bound_row(lo, hi, D, centre, radius, scale, magnitude);
}

// Cloned so that nearbyint is one rounding instruction (SSE4.1 and up; a libm call at the
// baseline) and the loop is vectorised: a prefill quantizes n_q x H_q queries (10% of a
// page-norefine prefill's time). The same bits in every clone (IEEE division and rounding).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "sse4.1", "default")))
#endif
void quantize_query(const float *x, int64_t W, int16_t *codes, float *scale) {
  quantize_query_row(x, W, codes, scale);
}

void score_codes_grouped(const KernelTable &k, const int16_t *q, int64_t g, int64_t W, const int8_t *rows,
                         const float *scale, int64_t n, float *scores, int64_t ld) {
  for (int64_t g0 = 0; g0 < g; g0 += kMaxGroup) {
    const int heads = int(std::min<int64_t>(kMaxGroup, g - g0));
    k.score_rows_i8(q + g0 * W, heads, int(W), rows, scale, n, scores + g0 * ld, ld);
  }
}

void score_page_bounds(const KernelTable &k, const int16_t *q, const float *q_scale, int64_t g, int64_t W,
                       const int8_t *rows, const float *scale, const float *magnitude, int64_t n, float *out,
                       int64_t ld) {
  score_codes_grouped(k, q, g, W, rows, scale, n, out, ld);
  for (int64_t h = 0; h < g; ++h)
    for (int64_t p = 0; p < n; ++p) out[h * ld + p] = page_code::coded_bound(out[h * ld + p], magnitude[p], q_scale[h]);
}

}  // namespace sa
