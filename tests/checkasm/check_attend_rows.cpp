// attend_rows against the scalar table. The softmax state a kernel leaves is not unique (the
// SIMD kernels let the running maximum m lag up to 8 below the true one and scale l and acc to
// match), so what is compared is what the state means, per head: lse2 = m + log2(l) and
// out = acc / l; plus every score the kernel stores, and exact bits where nothing is visible.
// Each case folds an edge row set (edge_row_sets.hpp) into a fresh state or one that already
// holds earlier rows, with the scores buffer unset or set (leading dimension n + 2).
#include <algorithm>
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
constexpr double kRescaleSlack = 8;  // how far the SIMD kernels let m lag (kernels_simd.hpp)

// The state one kernel works on, each array between canaries.
struct Run {
  GuardedBuffer m, l, acc, scores;
  Run(int g, int D, int64_t scores_size) : m(g), l(g), acc(int64_t(g) * D), scores(scores_size) {}
};

struct Start {  // the state before the call, shared by both kernels
  std::vector<float> m, l, acc;
};

// Fresh (m = -inf, l = 0, acc = 0) for every head, or, when carried, for every third head
// only, the others holding the softmax of earlier rows.
Start make_start(Rng &rng, int g, int D, bool carried, double spread) {
  Start s{std::vector<float>(size_t(g), kNegInf), std::vector<float>(size_t(g), 0.f),
          std::vector<float>(size_t(g) * size_t(D), 0.f)};
  if (!carried) return s;
  for (int h = 0; h < g; ++h) {
    if (h % 3 == 2) continue;
    s.m[size_t(h)] = float(rng.normal() * spread);
    s.l[size_t(h)] = float(rng.uniform(0.5, 4.0));
    for (int d = 0; d < D; ++d) s.acc[size_t(h) * D + d] = float(rng.normal() * s.l[size_t(h)]);
  }
  return s;
}

void run(const sa::KernelTable &t, sa_dtype dt, const std::vector<float> &q, int g, int D, const EdgeRowSet &set,
         const Start &start, bool with_scores, int64_t ld, Run &r) {
  for (int h = 0; h < g; ++h) r.m[h] = start.m[size_t(h)], r.l[h] = start.l[size_t(h)];
  for (int64_t i = 0; i < r.acc.size(); ++i) r.acc[i] = start.acc[size_t(i)];
  sa::RowSet rs = set.rs;
  if (with_scores) rs.scores = r.scores.data(), rs.scores_ld = ld;
  t.of(dt).attend_rows(q.data(), g, D, rs, {r.m.data(), r.l.data(), r.acc.data()});
}

// Compares one head's lse2 and out. Bounds (error_bounds.hpp), per kernel, in units of u:
// every weight 2^(s_i - m) is off by the score's error dot_i = gamma(D) S_i (log2 units), by
// ln(2) u |s_i - m| from rounding the argument (|s_i - m| <= R = 2 max(|s_i|, |m0|) + 8) and by
// one exp2; the rescales alpha add the same over a total rise of m below R; the sums of l
// and acc lose gamma(2 n) with one exp2 per rescale. So lse2 moves by at most
// max dot_i + 2 R + (2 + kExp2Err)(n + 2) / ln 2, and out = acc / l, whose numerator and
// denominator each err by E = ln 2 (max dot_i + 2 R) + (2 + kExp2Err)(n + 2) relative, by
// 2 E + 1 relative to sum_i w_i |v_i| (the softmax weights times the magnitudes summed).
void compare_head(Checker &c, EntryReport &rep, const EdgeRowSet &set, const std::vector<ExactDot> &dots,
                  const Start &start, int h, int D, const Run &got, const Run &want, const std::string &where) {
  if (want.l[h] == 0.f) {  // nothing visible, nothing carried: the state is left as it was
    c.expect_same_bits(rep, got.m[h], want.m[h], where, "m of an empty head");
    c.expect_same_bits(rep, got.l[h], want.l[h], where, "l of an empty head");
    for (int d = 0; d < D; ++d)
      c.expect_same_bits(rep, got.acc[h * D + d], want.acc[h * D + d], where, "acc of an empty head");
    return;
  }
  const double m0 = start.m[size_t(h)], l0 = start.l[size_t(h)];
  const bool has_start = l0 > 0;
  double top = has_start ? m0 : -INFINITY, max_abs = has_start ? std::fabs(m0) : 0, max_mag = 0;
  for (const ExactDot &e : dots) {
    top = std::max(top, e.value);
    max_abs = std::max(max_abs, std::fabs(e.value));
    max_mag = std::max(max_mag, e.magnitude);
  }
  double z = has_start ? l0 * std::exp2(m0 - top) : 0;  // the exact softmax denominator / 2^top
  for (const ExactDot &e : dots) z += std::exp2(e.value - top);
  const double lse = top + std::log2(z);

  const double n_terms = double(dots.size()) + 2;
  const double dot_err = gamma_ulps(D) * max_mag, reach = 2 * max_abs + kRescaleSlack;
  const double lse_bound = 2 * (dot_err + 2 * reach + (2 + kExp2Err) * n_terms / kLn2) * kU;
  const double lse_got = double(got.m[h]) + std::log2(double(got.l[h]));
  const double lse_want = double(want.m[h]) + std::log2(double(want.l[h]));
  c.expect_close(rep, lse_got, lse_want, lse_bound, reach, where, "lse2 = m + log2(l)");

  const double rel = kLn2 * (dot_err + 2 * reach) + (2 + kExp2Err) * n_terms;
  const double w0 = has_start ? l0 * std::exp2(m0 - lse) : 0;
  std::vector<double> scale(size_t(D), 0.0);  // sum_i w_i |v_i| per column
  if (has_start)
    for (int d = 0; d < D; ++d) scale[size_t(d)] = w0 * std::fabs(start.acc[size_t(h) * D + d] / l0);
  for (size_t i = 0; i < dots.size(); ++i) {
    const double w = std::exp2(dots[i].value - lse);
    const int64_t first = set.visible[i].row * set.rs.v_stride;
    for (int d = 0; d < D; ++d) scale[size_t(d)] += w * std::fabs(load_element(set.v.data(), first + d, set.dtype));
  }
  for (int d = 0; d < D; ++d) {
    const double out_got = double(got.acc[h * D + d]) / got.l[h];
    const double out_want = double(want.acc[h * D + d]) / want.l[h];
    c.expect_close(rep, out_got, out_want, 2 * (2 * rel + 1) * kU * scale[size_t(d)], scale[size_t(d)], where,
                   "out = acc / l");
  }
}

