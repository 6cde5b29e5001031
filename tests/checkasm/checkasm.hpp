// The kernel checker's shared parts: options, the report row of one table entry, seeded
// random numbers, and the comparisons that record an entry's errors against their bounds.
// Each check_*.cpp checks one kernel family of a table against the scalar table;
// checkasm.cpp runs them for every table this CPU has and prints the report.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.hpp"

namespace checkasm {

struct Options {
  uint64_t seed = 0;
  bool bench = false;    // time each entry against the scalar table
  std::string filter;    // only entries whose name contains this; empty: all
  bool quick = false;    // the longest row count for every ninth (D, g) pair, not every third
};

// One row of the report: one entry of one table, per K/V dtype where the entry takes one.
struct EntryReport {
  std::string name;  // e.g. "attend_rows.f16"
  const char *isa = "";
  int64_t cases = 0;        // calls compared with the scalar table's
  int64_t failures = 0;     // comparisons out of bounds, canaries overwritten
  double max_err_ulp = 0;   // largest |new - ref| in f32 ulps of that comparison's scale
  double worst_of_bound = 0;  // largest |new - ref| / bound (passing entries stay <= 1)
  double ns_new = -1, ns_ref = -1;  // --bench: ns per call on a representative shape
};

// mt19937_64 is specified bit for bit and the transforms are ours, so a seed gives the same
// inputs on x86-64 and on AArch64 (up to libm's last bits in normal()).
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double uniform() { return double(gen_() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal();
  int64_t below(int64_t n) { return int64_t(gen_() % uint64_t(n)); }

 private:
  std::mt19937_64 gen_;
};

// The edge shapes every family sweeps: head dims below, at and around the vector widths
// (4 NEON, 8 AVX2, 16 AVX-512), the register-blocking sizes of the kernels and the 256 limit
// past which the SIMD tables fall back to scalar code; group sizes that leave each head block
// a remainder; row counts below, at and past one vector block.
inline constexpr int kDims[] = {1, 3, 4, 7, 8, 15, 16, 17, 24, 31, 48, 64, 80, 100, 128, 129, 256, 264};
inline constexpr int kGroups[] = {1, 2, 3, 4, 5, 7, 8, sa::kMaxGroup};
inline constexpr int64_t kRowCounts[] = {0, 1, 2, 15, 16, 17, 100, 1000};
inline constexpr sa_dtype kDtypes[] = {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16};

// Calls each(D, g, n) over kDims x kGroups x kRowCounts, except that the longest row count,
// which costs most of the time, runs for every third (D, g) pair only (every ninth with
// --quick, which the NEON run under qemu uses: half the time): either still pairs it with
// every D and every g.
template <class Each>
void for_each_shape(const Options &opt, Each &&each) {
  const int every = opt.quick ? 9 : 3;
  int pair = 0;
  for (int D : kDims)
    for (int g : kGroups) {
      for (int64_t n : kRowCounts)
        if (n < 1000 || pair % every == 0) each(D, g, n);
      ++pair;
    }
}

const char *dtype_name(sa_dtype dt);
const char *isa_name(sa_isa isa);

// Query heads [g][D], already scaled as the kernels expect: against rows of N(0, 1) values,
// the base-2 scores q . k come out N(0, spread^2).
std::vector<float> random_query(Rng &rng, int g, int D, double spread);

class Checker {
 public:
  Checker(const Options &options, const sa::KernelTable &tested);

  const Options &opt;
  const sa::KernelTable &tested;
  const sa::KernelTable &ref;  // the scalar table

  // A new report row for `name` when it passes --filter, else nullptr (skip the entry).
  EntryReport *begin(const std::string &name);
  // The inputs of an entry depend on the seed and the entry's name only, so --filter and
  // the table under test do not change them.
  Rng rng_for(const std::string &name) const;

  // |got - want| <= bound (NaN fails). `scale` is what the error is measured against in the
  // report: sum |q_d k_d| for a score, the largest exponent in play for lse2, sum_i w_i |v_i|
  // for out, the total for sums and masses.
  void expect_close(EntryReport &r, double got, double want, double bound, double scale,
                    const std::string &where, const char *what);
  // For values the kernels must leave or produce bit for bit (untouched entries, exact max).
  void expect_same_bits(EntryReport &r, float got, float want, const std::string &where, const char *what);
  void expect(EntryReport &r, bool ok, const std::string &where, const char *what);

  std::deque<EntryReport> reports;  // deque: rows handed out by begin() never move

 private:
  void fail(EntryReport &r, const std::string &message);
};

// One function per kernel family, each in its own file.
void check_attend_rows(Checker &c);
void check_score_rows(Checker &c);
void check_mass_rows(Checker &c);
void check_reductions(Checker &c);  // max_of, exp2_sum, exp2_accumulate, exp2_store_sum

}  // namespace checkasm
