// matmul_abt (oneDNN where the build has it) and matmul_abt_portable (every build) against a
// double-precision loop: shapes around the portable loop's panel (32 keys) and row block (4),
// head dims that are not multiples of a vector, and an output row stride wider than N.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "select/score_matmul.hpp"

namespace {

using Gemm = void (*)(const float *, int64_t, const float *, int64_t, int64_t, float *, int64_t);

void expect_matches_double(Gemm gemm, int64_t M, int64_t N, int64_t D) {
  SCOPED_TRACE(::testing::Message() << "M " << M << " N " << N << " D " << D);
  std::mt19937 rng(unsigned(M * 1000003 + N * 1009 + D));
  std::normal_distribution<float> normal;
  std::vector<float> A(size_t(M * D)), B(size_t(N * D));
  for (float &x : A) x = normal(rng);
  for (float &x : B) x = normal(rng);
  const int64_t ldc = N + 3;
  const float sentinel = -12345.f;
  std::vector<float> C(size_t(M * ldc), sentinel);
  gemm(A.data(), M, B.data(), N, D, C.data(), ldc);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double want = 0, scale = 0;
      for (int64_t d = 0; d < D; ++d) {
        want += double(A[size_t(i * D + d)]) * B[size_t(j * D + d)];
        scale += std::fabs(double(A[size_t(i * D + d)]) * B[size_t(j * D + d)]);
      }
      ASSERT_NEAR(C[size_t(i * ldc + j)], want, 1e-5 * scale + 1e-6) << "C[" << i << "][" << j << "]";
    }
    for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(C[size_t(i * ldc + j)], sentinel) << "padding of row " << i << " written";
  }
}

void sweep(Gemm gemm) {
  for (int64_t M : {1, 3, 4, 5, 9})
    for (int64_t N : {1, 31, 32, 33, 70})
      for (int64_t D : {1, 7, 16, 128, 130}) expect_matches_double(gemm, M, N, D);
}

TEST(ScoreMatmul, PortableLoopMatchesDouble) { sweep(sa::matmul_abt_portable); }

TEST(ScoreMatmul, BuildsGemmMatchesDouble) { sweep(sa::matmul_abt); }

}  // namespace
