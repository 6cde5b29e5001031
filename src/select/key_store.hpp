// The index's own copy of the keys, per KV head contiguous [slot][D] in the storage dtype, and
// the token position each slot holds.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor_view.hpp"

namespace sa {

class KeyStore {
 public:
  KeyStore(int heads, int dim, sa_dtype dtype, int64_t capacity_hint);

  void append(const TensorView &keys);  // [n, H, D]
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions);

  int64_t size() const { return size_; }
  int64_t max_position() const { return max_pos_; }
  int heads() const { return heads_; }
  int dim() const { return dim_; }
  sa_dtype dtype() const { return dtype_; }
  const int64_t *positions() const { return positions_.data(); }
  // Row 0 of head h; rows are dim() elements apart.
  const void *head_rows(int h) const { return rows_[size_t(h)].data(); }

 private:
  void store_row(int h, int64_t slot, const TensorView &keys, int64_t src_row);

  int heads_, dim_;
  sa_dtype dtype_;
  size_t elem_;
  int64_t size_ = 0;
  int64_t max_pos_ = -1;
  std::vector<std::vector<char>> rows_;  // per head
  std::vector<int64_t> positions_;
};

}  // namespace sa
