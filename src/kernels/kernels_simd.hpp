// The SIMD attention and scoring kernels, written once with xsimd and compiled once per
// instruction set. The including file defines, inside namespace sa::SA_KERNEL_NS:
//   using arch = <xsimd architecture>;
//   B load_f32(const float *), load_f32(const F16 *), load_f32(const BF16 *)  (one batch)
//   B transpose_sum(const B *rows)  (lane j = sum of rows[j]; L rows)
//   Codes, CodeAcc, kCodeLanes, code_acc_zero(), load_codes(const int8_t *) (kCodeLanes int8
//   codes widened to int16), madd_add(CodeAcc, Codes, const int16_t *q) (acc += pairwise
//   sums of codes * q, in int32), hsum(CodeAcc), hsum8(const CodeAcc *, int32_t *) (8 of them),
//   kCodeRows (rows per step of the four-head code dot products: 16 accumulators and their
//   codes fit 32 vector registers, 8 fit 16)
// and then includes this file. Everything here has internal linkage so the copies built with
// different -m flags never mix.
//
// Work is done in blocks of L keys (L = lanes): rows are converted to f32 as they are loaded,
// dot products for all heads of the group come out of a register-blocked loop and one
// transposing reduction, softmax runs on whole vectors, and V rows are accumulated
// with broadcast probabilities. Rows are prefetched kPrefetchRows entries ahead of the walk.
#include <cmath>
#include <limits>

#include "kernels/kernels.hpp"
#include "kernels/row_walk.hpp"

