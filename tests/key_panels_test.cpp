// score_panels (select/key_panels.hpp) against the chain it promises, one std::fma per d in
// ascending order, bit for bit: row tiles and panel pairs cut anywhere, head dims that are not
// multiples of a vector, infinities and NaNs; and against matmul_abt bit for bit where the build
// has oneDNN (exact prefill takes either, by instruction set, and must choose the same keys).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/kernels.hpp"
#include "sa_build_config.h"
#include "select/key_panels.hpp"
#include "select/score_matmul.hpp"

namespace {

// The AVX-512 loop needs the CPU to have it (the scalar loop runs anywhere).
bool runnable() { return !sa::score_panels_built() || sa::cpu_best_isa() == SA_ISA_AVX512; }

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b); }

struct Problem {
  int64_t M, N, D;
  std::vector<float> A, B, panels;
  Problem(int64_t m, int64_t n, int64_t d, bool specials) : M(m), N(n), D(d) {
    std::mt19937 rng(unsigned(m * 1000003 + n * 1009 + d));
    std::normal_distribution<float> normal;
    A.resize(size_t(M * D));
    B.resize(size_t(N * D));
    for (float &x : A) x = normal(rng);
    for (float &x : B) x = normal(rng);
    if (specials && N > 2 && D > 1) {
      B[size_t(1 * D)] = std::numeric_limits<float>::quiet_NaN();
      B[size_t(2 * D + 1)] = std::numeric_limits<float>::infinity();
      A[size_t(D - 1)] = -std::numeric_limits<float>::infinity();
    }
    panels.assign(size_t(sa::panel_floats(N, D)), -1.f);
    for (int64_t j = 0; j < N; j += sa::kPanelKeys)
      sa::pack_panel(&B[size_t(j * D)], std::min(sa::kPanelKeys, N - j), D, &panels[size_t(j * D)]);
  }
  float chain(int64_t i, int64_t j) const {
    float acc = 0.f;
    for (int64_t d = 0; d < D; ++d) acc = std::fma(A[size_t(i * D + d)], j < N ? B[size_t(j * D + d)] : 0.f, acc);
    return acc;
  }
};

TEST(KeyPanels, PackedPanelsHoldEveryKey) {
  Problem p(1, 37, 5, false);
  for (int64_t j = 0; j < 48; ++j)
    for (int64_t d = 0; d < 5; ++d)
      EXPECT_EQ(p.panels[size_t(j / 16 * 16 * 5 + d * 16 + j % 16)], j < 37 ? p.B[size_t(j * 5 + d)] : 0.f);
}

TEST(KeyPanels, ScoresAreTheFmaChain) {
  if (!runnable()) GTEST_SKIP() << "no AVX-512";
  for (int64_t M : {1, 3, 8, 9, 16, 17, 33})
    for (int64_t N : {1, 15, 16, 17, 31, 32, 33, 48, 70})
      for (int64_t D : {1, 7, 16, 128, 130})
        for (bool specials : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "M " << M << " N " << N << " D " << D << " specials " << specials);
          Problem p(M, N, D, specials);
          const int64_t cols = (N + 15) / 16 * 16, ldc = cols + 5;
          const float sentinel = -12345.f;
          std::vector<float> C(size_t(M * ldc), sentinel);
          sa::score_panels(p.A.data(), M, p.panels.data(), N, D, C.data(), ldc);
          for (int64_t i = 0; i < M; ++i) {
            for (int64_t j = 0; j < cols; ++j)
              ASSERT_TRUE(same_bits(C[size_t(i * ldc + j)], p.chain(i, j))) << "C[" << i << "][" << j << "]";
            for (int64_t j = cols; j < ldc; ++j) ASSERT_EQ(C[size_t(i * ldc + j)], sentinel) << "past row " << i;
          }
        }
}

