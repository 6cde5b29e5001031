// Per-item countdowns of a parallel loop's tasks, so that the task finishing an item's last
// piece runs the item's own next step at once: no barrier waits for the slowest item, and the
// items finished early overlap the pieces of the others (a decode step's 8 lists over 16
// threads). finish() orders every piece's writes before the step that follows it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace sa {

class Countdown {
 public:
  // pieces(i): how many tasks item i waits for, i < n. Before the loop, never during one.
  template <class F>
  void start(int64_t n, F &&pieces) {
    if (n > size_) {
      left_.reset(new std::atomic<int64_t>[size_t(n)]);
      size_ = n;
    }
    for (int64_t i = 0; i < n; ++i) left_[size_t(i)].store(pieces(i), std::memory_order_relaxed);
  }
  // Called by each task of item i once its piece is done: true for the last one, which then
  // sees every piece's writes.
  bool finish(int64_t i) { return left_[size_t(i)].fetch_sub(1, std::memory_order_acq_rel) == 1; }

 private:
  std::unique_ptr<std::atomic<int64_t>[]> left_;
  int64_t size_ = 0;
};

}  // namespace sa
