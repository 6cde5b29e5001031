// Compact page bounds (select/page_bounds.hpp) against brute force: for pages of keys in every
// dtype (random, with outlier dimensions, constant, zero, tiny and huge magnitudes), the bound
// s (q . c + |q| . r) is >= max_k q . k over the page's keys, computed exactly (double) from the
// codes, and so is the bound the selector computes (int16 query codes, score_rows_i8 of every
// kernel table this CPU has, page_code::coded_bound), for random queries and for the query that
// attains the page's Quest bound. Also checks the bounds stay tight: within a few code steps of
// the Quest bound sum_d max(q_d lo_d, q_d hi_d).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/kernels.hpp"
#include "select/page_bounds.hpp"
#include "select/page_code.hpp"
#include "test_util.hpp"

namespace {

constexpr sa_dtype kDtypes[] = {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16};

enum class Keys { normal, outlier, constant, zero, tiny, huge, mixed_sign_extremes };

// n keys of D dims as the index dtype holds them (rounded to dt).
std::vector<double> make_keys(sat::Rng &rng, Keys kind, sa_dtype dt, int n, int D) {
  std::vector<double> k(size_t(n * D));
  const double big = dt == SA_DTYPE_F16 ? 60000.0 : 1e30;
  for (int j = 0; j < n; ++j)
    for (int d = 0; d < D; ++d) {
      double x = rng.normal();
      switch (kind) {
        case Keys::normal: break;
        case Keys::outlier: x = d == 3 ? 40.0 + rng.normal() : 0.05 * x; break;
        case Keys::constant: x = d * 0.37 - 5.0; break;
        case Keys::zero: x = 0.0; break;
        case Keys::tiny: x *= 1e-6; break;
        case Keys::huge: x = big * std::tanh(x); break;
        case Keys::mixed_sign_extremes: x = (j % 2 ? 1.0 : -1.0) * (d % 5 + 1) * 3.0; break;
      }
      k[size_t(j * D + d)] = sat::round_to(dt, x);
    }
  return k;
}

struct Codes {
  std::vector<int8_t> row;  // [c | r], 2 D
  float scale = 0.f, magnitude = 0.f;
  std::vector<double> lo, hi;
};

Codes quantize(const std::vector<double> &k, int n, int D) {
  Codes c;
  c.row.resize(size_t(2 * D));
  c.lo.assign(size_t(D), std::numeric_limits<double>::infinity());
  c.hi.assign(size_t(D), -std::numeric_limits<double>::infinity());
  for (int j = 0; j < n; ++j)
    for (int d = 0; d < D; ++d) {
      c.lo[size_t(d)] = std::min(c.lo[size_t(d)], k[size_t(j * D + d)]);
      c.hi[size_t(d)] = std::max(c.hi[size_t(d)], k[size_t(j * D + d)]);
    }
  std::vector<float> lo(c.lo.begin(), c.lo.end()), hi(c.hi.begin(), c.hi.end());  // exact: keys are floats
  sa::quantize_page_bound(lo.data(), hi.data(), D, c.row.data(), c.row.data() + D, &c.scale, &c.magnitude);
  return c;
}

TEST(PageBounds, TrueUpperBoundEveryDtypeAndKeyKind) {
  sat::Rng rng(11);
  std::vector<const sa::KernelTable *> tables = {&sa::kernels_scalar, &sa::kernel_table(SA_ISA_AUTO)};
  for (sa_dtype dt : kDtypes)
    for (Keys kind : {Keys::normal, Keys::outlier, Keys::constant, Keys::zero, Keys::tiny, Keys::huge,
                      Keys::mixed_sign_extremes})
      for (int D : {8, 64, 128})
        for (int n : {1, 3, 16}) {
          const std::vector<double> k = make_keys(rng, kind, dt, n, D);
          const Codes c = quantize(k, n, D);
          ASSERT_GE(c.scale, 0.f);
          for (int d = 0; d < D; ++d) {
            ASSERT_GE(c.row[size_t(D + d)], 0) << "radius code";
            // Every key's coordinate inside the decoded interval, exactly.
            EXPECT_LE(double(c.scale) * (c.row[size_t(d)] - c.row[size_t(D + d)]), c.lo[size_t(d)]);
            EXPECT_GE(double(c.scale) * (c.row[size_t(d)] + c.row[size_t(D + d)]), c.hi[size_t(d)]);
          }
          for (int trial = 0; trial < 6; ++trial) {
            // Random queries, and the adversarial ones: q_d = +-1 towards each dim's extreme.
            std::vector<float> q(size_t(2 * D));
            for (int d = 0; d < D; ++d) {
              double x = trial < 3 ? rng.normal() * (trial + 1) : (rng.below(2) ? 1.0 : -1.0) * (1 + trial);
              if (trial == 5) x = std::fabs(c.hi[size_t(d)]) >= std::fabs(c.lo[size_t(d)]) ? 1.0 : -1.0;
              q[size_t(d)] = float(x);
              q[size_t(D + d)] = std::fabs(float(x));
            }
            double best = -std::numeric_limits<double>::infinity(), quest = 0.0, code_bound = 0.0, mag = 0.0;
            for (int j = 0; j < n; ++j) {
              double s = 0.0;
              for (int d = 0; d < D; ++d) s += double(q[size_t(d)]) * k[size_t(j * D + d)];
              best = std::max(best, s);
            }
            for (int d = 0; d < D; ++d) {
              const double qd = q[size_t(d)];
              quest += std::max(qd * c.lo[size_t(d)], qd * c.hi[size_t(d)]);
              code_bound += double(c.scale) * (qd * c.row[size_t(d)] + std::fabs(qd) * c.row[size_t(D + d)]);
              mag += std::fabs(qd) * double(c.scale) * (std::abs(c.row[size_t(d)]) + c.row[size_t(D + d)]);
            }
            EXPECT_GE(code_bound, best) << "exact bound below a key's score";
            EXPECT_GE(code_bound, quest - 1e-9 * mag);
            // Tight: at most 2 code steps per dimension above the Quest bound.
            double qsum = 0.0;
            for (int d = 0; d < D; ++d) qsum += std::fabs(double(q[size_t(d)]));
            EXPECT_LE(code_bound, quest + 2.0 * double(c.scale) * qsum + 1e-9 * mag);
            // As the selector computes it: int16 query codes, the kernels' integer dot product,
            // one f32 multiply and add; above the best key (the query codes' slack covers the
            // final roundings) and still tight.
            std::vector<int16_t> qc(size_t(2 * D));
            float qs = 0.f;
            sa::quantize_query(q.data(), 2 * D, qc.data(), &qs);
            for (const sa::KernelTable *t : tables) {
              float coded = 0.f;
              t->score_rows_i8(qc.data(), 1, 2 * D, c.row.data(), &c.scale, 1, &coded, 1);
              const double got = sa::page_code::coded_bound(coded, c.magnitude, qs);
              EXPECT_GE(got, best) << sa_isa_name(t->isa) << " D=" << D << " n=" << n;
              EXPECT_LE(got, code_bound + 2.0 * qs * c.magnitude + 1e-6 * mag) << sa_isa_name(t->isa) << " D=" << D << " n=" << n;
            }
          }
        }
}

TEST(PageBounds, NonFiniteKeysGiveAnInfiniteBound) {
  const int D = 8;
  std::vector<float> lo(D, -1.f), hi(D, 1.f);
  hi[2] = std::numeric_limits<float>::infinity();
  std::vector<int8_t> c(D), r(D);
  float s = 0.f, m = 0.f;
  sa::quantize_page_bound(lo.data(), hi.data(), D, c.data(), r.data(), &s, &m);
  EXPECT_EQ(s, std::numeric_limits<float>::infinity());
  EXPECT_EQ(m, std::numeric_limits<float>::infinity());
  for (int d = 0; d < D; ++d) EXPECT_EQ(r[size_t(d)], 127);
}

}  // namespace

