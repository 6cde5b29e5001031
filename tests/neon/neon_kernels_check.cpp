// The NEON kernel table against the scalar table (itself tested against double-precision
// references in the main suites), for every kernel entry: f32/f16/bf16 rows, head dims that
// take the vector path and one that falls back, groups of 1 to 8 heads, ranges, gathered
// lists with -1 and a causal limit over scrambled positions. Built for AArch64 and run
// under qemu-aarch64 by scripts/neon_check.sh on an x86 machine; no other part of the
// library is needed.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>
#include "attend/kernels.hpp"
#include "core/half.hpp"
using namespace sa;
static int failures = 0;
static void expect_close(const char *what, float a, float b, float tol) {
  if (!(std::fabs(a - b) <= tol * (1 + std::fabs(b))) && !(std::isinf(a) && std::isinf(b) && (a > 0) == (b > 0))) {
    if (failures < 20) std::printf("MISMATCH %s: neon %g scalar %g\n", what, a, b);
    ++failures;
  }
}
int main() {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (sa_dtype dt : {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16})
    for (int D : {64, 128, 20, 256})
      for (int g : {1, 3, 4, 8}) {
        const int n = 300, stride = D + 8;
        const size_t es = dt == SA_DTYPE_F32 ? 4 : 2;
        std::vector<char> K(size_t(n) * stride * es), V(K.size());
        auto fill = [&](std::vector<char> &b) {
          for (int i = 0; i < n * stride; ++i) {
            float x = nd(rng);
            if (dt == SA_DTYPE_F32) std::memcpy(&b[size_t(i) * 4], &x, 4);
            else { uint16_t h = dt == SA_DTYPE_F16 ? f32_to_f16(x) : f32_to_bf16(x); std::memcpy(&b[size_t(i) * 2], &h, 2); }
          }
        };
        fill(K); fill(V);
        std::vector<float> q(size_t(g) * D);
        for (auto &x : q) x = nd(rng) * 0.2f;
        std::vector<int32_t> rows;
        for (int i = 0; i < 150; ++i) rows.push_back(i % 7 == 3 ? -1 : int32_t(rng() % n));
        std::vector<int64_t> kpos(n);
        for (int i = 0; i < n; ++i) kpos[size_t(i)] = (i * 37) % n;
        for (int variant = 0; variant < 3; ++variant) {
          RowSet rs;
          rs.k = K.data(); rs.v = V.data(); rs.k_stride = stride; rs.v_stride = stride;
          if (variant == 0) { rs.begin = 5; rs.n = 250; }
          if (variant == 1) { rs.rows = rows.data(); rs.n = int64_t(rows.size()); }
          if (variant == 2) { rs.begin = 0; rs.n = n; rs.key_pos = kpos.data(); rs.pos_limit = 200; }
          std::vector<float> sc_n(size_t(g) * rs.n, -1.f), sc_s(sc_n);
          float m[2][16], l[2][16];
          std::vector<float> acc[2] = {std::vector<float>(size_t(g) * D, 0.f), std::vector<float>(size_t(g) * D, 0.f)};
          const KernelTable *t[2] = {&kernels_neon, &kernels_scalar};
          for (int k = 0; k < 2; ++k) {
            for (int h = 0; h < g; ++h) m[k][h] = -std::numeric_limits<float>::infinity(), l[k][h] = 0;
            RowSet r2 = rs;
            r2.scores = k == 0 ? sc_n.data() : sc_s.data();
            r2.scores_ld = rs.n;
            t[k]->attend_rows(dt, q.data(), g, D, r2, {m[k], l[k], acc[k].data()});
          }
          char what[128];
          std::snprintf(what, sizeof what, "attend dt=%d D=%d g=%d variant=%d", int(dt), D, g, variant);
          for (int h = 0; h < g; ++h) {
            const float lse_n = m[0][h] + std::log2(l[0][h]), lse_s = m[1][h] + std::log2(l[1][h]);
            expect_close(what, lse_n, lse_s, 1e-5f);
            for (int d = 0; d < D; ++d) expect_close(what, acc[0][size_t(h * D + d)] / l[0][h], acc[1][size_t(h * D + d)] / l[1][h], 1e-4f);
          }
          for (size_t e = 0; e < sc_n.size(); ++e) expect_close("scores", sc_n[e], sc_s[e], 1e-4f);
          // mass_rows with the scalar table's lse
          std::vector<float> lse(g);
          for (int h = 0; h < g; ++h) lse[size_t(h)] = m[1][h] + std::log2(l[1][h]);
          std::vector<float> ms[2] = {std::vector<float>(size_t(rs.n), 0.f), std::vector<float>(size_t(rs.n), 0.f)};
          for (int k = 0; k < 2; ++k) t[k]->mass_rows(dt, q.data(), g, D, rs, lse.data(), ms[k].data());
          for (int64_t e = 0; e < rs.n; ++e) expect_close("mass", ms[0][size_t(e)], ms[1][size_t(e)], 1e-4f);
        }
        // score_rows on contiguous rows
        std::vector<float> s2[2] = {std::vector<float>(size_t(g) * 40), std::vector<float>(size_t(g) * 40)};
        const KernelTable *t[2] = {&kernels_neon, &kernels_scalar};
        std::vector<char> R(size_t(37) * D * es);
        std::memcpy(R.data(), K.data(), R.size());
        for (int k = 0; k < 2; ++k) t[k]->score_rows(dt, q.data(), g, D, R.data(), 37, s2[k].data(), 40);
        for (int h = 0; h < g; ++h)
          for (int j = 0; j < 37; ++j) expect_close("score_rows", s2[0][size_t(h * 40 + j)], s2[1][size_t(h * 40 + j)], 1e-4f);
      }
  std::vector<float> x(1001);
  for (auto &v : x) v = nd(rng) * 4;
  x[17] = -std::numeric_limits<float>::infinity();
  expect_close("max_of", kernels_neon.max_of(x.data(), 1001), kernels_scalar.max_of(x.data(), 1001), 0);
  expect_close("exp2_sum", kernels_neon.exp2_sum(x.data(), 1001, 3.f), kernels_scalar.exp2_sum(x.data(), 1001, 3.f), 1e-5f);
  std::vector<float> a0(1001, 1.f), a1(1001, 1.f);
  kernels_neon.exp2_accumulate(x.data(), 1001, 2.f, a0.data());
  kernels_scalar.exp2_accumulate(x.data(), 1001, 2.f, a1.data());
  for (int i = 0; i < 1001; ++i) expect_close("exp2_accumulate", a0[size_t(i)], a1[size_t(i)], 1e-5f);
  std::printf("%s: %d mismatches\n", failures ? "FAIL" : "OK", failures);
  return failures ? 1 : 0;
}
