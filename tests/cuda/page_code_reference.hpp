// The bound a device page index ranks pages by: the CPU page selector's coded Quest bound, by
// the library's own quantizer (select/page_code.hpp, the header the core and the plugin both
// compile), so the tests' expectations hold the very bits the device must produce. The
// independent part stays in the tests: the pages' exact min and max (folded here from the
// keys), the masses in double, and the checks that every code is a true upper bound.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "select/page_code.hpp"

namespace {

struct CodedPage {
  std::vector<int8_t> row;  // [centre | radius], 2 D
  float scale = 0.f, magnitude = 0.f;
};

// From a page's elementwise lo <= hi (V: float, or double for a decoded bound).
template <class V>
CodedPage code_page(const V *lo, const V *hi, int D) {
  CodedPage p;
  p.row.resize(size_t(2 * D));
  sa::quantize_page_bound_row(lo, hi, D, p.row.data(), p.row.data() + D, &p.scale, &p.magnitude);
  return p;
}

// The page's decoded bound s (c - r), s (c + r) per dimension (exact in double).
inline void decode_page(const CodedPage &p, int D, double *lo, double *hi) {
  for (int d = 0; d < D; ++d) {
    const double s = p.scale, c = p.row[size_t(d)], r = p.row[size_t(D + d)];
    lo[d] = s * (c - r);
    hi[d] = s * (c + r);
  }
}

struct CodedQuery {
  std::vector<int16_t> codes;  // [q | |q|], 2 D
  float scale = 0.f;
};

// One query head (its values as floats) as the selection codes it: x = (scale * log2e) q in
// f32, scale the selection's (1 / sqrt(D) by default, in f32).
inline CodedQuery code_query(const float *q, int D, float scale) {
  const float qscale = scale * 1.4426950408889634f;
  std::vector<float> x(size_t(2 * D));
  for (int d = 0; d < D; ++d) {
    x[size_t(d)] = qscale * q[d];
    x[size_t(D + d)] = std::fabs(x[size_t(d)]);
  }
  CodedQuery c;
  c.codes.resize(x.size());
  sa::quantize_query_row(x.data(), 2 * D, c.codes.data(), &c.scale);
  return c;
}

// The page's bound for the query, a base-2 logit: t (s (x . [c | r]) + A) in f32.
inline float coded_bound(const CodedPage &p, const CodedQuery &q) {
  int64_t dot = 0;
  for (size_t e = 0; e < p.row.size(); ++e) dot += int64_t(q.codes[e]) * p.row[e];
  return sa::page_code::page_bound(dot, p.scale, p.magnitude, q.scale);
}

inline float default_scale(int D) { return 1.f / std::sqrt(float(D)); }

}  // namespace
