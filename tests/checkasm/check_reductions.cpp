// The reductions that turn base-2 scores into probabilities (max_of, exp2_sum,
// exp2_accumulate, exp2_store_sum) against the scalar table: lengths around each vector width, x starting
// off vector alignment, and scores that are ordinary, masked (-inf), all masked, all equal,
// or far enough below the shift that 2^(x - shift) underflows.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bench_timer.hpp"
#include "checkasm.hpp"
#include "error_bounds.hpp"
#include "guarded_buffer.hpp"

namespace checkasm {
namespace {

constexpr int64_t kLengths[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 1000, 1023};
enum class Scores { ordinary, some_masked, all_masked, all_equal, some_underflow };
constexpr Scores kScores[] = {Scores::ordinary, Scores::some_masked, Scores::all_masked, Scores::all_equal,
                              Scores::some_underflow};
const char *describe(Scores s) {
  static const char *names[] = {"ordinary", "some -inf", "all -inf", "all equal", "some underflow"};
  return names[int(s)];
}

// x sits `offset` floats into an exactly sized buffer, so it starts off vector alignment
// and AddressSanitizer sees a read past its end.
struct Scores1D {
  std::vector<float> buf;
  int64_t offset, n;
  float shift;
  const float *x() const { return buf.data() + offset; }
  float at(int64_t i) const { return buf[size_t(offset + i)]; }
};

Scores1D make_scores(Rng &rng, int64_t n, int64_t offset, Scores kind) {
  Scores1D s{std::vector<float>(size_t(offset + n), 0.f), offset, n, 0.f};
  const float same = float(rng.normal() * 8);
  for (int64_t i = 0; i < n; ++i) {
    float v = float(rng.normal() * 8);
    if (kind == Scores::all_masked || (kind == Scores::some_masked && rng.uniform() < 0.25))
      v = -std::numeric_limits<float>::infinity();
    if (kind == Scores::all_equal) v = same;
    if (kind == Scores::some_underflow && rng.uniform() < 0.25) v -= 300.f;
    s.buf[size_t(offset + i)] = v;
  }
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) top = std::max(top, s.at(i));
  s.shift = std::isfinite(top) ? float(top + rng.uniform(-4.0, 4.0)) : 0.f;  // terms up to 2^4
  return s;
}

// One term 2^(x - shift) in double, and its error bound in units of u for one kernel: the
// rounding of x - shift moves the exponent by u |x - shift| (times ln 2, relative), plus one exp2.
struct Term {
  double value, err_ulps;
};
Term term(float x, float shift) {
  if (x == -INFINITY) return {0, 0};
  const double a = double(x) - double(shift);
  const double t = std::exp2(a);
  return {t, t * (kLn2 * std::fabs(a) + kExp2Err)};
}

template <class Each>
void for_each_case(Rng &rng, Each &&each) {
  for (int64_t n : kLengths)
    for (int64_t offset = 0; offset < 4; ++offset)
      for (Scores kind : kScores) {
        const Scores1D s = make_scores(rng, n, offset, kind);
        each(s, "n=" + std::to_string(n) + " offset=" + std::to_string(offset) + " " + describe(kind));
      }
}

void check_max_of(Checker &c) {
  EntryReport *rep = c.begin("max_of");
  if (!rep) return;
  Rng rng = c.rng_for(rep->name);
  for_each_case(rng, [&](const Scores1D &s, const std::string &where) {
    ++rep->cases;  // the maximum is exact: any order of comparisons finds the same value
    c.expect_close(*rep, c.tested.max_of(s.x(), s.n), c.ref.max_of(s.x(), s.n), 0.0, 1.0, where, "max");
  });
  if (!c.opt.bench) return;
  const Scores1D s = make_scores(rng, 4096, 0, Scores::ordinary);
  rep->ns_new = ns_per_call([&] { c.tested.max_of(s.x(), s.n); });
  rep->ns_ref = ns_per_call([&] { c.ref.max_of(s.x(), s.n); });
}

void check_exp2_sum(Checker &c) {
  EntryReport *rep = c.begin("exp2_sum");
  if (!rep) return;
  Rng rng = c.rng_for(rep->name);
  for_each_case(rng, [&](const Scores1D &s, const std::string &where) {
    ++rep->cases;
    // Per kernel: the terms' own errors, plus gamma(n) of the sum for n - 1 additions in any
    // order; terms below 2^-126 may flush to zero (FLT_MIN each).
    double sum = 0, err = 0;
    for (int64_t i = 0; i < s.n; ++i) {
      const Term t = term(s.at(i), s.shift);
      sum += t.value;
      err += t.err_ulps;
    }
    const double bound = 2 * ((err + gamma_ulps(s.n) * sum) * kU + double(s.n) * FLT_MIN);
    c.expect_close(*rep, c.tested.exp2_sum(s.x(), s.n, s.shift), c.ref.exp2_sum(s.x(), s.n, s.shift), bound, sum,
                   where, "sum");
  });
  if (!c.opt.bench) return;
  const Scores1D s = make_scores(rng, 4096, 0, Scores::ordinary);
  rep->ns_new = ns_per_call([&] { c.tested.exp2_sum(s.x(), s.n, s.shift); });
  rep->ns_ref = ns_per_call([&] { c.ref.exp2_sum(s.x(), s.n, s.shift); });
}

void check_exp2_accumulate(Checker &c) {
  EntryReport *rep = c.begin("exp2_accumulate");
  if (!rep) return;
  Rng rng = c.rng_for(rep->name);
  for_each_case(rng, [&](const Scores1D &s, const std::string &where) {
    ++rep->cases;
    GuardedBuffer got(s.n), want(s.n);
    std::vector<float> start(size_t(s.n));
    for (int64_t i = 0; i < s.n; ++i) got[i] = want[i] = start[size_t(i)] = float(rng.uniform(0.0, 4.0));
    c.tested.exp2_accumulate(s.x(), s.n, s.shift, got.data());
    c.ref.exp2_accumulate(s.x(), s.n, s.shift, want.data());
    c.expect(*rep, got.margins_intact(), where, "wrote outside acc");
    for (int64_t i = 0; i < s.n; ++i) {
      // Per kernel: the term's error plus the rounding of the one addition.
      const Term t = term(s.at(i), s.shift);
      const double total = start[size_t(i)] + t.value;
      const double bound = 2 * ((t.err_ulps + total) * kU + FLT_MIN);
      c.expect_close(*rep, got[i], want[i], bound, total, where, "acc");
    }
  });
  if (!c.opt.bench) return;
  const Scores1D s = make_scores(rng, 4096, 0, Scores::ordinary);
  std::vector<float> acc(size_t(s.n), 0.f);
  rep->ns_new = ns_per_call([&] { c.tested.exp2_accumulate(s.x(), s.n, s.shift, acc.data()); });
  rep->ns_ref = ns_per_call([&] { c.ref.exp2_accumulate(s.x(), s.n, s.shift, acc.data()); });
}

void check_exp2_store_sum(Checker &c) {
  EntryReport *rep = c.begin("exp2_store_sum");
  if (!rep) return;
  Rng rng = c.rng_for(rep->name);
  for_each_case(rng, [&](const Scores1D &s, const std::string &where) {
    ++rep->cases;
    // Each stored term as exp2_accumulate's (no addition), the sum as exp2_sum's.
    GuardedBuffer got(s.n), want(s.n);
    for (int64_t i = 0; i < s.n; ++i) got[i] = want[i] = s.at(i);
    const float got_sum = c.tested.exp2_store_sum(got.data(), s.n, s.shift);
    const float want_sum = c.ref.exp2_store_sum(want.data(), s.n, s.shift);
    c.expect(*rep, got.margins_intact(), where, "wrote outside x");
    double sum = 0, err = 0;
    for (int64_t i = 0; i < s.n; ++i) {
      const Term t = term(s.at(i), s.shift);
      sum += t.value;
      err += t.err_ulps;
      c.expect_close(*rep, got[i], want[i], 2 * (t.err_ulps * kU + FLT_MIN), t.value, where, "term");
    }
    const double bound = 2 * ((err + gamma_ulps(s.n) * sum) * kU + double(s.n) * FLT_MIN);
    c.expect_close(*rep, got_sum, want_sum, bound, sum, where, "sum");
  });
  if (!c.opt.bench) return;
  const Scores1D s = make_scores(rng, 4096, 0, Scores::ordinary);
  std::vector<float> x(size_t(s.n));
  rep->ns_new = ns_per_call([&] { std::copy_n(s.x(), s.n, x.data()); c.tested.exp2_store_sum(x.data(), s.n, s.shift); });
  rep->ns_ref = ns_per_call([&] { std::copy_n(s.x(), s.n, x.data()); c.ref.exp2_store_sum(x.data(), s.n, s.shift); });
}

}  // namespace

void check_reductions(Checker &c) {
  check_max_of(c);
  check_exp2_sum(c);
  check_exp2_accumulate(c);
  check_exp2_store_sum(c);
}

}  // namespace checkasm
