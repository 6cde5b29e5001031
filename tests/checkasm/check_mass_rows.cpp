// mass_rows against the scalar table, over the same edge row sets as attend_rows, with lse2
// near each head's true log-sum (so the masses are probabilities) and, every other pass, a
// third of the heads at lse2 = -inf (they add nothing). Mass accumulates (+=), so it starts
// from random values, and entries a set skips must keep theirs bit for bit.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bench_timer.hpp"
#include "checkasm.hpp"
#include "edge_row_sets.hpp"
#include "error_bounds.hpp"
#include "guarded_buffer.hpp"
#include "kv_values.hpp"

namespace checkasm {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> make_lse2(Rng &rng, const EdgeRowSet &set, const std::vector<float> &q, int g, int D,
                             bool neg_inf_heads, double spread) {
  std::vector<float> lse2(static_cast<size_t>(g));
  for (int h = 0; h < g; ++h) {
    if (neg_inf_heads && h % 3 == 1) {
      lse2[size_t(h)] = kNegInf;
      continue;
    }
    double top = -INFINITY, z = 0;
    std::vector<double> s;
    for (const VisibleEntry &v : set.visible) {
      s.push_back(exact_dot(q.data() + h * D, set.k.data(), v.row * set.rs.k_stride, D, set.dtype).value);
      top = std::max(top, s.back());
    }
    for (double x : s) z += std::exp2(x - top);
    // Off the true value by a little, as a denominator summed in another order would be.
    lse2[size_t(h)] = float((s.empty() ? 0.0 : top + std::log2(z)) + rng.normal() * (s.empty() ? spread : 0.5));
  }
  return lse2;
}

void bench(Checker &c, EntryReport &rep, Rng &rng, sa_dtype dt) {
  const int D = 128, g = 4;  // as attend_rows: a GQA group over a gathered list of 1024 keys
  EdgeRowSet set;
  make_edge_row_set(set, rng, dt, D, 1024, {Layout::gathered, false, Limit::none, false});
  const std::vector<float> q = random_query(rng, g, D, 2.0);
  const std::vector<float> lse2 = make_lse2(rng, set, q, g, D, false, 2.0);
  std::vector<float> mass(size_t(set.rs.n), 0.f);
  auto time = [&](const sa::KernelTable &t) {
    return ns_per_call([&] { t.of(dt).mass_rows(q.data(), g, D, set.rs, lse2.data(), mass.data()); });
  };
  rep.ns_new = time(c.tested);
  rep.ns_ref = time(c.ref);
}

void check_dtype(Checker &c, sa_dtype dt) {
  const std::string name = std::string("mass_rows.") + dtype_name(dt);
  EntryReport *rep = c.begin(name);
  if (!rep) return;
  Rng rng = c.rng_for(name);
  int64_t counter = 0;
  EdgeRowSet set;
  for_each_shape(c.opt, [&](int D, int g, int64_t n) {
    const RowSetShape shape = RowSetShape::nth(counter);
    const int64_t pass = counter++ / RowSetShape::kCount;
    const bool neg_inf_heads = pass % 2 != 0, wide = (pass / 2) % 2 != 0;
    const double spread = wide ? 12.0 : 2.0;
    make_edge_row_set(set, rng, dt, D, n, shape);
    const std::vector<float> q = random_query(rng, g, D, spread);
    const std::vector<float> lse2 = make_lse2(rng, set, q, g, D, neg_inf_heads, spread);
    std::vector<float> start(static_cast<size_t>(n));
    for (auto &x : start) x = float(rng.uniform(0.0, 2.0));
    GuardedBuffer got(n), want(n);
    for (int64_t e = 0; e < n; ++e) got[e] = want[e] = start[size_t(e)];
    c.tested.of(dt).mass_rows(q.data(), g, D, set.rs, lse2.data(), got.data());
    c.ref.of(dt).mass_rows(q.data(), g, D, set.rs, lse2.data(), want.data());
    ++rep->cases;
    const std::string where = set.where + ", g=" + std::to_string(g) +
                              (neg_inf_heads ? ", some lse2 = -inf" : "") + (wide ? ", wide scores" : "");
    c.expect(*rep, got.margins_intact(), where, "wrote outside mass");

    std::vector<char> seen(size_t(n), 0);
    for (const VisibleEntry &v : set.visible) {
      seen[size_t(v.entry)] = 1;
      // Per kernel, in units of u: each term t_h = 2^(s_h - lse2_h) errs by its score's
      // gamma(D) S_h and the rounding of s_h - lse2_h (both in log2 units, so times ln 2)
      // plus one exp2; adding g terms to the mass loses gamma(g + 1) of the total. Terms
      // below 2^-126 may flush to zero: at most FLT_MIN each.
      double total = start[size_t(v.entry)], term_err = 0;
      for (int h = 0; h < g; ++h) {
        const double l = lse2[size_t(h)];
        if (l == -INFINITY) continue;
        const ExactDot e = exact_dot(q.data() + h * D, set.k.data(), v.row * set.rs.k_stride, D, dt);
        const double t = std::exp2(e.value - l);
        total += t;
        term_err += t * (kLn2 * (gamma_ulps(D) * e.magnitude + std::fabs(e.value - l)) + kExp2Err);
      }
      const double bound = 2 * ((term_err + gamma_ulps(g + 1) * total) * kU + g * double(FLT_MIN));
      c.expect_close(*rep, got[v.entry], want[v.entry], bound, total, where, "mass");
    }
    for (int64_t e = 0; e < n; ++e)
      if (!seen[size_t(e)]) {
        c.expect_same_bits(*rep, got[e], start[size_t(e)], where, "mass of a skipped entry");
        c.expect_same_bits(*rep, want[e], start[size_t(e)], where, "mass of a skipped entry (scalar)");
      }
  });
  if (c.opt.bench) bench(c, *rep, rng, dt);
}

}  // namespace

void check_mass_rows(Checker &c) {
  for (sa_dtype dt : kDtypes) check_dtype(c, dt);
}

}  // namespace checkasm
