// The index's own copy of the keys, per KV head contiguous [slot][D] in the storage dtype, the
// token position each slot holds (one for all heads, or per KV head after update_heads), and
// the slots ordered by position (so the sinks and the
// window of a query are found by binary search, even after updates reorder positions).
// Without rows (an index that borrows the host's keys) it keeps the positions alone.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor_view.hpp"

namespace sa {

class KeyStore {
 public:
  // rows false: positions only; row() and head_rows() must not be called.
  KeyStore(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, bool rows = true);

  void append(const TensorView &keys);  // [n, H, D]
  // positions NULL: each slot gets the next position after the largest held. Afterwards
  // max_position() is the largest position a slot holds (it may shrink).
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions);
  // Per-KV-head refill (sa_index_update_heads): key row i of head h goes into head h's slot
  // slots[h * n + i] at position positions[h * n + i]. From then on every head keeps its own
  // positions (per_head()); the slots of one head are distinct (checked by the caller).
  void update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions);
  // Drops slots [keep, size); they must hold every position above the kept ones (the caller
  // checks with trailing_slots_from). The next append continues after the largest kept position.
  void truncate(int64_t keep);
  // The first slot of the trailing run of slots holding positions >= position (size() when
  // none does), or -1 when some slot before that run holds one too.
  int64_t trailing_slots_from(int64_t position) const;

  int64_t size() const { return size_; }
  int64_t max_position() const { return max_pos_; }
  int heads() const { return heads_; }
  int dim() const { return dim_; }
  sa_dtype dtype() const { return dtype_; }
  bool has_rows() const { return keep_rows_; }
  size_t memory_bytes() const;  // capacities of what it holds
  // Whether heads hold different tokens in one slot (after update_heads).
  bool per_head() const { return orders_.size() > 1; }
  // The position each slot of KV head h holds (the same array for every head unless per_head()).
  const int64_t *positions(int64_t h = 0) const { return order(h).positions.data(); }
  // The positions KV head h's slots hold, ascending (size() values).
  const int64_t *sorted_positions(int64_t h = 0) const { return order(h).sorted_positions.data(); }
  // Row 0 of head h; rows are dim() elements apart.
  const void *head_rows(int h) const { return rows_[size_t(h)].data(); }
  const void *row(int h, int64_t slot) const { return rows_[size_t(h)].data() + size_t(slot) * row_bytes(); }
  size_t row_bytes() const { return size_t(dim_) * elem_; }
  // Appends to out the slots of KV head h holding positions in [lo, hi], ascending by position
  // (ties by slot).
  void slots_at_positions(int64_t lo, int64_t hi, std::vector<int32_t> &out, int64_t h = 0) const;
  // The first slot of every non-empty append, ascending: selectors whose state depends on how
  // keys arrived (LSH rebuilds, HNSW graphs) replay them after a truncation. 4 bytes an append.
  const std::vector<int32_t> &append_starts() const { return append_starts_; }

 private:
  // The positions of the slots and the slots sorted by (position, slot): appends keep the order
  // (new positions are the largest); updates re-merge it in O(size).
  struct PositionOrder {
    std::vector<int64_t> positions;
    std::vector<int32_t> by_position;
    std::vector<int64_t> sorted_positions;
  };
  const PositionOrder &order(int64_t h) const { return orders_[orders_.size() > 1 ? size_t(h) : 0]; }
  void store_row(int h, int64_t slot, const TensorView &keys, int64_t src_row);
  static void reorder_updated(PositionOrder &o, const int32_t *slots, int64_t n);
  void refresh_max_position();

  int heads_, dim_;
  sa_dtype dtype_;
  size_t elem_;
  bool keep_rows_;
  int64_t size_ = 0;
  int64_t max_pos_ = -1;
  std::vector<std::vector<char>> rows_;  // per head
  std::vector<PositionOrder> orders_;    // one for every head, or one per head (per_head())
  std::vector<int32_t> append_starts_;
};

}  // namespace sa
