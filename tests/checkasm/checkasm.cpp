// checkasm: every entry of every kernel table this CPU has, against the scalar table, on the
// edge inputs of check_*.cpp, with canaries around every output; one report row per entry
// (per dtype where it takes one). Tables the CPU lacks are skipped with a note.
//   checkasm [--seed N] [--bench] [--filter NAME] [--quick]
// --seed N    inputs from this seed (default: from the clock; printed either way)
// --bench     also time each entry against the scalar table on a representative shape
// --filter S  only the entries whose name contains S (e.g. attend_rows, .bf16, exp2)
// --quick     the 1000-row cases for a third as many (D, g) pairs (every D and g still meets one)
// Exits 1 when any entry fails.
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "checkasm.hpp"

namespace {

struct TableOnCpu {
  const sa::KernelTable *table;
  const char *needs;  // what the CPU must have, for the skip note
  const char *label = nullptr;  // the report's isa column, when the table's isa does not tell
  bool runs() const {    // whether this CPU runs the table
    if (table->isa > sa::cpu_best_isa()) return false;
#if defined(SA_HAVE_X86_KERNELS)
    if (table == &sa::kernels_avx512_vnni) return sa::cpu_has_avx512_vnni();
#endif
    return true;
  }
};

std::vector<TableOnCpu> simd_tables() {
#if defined(SA_HAVE_X86_KERNELS)
  return {{&sa::kernels_avx2, "AVX2, FMA and F16C"},
          {&sa::kernels_avx512, "AVX-512 F/BW/DQ/VL"},
          {&sa::kernels_avx512_vnni, "AVX-512 F/BW/DQ/VL and VNNI", "avx512v"}};
#elif defined(SA_HAVE_NEON_KERNELS)
  return {{&sa::kernels_neon, "NEON"}};
#else
  return {};
#endif
}

int usage(const char *argv0) {
  std::fprintf(stderr, "usage: %s [--seed N] [--bench] [--filter NAME] [--quick]\n", argv0);
  return 2;
}

void print_report(const std::vector<checkasm::EntryReport> &rows, bool bench) {
  std::printf("%-22s %-7s %6s %13s %9s %-6s %10s %10s %8s\n", "entry", "isa", "cases", "max err (ulp)", "of bound",
              "result", "ns/call", "scalar ns", "speedup");
  for (const auto &r : rows) {
    std::printf("%-22s %-7s %6" PRId64 " %13.3g %9.3g %-6s", r.name.c_str(), r.isa, r.cases, r.max_err_ulp,
                r.worst_of_bound, r.failures ? "FAIL" : "OK");
    if (r.ns_new >= 0)
      std::printf(" %10.1f %10.1f %7.2fx\n", r.ns_new, r.ns_ref, r.ns_ref / r.ns_new);
    else
      std::printf(" %10s %10s %8s\n", "-", "-", "-");
  }
  if (!bench) std::printf("(timings: --bench)\n");
}

}  // namespace

int main(int argc, char **argv) {
  checkasm::Options opt;
  opt.seed = uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) % 1000000007u;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) opt.seed = std::strtoull(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--bench")) opt.bench = true;
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) opt.filter = argv[++i];
    else if (!std::strcmp(argv[i], "--quick")) opt.quick = true;
    else return usage(argv[0]);
  }
  std::printf("checkasm: seed %" PRIu64 "\n", opt.seed);
  const auto t0 = std::chrono::steady_clock::now();

  std::vector<checkasm::EntryReport> rows;
  for (const TableOnCpu &t : simd_tables()) {
    if (!t.runs()) {
      std::printf("checkasm: %s table skipped: this CPU lacks %s\n", checkasm::isa_name(t.table->isa), t.needs);
      continue;
    }
    checkasm::Checker c(opt, *t.table);
    checkasm::check_attend_rows(c);
    checkasm::check_score_rows(c);
    checkasm::check_mass_rows(c);
    checkasm::check_reductions(c);
    if (t.label)
      for (checkasm::EntryReport &r : c.reports) r.isa = t.label;
    rows.insert(rows.end(), c.reports.begin(), c.reports.end());
  }
  if (rows.empty()) std::printf("checkasm: no SIMD table to check on this CPU (or none passes --filter)\n");
  else print_report(rows, opt.bench);

  int64_t failed = 0;
  for (const auto &r : rows) failed += r.failures ? 1 : 0;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (failed) {
    std::printf("checkasm: %" PRId64 " entries FAILED (%.1f s); reproduce with --seed %" PRIu64 "\n", failed, secs,
                opt.seed);
    return 1;
  }
  std::printf("checkasm: all entries OK (%.1f s)\n", secs);
  return 0;
}
