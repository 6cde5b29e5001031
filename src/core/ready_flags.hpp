// Per-item "ready" flags for a pipeline of dependent stages run as one parallel loop
// (core/threading.hpp's parallel_pipeline_slots): a task of a later stage waits until the
// earlier stage of its own item is done, instead of every item waiting at a barrier between
// two loops. The task it waits for was claimed before it (tasks are claimed in order), so it
// is running and the wait ends. abort() (a task failed) ends every wait: the waiting task
// then returns without its work, and the loop rethrows the failure.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace sa {

class ReadyFlags {
 public:
  // n items, none ready. Before the loop, never during one.
  void reset(int64_t n) {
    if (n > size_) {
      ready_.reset(new std::atomic<bool>[size_t(n)]);
      size_ = n;
    }
    for (int64_t i = 0; i < n; ++i) ready_[size_t(i)].store(false, std::memory_order_relaxed);
    aborted_.store(false, std::memory_order_relaxed);
  }
  // Item i's stage is done: its writes are seen by every wait(i) that returns true.
  void set(int64_t i) { ready_[size_t(i)].store(true, std::memory_order_release); }
  void abort() { aborted_.store(true, std::memory_order_release); }
  // True once set(i); false when aborted. Spins briefly, then yields the core (a host may run
  // more threads than cores).
  bool wait(int64_t i) const {
    for (int spin = 0;; ++spin) {
      if (ready_[size_t(i)].load(std::memory_order_acquire)) return true;
      if (aborted_.load(std::memory_order_acquire)) return false;
      if (spin < 256) {
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  std::unique_ptr<std::atomic<bool>[]> ready_;
  int64_t size_ = 0;
  std::atomic<bool> aborted_{false};
};

}  // namespace sa
