// A validated paged KV cache (sa_paged_kv): K/V seen as flat rows, where physical slot
// s = page * page_size + offset is row s, the page table and each sequence's length. Shared by
// the batched attend and the batched select, so both read page tables by one rule.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor_view.hpp"
#include "sparseattn.h"

namespace sa {

struct PagedKV {
  TensorView k, v;                 // [num_slots, H_kv, D]; v is empty when the call reads no values
  int64_t page_size = 1, num_pages = 0, num_slots = 0, batch = 0;
  std::vector<int64_t> lens;       // tokens of each sequence
  const int64_t *slot_positions = nullptr;  // [num_slots], or nullptr (absent)

  // The physical slot holding token t < lens[b] of sequence b.
  int64_t slot(int64_t b, int64_t t) const {
    if (!table_) return t;
    const int64_t page = table_[b * table_s0_ + (t / page_size) * table_s1_];
    return page * page_size + t % page_size;
  }

  // The pages holding sequence b's tokens, in token order; empty without a page table (token t
  // in row t).
  std::vector<int32_t> pages_of(int64_t b) const {
    std::vector<int32_t> pages;
    if (!table_) return pages;
    const int64_t used = (lens[size_t(b)] + page_size - 1) / page_size;
    for (int64_t j = 0; j < used; ++j) pages.push_back(table_[b * table_s0_ + j * table_s1_]);
    return pages;
  }

  // Storage behind k, v or slot_positions when the caller's layout had to be repacked.
  std::vector<char> k_packed, v_packed;
  std::vector<int64_t> positions_packed;

 private:
  friend PagedKV view_paged_kv(const sa_paged_kv *, bool);
  const int32_t *table_ = nullptr;  // nullptr: one sequence, token t in row t
  int64_t table_s0_ = 0, table_s1_ = 0;
};

// kv's tensors checked from their descriptors alone (ranks, dtypes, shapes, devices), on
// `dev`: what a device call can check, since the core never reads device memory. k and v keep
// their rank (4, or 3 for one-row pages); absent optional tensors have rank 0.
struct PagedTensors {
  TensorView k, v, page_table, seq_lens, slot_positions;
  int64_t page_size = 1, num_pages = 0, num_slots = 0, batch = 0;
};
PagedTensors view_paged_tensors(const sa_paged_kv *kv, bool with_values, Device dev);

// Validates kv (every page a sequence uses, every length, the slot count fitting int32) and
// resolves it; with_values: v is read too (attention), else only k's shape (selection).
PagedKV view_paged_kv(const sa_paged_kv *kv, bool with_values);

// The batch's query rows: starts[b] .. starts[b + 1] - 1 belong to sequence b. query_starts
// NULL: one query per sequence (n_q must equal batch).
std::vector<int64_t> view_query_starts(const sa_tensor *query_starts, int64_t batch, int64_t n_q);

}  // namespace sa
