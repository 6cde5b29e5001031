// The GEMM of score_matmul.hpp without oneDNN: B is repacked a panel of kCols keys at a time
// as [D][kCols], so the inner loop is a broadcast of A[i][d] times a contiguous row of the
// panel, which compilers vectorise at any width; kRows rows of A share each panel load.
// On x86-64 the function is cloned for AVX-512 and AVX2 and picked at load time (ifunc).
#include "select/score_matmul.hpp"

#include <algorithm>
#include <vector>

#include "sa_build_config.h"

namespace sa {
namespace {

constexpr int64_t kCols = 16;  // keys per panel: 1 AVX-512 or 2 AVX2 registers per row of A
constexpr int64_t kRows = 6;   // rows of A per pass over a panel: 12 AVX2 accumulators

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SA_GEMM_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define SA_GEMM_CLONES
#endif

// C rows i0 .. i0 + rows - 1, columns j0 .. j0 + cols - 1, from the packed panel.
SA_GEMM_CLONES
void panel_block(const float *A, int64_t i0, int64_t rows, int64_t D, const float *panel, int64_t cols,
                 float *C, int64_t ldc, int64_t j0) {
  float acc[kRows][kCols] = {};
  for (int64_t d = 0; d < D; ++d) {
    const float *p = panel + d * kCols;
    for (int64_t r = 0; r < kRows; ++r) {
      const float a = r < rows ? A[(i0 + r) * D + d] : 0.f;
      for (int64_t c = 0; c < kCols; ++c) acc[r][c] += a * p[c];
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    std::copy(acc[r], acc[r] + cols, C + (i0 + r) * ldc + j0);
}

}  // namespace

void matmul_abt_portable(const float *A, int64_t M, const float *B, int64_t N, int64_t D, float *C,
                         int64_t ldc) {
  std::vector<float> panel(size_t(D * kCols));
  for (int64_t j0 = 0; j0 < N; j0 += kCols) {
    const int64_t cols = std::min(kCols, N - j0);
    for (int64_t d = 0; d < D; ++d)
      for (int64_t c = 0; c < kCols; ++c) panel[size_t(d * kCols + c)] = c < cols ? B[(j0 + c) * D + d] : 0.f;
    for (int64_t i0 = 0; i0 < M; i0 += kRows)
      panel_block(A, i0, std::min(kRows, M - i0), D, panel.data(), cols, C, ldc, j0);
  }
}

#if !SA_HAVE_ONEDNN
void matmul_abt(const float *A, int64_t M, const float *B, int64_t N, int64_t D, float *C, int64_t ldc) {
  matmul_abt_portable(A, M, B, N, D, C, ldc);
}
#endif

}  // namespace sa
