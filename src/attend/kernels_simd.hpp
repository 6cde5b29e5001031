// The SIMD attention and scoring kernels, written once with xsimd and compiled once per
// instruction set. The including file defines, inside namespace sa::SA_KERNEL_NS:
//   using arch = <xsimd architecture>;
//   B load_f32(const float *), load_f32(const F16 *), load_f32(const BF16 *)  (one batch)
//   B transpose_sum(const B *rows)  (lane j = sum of rows[j]; L rows)
// and then includes this file. Everything here has internal linkage so the copies built with
// different -m flags never mix.
//
// Work is done in blocks of L keys (L = lanes): the block's rows are converted to f32 once,
// dot products for all heads of the group come out of a register-blocked loop and one
// transposing reduction, softmax runs on whole vectors, and V rows are accumulated
// with broadcast probabilities. Rows two blocks ahead are prefetched (gathered rows defeat
// the hardware prefetcher).
#include <cmath>
#include <limits>

#include "attend/kernels.hpp"
#include "attend/row_walk.hpp"

namespace sa {
namespace SA_KERNEL_NS {
namespace {

using B = xsimd::batch<float, arch>;
constexpr int L = int(B::size);
constexpr int kMaxD = 256;          // larger heads take the scalar path
constexpr int kDotHeads = L >= 16 ? 4 : 2;  // heads per register block in the dot products
constexpr int kAccHeads = 4;        // heads per register block in the V accumulation
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <class T>
void convert_rows(const T *const *rows, int n, int D, float *dst) {
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < D; c += L) load_f32(rows[j] + c).store_aligned(dst + j * D + c);
  for (int j = n; j < L; ++j)
    for (int c = 0; c < D; c += L) B(0.f).store_aligned(dst + j * D + c);
}

// out[h] lane j = q_h . kf_j, for h < H and the L rows of kf.
template <int H>
inline void dot_block(const float *q, int D, const float *kf, B *out) {
  B part[H][L];
  for (int j = 0; j < L; j += 4) {
    B a[H][4];
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < 4; ++t) a[h][t] = B(0.f);
    for (int c = 0; c < D; c += L) {
      B k0 = B::load_aligned(kf + (j + 0) * D + c);
      B k1 = B::load_aligned(kf + (j + 1) * D + c);
      B k2 = B::load_aligned(kf + (j + 2) * D + c);
      B k3 = B::load_aligned(kf + (j + 3) * D + c);
      for (int h = 0; h < H; ++h) {
        B qv = B::load_unaligned(q + h * D + c);
        a[h][0] = xsimd::fma(qv, k0, a[h][0]);
        a[h][1] = xsimd::fma(qv, k1, a[h][1]);
        a[h][2] = xsimd::fma(qv, k2, a[h][2]);
        a[h][3] = xsimd::fma(qv, k3, a[h][3]);
      }
    }
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < 4; ++t) part[h][j + t] = a[h][t];
  }
  for (int h = 0; h < H; ++h) out[h] = transpose_sum(part[h]);
}

inline void dot_heads(const float *q, int g, int D, const float *kf, B *s) {
  int h = 0;
  for (; h + kDotHeads <= g; h += kDotHeads) dot_block<kDotHeads>(q + h * D, D, kf, s + h);
  for (; h + 2 <= g; h += 2) dot_block<2>(q + h * D, D, kf, s + h);
  for (; h < g; ++h) dot_block<1>(q + h * D, D, kf, s + h);
}

// acc[h] += sum_j p[h][j] * vf_j for H heads, n rows.
template <int H>
inline void accumulate_block(const float (*p)[L], int n, int D, const float *vf, float *acc) {
  for (int c = 0; c < D; c += L) {
    B a[H];
    for (int h = 0; h < H; ++h) a[h] = B::load_unaligned(acc + h * D + c);
    for (int j = 0; j < n; ++j) {
      B v = B::load_aligned(vf + j * D + c);
      for (int h = 0; h < H; ++h) a[h] = xsimd::fma(B(p[h][j]), v, a[h]);
    }
    for (int h = 0; h < H; ++h) a[h].store_unaligned(acc + h * D + c);
  }
}

