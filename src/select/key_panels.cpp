#include "select/key_panels.hpp"

#include <algorithm>
#include <array>
#include <cmath>
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

#if defined(SA_PANELS_AVX512)
namespace {

// R rows of A against P consecutive panels: R x P accumulators (at most 16 of the 32
// registers), each panel row loaded once per d and each A value broadcast once per d.
template <int R, int P>
__attribute__((target("avx512f"))) void tile(const float *A, int64_t D, const float *panel, float *C, int64_t ldc) {
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
}

using Tile = void (*)(const float *, int64_t, const float *, float *, int64_t);
constexpr int kTileRows = 8;

template <int P, int... R>
constexpr auto tiles_of(std::integer_sequence<int, R...>) {
  return std::array<Tile, sizeof...(R)>{tile<R + 1, P>...};
}

}  // namespace

bool score_panels_built() { return true; }

void score_panels(const float *A, int64_t M, const float *panels, int64_t N, int64_t D, float *C, int64_t ldc) {
  static constexpr auto one = tiles_of<1>(std::make_integer_sequence<int, kTileRows>());
  static constexpr auto two = tiles_of<2>(std::make_integer_sequence<int, kTileRows>());
  const int64_t count = (N + kPanelKeys - 1) / kPanelKeys;
  // Two panels (32 keys, 16 KB at D = 128: in L1) against every row tile of A, then the next two.
  for (int64_t p = 0; p < count; p += 2) {
    const auto &tiles = count - p >= 2 ? two : one;
    const float *panel = panels + p * D * kPanelKeys;
    for (int64_t i = 0; i < M; i += kTileRows) {
      const int64_t rows = std::min<int64_t>(kTileRows, M - i);
      tiles[size_t(rows - 1)](A + i * D, D, panel, C + i * ldc + p * kPanelKeys, ldc);
    }
  }
}
#else
bool score_panels_built() { return false; }

// The same chain one score at a time (callers take matmul_abt where this is not built fast).
void score_panels(const float *A, int64_t M, const float *panels, int64_t N, int64_t D, float *C, int64_t ldc) {
  const int64_t cols = (N + kPanelKeys - 1) / kPanelKeys * kPanelKeys;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const float *b = panels + (j / kPanelKeys) * D * kPanelKeys + j % kPanelKeys;
      float acc = 0.f;
      for (int64_t d = 0; d < D; ++d) acc = std::fma(A[i * D + d], b[d * kPanelKeys], acc);
      C[i * ldc + j] = acc;
    }
}
#endif

}  // namespace sa
