#include "select/page_bounds.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sa {

namespace {

// x rounded up to a float.
float float_at_least(double x) {
  float f = float(x);
  if (double(f) < x) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

}  // namespace

void quantize_page_bound(const float *lo, const float *hi, int64_t D, int8_t *centre, int8_t *radius, float *scale,
                         float *magnitude) {
  double m = 0.0;
  bool finite = true;
  for (int64_t d = 0; d < D; ++d) {
    finite = finite && std::isfinite(lo[d]) && std::isfinite(hi[d]);
    m = std::max({m, std::fabs(double(lo[d])), std::fabs(double(hi[d]))});
  }
  if (!finite) {
    std::fill(centre, centre + D, int8_t{0});
    std::fill(radius, radius + D, int8_t{127});
    *scale = *magnitude = std::numeric_limits<float>::infinity();
    return;
  }
  if (m == 0.0) {  // every key of the page is zero: the bound is exactly 0
    std::fill(centre, centre + D, int8_t{0});
    std::fill(radius, radius + D, int8_t{0});
    *scale = *magnitude = 0.f;
    return;
  }
  // The f32 scale, rounded up so that m / s <= kPageCodeSpan; kept a normal float (for tiny m
  // the bound is loose in absolute terms but still far below any other page's).
  float s = float(m / kPageCodeSpan);
  if (double(s) * kPageCodeSpan < m) s = std::nextafter(s, std::numeric_limits<float>::infinity());
  s = std::max(s, std::numeric_limits<float>::min());
  const double sd = s;
  double codes = 0.0;
  for (int64_t d = 0; d < D; ++d) {
    const double l = lo[d], h = hi[d];
    const double c = std::nearbyint(0.5 * (l + h) / sd);  // |c| <= kPageCodeSpan
    // The smallest r with s (c - r) <= l and s (c + r) >= h; products of a float and a small
    // integer are exact in double, so the checks are exact.
    double r = std::max(0.0, std::ceil(std::max(c - l / sd, h / sd - c)));
    while (sd * (c - r) > l || sd * (c + r) < h) r += 1.0;
    centre[d] = int8_t(c);
    radius[d] = int8_t(std::min(r, 127.0));
    codes += std::fabs(c) + r;
  }
  *scale = s;
  *magnitude = float_at_least(sd * codes);
}

// Cloned so that nearbyint is one rounding instruction (SSE4.1 and up; a libm call at the
// baseline) and the loop is vectorised: a prefill quantizes n_q x H_q queries (10% of a
// page-norefine prefill's time). The same bits in every clone (IEEE division and rounding).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "sse4.1", "default")))
#endif
void quantize_query(const float *x, int64_t W, int16_t *codes, float *scale) {
  double m = 0.0;
  for (int64_t i = 0; i < W; ++i) m = std::max(m, std::fabs(double(x[i])));
  // Codes up to qmax keep W * qmax * 128 < 2^31.
  const int64_t qmax = std::max<int64_t>(1, std::min<int64_t>(16384, (int64_t{1} << 24) / std::max<int64_t>(W, 1) - 1));
  if (!(m > 0.0) || !std::isfinite(m)) {  // zero (a bound of 0 is exact), or not finite
    std::fill(codes, codes + W, int16_t{0});
    *scale = m > 0.0 ? std::numeric_limits<float>::infinity() : 0.f;
    return;
  }
  const float t = float_at_least(m / double(qmax));
  for (int64_t i = 0; i < W; ++i) codes[i] = int16_t(std::nearbyint(double(x[i]) / double(t)));
  *scale = t;
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
    for (int64_t p = 0; p < n; ++p) out[h * ld + p] = page_upper_bound(out[h * ld + p], magnitude[p], q_scale[h]);
}

}  // namespace sa
