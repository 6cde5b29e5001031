// Exact selection: every visible key scored, ranked by attention probability. The oracle the
// approximate selectors are measured against. Borrowing the host's keys, it keeps positions only.
#pragma once

#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

class ExactSelector final : public Selector {
 public:
  // borrow: keep positions only and score the request's host keys.
  ExactSelector(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, bool borrow = false);
  void append(const TensorView &keys) override { keys_.append(keys); }
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override {
    keys_.update(slots, n, keys, positions);
  }
  bool supports_per_head() const override { return true; }
  void update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override {
    keys_.update_heads(slots, n, keys, positions);
  }
  void truncate(int64_t keep) override { keys_.truncate(keep); }
  std::unique_ptr<Selector> clone() const override { return std::make_unique<ExactSelector>(*this); }
  void select(const sa_context &ctx, const SelectRequest &req) const override;
  int64_t size() const override { return keys_.size(); }
  int64_t max_position() const override { return keys_.max_position(); }
  size_t memory_bytes() const override { return keys_.memory_bytes(); }
  const KeyStore &slots() const override { return keys_; }

 private:
  KeyStore keys_;
};

}  // namespace sa
