// Parallel loops over independent tasks. With one thread no OpenMP region is entered, so a
// host may call from threads of its own pool. An exception thrown by a task is caught inside
// the region (it must not cross it) and rethrown once the loop is done.
#pragma once

#include <cstdint>
#include <exception>
#include <mutex>

namespace sa {

template <class F>
void parallel_for(int threads, int64_t n, F &&body) {
  if (threads <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      body(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace sa