void bench(Checker &c, EntryReport &rep, Rng &rng, sa_dtype dt) {
  const int D = 128, g = 4;  // one decode step of a GQA group over a gathered list of 1024 keys
  EdgeRowSet set;
  make_edge_row_set(set, rng, dt, D, 1024, {Layout::gathered, false, Limit::none, false});
  const std::vector<float> q = random_query(rng, g, D, 2.0);
  auto time = [&](const sa::KernelTable &t) {
    std::vector<float> m(g, kNegInf), l(g, 0.f), acc(size_t(g) * D, 0.f);
    return ns_per_call([&] { t.of(dt).attend_rows(q.data(), g, D, set.rs, {m.data(), l.data(), acc.data()}); });
  };
  rep.ns_new = time(c.tested);
  rep.ns_ref = time(c.ref);
}

void check_dtype(Checker &c, sa_dtype dt) {
  const std::string name = std::string("attend_rows.") + dtype_name(dt);
  EntryReport *rep = c.begin(name);
  if (!rep) return;
  Rng rng = c.rng_for(name);
  int64_t counter = 0;
  EdgeRowSet set;
  for_each_shape(c.opt, [&](int D, int g, int64_t n) {
    // Every row-set shape in turn; each pass over them flips the next of these.
    const RowSetShape shape = RowSetShape::nth(counter);
    const int64_t pass = counter++ / RowSetShape::kCount;
    const bool with_scores = pass % 2 != 0, carried = (pass / 2) % 2 != 0, wide = (pass / 4) % 2 != 0;
    const double spread = wide ? 12.0 : 2.0;  // wide: scores jump past the lazy-rescale slack
    make_edge_row_set(set, rng, dt, D, n, shape);
    const std::vector<float> q = random_query(rng, g, D, spread);
    const Start start = make_start(rng, g, D, carried, spread);
    const int64_t ld = n + 2;
    Run got(g, D, with_scores ? g * ld : 0), want(g, D, with_scores ? g * ld : 0);
    run(c.tested, dt, q, g, D, set, start, with_scores, ld, got);
    run(c.ref, dt, q, g, D, set, start, with_scores, ld, want);
    ++rep->cases;
    const std::string where = set.where + ", g=" + std::to_string(g) + (with_scores ? ", scores" : "") +
                              (carried ? ", carried state" : ", fresh state") + (wide ? ", wide scores" : "");
    c.expect(*rep, got.m.margins_intact() && got.l.margins_intact(), where, "wrote outside m or l");
    c.expect(*rep, got.acc.margins_intact(), where, "wrote outside acc");
    c.expect(*rep, got.scores.margins_intact(), where, "wrote outside scores");

    std::vector<int64_t> visible_at(size_t(ld), -1);  // entry -> index into set.visible
    for (size_t i = 0; i < set.visible.size(); ++i) visible_at[size_t(set.visible[i].entry)] = int64_t(i);
    std::vector<ExactDot> dots(set.visible.size());
    for (int h = 0; h < g; ++h) {
      for (size_t i = 0; i < dots.size(); ++i)
        dots[i] = exact_dot(q.data() + h * D, set.k.data(), set.visible[i].row * set.rs.k_stride, D, dt);
      compare_head(c, *rep, set, dots, start, h, D, got, want, where);
      if (!with_scores) continue;
      for (int64_t e = 0; e < ld; ++e) {
        const float a = got.scores[h * ld + e], b = want.scores[h * ld + e];
        const int64_t i = visible_at[size_t(e)];
        if (i < 0) {
          c.expect(*rep, GuardedBuffer::is_canary(a) && GuardedBuffer::is_canary(b), where,
                   "stored a score for a skipped entry");
          continue;
        }
        const double mag = dots[size_t(i)].magnitude;
        c.expect_close(*rep, a, b, 2 * gamma_ulps(D) * kU * mag, mag, where, "stored score");
      }
    }
  });
  if (c.opt.bench) bench(c, *rep, rng, dt);
}

}  // namespace

void check_attend_rows(Checker &c) {
  for (sa_dtype dt : kDtypes) check_dtype(c, dt);
}

}  // namespace checkasm
