// score_rows and score_rows_i8 against the scalar table: every dtype, head dim, group size and
// row count of the edge lists, with the output's leading dimension equal to n or larger; the
// gap between rows of the output must stay untouched.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bench_timer.hpp"
#include "checkasm.hpp"
#include "error_bounds.hpp"
#include "guarded_buffer.hpp"
#include "kv_values.hpp"

namespace checkasm {
namespace {

std::vector<unsigned char> random_rows(Rng &rng, sa_dtype dt, int64_t n, int D) {
  std::vector<unsigned char> rows(size_t(n * D * dtype_bytes(dt)));  // exact size: ASan sees overreads
  for (int64_t i = 0; i < n * D; ++i) store_element(rows.data(), i, dt, float(rng.normal()));
  return rows;
}

void bench(Checker &c, EntryReport &rep, Rng &rng, sa_dtype dt) {
  const int D = 128, g = 4;  // a decode step of a GQA group over one page of keys
  const int64_t n = 256;
  const std::vector<float> q = random_query(rng, g, D, 2.0);
  const std::vector<unsigned char> rows = random_rows(rng, dt, n, D);
  std::vector<float> out(size_t(g * n));
  auto time = [&](const sa::KernelTable &t) {
    return ns_per_call([&] { t.of(dt).score_rows(q.data(), g, D, rows.data(), n, out.data(), n); });
  };
  rep.ns_new = time(c.tested);
  rep.ns_ref = time(c.ref);
}

// The scores a kernel wrote into got ([g][ld], columns j < n): nothing written outside the
// buffer or between the rows (j >= n keeps its canary), and each score checked by check(h, j, a).
template <class F>
void expect_scores(Checker &c, EntryReport &rep, const GuardedBuffer &got, int g, int64_t n, int64_t ld,
                   const std::string &where, F &&check) {
  c.expect(rep, got.margins_intact(), where, "wrote outside scores");
  for (int h = 0; h < g; ++h)
    for (int64_t j = 0; j < ld; ++j) {
      const float a = got[h * ld + j];
      if (j >= n) {
        c.expect(rep, GuardedBuffer::is_canary(a), where, "wrote between the rows of scores (j >= n)");
        continue;
      }
      check(h, j, a);
    }
}

void check_dtype(Checker &c, sa_dtype dt) {
  const std::string name = std::string("score_rows.") + dtype_name(dt);
  EntryReport *rep = c.begin(name);
  if (!rep) return;
  Rng rng = c.rng_for(name);
  int64_t counter = 0;
  for_each_shape(c.opt, [&](int D, int g, int64_t n) {
    const int64_t ld = n + (counter++ % 2 ? 3 : 0);
    const std::vector<float> q = random_query(rng, g, D, 2.0);
    const std::vector<unsigned char> rows = random_rows(rng, dt, n, D);
    GuardedBuffer got(g * ld), want(g * ld);
    c.tested.of(dt).score_rows(q.data(), g, D, rows.data(), n, got.data(), ld);
    c.ref.of(dt).score_rows(q.data(), g, D, rows.data(), n, want.data(), ld);
    ++rep->cases;
    const std::string where = std::string(dtype_name(dt)) + " D=" + std::to_string(D) + " g=" +
                              std::to_string(g) + " n=" + std::to_string(n) + " ld=" + std::to_string(ld);
    expect_scores(c, *rep, got, g, n, ld, where, [&](int h, int64_t j, float a) {
      const ExactDot e = exact_dot(q.data() + h * D, rows.data(), j * D, D, dt);
      c.expect_close(*rep, a, want[h * ld + j], 2 * gamma_ulps(D) * kU * e.magnitude, e.magnitude, where, "score");
    });
  });
  if (c.opt.bench) bench(c, *rep, rng, dt);
}

// score_rows_i8: int16 query codes against rows of int8 codes over the whole code range
// (-128..127), one scale per row (zero, tiny and large among them), against the scalar table:
// the dot product is exact integer arithmetic, so the results must be equal.
void check_i8(Checker &c) {
  const std::string name = "score_rows_i8";
  EntryReport *rep = c.begin(name);
  if (!rep) return;
  Rng rng = c.rng_for(name);
  int64_t counter = 0;
  for_each_shape(c.opt, [&](int D, int g, int64_t n) {
    const int64_t ld = n + (counter++ % 2 ? 3 : 0);
    std::vector<int16_t> q(size_t(g * D));  // the largest codes the kernel's contract allows
    const int64_t qmax = std::min<int64_t>(16384, (int64_t{1} << 24) / D - 1);
    for (int16_t &x : q) x = int16_t(rng.below(2 * qmax + 1) - qmax);
    std::vector<int8_t> rows(size_t(n * D));  // exact size: ASan sees overreads
    for (int8_t &x : rows) x = int8_t(int(rng.below(256)) - 128);
    std::vector<float> scale(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) scale[size_t(j)] = j % 7 == 0 ? 0.f : float(std::ldexp(rng.uniform(), int(rng.below(40)) - 20));
    GuardedBuffer got(g * ld), want(g * ld);
    c.tested.score_rows_i8(q.data(), g, D, rows.data(), scale.data(), n, got.data(), ld);
    c.ref.score_rows_i8(q.data(), g, D, rows.data(), scale.data(), n, want.data(), ld);
    ++rep->cases;
    const std::string where = "D=" + std::to_string(D) + " g=" + std::to_string(g) + " n=" + std::to_string(n) +
                              " ld=" + std::to_string(ld);
    expect_scores(c, *rep, got, g, n, ld, where, [&](int h, int64_t j, float a) {
      int64_t dot = 0;
      for (int d = 0; d < D; ++d) dot += int64_t(q[size_t(h * D + d)]) * rows[size_t(j * D + d)];
      const double exact = double(scale[size_t(j)]) * double(dot), mag = std::fabs(exact);
      c.expect_close(*rep, a, want[h * ld + j], 0.0, mag, where, "score (SIMD and scalar equal)");
      c.expect_close(*rep, a, exact, 2 * kU * mag, mag, where, "score (two f32 roundings of the exact value)");
    });
  });
  if (c.opt.bench) {
    const int D = 256, g = 4;  // a GQA group against 256 pages' [centre | radius] codes at head dim 128
    const int64_t n = 256;
    std::vector<int16_t> q(size_t(g * D));
    for (int16_t &x : q) x = int16_t(rng.below(32769) - 16384);
    std::vector<int8_t> rows(size_t(n * D));
    for (int8_t &x : rows) x = int8_t(int(rng.below(256)) - 128);
    std::vector<float> scale(static_cast<size_t>(n), 0.01f), out(size_t(g * n));
    auto time = [&](const sa::KernelTable &t) {
      return ns_per_call([&] { t.score_rows_i8(q.data(), g, D, rows.data(), scale.data(), n, out.data(), n); });
    };
    rep->ns_new = time(c.tested);
    rep->ns_ref = time(c.ref);
  }
}

}  // namespace

void check_score_rows(Checker &c) {
  for (sa_dtype dt : kDtypes) check_dtype(c, dt);
  check_i8(c);
}

}  // namespace checkasm
