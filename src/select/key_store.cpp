#include "select/key_store.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/error.hpp"
#include "core/half.hpp"

namespace sa {

KeyStore::KeyStore(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, bool rows)
    : heads_(heads), dim_(dim), dtype_(dtype), elem_(dtype_size(dtype)), keep_rows_(rows),
      rows_(rows ? size_t(heads) : 0), orders_(1) {
  if (capacity_hint > 0) {
    int64_t bytes = checked_mul(checked_mul(capacity_hint, dim, "capacity * head_dim"), int64_t(elem_), "capacity bytes");
    for (auto &r : rows_) r.reserve(size_t(bytes));
    orders_[0].positions.reserve(size_t(capacity_hint));
    orders_[0].by_position.reserve(size_t(capacity_hint));
    orders_[0].sorted_positions.reserve(size_t(capacity_hint));
  }
}

void KeyStore::store_row(int h, int64_t slot, const TensorView &keys, int64_t src_row) {
  char *dst = rows_[size_t(h)].data() + size_t(slot) * size_t(dim_) * elem_;
  const int64_t base = src_row * keys.stride[0] + h * keys.stride[1];
  if (keys.dtype == dtype_ && keys.stride[2] == 1) {  // same format, contiguous row: one copy
    std::memcpy(dst, keys.bytes() + size_t(base) * elem_, size_t(dim_) * elem_);
    return;
  }
  for (int d = 0; d < dim_; ++d) {
    const int64_t off = base + d * keys.stride[2];
    if (keys.dtype == dtype_) {  // same format: copy bits
      std::memcpy(dst + size_t(d) * elem_, keys.bytes() + size_t(off) * elem_, elem_);
      continue;
    }
    const float x = read_float(keys, off);
    switch (dtype_) {
      case SA_DTYPE_F16: reinterpret_cast<uint16_t *>(dst)[d] = f32_to_f16(x); break;
      case SA_DTYPE_BF16: reinterpret_cast<uint16_t *>(dst)[d] = f32_to_bf16(x); break;
      default: reinterpret_cast<float *>(dst)[d] = x; break;
    }
  }
}

void KeyStore::append(const TensorView &keys) {
  const int64_t n = keys.shape[0];
  if (n == 0) return;
  const int64_t new_size = checked_add(size_, n, "index size");
  if (new_size > INT32_MAX) fail(SA_ERR_OVERFLOW, "index would hold %lld slots; slots are int32", (long long)new_size);
  const size_t row_bytes = size_t(dim_) * elem_;
  for (auto &r : rows_) {
    if (r.capacity() < size_t(new_size) * row_bytes)  // grow geometrically
      r.reserve(std::max(size_t(new_size) * row_bytes, r.capacity() * 2));
    r.resize(size_t(new_size) * row_bytes);
  }
  // Reserve first, so that a failed allocation leaves the store as it was.
  for (PositionOrder &o : orders_) {
    o.positions.reserve(size_t(new_size));
    o.by_position.reserve(size_t(new_size));
    o.sorted_positions.reserve(size_t(new_size));
  }
  append_starts_.push_back(int32_t(size_));
  for (int64_t i = 0; i < n; ++i) {
    for (size_t h = 0; h < rows_.size(); ++h) store_row(int(h), size_ + i, keys, i);
    for (PositionOrder &o : orders_) {
      o.positions.push_back(max_pos_ + 1 + i);
      o.by_position.push_back(int32_t(size_ + i));
      o.sorted_positions.push_back(max_pos_ + 1 + i);
    }
  }
  size_ = new_size;
  max_pos_ += n;
}

void KeyStore::update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = slots[i];
    for (size_t h = 0; h < rows_.size(); ++h) store_row(int(h), s, keys, i);
    const int64_t pos = positions ? positions[i] : max_pos_ + 1;
    for (PositionOrder &o : orders_) o.positions[size_t(s)] = pos;
    max_pos_ = std::max(max_pos_, pos);  // positions NULL: each next one after the last given
  }
  for (PositionOrder &o : orders_) reorder_updated(o, slots, n);
  refresh_max_position();
}

