// Compact page bounds. A page's keys lie, per dimension d, in [lo_d, hi_d] (elementwise min
// and max); Quest bounds a query's score over the page by
//   max_k q . k  <=  sum_d max(q_d lo_d, q_d hi_d)  =  q . centre + |q| . radius.
// Stored in f16 that is 4 D bytes per page and head; here it is one int8 row of 2 D codes
// [c | r] and one f32 scale s, chosen so that for every d
//   s (c_d - r_d) <= lo_d  and  s (c_d + r_d) >= hi_d,
// which makes s (q . c + |q| . r) a true upper bound of q . k over the page's keys: the
// centre's rounding error is absorbed into the radius, and the radius rounds up. One scale per
// page and head, sized by the page's largest magnitude, keeps codes in range whatever the
// keys' spread across pages.
// The query side [q | |q|] is coded in int16 with one scale t per head, |error| <= t / 2 per
// element, which the page's magnitude A = s sum_d (|c_d| + r_d) covers (twice over):
//   max_k q . k  <=  t (s (x . [c | r]) + A)     (x: the query's codes)
// so the kernels score pages with exact integer dot products (score_rows_i8) and one multiply;
// only the final f32 products round.
#pragma once

#include <cstdint>

#include "kernels/kernels.hpp"
#include "select/page_code.hpp"

namespace sa {

// Codes of one page and head from its elementwise lo <= hi over D dimensions: centre[d] and
// radius[d] (0 <= radius <= 127), *scale >= 0, and *magnitude >= scale * sum_d (|centre[d]| +
// radius[d]). A page whose values are not all finite gets scale and magnitude +inf (its bound
// is +inf: always a candidate, never wrongly dropped). The steps are page_code.hpp's, which
// the CUDA plugin's index runs too.
void quantize_page_bound(const float *lo, const float *hi, int64_t D, int8_t *centre, int8_t *radius, float *scale,
                         float *magnitude);

// One query head's row x of W values (the bound's [q | |q|]) as int16 codes and a scale t >= 0:
// |x_i - t codes_i| <= t / 2, and sum_i |codes_i| * 128 < 2^31 (score_rows_i8's range).
void quantize_query(const float *x, int64_t W, int16_t *codes, float *scale);


// scores[h * ld + j] = scale[j] * (q_h . row_j) for any number g of query heads: the kernel's
// score_rows_i8 in groups of kMaxGroup heads (rows [n][W] of codes, q [g][W]).
void score_codes_grouped(const KernelTable &k, const int16_t *q, int64_t g, int64_t W, const int8_t *rows,
                         const float *scale, int64_t n, float *scores, int64_t ld);

// The bound scan of page selection: the upper bounds of n pages for g query heads,
//   out[h * ld + p] = page_code::coded_bound(scale[p] * (q_h . row_p), magnitude[p], q_scale[h]),
// from rows [n][W] of codes (W = 2 D: [centre | radius]) and query codes q [g][W].
void score_page_bounds(const KernelTable &k, const int16_t *q, const float *q_scale, int64_t g, int64_t W,
                       const int8_t *rows, const float *scale, const float *magnitude, int64_t n, float *out,
                       int64_t ld);

}  // namespace sa
