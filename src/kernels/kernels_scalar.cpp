// The reference path: plain loops, one key at a time. Every SIMD table is tested against it.
#include <cmath>
#include <limits>

#include "kernels/kernels.hpp"
#include "kernels/row_walk.hpp"
#include "core/half.hpp"

namespace sa {
namespace {

template <class T>
float load_one(const void *base, int64_t i);
template <>
float load_one<float>(const void *base, int64_t i) { return static_cast<const float *>(base)[i]; }

template <>
float load_one<F16>(const void *base, int64_t i) { return f16_to_f32(static_cast<const uint16_t *>(base)[i]); }
template <>
float load_one<BF16>(const void *base, int64_t i) { return bf16_to_f32(static_cast<const uint16_t *>(base)[i]); }

template <class T>
void attend_rows_t(const float *q, int g, int D, const RowSet &rs, SoftmaxState st) {
  RowWalk walk(rs);
  for (int64_t r = walk.next(); r >= 0; r = walk.next()) {
    int64_t k0 = r * rs.k_stride, v0 = r * rs.v_stride;
    for (int h = 0; h < g; ++h) {
      float s = 0.f;
      for (int d = 0; d < D; ++d) s += q[h * D + d] * load_one<T>(rs.k, k0 + d);
      if (rs.scores) rs.scores[h * rs.scores_ld + walk.cursor - 1] = s;
      float m_new = std::max(st.m[h], s);
      float alpha = std::exp2(st.m[h] - m_new);  // 0 when m was -inf
      float p = std::exp2(s - m_new);
      st.l[h] = st.l[h] * alpha + p;
      float *acc = st.acc + int64_t(h) * D;
      for (int d = 0; d < D; ++d) acc[d] = acc[d] * alpha + p * load_one<T>(rs.v, v0 + d);
      st.m[h] = m_new;
    }
  }
}


template <class T>
void score_rows_t(const float *q, int g, int D, const void *rows, int64_t n, float *scores, int64_t ld) {
  for (int64_t j = 0; j < n; ++j)
    for (int h = 0; h < g; ++h) {
      float s = 0.f;
      for (int d = 0; d < D; ++d) s += q[h * D + d] * load_one<T>(rows, j * D + d);
      scores[h * ld + j] = s;
    }
}


float max_of(const float *x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

float exp2_sum(const float *x, int64_t n, float shift) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += std::exp2(x[i] - shift);
  return s;
}

void exp2_accumulate(const float *x, int64_t n, float shift, float *acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += std::exp2(x[i] - shift);
}

float exp2_store_sum(float *x, int64_t n, float shift) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += x[i] = std::exp2(x[i] - shift);
  return s;
}

template <class T>
void mass_rows_t(const float *q, int g, int D, const RowSet &rs, const float *lse2, float *mass) {
  RowWalk walk(rs);
  for (int64_t r = walk.next(); r >= 0; r = walk.next()) {
    const int64_t entry = walk.cursor - 1;
    float sum = 0.f;
    for (int h = 0; h < g; ++h) {
      if (lse2[h] == -std::numeric_limits<float>::infinity()) continue;
      float s = 0.f;
      for (int d = 0; d < D; ++d) s += q[h * D + d] * load_one<T>(rs.k, r * rs.k_stride + d);
      sum += std::exp2(s - lse2[h]);
    }
    mass[entry] += sum;
  }
}

void score_rows_i8(const int16_t *q, int g, int D, const int8_t *rows, const float *scale, int64_t n, float *scores,
                   int64_t ld) {
  for (int64_t j = 0; j < n; ++j)
    for (int h = 0; h < g; ++h) {
      int64_t s = 0;
      for (int d = 0; d < D; ++d) s += int64_t(q[h * D + d]) * rows[j * D + d];
      scores[h * ld + j] = scale[j] * float(s);
    }
}

template <class T>
constexpr RowKernels rows_of = {attend_rows_t<T>, score_rows_t<T>, mass_rows_t<T>};

}  // namespace

extern const KernelTable kernels_scalar = {SA_ISA_SCALAR, rows_of<float>, rows_of<F16>, rows_of<BF16>,
                                           max_of,        exp2_sum,       exp2_accumulate, score_rows_i8,
                                           exp2_store_sum};

}  // namespace sa
