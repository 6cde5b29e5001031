#include "select/page_bounds.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sa {

void quantize_page_bound(const float *lo, const float *hi, int64_t D, int8_t *centre, int8_t *radius, float *scale) {
  double m = 0.0;
  bool finite = true;
  for (int64_t d = 0; d < D; ++d) {
    finite = finite && std::isfinite(lo[d]) && std::isfinite(hi[d]);
    m = std::max({m, std::fabs(double(lo[d])), std::fabs(double(hi[d]))});
  }
  if (!finite) {
    std::fill(centre, centre + D, int8_t{0});
    std::fill(radius, radius + D, int8_t{127});
    *scale = std::numeric_limits<float>::infinity();
    return;
  }
  if (m == 0.0) {  // every key of the page is zero: the bound is exactly 0
    std::fill(centre, centre + D, int8_t{0});
    std::fill(radius, radius + D, int8_t{0});
    *scale = 0.f;
    return;
  }
  // The f32 scale, rounded up so that m / s <= kPageCodeSpan; kept a normal float (for tiny m
  // the bound is loose in absolute terms but still far below any other page's).
  float s = float(m / kPageCodeSpan);
  if (double(s) * kPageCodeSpan < m) s = std::nextafter(s, std::numeric_limits<float>::infinity());
  s = std::max(s, std::numeric_limits<float>::min());
  const double sd = s;
  for (int64_t d = 0; d < D; ++d) {
    const double l = lo[d], h = hi[d];
    const double c = std::nearbyint(0.5 * (l + h) / sd);  // |c| <= kPageCodeSpan
    // The smallest r with s (c - r) <= l and s (c + r) >= h; products of a float and a small
    // integer are exact in double, so the checks are exact.
    double r = std::max(0.0, std::ceil(std::max(c - l / sd, h / sd - c)));
    while (sd * (c - r) > l || sd * (c + r) < h) r += 1.0;
    centre[d] = int8_t(c);
    radius[d] = int8_t(std::min(r, 127.0));
  }
  *scale = s;
}

}  // namespace sa
