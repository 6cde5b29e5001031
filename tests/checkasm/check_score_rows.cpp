// score_rows against the scalar table: every dtype, head dim, group size and row count of the
// edge lists, with the output's leading dimension equal to n or larger; the gap between rows
// of the output must stay untouched.
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

void check_dtype(Checker &c, sa_dtype dt) {
  const std::string name = std::string("score_rows.") + dtype_name(dt);
  EntryReport *rep = c.begin(name);
  if (!rep) return;
  Rng rng = c.rng_for(name);
  int64_t counter = 0;
  for_each_shape([&](int D, int g, int64_t n) {
    const int64_t ld = n + (counter++ % 2 ? 3 : 0);
    const std::vector<float> q = random_query(rng, g, D, 2.0);
    const std::vector<unsigned char> rows = random_rows(rng, dt, n, D);
    GuardedBuffer got(g * ld), want(g * ld);
    c.tested.of(dt).score_rows(q.data(), g, D, rows.data(), n, got.data(), ld);
    c.ref.of(dt).score_rows(q.data(), g, D, rows.data(), n, want.data(), ld);
    ++rep->cases;
    const std::string where = std::string(dtype_name(dt)) + " D=" + std::to_string(D) + " g=" +
                              std::to_string(g) + " n=" + std::to_string(n) + " ld=" + std::to_string(ld);
    c.expect(*rep, got.margins_intact(), where, "wrote outside scores");
    for (int h = 0; h < g; ++h)
      for (int64_t j = 0; j < ld; ++j) {
        const float a = got[h * ld + j], b = want[h * ld + j];
        if (j >= n) {
          c.expect(*rep, GuardedBuffer::is_canary(a), where, "wrote between the rows of scores (j >= n)");
          continue;
        }
        const ExactDot e = exact_dot(q.data() + h * D, rows.data(), j * D, D, dt);
        c.expect_close(*rep, a, b, 2 * gamma_ulps(D) * kU * e.magnitude, e.magnitude, where, "score");
      }
  });
  if (c.opt.bench) bench(c, *rep, rng, dt);
}

}  // namespace

void check_score_rows(Checker &c) {
  for (sa_dtype dt : kDtypes) check_dtype(c, dt);
}

}  // namespace checkasm