// The CPU page selector ranks pages by page_code::page_bound (t (s (q . [c | r]) + A), one f32
// rounding per step), the formula a CUDA page index computes, at every head dimension. At D 256
// the selector once scored the centre and radius codes in two passes and added s dot_c + s dot_r
// in f32: a different rounding in about 40% of bounds, so the two devices could rank a near tie
// apart. Two keys, each its own page (page_size 1, no refine), whose shared-formula bounds and
// two-pass bounds order them differently (found by a seeded search); top_k 1 must take the
// shared formula's winner (ties: the lower page).
TEST(PageBounds, SelectorRanksPagesByTheSharedBoundFormula) {
  auto ctx = sat::make_context(1);
  ASSERT_NE(ctx, nullptr);
  for (int D : {64, 128, 256}) {
    std::mt19937 rng(uint32_t(11 + D));
    std::normal_distribution<float> nd(0.f, 1.f);
    const float qscale = (1.f / std::sqrt(float(D))) * 1.4426950408889634f;  // the select's default scale
    struct Bounds {
      float joint, split;
    };
    auto bounds = [&](const std::vector<float> &k, const std::vector<int16_t> &codes, float t) {
      std::vector<int8_t> row(size_t(2 * D));
      float s = 0.f, A = 0.f;
      sa::quantize_page_bound_row(k.data(), k.data(), D, row.data(), row.data() + D, &s, &A);
      int64_t dc = 0, dr = 0;
      for (int d = 0; d < D; ++d) {
        dc += int64_t(codes[size_t(d)]) * row[size_t(d)];
        dr += int64_t(codes[size_t(D + d)]) * row[size_t(D + d)];
      }
      const volatile float bc = s * float(dc), br = s * float(dr);  // the two passes' scores
      const volatile float sum = bc + br;
      return Bounds{sa::page_code::page_bound(dc + dr, s, A, t), t * (sum + A)};
    };
    std::vector<float> ka(static_cast<size_t>(D)), kb = ka, q = ka, x(static_cast<size_t>(2 * D));
    std::vector<int16_t> codes(static_cast<size_t>(2 * D));
    bool found = false;
    bool a_wins = false;  // under the shared formula (ties: a, the lower page)
    for (int it = 0; it < 200000 && !found; ++it) {
      for (int d = 0; d < D; ++d) ka[size_t(d)] = nd(rng), q[size_t(d)] = nd(rng);
      const int d0 = int(rng() % uint32_t(D));
      q[size_t(d0)] = std::ldexp(nd(rng), -int(rng() % 14));  // a small query code: a near tie
      kb = ka;
      kb[size_t(d0)] = ka[size_t(d0)] + std::ldexp(nd(rng), -int(rng() % 10));
      for (int d = 0; d < D; ++d) {
        x[size_t(d)] = qscale * q[size_t(d)];
        x[size_t(D + d)] = std::fabs(x[size_t(d)]);
      }
      float t = 0.f;
      sa::quantize_query_row(x.data(), 2 * D, codes.data(), &t);
      const Bounds a = bounds(ka, codes, t), b = bounds(kb, codes, t);
      a_wins = a.joint >= b.joint;
      found = a_wins != (a.split >= b.split);
    }
    ASSERT_TRUE(found) << "D " << D << ": no near tie found";
    sa_index_options o = SA_INDEX_OPTIONS_INIT;
    o.kind = SA_SELECTOR_PAGE;
    o.num_kv_heads = 1;
    o.head_dim = D;
    o.dtype = SA_DTYPE_F32;
    o.page.page_size = 1;
    o.page.refine = 0;
    sa_index *raw = nullptr;
    ASSERT_EQ(sa_index_create(ctx.get(), &o, &raw), SA_OK) << sa_last_error();
    sat::IndexPtr ix(raw);
    sat::Tensor keys(SA_DTYPE_F32, {2, 1, D}), qt(SA_DTYPE_F32, {1, 1, D});
    for (int d = 0; d < D; ++d) {
      keys.set({0, 0, d}, ka[size_t(d)]);
      keys.set({1, 0, d}, kb[size_t(d)]);
      qt.set({0, 0, d}, q[size_t(d)]);
    }
    ASSERT_EQ(sa_index_append(ix.get(), keys.t()), SA_OK) << sa_last_error();
    sat::Tensor out(SA_DTYPE_I32, {1, 1, 1});
    const sa_select_options so = sat::select_options(1, 0, 0);
    ASSERT_EQ(sa_select(ix.get(), qt.t(), &so, out.t()), SA_OK) << sa_last_error();
    EXPECT_EQ(out.values()[0], a_wins ? 0.0 : 1.0) << "D " << D;
  }
}
