// Parallel loops over independent tasks, on a team the library opens itself.
//
// Scratch belongs to the call: a loop whose tasks need buffers gets them from the caller,
// sized by loop_slots(threads, tasks), and each task is handed the number of the slot it may
// use (ggml's ith of nth). The slot is the task's thread number in our own team, whose size is
// at most the slots asked for, or 0 when the loop runs serially; never a thread number of a
// region the library did not open (a host calling from its own OpenMP team or thread pool).
//
// A loop runs serially on the calling thread with one thread, one task, or inside an active
// parallel region (omp_in_parallel(): the host's, or a task of ours): no nested team and no
// oversubscription, and the results never depend on the thread count anyway. Without a team
// no OpenMP region is entered, so a threads = 1 context may be called from any threads.
//
// An exception thrown by a task is caught inside the region (it must not cross it) and
// rethrown once the loop is done.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <utility>

namespace sa {

// The team a loop of n tasks gets from `threads` (1 when it runs serially): the number of
// scratch slots to give it.
inline int loop_slots(int threads, int64_t n) {
  if (threads <= 1 || n <= 1 || omp_in_parallel()) return 1;
  return int(std::min<int64_t>(threads, n));
}

// body(i, slot) for i in [0, n), slot in [0, slots): tasks running at once have distinct slots.
// Tasks are claimed in increasing order (one shared counter), so a task may wait for an earlier
// task's result (core/ready_flags.hpp): that task was claimed before it, so it is running or
// done. A pipeline of stages over a few items then runs as one loop, with no barrier between
// the stages. Serially (one thread, or inside a parallel region) the tasks run in order, so a
// wait always finds its result ready.
// The team has every slot even when there are fewer tasks (its other threads wait at the end):
// libgomp ends the threads a smaller team leaves out and starts new ones for the next larger
// team, so the loops of one call keep one team size instead of ending and starting threads.
template <class F>
void parallel_pipeline_slots(int slots, int64_t n, F &&body) {
  const int team = n <= 1 ? 1 : loop_slots(slots, slots);
  if (team <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i, 0);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<int> next_slot{0};
  std::atomic<int64_t> next_task{0};
#pragma omp parallel num_threads(team)
  {
    // Each thread of the team takes the next slot: distinct and < team by construction, with
    // no thread number of any region (ours or a host's) involved.
    const int slot = next_slot.fetch_add(1, std::memory_order_relaxed);
    for (int64_t i = next_task.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next_task.fetch_add(1, std::memory_order_relaxed)) {
      try {
        body(i, slot);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

// The same loop for tasks that do not wait for each other.
template <class F>
void parallel_for_slots(int slots, int64_t n, F &&body) {
  parallel_pipeline_slots(slots, n, std::forward<F>(body));
}

// body(i) for bodies that need no scratch.
template <class F>
void parallel_for(int threads, int64_t n, F &&body) {
  parallel_for_slots(threads, n, [&](int64_t i, int) { body(i); });
}

}  // namespace sa
