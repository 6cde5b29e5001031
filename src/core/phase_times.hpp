// Developer timing of a call's phases (wall time averaged per phase over the process, printed
// to stderr at exit): compiled in only with -DSA_PHASE_TIMES (a profiling build:
// meson setup build-prof -Dcpp_args=-DSA_PHASE_TIMES), empty otherwise. Laps are taken on the
// calling thread between parallel loops; one call at a time (no locking: a profiling aid).
// Finds the phases of a decode step that do not split across threads:
//   SA_BENCH_THREADS=1 build-prof/bench/page_step --benchmark_filter=page_step/N:131072
#pragma once

#ifdef SA_PHASE_TIMES
#include <omp.h>

#include <cstdio>

namespace sa {
struct PhaseTimes {
  static constexpr int kMax = 16;
  const char *name[kMax] = {};
  double sum[kMax] = {};
  long count[kMax] = {};
  ~PhaseTimes() {
    for (int i = 0; i < kMax; ++i)
      if (count[i]) std::fprintf(stderr, "phase %-12s %9.1f us x %ld\n", name[i], 1e6 * sum[i] / double(count[i]), count[i]);
  }
  static PhaseTimes &get() {
    static PhaseTimes p;
    return p;
  }
};
struct PhaseMark {
  double t = omp_get_wtime();
  void lap(int id, const char *what) {
    const double now = omp_get_wtime();
    PhaseTimes &p = PhaseTimes::get();
    p.name[id] = what;
    p.sum[id] += now - t;
    ++p.count[id];
    t = now;
  }
};
}  // namespace sa
#define SA_PHASE_START(m) ::sa::PhaseMark m
#define SA_PHASE_LAP(m, id, what) m.lap(id, what)
#else
#define SA_PHASE_START(m) (void)0
#define SA_PHASE_LAP(m, id, what) (void)0
#endif
