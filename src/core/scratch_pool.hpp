// Scratch an object keeps between calls, handed to one call at a time: a call leases as many
// buffers as its loop has slots (loop_slots) and gives them back when it returns, so buffers
// that are costly to set up (an HNSW search's visited marks over every key) are reused
// without belonging to a thread. Concurrent calls lease distinct buffers; the pool grows to
// the most buffers leased at once.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace sa {

template <class T>
class ScratchPool {
 public:
  ScratchPool() = default;
  // A copy (a cloned index) starts empty: buffers are never shared.
  ScratchPool(const ScratchPool &) {}
  ScratchPool &operator=(const ScratchPool &) { return *this; }

  // The buffers of one call, slot 0 .. slots-1; returned to the pool on destruction.
  class Lease {
   public:
    Lease(ScratchPool &pool, int slots) : pool_(pool) { pool_.take_into(size_t(slots), items_); }
    ~Lease() { pool_.give(items_); }
    Lease(const Lease &) = delete;
    Lease &operator=(const Lease &) = delete;
    T &operator[](int slot) const { return *items_[size_t(slot)]; }
    T &operator*() const { return *items_[0]; }  // a lease of one set (take)

   private:
    ScratchPool &pool_;
    std::vector<std::unique_ptr<T>> items_;
  };

  Lease lease(int slots) { return Lease(*this, slots); }
  // One set for a call whose tasks share it (page selection's per-call arrays).
  Lease take() { return lease(1); }

 private:
  // Allocation (a new buffer) may throw: then nothing was taken from the pool.
  void take_into(size_t n, std::vector<std::unique_ptr<T>> &out) {
    out.reserve(n);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (out.size() < n && !free_.empty()) {
        out.push_back(std::move(free_.back()));
        free_.pop_back();
      }
    }
    try {
      while (out.size() < n) out.push_back(std::make_unique<T>());
    } catch (...) {
      give(out);
      throw;
    }
  }

  void give(std::vector<std::unique_ptr<T>> &items) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto &item : items) {
      // The pool keeps what it can; a buffer it cannot hold is freed.
      try {
        free_.push_back(std::move(item));
      } catch (...) {
      }
    }
    items.clear();
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<T>> free_;
};

}  // namespace sa