// The row maxima taken as the tiles are stored: the largest chain value among each row's first
// limit[i] columns (limits anywhere in a panel, 0 and N); every row unknown where a score may be
// NaN or infinite (a NaN or infinite input, or entries large enough to overflow).
TEST(KeyPanels, RowMaximaOverEachRowsLimit) {
  if (!runnable()) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(7);
  for (int64_t M : {1, 7, 8, 9, 32})
    for (int64_t N : {1, 16, 33, 70, 100})
      for (int inputs : {0, 1, 2}) {  // finite, NaN and infinities, huge
        SCOPED_TRACE(::testing::Message() << "M " << M << " N " << N << " inputs " << inputs);
        Problem p(M, N, 24, inputs == 1);
        if (inputs == 1) p.A[1] = std::numeric_limits<float>::quiet_NaN();  // also where N is too short for specials
        if (inputs == 2) p.A[0] = 1e37f;
        for (int64_t j = 0; j < N; j += sa::kPanelKeys)
          sa::pack_panel(&p.B[size_t(j * p.D)], std::min(sa::kPanelKeys, N - j), p.D, &p.panels[size_t(j * p.D)]);
        std::vector<int64_t> limit(static_cast<size_t>(M));
        for (int64_t i = 0; i < M; ++i) limit[size_t(i)] = i == 0 ? N : i == 1 ? 0 : int64_t(rng() % uint64_t(N + 1));
        if (M > 1) limit.back() = N - 1;  // the last column alone left out
        std::vector<float> lanes(static_cast<size_t>(16 * M), 99.f), max(static_cast<size_t>(M));
        std::vector<uint8_t> unknown(static_cast<size_t>(M), 7);
        const float bound = sa::panel_bound(p.panels.data(), int64_t(p.panels.size()));
        const sa::RowMaxima mx{bound, limit.data(), lanes.data(), max.data(), unknown.data()};
        const int64_t ldc = (N + 15) / 16 * 16;
        std::vector<float> C(static_cast<size_t>(M * ldc));
        sa::score_panels(p.A.data(), M, p.panels.data(), N, p.D, C.data(), ldc, &mx);
        for (int64_t i = 0; i < M; ++i) {
          EXPECT_EQ(bool(unknown[size_t(i)]), inputs != 0) << "row " << i;
          if (inputs != 0) continue;
          float want = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < limit[size_t(i)]; ++j) want = std::max(want, p.chain(i, j));
          EXPECT_EQ(max[size_t(i)], want) << "row " << i;
        }
      }
}

TEST(KeyPanels, BoundIsTheLargestMagnitude) {
  std::vector<float> x = {0.f, -3.5f, 2.f, -0.f, 1e-40f};
  EXPECT_EQ(sa::panel_bound(x.data(), 0), 0.f);
  EXPECT_EQ(sa::panel_bound(x.data(), int64_t(x.size())), 3.5f);
  x[2] = std::numeric_limits<float>::max();
  EXPECT_EQ(sa::panel_bound(x.data(), int64_t(x.size())), std::numeric_limits<float>::max());
  for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN()}) {
    x[4] = bad;
    EXPECT_EQ(sa::panel_bound(x.data(), int64_t(x.size())), std::numeric_limits<float>::infinity()) << bad;
  }
}

#if SA_HAVE_ONEDNN
// The shapes exact prefill gives it: rows of a query block (query heads x queries), a causal
// prefix of keys (a multiple of 16, or every key), head dims of models. oneDNN 2.6 computes the
// chain whenever N is a multiple of 16 or M is at least 32 (blocks of 12 rows or fewer over a
// ragged N come out of another kernel, with other bits for about 80% of the scores).
TEST(KeyPanels, ScoresAreOneDnnsBits) {
  if (!runnable()) GTEST_SKIP() << "no AVX-512";
  for (int64_t M : {4, 8, 12, 32, 64, 96, 256})
    for (int64_t N : {16, 208, 1000, 1001, 2048, 4000, 4095})
      for (int64_t D : {64, 96, 128, 256}) {
        if (M < 32 && N % 16 != 0) continue;
        SCOPED_TRACE(::testing::Message() << "M " << M << " N " << N << " D " << D);
        Problem p(M, N, D, false);
        const int64_t ldc = (N + 15) / 16 * 16;
        std::vector<float> mine(size_t(M * ldc)), dnnl(size_t(M * ldc));
        sa::score_panels(p.A.data(), M, p.panels.data(), N, D, mine.data(), ldc);
        sa::matmul_abt(p.A.data(), M, p.B.data(), N, D, dnnl.data(), ldc);
        int64_t differ = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) differ += !same_bits(mine[size_t(i * ldc + j)], dnnl[size_t(i * ldc + j)]);
        EXPECT_EQ(differ, 0);
      }
}
#endif

}  // namespace
