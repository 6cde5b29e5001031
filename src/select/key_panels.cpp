#include "select/key_panels.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define SA_PANELS_AVX512 1
#endif

namespace sa {

void pack_panel(const float *rows, int64_t count, int64_t D, float *panel) {
  for (int64_t d = 0; d < D; ++d)
    for (int64_t c = 0; c < kPanelKeys; ++c) panel[d * kPanelKeys + c] = c < count ? rows[c * D + d] : 0.f;
}

float panel_bound(const float *x, int64_t n) {
  // The bits of |x| order as the values do, and NaNs and infinities above every finite float:
  // an integer maximum, which compilers vectorise.
  uint32_t top = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    top = std::max(top, bits & 0x7fffffffu);
  }
  if (top >= 0x7f800000u) return std::numeric_limits<float>::infinity();
  float bound;
  std::memcpy(&bound, &top, sizeof bound);
  return bound;
}

namespace {

// The scores of rows with entries at most a_bound against keys at most key_bound are finite
// (every partial sum of D products is at most D * a_bound * key_bound, rounding aside).
bool scores_bounded(const float *A, int64_t M, int64_t D, float key_bound) {
  return float(D) * panel_bound(A, M * D) * key_bound < std::numeric_limits<float>::max() / 2;
}

}  // namespace

#if defined(SA_PANELS_AVX512)
namespace {

// R rows of A against P consecutive panels: R x P accumulators (at most 16 of the 32
// registers), each panel row loaded once per d and each A value broadcast once per d.
// With mx: each row's running maximum (its lanes) over the columns below its limit; full: every
// column of the tile is below every row's limit (all but the last tile or two of a block).
template <int R, int P>
__attribute__((target("avx512f"))) void tile(const float *A, int64_t D, const float *panel, float *C, int64_t ldc,
                                             int64_t j0, const RowMaxima *mx, int64_t i0, bool full) {
  __m512 acc[R][P];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_ps();
  const int64_t stride = D * kPanelKeys;  // one panel
  for (int64_t d = 0; d < D; ++d) {
    __m512 b[P];
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) b[p] = _mm512_loadu_ps(panel + p * stride + d * kPanelKeys);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * D + d]);
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) acc[r][p] = _mm512_fmadd_ps(a, b[p], acc[r][p]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) _mm512_storeu_ps(C + r * ldc + p * kPanelKeys, acc[r][p]);
  if (!mx) return;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float *lanes = mx->lanes + (i0 + r) * kPanelKeys;
    __m512 m = _mm512_loadu_ps(lanes);
    if (full) {
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) m = _mm512_max_ps(m, acc[r][p]);
    } else {
      const int64_t limit = mx->limit[i0 + r];
#pragma GCC unroll 2
      for (int p = 0; p < P; ++p) {
        const int64_t left = limit - (j0 + p * kPanelKeys);  // the row's columns in this panel
        const __mmask16 in = left >= kPanelKeys ? __mmask16(0xFFFF) : left > 0 ? __mmask16((1u << left) - 1) : 0;
        m = _mm512_mask_max_ps(m, in, m, acc[r][p]);
      }
    }
    _mm512_storeu_ps(lanes, m);
  }
}

using Tile = void (*)(const float *, int64_t, const float *, float *, int64_t, int64_t, const RowMaxima *, int64_t,
                      bool);
constexpr int kTileRows = 8;

template <int P, int... R>
constexpr auto tiles_of(std::integer_sequence<int, R...>) {
  return std::array<Tile, sizeof...(R)>{tile<R + 1, P>...};
}

}  // namespace

bool score_panels_built() { return true; }

__attribute__((target("avx512f"))) void score_panels(const float *A, int64_t M, const float *panels, int64_t N,
                                                     int64_t D, float *C, int64_t ldc, const RowMaxima *maxima) {
  int64_t least = 0;  // the smallest limit of the rows
  if (maxima) {
    least = N;
    const bool bounded = scores_bounded(A, M, D, maxima->key_bound);
    for (int64_t i = 0; i < M; ++i) {
      _mm512_storeu_ps(maxima->lanes + i * kPanelKeys, _mm512_set1_ps(-std::numeric_limits<float>::infinity()));
      maxima->unknown[i] = !bounded;
      least = std::min(least, maxima->limit[i]);
    }
  }
  static constexpr auto one = tiles_of<1>(std::make_integer_sequence<int, kTileRows>());
  static constexpr auto two = tiles_of<2>(std::make_integer_sequence<int, kTileRows>());
  const int64_t count = (N + kPanelKeys - 1) / kPanelKeys;
  // Two panels (32 keys, 16 KB at D = 128: in L1) against every row tile of A, then the next two.
  for (int64_t p = 0; p < count; p += 2) {
    const auto &tiles = count - p >= 2 ? two : one;
    const float *panel = panels + p * D * kPanelKeys;
    for (int64_t i = 0; i < M; i += kTileRows) {
      const int64_t rows = std::min<int64_t>(kTileRows, M - i);
      tiles[size_t(rows - 1)](A + i * D, D, panel, C + i * ldc + p * kPanelKeys, ldc, p * kPanelKeys, maxima, i,
                              (p + 2) * kPanelKeys <= least);
    }
  }
  if (maxima)  // the order of a maximum's comparisons changes nothing but the sign of a zero (no NaN)
    for (int64_t i = 0; i < M; ++i) maxima->max[i] = _mm512_reduce_max_ps(_mm512_loadu_ps(maxima->lanes + i * kPanelKeys));
}
#else
bool score_panels_built() { return false; }

// The same chain one score at a time (callers take matmul_abt where this is not built fast).
void score_panels(const float *A, int64_t M, const float *panels, int64_t N, int64_t D, float *C, int64_t ldc,
                  const RowMaxima *maxima) {
  const int64_t cols = (N + kPanelKeys - 1) / kPanelKeys * kPanelKeys;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const float *b = panels + (j / kPanelKeys) * D * kPanelKeys + j % kPanelKeys;
      float acc = 0.f;
      for (int64_t d = 0; d < D; ++d) acc = std::fma(A[i * D + d], b[d * kPanelKeys], acc);
      C[i * ldc + j] = acc;
    }
  const bool bounded = maxima && scores_bounded(A, M, D, maxima->key_bound);
  for (int64_t i = 0; maxima && i < M; ++i) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < maxima->limit[i]; ++j) m = std::max(m, C[i * ldc + j]);
    maxima->max[i] = m;
    maxima->unknown[i] = !bounded;
  }
}
#endif

}  // namespace sa
