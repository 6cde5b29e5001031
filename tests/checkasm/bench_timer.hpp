// --bench: nanoseconds per call of one kernel on one shape. Calls are batched so one batch
// lasts about a millisecond (the clock's overhead vanishes), and the fastest of several
// batches is kept (other workers on the machine only ever add time).
#pragma once

#include <chrono>
#include <cstdint>

namespace checkasm {

template <class Call>
double ns_per_call(Call &&call) {
  using clock = std::chrono::steady_clock;
  auto run = [&](int64_t times) {
    const auto t0 = clock::now();
    for (int64_t i = 0; i < times; ++i) call();
    return std::chrono::duration<double, std::nano>(clock::now() - t0).count();
  };
  int64_t batch = 1;
  while (run(batch) < 1e6 && batch < (int64_t(1) << 30)) batch *= 2;
  double best = run(batch);
  for (int rep = 0; rep < 7; ++rep) {
    const double t = run(batch);
    if (t < best) best = t;
  }
  return best / double(batch);
}

}  // namespace checkasm