namespace sa {
namespace SA_KERNEL_NS {
namespace {

using B = xsimd::batch<float, arch>;
constexpr int L = int(B::size);
constexpr int kMaxD = 256;          // larger heads take the scalar path
// Heads per register block in the dot products, and rows per head in it: each K row loaded
// (and converted) serves every head of the block, so larger blocks convert less per FMA; the
// block's accumulators must fit the registers (16 below AVX-512, 32 from it on).
constexpr int kDotHeads = L >= 8 ? 4 : 2;
template <int H>
constexpr int dot_rows() { return L >= 16 || H * 4 + 4 <= 16 ? 4 : 2; }
constexpr int kAccHeads = 4;        // heads per register block in the V accumulation
constexpr int kAccColumns = L >= 16 ? 4 : 2;  // column chunks per register block (see below)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kRescaleSlack = 8.f;  // log2 units; see attend_rows_t

// All-zero bits are 0.0 in every float format: rows past the end of a block read this.
alignas(64) const float kZeroRow[kMaxD] = {};

// out[h] lane j = q_h . row_j, for h < H and the L rows of the block. K rows are converted
// to f32 in registers as they are loaded, each load serving H heads.
// Rows R at a time (R = dot_rows<H>()); every lane of a sum adds its columns in the same
// order whatever R is, so the scores do not depend on the blocking.
template <int H, class T>
inline void dot_block(const float *q, int D, const T *const *rows, B *out) {
  constexpr int R = dot_rows<H>();
  B part[H][L];
  for (int j = 0; j < L; j += R) {
    B a[H][R];
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < R; ++t) a[h][t] = B(0.f);
    for (int c = 0; c < D; c += L) {
      B k[R];
      for (int t = 0; t < R; ++t) k[t] = load_f32(rows[j + t] + c);
      for (int h = 0; h < H; ++h) {
        B qv = B::load_unaligned(q + h * D + c);
        for (int t = 0; t < R; ++t) a[h][t] = xsimd::fma(qv, k[t], a[h][t]);
      }
    }
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < R; ++t) part[h][j + t] = a[h][t];
  }
  for (int h = 0; h < H; ++h) out[h] = transpose_sum(part[h]);
}

template <class T>
inline void dot_heads(const float *q, int g, int D, const T *const *rows, B *s) {
  int h = 0;
  for (; h + kDotHeads <= g; h += kDotHeads) dot_block<kDotHeads>(q + h * D, D, rows, s + h);
  for (; h + 2 <= g; h += 2) dot_block<2>(q + h * D, D, rows, s + h);
  for (; h < g; ++h) dot_block<1>(q + h * D, D, rows, s + h);
}

// acc[h] += sum_j p[h][j] * row_j for H heads and n rows, converting V as it is loaded. C
// chunks of L columns are accumulated at once so that H * C independent FMA chains hide the
// FMA latency (one chain per head would leave the FMA units mostly idle).
template <int H, int C, class T>
inline int accumulate_columns(const float (*p)[L], int n, int D, int c, const T *const *rows, float *acc) {
  for (; c + C * L <= D; c += C * L) {
    B a[H][C];
    for (int h = 0; h < H; ++h)
      for (int k = 0; k < C; ++k) a[h][k] = B::load_unaligned(acc + h * D + c + k * L);
    for (int j = 0; j < n; ++j) {
      B v[C];
      for (int k = 0; k < C; ++k) v[k] = load_f32(rows[j] + c + k * L);
      for (int h = 0; h < H; ++h) {
        B w(p[h][j]);
        for (int k = 0; k < C; ++k) a[h][k] = xsimd::fma(w, v[k], a[h][k]);
      }
    }
    for (int h = 0; h < H; ++h)
      for (int k = 0; k < C; ++k) a[h][k].store_unaligned(acc + h * D + c + k * L);
  }
  return c;
}

template <int H, class T>
inline void accumulate_block(const float (*p)[L], int n, int D, const T *const *rows, float *acc) {
  int c = accumulate_columns<H, kAccColumns>(p, n, D, 0, rows, acc);
  accumulate_columns<H, 1>(p, n, D, c, rows, acc);
}

inline float hmax(const B &x) {
  alignas(64) float t[L];
  x.store_aligned(t);
  float m = t[0];
  for (int i = 1; i < L; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

inline void prefetch_row(const char *p, int64_t bytes) {
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 1);  // measured best of 0..3
}

// Software prefetch of the rows kPrefetchRows entries ahead of the walk, from the walk's first
// row on (a split chunk's first block is not left cold): 16 rows (8 KB of K and V, 128 lines),
// the distance of bench_attend's gather loop, keeps enough misses in flight while a block
// computes. Leaving runs of adjacent rows (whole pages) to the hardware prefetcher costs
// 1.2-1.7x on bench_attend.
constexpr int64_t kPrefetchRows = L > 16 ? L : 16;
struct RowPrefetcher {
  int64_t next = 0;  // raw list entries prefetched so far

  template <class T>
  void ahead(const RowWalk &walk, const T *K, int64_t k_stride, const T *V, int64_t v_stride, int64_t row_bytes) {
    if (next < walk.cursor) next = walk.cursor;
    for (int64_t stop = std::min(walk.rs.n, walk.cursor + kPrefetchRows); next < stop; ++next) {
      const int64_t r = walk.raw_row(next);
      if (r < 0) continue;
      prefetch_row(reinterpret_cast<const char *>(K + r * k_stride), row_bytes);
      if (V) prefetch_row(reinterpret_cast<const char *>(V + r * v_stride), row_bytes);
    }
  }
};

template <class T>
void attend_rows_t(const float *q, int g, int D, const RowSet &rs, SoftmaxState st) {
  const T *K = static_cast<const T *>(rs.k);
  const T *V = static_cast<const T *>(rs.v);
  const int64_t row_bytes = int64_t(D) * int64_t(sizeof(T));
  alignas(64) float p[kMaxGroup][L];
  alignas(64) float bias[L];
  B s[kMaxGroup];
  const T *krows[L], *vrows[L];
  int64_t entries[L];  // each row's place in the list or range (for rs.scores)
  float m[kMaxGroup];
  B lsum[kMaxGroup];  // l kept per lane, reduced once at the end
  for (int h = 0; h < g; ++h) {
    m[h] = st.m[h];
    alignas(64) float l0[L] = {};
    l0[0] = st.l[h];
    lsum[h] = B::load_aligned(l0);
  }
  RowWalk walk(rs);
  const bool plain_range = !rs.rows && !rs.key_pos && rs.begin + rs.n - 1 <= rs.pos_limit;
  RowPrefetcher prefetch;
  prefetch.ahead(walk, K, rs.k_stride, V, rs.v_stride, row_bytes);
  for (;;) {
    int n = 0;
    if (plain_range) {  // every row visible: no per-row checks
      n = int(std::min<int64_t>(L, rs.n - walk.cursor));
      for (int j = 0; j < n; ++j) {
        const int64_t r = rs.begin + walk.cursor + j;
        krows[j] = K + r * rs.k_stride;
        vrows[j] = V + r * rs.v_stride;
        entries[j] = walk.cursor + j;
      }
      walk.cursor += n;
    } else {
      for (; n < L; ++n) {
        int64_t r = walk.next();
        if (r < 0) break;
        krows[n] = K + r * rs.k_stride;
        vrows[n] = V + r * rs.v_stride;
        entries[n] = walk.cursor - 1;
      }
    }
    if (n == 0) break;
    for (int j = n; j < L; ++j) krows[j] = reinterpret_cast<const T *>(kZeroRow);
    prefetch.ahead(walk, K, rs.k_stride, V, rs.v_stride, row_bytes);

    dot_heads(q, g, D, krows, s);
    if (rs.scores) {
      for (int h = 0; h < g; ++h) {
        s[h].store_aligned(p[h]);  // p is free until the probabilities below
        for (int j = 0; j < n; ++j) rs.scores[h * rs.scores_ld + entries[j]] = p[h][j];
      }
    }
    for (int j = 0; j < L; ++j) bias[j] = j < n ? 0.f : kNegInf;
    const B b = B::load_aligned(bias);
    for (int h = 0; h < g; ++h) {
      const B x = s[h] + b;
      // Lazy rescaling: keep the running maximum m unless a score exceeds it by more than
      // kRescaleSlack, so most blocks skip the horizontal max and the rescale of acc. Terms
      // stay below 2^kRescaleSlack, far from f32 overflow.
      if (xsimd::any(x > B(m[h] + kRescaleSlack))) {
        const float m_new = std::max(m[h], hmax(x));
        const float alpha = std::exp2(m[h] - m_new);  // 0 when m was -inf
        lsum[h] *= B(alpha);
        float *acc = st.acc + int64_t(h) * D;
        const B a(alpha);
        for (int c = 0; c < D; c += L) (B::load_unaligned(acc + c) * a).store_unaligned(acc + c);
        m[h] = m_new;
      }
      if (m[h] == kNegInf) {  // nothing visible yet: this block adds nothing for the head
        B(0.f).store_aligned(p[h]);
        continue;
      }
      const B e = xsimd::exp2(x - B(m[h]));
      lsum[h] += e;
      e.store_aligned(p[h]);
    }
    int h = 0;
    for (; h + kAccHeads <= g; h += kAccHeads) accumulate_block<kAccHeads>(p + h, n, D, vrows, st.acc + int64_t(h) * D);
    for (; h + 2 <= g; h += 2) accumulate_block<2>(p + h, n, D, vrows, st.acc + int64_t(h) * D);
    for (; h < g; ++h) accumulate_block<1>(p + h, n, D, vrows, st.acc + int64_t(h) * D);
  }
  for (int h = 0; h < g; ++h) {
    st.m[h] = m[h];
    st.l[h] = xsimd::hadd(lsum[h]);
  }
}

// Shapes the vector loops do not take go to the scalar entries.
inline bool vector_shape(int D) { return D % L == 0 && D <= kMaxD; }

template <class T>
void attend_rows(const float *q, int g, int D, const RowSet &rs, SoftmaxState st) {
  if (!vector_shape(D)) return kernels_scalar.of(kDtypeOf<T>).attend_rows(q, g, D, rs, st);
  attend_rows_t<T>(q, g, D, rs, st);
}

template <class T>
void score_rows_t(const float *q, int g, int D, const void *rows, int64_t n, float *scores, int64_t ld) {
  const T *R = static_cast<const T *>(rows);
  alignas(64) float tail[L];
  B s[kMaxGroup];
  const T *ptrs[L];
  for (int64_t j0 = 0; j0 < n; j0 += L) {
    int cnt = int(std::min<int64_t>(L, n - j0));
    for (int j = 0; j < L; ++j) ptrs[j] = j < cnt ? R + (j0 + j) * D : reinterpret_cast<const T *>(kZeroRow);
    dot_heads(q, g, D, ptrs, s);
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

template <class T>
void score_rows(const float *q, int g, int D, const void *rows, int64_t n, float *scores, int64_t ld) {
  if (!vector_shape(D)) return kernels_scalar.of(kDtypeOf<T>).score_rows(q, g, D, rows, n, scores, ld);
  score_rows_t<T>(q, g, D, rows, n, scores, ld);
}

// Integer dot products of H int16 query heads with one row of int8 codes, kCodeLanes codes at
// a time (the arch's load_codes, madd_add, hsum).
template <int H>
inline void code_dots(const int16_t *q, int D, const int8_t *row, int32_t *out) {
  CodeAcc a[H];
  for (int h = 0; h < H; ++h) a[h] = code_acc_zero();
  for (int d = 0; d < D; d += kCodeLanes) {
    const Codes k = load_codes(row + d);
    for (int h = 0; h < H; ++h) a[h] = madd_add(a[h], k, q + h * D + d);
  }
  for (int h = 0; h < H; ++h) out[h] = hsum(a[h]);
}

// The same for kCodeRows rows (an even number) and four heads at once: each query load serves
// every row, and each pair of rows' 8 sums is reduced together (hsum8), out [row][head].
// kD > 0: the row length, known at compile time (the loop unrolled); 0: D.
template <int kD>
inline void code_dots_4(const int16_t *q, int D, const int8_t *rows, int32_t *out) {
  static_assert(kCodeRows % 2 == 0, "rows are reduced in pairs");
  const int len = kD > 0 ? kD : D;
  CodeAcc a[kCodeRows * 4];  // a[4 t + h]: row t, head h
  for (int i = 0; i < kCodeRows * 4; ++i) a[i] = code_acc_zero();
  for (int d = 0; d < len; d += kCodeLanes) {
    Codes k[kCodeRows];
    for (int t = 0; t < kCodeRows; ++t) k[t] = load_codes(rows + t * len + d);
    for (int h = 0; h < 4; ++h)
      for (int t = 0; t < kCodeRows; ++t) a[4 * t + h] = madd_add(a[4 * t + h], k[t], q + h * len + d);
  }
  for (int t = 0; t < kCodeRows; t += 2) hsum8(a + 4 * t, out + 4 * t);
}

// Rows per block of the four-head path: a block's int32 dots become scores in whole vectors
// (a scalar conversion, multiply and store per score took a third of the kernel's time).
constexpr int kCodeBlock = 16;
static_assert(kCodeBlock % kCodeRows == 0, "blocks hold whole steps");
// The four-head path prefetches the rows this many bytes ahead (32 pages of [centre | radius]
// at D 128): the hardware prefetcher alone left the scan's arithmetic and its reads in turn.
// Measured (bench_bounds, cold, AVX-512, medians of 14, load 1.0-1.5): at 128K / 512K keys,
// 1 thread, 605 / 2448 us against 640-922 / 2488-4214 with 0, 2K, 4K, 16K or 32K bytes.
constexpr int64_t kCodeAhead = 8192;

// score_rows_i8 for a group of four heads, n a multiple of kCodeRows.
template <int kD>
void score_rows_i8_4(const int16_t *q, int D, const int8_t *rows, const float *scale, int64_t n, float *scores,
                     int64_t ld) {
  const int64_t len = kD > 0 ? kD : D;
  alignas(64) int32_t dot[kCodeBlock * 4];  // [row][head]
  for (int64_t j0 = 0; j0 < n; j0 += kCodeBlock) {
    const int cnt = int(std::min<int64_t>(kCodeBlock, n - j0));
    for (int j = 0; j < cnt; j += kCodeRows) {
      const int8_t *r = rows + (j0 + j) * len;
      // Non-temporal: each byte is read once. The address may lie past the rows (harmless for a
      // prefetch), so it is formed as an integer, not by pointer arithmetic beyond the array.
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(r) + uintptr_t(kCodeAhead);
      for (int64_t o = 0; o < kCodeRows * len; o += 64)
        __builtin_prefetch(reinterpret_cast<const void *>(ahead + uintptr_t(o)), 0, 0);
      code_dots_4<kD>(q, D, r, dot + 4 * j);
    }
    if (cnt == kCodeBlock) {  // the same loop with a constant trip count, vectorised
      for (int h = 0; h < 4; ++h)
        for (int j = 0; j < kCodeBlock; ++j) scores[h * ld + j0 + j] = scale[j0 + j] * float(dot[4 * j + h]);
    } else {
      for (int h = 0; h < 4; ++h)
        for (int j = 0; j < cnt; ++j) scores[h * ld + j0 + j] = scale[j0 + j] * float(dot[4 * j + h]);
    }
  }
}

void score_rows_i8(const int16_t *q, int g, int D, const int8_t *rows, const float *scale, int64_t n, float *scores,
                   int64_t ld) {
  if (D % kCodeLanes != 0) return kernels_scalar.score_rows_i8(q, g, D, rows, scale, n, scores, ld);
  int32_t dot[kMaxGroup];
  int64_t j = 0;
  if (g == 4) {  // a decode group of four heads; [centre | radius] rows of head dim 128 and 64 unrolled
    j = n / kCodeRows * kCodeRows;
    if (D == 256) score_rows_i8_4<256>(q, D, rows, scale, j, scores, ld);
    else if (D == 128) score_rows_i8_4<128>(q, D, rows, scale, j, scores, ld);
    else score_rows_i8_4<0>(q, D, rows, scale, j, scores, ld);
  }
  for (; j < n; ++j) {
    const int8_t *r = rows + j * D;
    int h = 0;
    for (; h + 4 <= g; h += 4) code_dots<4>(q + h * D, D, r, dot + h);
    for (; h + 2 <= g; h += 2) code_dots<2>(q + h * D, D, r, dot + h);
    for (; h < g; ++h) code_dots<1>(q + h * D, D, r, dot + h);
    for (h = 0; h < g; ++h) scores[h * ld + j] = scale[j] * float(dot[h]);
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

float exp2_store_sum(float *x, int64_t n, float shift) {
  B s(0.f), sh(shift);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const B e = xsimd::exp2(B::load_unaligned(x + i) - sh);
    e.store_unaligned(x + i);
    s += e;
  }
  float r = xsimd::hadd(s);
  for (; i < n; ++i) r += x[i] = std::exp2(x[i] - shift);
  return r;
}

template <class T>
void mass_rows_t(const float *q, int g, int D, const RowSet &rs, const float *lse2, float *mass) {
  const T *K = static_cast<const T *>(rs.k);
  alignas(64) float sum[L];
  B s[kMaxGroup];
  const T *krows[L];
  int64_t entries[L];
  const int64_t row_bytes = int64_t(D) * int64_t(sizeof(T));
  RowWalk walk(rs);
  RowPrefetcher prefetch;  // gathered lists only
  const bool plain_range = !rs.rows && !rs.key_pos && rs.begin + rs.n - 1 <= rs.pos_limit;
  if (rs.rows) prefetch.ahead(walk, K, rs.k_stride, static_cast<const T *>(nullptr), 0, row_bytes);
  for (;;) {
    int n = 0;
    if (plain_range) {  // every row visible: no per-row checks
      n = int(std::min<int64_t>(L, rs.n - walk.cursor));
      for (int j = 0; j < n; ++j) {
        krows[j] = K + (rs.begin + walk.cursor + j) * rs.k_stride;
        entries[j] = walk.cursor + j;
      }
      walk.cursor += n;
    } else {
      for (; n < L; ++n) {
        const int64_t r = walk.next();
        if (r < 0) break;
        krows[n] = K + r * rs.k_stride;
        entries[n] = walk.cursor - 1;
      }
    }
    if (n == 0) break;
    for (int j = n; j < L; ++j) krows[j] = reinterpret_cast<const T *>(kZeroRow);
    if (rs.rows) prefetch.ahead(walk, K, rs.k_stride, static_cast<const T *>(nullptr), 0, row_bytes);
    dot_heads(q, g, D, krows, s);
    B total(0.f);
    for (int h = 0; h < g; ++h)
      if (lse2[h] != kNegInf) total += xsimd::exp2(s[h] - B(lse2[h]));
    total.store_aligned(sum);
    for (int j = 0; j < n; ++j) mass[entries[j]] += sum[j];
  }
}

template <class T>
void mass_rows(const float *q, int g, int D, const RowSet &rs, const float *lse2, float *mass) {
  if (!vector_shape(D)) return kernels_scalar.of(kDtypeOf<T>).mass_rows(q, g, D, rs, lse2, mass);
  mass_rows_t<T>(q, g, D, rs, lse2, mass);
}

template <class T>
constexpr RowKernels rows_of = {attend_rows<T>, score_rows<T>, mass_rows<T>};

// This instruction set's table (kernels_<isa>.cpp defines it under its name).
constexpr KernelTable table(sa_isa isa) {
  return {isa, rows_of<float>, rows_of<F16>, rows_of<BF16>, max_of, exp2_sum, exp2_accumulate, score_rows_i8,
          exp2_store_sum};
}

}  // namespace
}  // namespace SA_KERNEL_NS
}  // namespace sa
