// Work an index that borrows the host's keys cannot do when keys are appended or updated
// (it needs other slots' keys, which only a selection brings: page bounds of a page partly
// appended or refilled, LSH tables rebuilt from every key), done by the first selection after.
// Selections may run concurrently: the first to find work pending does it under the lock while
// the others wait for it, and no selection reads the selector's state before the work is done
// (appends and updates, which set it pending, have exclusive access). Copying copies the flag;
// the copy has its own lock.
#pragma once

#include <atomic>
#include <mutex>

namespace sa {

class DeferredWork {
 public:
  DeferredWork() = default;
  DeferredWork(const DeferredWork &o) : pending_(o.pending()) {}
  DeferredWork &operator=(const DeferredWork &o) {
    pending_.store(o.pending(), std::memory_order_relaxed);
    return *this;
  }

  bool pending() const { return pending_.load(std::memory_order_acquire); }
  void set_pending() { pending_.store(true, std::memory_order_release); }  // exclusive access
  void clear() { pending_.store(false, std::memory_order_release); }      // exclusive access

  // Runs work() once if pending; concurrent callers return when it is done. If work() throws,
  // it stays pending (the next call runs it again: it must be safe to repeat).
  template <class F>
  void run_if_pending(F &&work) const {
    if (!pending()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (!pending_.load(std::memory_order_relaxed)) return;
    work();
    pending_.store(false, std::memory_order_release);
  }

 private:
  mutable std::atomic<bool> pending_{false};
  mutable std::mutex mutex_;
};

}  // namespace sa
