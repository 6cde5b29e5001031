// Scratch an object lends to its calls: a call takes a set of buffers for its whole duration
// and gives it back, so repeated calls on one object reuse them (no allocation, and no page
// faults on large buffers, per call) while calls running at once never share a set: the
// scratch still belongs to the call holding it, never to a thread. The pool keeps at most as
// many sets as calls ever ran at once. Copying the owner starts an empty pool.
#pragma once

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace sa {

template <class T>
class ScratchPool {
 public:
  ScratchPool() = default;
  ScratchPool(const ScratchPool &) {}
  ScratchPool &operator=(const ScratchPool &) { return *this; }

  // One call's set, given back to the pool when the lease ends.
  class Lease {
   public:
    Lease(ScratchPool &pool, std::unique_ptr<T> item) : pool_(pool), item_(std::move(item)) {}
    Lease(const Lease &) = delete;
    Lease &operator=(const Lease &) = delete;
    ~Lease() { pool_.give_back(std::move(item_)); }
    T &operator*() const { return *item_; }

   private:
    ScratchPool &pool_;
    std::unique_ptr<T> item_;
  };

  Lease take() {
    std::unique_ptr<T> item;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        item = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!item) item = std::make_unique<T>();
    return Lease(*this, std::move(item));
  }

 private:
  void give_back(std::unique_ptr<T> item) noexcept {
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.push_back(std::move(item));
    } catch (...) {  // no room to keep it: the set is freed instead
    }
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<T>> free_;
};

}  // namespace sa