void KeyStore::update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) {
  if (!per_head()) orders_.assign(size_t(heads_), orders_[0]);
  for (int h = 0; h < heads_; ++h) {
    PositionOrder &o = orders_[size_t(h)];
    const int32_t *head_slots = slots + int64_t(h) * n;
    for (int64_t i = 0; i < n; ++i) {
      if (keep_rows_) store_row(h, head_slots[i], keys, i);
      o.positions[size_t(head_slots[i])] = positions[int64_t(h) * n + i];
    }
    reorder_updated(o, head_slots, n);
  }
  refresh_max_position();
}

// The largest position held now: an update may have moved the slot that held the old one to a
// smaller position (default query positions and the next append count from it).
void KeyStore::refresh_max_position() {
  if (size_ == 0) return;
  max_pos_ = -1;
  for (const PositionOrder &o : orders_) max_pos_ = std::max(max_pos_, o.sorted_positions.back());
}

void KeyStore::reorder_updated(PositionOrder &o, const int32_t *slots, int64_t n) {
  if (n == 0) return;
  // Drop the updated slots from the order, sort them by their new positions, merge back.
  std::vector<uint8_t> moved(o.positions.size(), 0);
  for (int64_t i = 0; i < n; ++i) moved[size_t(slots[i])] = 1;
  std::vector<std::pair<int64_t, int32_t>> fresh;
  fresh.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) fresh.push_back({o.positions[size_t(slots[i])], slots[i]});
  std::sort(fresh.begin(), fresh.end());
  std::vector<int32_t> order;
  order.reserve(o.positions.size());
  size_t f = 0;
  for (int32_t s : o.by_position) {
    if (moved[size_t(s)]) continue;
    const std::pair<int64_t, int32_t> kept{o.positions[size_t(s)], s};
    while (f < fresh.size() && fresh[f] < kept) order.push_back(fresh[f++].second);
    order.push_back(s);
  }
  while (f < fresh.size()) order.push_back(fresh[f++].second);
  o.by_position.swap(order);
  for (size_t i = 0; i < o.by_position.size(); ++i) o.sorted_positions[i] = o.positions[size_t(o.by_position[i])];
}

size_t KeyStore::memory_bytes() const {
  size_t bytes = rows_.capacity() * sizeof(std::vector<char>) + orders_.capacity() * sizeof(PositionOrder);
  for (const PositionOrder &o : orders_)
    bytes += o.positions.capacity() * sizeof(int64_t) + o.by_position.capacity() * sizeof(int32_t) +
             o.sorted_positions.capacity() * sizeof(int64_t);
  for (const auto &r : rows_) bytes += r.capacity();
  return bytes;
}

int64_t KeyStore::trailing_slots_from(int64_t position) const {
  // In every head exactly `dropped` slots hold positions >= position; they must be the last ones.
  int64_t keep = size_;
  for (size_t h = 0; h < orders_.size(); ++h) {
    const PositionOrder &o = orders_[h];
    const int64_t dropped = int64_t(o.sorted_positions.end() -
                                    std::lower_bound(o.sorted_positions.begin(), o.sorted_positions.end(), position));
    for (int64_t s = size_ - dropped; s < size_; ++s)
      if (o.positions[size_t(s)] < position) return -1;
    if (h > 0 && size_ - dropped != keep) return -1;
    keep = size_ - dropped;
  }
  return keep;
}

void KeyStore::truncate(int64_t keep) {
  if (keep >= size_) return;
  // Shrinking never allocates: nothing below can fail halfway.
  for (auto &r : rows_) r.resize(size_t(keep) * row_bytes());
  for (PositionOrder &o : orders_) {
    o.positions.resize(size_t(keep));
    // The dropped slots hold the largest positions, so they end the position order.
    o.by_position.resize(size_t(keep));
    o.sorted_positions.resize(size_t(keep));
  }
  while (!append_starts_.empty() && append_starts_.back() >= keep) append_starts_.pop_back();
  size_ = keep;
  max_pos_ = -1;
  refresh_max_position();
}

void KeyStore::slots_at_positions(int64_t lo, int64_t hi, std::vector<int32_t> &out, int64_t h) const {
  lo = std::max(lo, int64_t(0));  // empty slots (position -1) hold no token to list
  if (lo > hi) return;
  const PositionOrder &o = order(h);
  auto first = std::lower_bound(o.sorted_positions.begin(), o.sorted_positions.end(), lo);
  auto last = std::upper_bound(first, o.sorted_positions.end(), hi);
  for (auto it = first; it != last; ++it) out.push_back(o.by_position[size_t(it - o.sorted_positions.begin())]);
}

}  // namespace sa
