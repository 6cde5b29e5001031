// The arithmetic of compact page bounds (page_bounds.hpp), shared by the core and the CUDA
// plugin, so that a device index holds the CPU's very bits: each step is IEEE double (exact
// products of a float and small integers, one rounding where noted) or an exact integer sum,
// and nvcc compiles the same lines for the device (__host__ __device__). The core includes this
// without CUDA: SA_CODE_FN is then empty.
//
// The elementwise steps are below; the whole-row host functions (quantize_page_bound_row,
// quantize_query_row) are what page_bounds.cpp runs and what the CUDA tests call as their
// reference. A device kernel runs the same steps with the row's maximum and its code sum
// reduced over threads (both order-free: a maximum and a sum of integers).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define SA_CODE_FN __host__ __device__ inline
#else
#define SA_CODE_FN inline
#endif

namespace sa {

// Largest |code|: the scale maps the page's largest magnitude to kPageCodeSpan, leaving room
// for a radius code that absorbs rounding (|c| + 1 and r + 2 stay <= 127).
constexpr int kPageCodeSpan = 124;

namespace page_code {

// x to the nearest integer, ties to even (the default rounding mode's nearbyint).
SA_CODE_FN double round_even(double x) {
#if defined(__CUDA_ARCH__)
  return rint(x);
#else
  return std::nearbyint(x);
#endif
}

// The next float above f.
SA_CODE_FN float float_up(float f) {
#if defined(__CUDA_ARCH__)
  return nextafterf(f, INFINITY);
#else
  return std::nextafter(f, std::numeric_limits<float>::infinity());
#endif
}

// x rounded up to a float.
SA_CODE_FN float float_at_least(double x) {
  const float f = float(x);
  return double(f) < x ? float_up(f) : f;
}

// The page's scale from m = its largest |lo|, |hi| (finite, > 0): the f32 scale rounded up so
// that m / s <= kPageCodeSpan, kept a normal float (for tiny m the bound is loose in absolute
// terms but still far below any other page's).
SA_CODE_FN float page_scale(double m) {
  float s = float(m / kPageCodeSpan);
  if (double(s) * kPageCodeSpan < m) s = float_up(s);
  const float smallest = 1.17549435e-38f;  // FLT_MIN
  return s > smallest ? s : smallest;
}

// One dimension's codes from its lo <= hi at scale sd: the centre c (|c| <= kPageCodeSpan)
// and the smallest radius r >= 0 with sd (c - r) <= lo and sd (c + r) >= hi (products of a
// float and a small integer are exact in double, so the checks are exact). Returns |c| + r.
SA_CODE_FN int page_dim_codes(double l, double h, double sd, int8_t *centre, int8_t *radius) {
  const double c = round_even(0.5 * (l + h) / sd);
  const double a = c - l / sd, b = h / sd - c;
  double r = ceil(a > b ? a : b);
  r = r > 0.0 ? r : 0.0;
  while (sd * (c - r) > l || sd * (c + r) < h) r += 1.0;
  *centre = int8_t(c);
  *radius = int8_t(r < 127.0 ? r : 127.0);
  return int(fabs(c) + r);
}

// The page's magnitude from its scale and the sum of |c| + r over its dimensions: at least
// s * codes, rounded up.
SA_CODE_FN float page_magnitude(float s, int64_t codes) { return float_at_least(double(s) * double(codes)); }

// The largest |query code| for rows of W values: W * qmax * 128 < 2^31 (score_rows_i8's range).
SA_CODE_FN int64_t query_code_limit(int64_t W) {
  const int64_t w = W > 1 ? W : 1, q = (int64_t{1} << 24) / w - 1;
  const int64_t lim = q < 16384 ? q : 16384;
  return lim > 1 ? lim : 1;
}

// The query row's scale from m = its largest |x|: 0 for a zero row (its bound of 0 is exact),
// +inf when not finite (every code 0 then); else m / qmax rounded up.
SA_CODE_FN float query_scale(double m, int64_t W) {
  if (!(m > 0.0)) return 0.f;
  if (!(m <= 1.7976931348623157e308)) return INFINITY;  // inf or NaN
  return float_at_least(m / double(query_code_limit(W)));
}

// One query value's code at scale t (0 when t is 0 or +inf).
SA_CODE_FN int16_t query_code(float x, float t) {
  if (!(t > 0.f) || !(t < INFINITY)) return 0;
  return int16_t(round_even(double(x) / double(t)));
}

// The bound of a page from its scaled dot product s (x . [c | r]) (`coded`): t (coded + A), the
// sum and the product each rounded once in f32 (no fused multiply-add on either side). The CPU
// kernels give `coded` (score_rows_i8); the device computes it in page_bound.
SA_CODE_FN float coded_bound(float coded, float magnitude, float query_scale) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(query_scale, __fadd_rn(coded, magnitude));
#else
  return query_scale * (coded + magnitude);
#endif
}

// The bound of a page from its integer dot product: coded_bound(s * dot, A, t), s * dot rounded
// once in f32 (what the CPU kernels and the device kernels both compute).
SA_CODE_FN float page_bound(int64_t dot, float scale, float magnitude, float query_scale) {
#if defined(__CUDA_ARCH__)
  return coded_bound(__fmul_rn(scale, __ll2float_rn(dot)), magnitude, query_scale);
#else
  return coded_bound(scale * float(dot), magnitude, query_scale);
#endif
}

}  // namespace page_code

// Host: one query head's row x of W values (the bound's [q | |q|]) as int16 codes and a scale
// t >= 0: |x_i - t codes_i| <= t / 2. NaN values are passed over by the maximum, as by
// std::max.
inline void quantize_query_row(const float *x, int64_t W, int16_t *codes, float *scale) {
  double m = 0.0;
  for (int64_t i = 0; i < W; ++i) {
    const double a = std::fabs(double(x[i]));
    m = m < a ? a : m;
  }
  const float t = page_code::query_scale(m, W);
  *scale = t;
  if (t == 0.f || std::isinf(t)) {
    for (int64_t i = 0; i < W; ++i) codes[i] = 0;
    return;
  }
  for (int64_t i = 0; i < W; ++i) codes[i] = int16_t(page_code::round_even(double(x[i]) / double(t)));
}

// Host: codes of one page and head from its elementwise lo <= hi over D dimensions (V: float,
// or double for a refill's decoded bound). Not finite: centre 0, radius 127, scale and
// magnitude +inf (the bound is +inf). All zero: every code and both floats 0.
template <class V>
inline void quantize_page_bound_row(const V *lo, const V *hi, int64_t D, int8_t *centre, int8_t *radius,
                                    float *scale, float *magnitude) {
  double m = 0.0;
  bool finite = true;
  for (int64_t d = 0; d < D; ++d) {
    finite = finite && std::isfinite(double(lo[d])) && std::isfinite(double(hi[d]));
    const double a = std::fabs(double(lo[d])), b = std::fabs(double(hi[d]));
    m = m > a ? m : a;
    m = m > b ? m : b;
  }
  if (!finite || m == 0.0) {
    for (int64_t d = 0; d < D; ++d) {
      centre[d] = 0;
      radius[d] = finite ? 0 : 127;
    }
    *scale = *magnitude = finite ? 0.f : std::numeric_limits<float>::infinity();
    return;
  }
  const float s = page_code::page_scale(m);
  int64_t codes = 0;
  for (int64_t d = 0; d < D; ++d) codes += page_code::page_dim_codes(double(lo[d]), double(hi[d]), s, centre + d, radius + d);
  *scale = s;
  *magnitude = page_code::page_magnitude(s, codes);
}

}  // namespace sa