inline float hmax(const B &x) {
  alignas(64) float t[L];
  x.store_aligned(t);
  float m = t[0];
  for (int i = 1; i < L; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

inline void prefetch_row(const char *p, int64_t bytes) {
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
}

template <class T>
void attend_rows_t(const float *q, int g, int D, const RowSet &rs, SoftmaxState st) {
  const T *K = static_cast<const T *>(rs.k);
  const T *V = static_cast<const T *>(rs.v);
  const int64_t row_bytes = int64_t(D) * int64_t(sizeof(T));
  alignas(64) float kf[L * kMaxD];
  alignas(64) float vf[L * kMaxD];
  alignas(64) float p[kMaxGroup][L];
  alignas(64) float bias[L];
  B s[kMaxGroup];
  const T *krows[L], *vrows[L];
  RowWalk walk(rs);
  int64_t prefetched = 0;  // raw list entries prefetched so far
  for (;;) {
    int n = 0;
    for (; n < L; ++n) {
      int64_t r = walk.next();
      if (r < 0) break;
      krows[n] = K + r * rs.k_stride;
      vrows[n] = V + r * rs.v_stride;
    }
    if (n == 0) break;
    if (prefetched < walk.cursor) prefetched = walk.cursor;
    for (int64_t stop = std::min(rs.n, walk.cursor + 2 * L); prefetched < stop; ++prefetched) {
      int64_t r = walk.raw_row(prefetched);
      if (r < 0) continue;
      prefetch_row(reinterpret_cast<const char *>(K + r * rs.k_stride), row_bytes);
      prefetch_row(reinterpret_cast<const char *>(V + r * rs.v_stride), row_bytes);
    }

    convert_rows(krows, n, D, kf);
    dot_heads(q, g, D, kf, s);
    for (int j = 0; j < L; ++j) bias[j] = j < n ? 0.f : kNegInf;
    B b = B::load_aligned(bias);
    for (int h = 0; h < g; ++h) {
      B x = s[h] + b;
      float m_new = std::max(st.m[h], hmax(x));
      if (m_new == kNegInf) {  // every score -inf: this block adds nothing for the head
        B(0.f).store_aligned(p[h]);
        continue;
      }
      float alpha = std::exp2(st.m[h] - m_new);
      B e = xsimd::exp2(x - B(m_new));
      e.store_aligned(p[h]);
      st.l[h] = st.l[h] * alpha + xsimd::hadd(e);
      if (alpha != 1.f) {
        float *acc = st.acc + int64_t(h) * D;
        B a(alpha);
        for (int c = 0; c < D; c += L) (B::load_unaligned(acc + c) * a).store_unaligned(acc + c);
      }
      st.m[h] = m_new;
    }
    convert_rows(vrows, n, D, vf);
    int h = 0;
    for (; h + kAccHeads <= g; h += kAccHeads) accumulate_block<kAccHeads>(p + h, n, D, vf, st.acc + int64_t(h) * D);
    for (; h + 2 <= g; h += 2) accumulate_block<2>(p + h, n, D, vf, st.acc + int64_t(h) * D);
    for (; h < g; ++h) accumulate_block<1>(p + h, n, D, vf, st.acc + int64_t(h) * D);
  }
}

void attend_rows(sa_dtype kv, const float *q, int g, int D, const RowSet &rs, SoftmaxState st) {
  if (D % L != 0 || D > kMaxD) return kernels_scalar.attend_rows(kv, q, g, D, rs, st);
  switch (kv) {
    case SA_DTYPE_F16: return attend_rows_t<F16>(q, g, D, rs, st);
    case SA_DTYPE_BF16: return attend_rows_t<BF16>(q, g, D, rs, st);
    default: return attend_rows_t<float>(q, g, D, rs, st);
  }
}

template <class T>
void score_rows_t(const float *q, int g, int D, const void *rows, int64_t n, float *scores, int64_t ld) {
  const T *R = static_cast<const T *>(rows);
  alignas(64) float kf[L * kMaxD];
  alignas(64) float tail[L];
  B s[kMaxGroup];
  const T *ptrs[L];
  for (int64_t j0 = 0; j0 < n; j0 += L) {
    int cnt = int(std::min<int64_t>(L, n - j0));
    for (int j = 0; j < cnt; ++j) ptrs[j] = R + (j0 + j) * D;
    convert_rows(ptrs, cnt, D, kf);
    dot_heads(q, g, D, kf, s);
    for (int h = 0; h < g; ++h) {
      if (cnt == L) {
        s[h].store_unaligned(scores + h * ld + j0);
      } else {
        s[h].store_aligned(tail);
        for (int j = 0; j < cnt; ++j) scores[h * ld + j0 + j] = tail[j];
      }
    }
  }
}

void score_rows(sa_dtype dtype, const float *q, int g, int D, const void *rows, int64_t n, float *scores,
                int64_t ld) {
  if (D % L != 0 || D > kMaxD) return kernels_scalar.score_rows(dtype, q, g, D, rows, n, scores, ld);
  switch (dtype) {
    case SA_DTYPE_F16: return score_rows_t<F16>(q, g, D, rows, n, scores, ld);
    case SA_DTYPE_BF16: return score_rows_t<BF16>(q, g, D, rows, n, scores, ld);
    default: return score_rows_t<float>(q, g, D, rows, n, scores, ld);
  }
}

float max_of(const float *x, int64_t n) {
  B m(kNegInf);
  int64_t i = 0;
  for (; i + L <= n; i += L) m = xsimd::max(m, B::load_unaligned(x + i));
  float r = hmax(m);
  for (; i < n; ++i) r = x[i] > r ? x[i] : r;
  return r;
}

float exp2_sum(const float *x, int64_t n, float shift) {
  B s(0.f), sh(shift);
  int64_t i = 0;
  for (; i + L <= n; i += L) s += xsimd::exp2(B::load_unaligned(x + i) - sh);
  float r = xsimd::hadd(s);
  for (; i < n; ++i) r += std::exp2(x[i] - shift);
  return r;
}

void exp2_accumulate(const float *x, int64_t n, float shift, float *acc) {
  B sh(shift);
  int64_t i = 0;
  for (; i + L <= n; i += L)
    (B::load_unaligned(acc + i) + xsimd::exp2(B::load_unaligned(x + i) - sh)).store_unaligned(acc + i);
  for (; i < n; ++i) acc[i] += std::exp2(x[i] - shift);
}

}  // namespace
}  // namespace SA_KERNEL_NS
}  // namespace sa
