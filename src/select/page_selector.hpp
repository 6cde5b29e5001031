// Quest-style page selection. Slots are grouped in pages of page_size consecutive slots; per KV
// head each page keeps its keys' elementwise minimum and maximum as a centre and a radius, so
// a query's Quest bound
//   sum_d max(q_d min_d, q_d max_d) = q . centre + |q| . radius
// is a dot product the SIMD score kernels compute. They are kept as int8 codes with one scale
// per page and head (page_bounds.hpp: still a true upper bound, in half the bytes of f16
// bounds), one row [centre | radius] against [q | |q|] when 2 D fits the
// kernels' rows, else two passes. Pages are ranked by the bound; with refine the best pages'
// keys are rescored exactly (candidate_rescore), without it whole pages fill the budget in
// bound order. One selection is split over (list, chunk of pages) tasks for the bounds and
// over (list, range of candidates) tasks for the rescoring and its masses, so a single decode
// step uses every thread; the chosen pages' candidates are collected over (list, chunk of
// pages) tasks too; the threshold score of the best pages (a radix select), each list's plan
// and the final write stay one task per list.
// In a call of many queries (a prompt), with refine, a query that sees at most twice its
// candidate keys is scored exactly instead, by the exact selector's path (kPrefillExactFactor).
// Borrowing the host's keys (borrow_keys), it keeps the bounds and positions only: rescoring
// reads the request's host keys, and the bounds of pages whose slots were appended or refilled
// are computed from them by the next selection (deferred_work.hpp), so they equal an owning
// index's bounds.
#pragma once

#include <cstdint>
#include <vector>

#include "core/scratch_pool.hpp"
#include "select/deferred_work.hpp"
#include "select/key_store.hpp"
#include "select/native_rows.hpp"
#include "select/selector.hpp"

namespace sa {

struct PageSelectScratch;  // one selection's buffers (page_selector.cpp)

class PageSelector final : public Selector {
 public:
  // page_size >= 1 (validated by the caller).
  PageSelector(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, int page_size, bool refine,
               bool borrow = false);
  ~PageSelector() override;
  void append(const TensorView &keys) override;
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override;
  // Bounds are per KV head already; position ranges follow each head's positions.
  bool supports_per_head() const override { return true; }
  void update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override;
  void truncate(int64_t keep) override;
  std::unique_ptr<Selector> clone() const override;
  void select(const sa_context &ctx, const SelectRequest &req) const override;
  int64_t size() const override { return keys_.size(); }
  int64_t max_position() const override { return keys_.max_position(); }
  size_t memory_bytes() const override;
  const KeyStore &slots() const override { return keys_; }

 private:
  int64_t pages() const { return (keys_.size() + page_size_ - 1) / page_size_; }
  // A prefill's queries that bound pages, in chunks of select_queries.
  void select_prefill(const sa_context &ctx, const SelectRequest &req) const;
  // One selection: a decode step, or (prefill) a prefill's chunk of queries.
  void select_queries(const sa_context &ctx, const SelectRequest &req, bool prefill) const;
  // Position ranges, and bounds from the index's keys or (borrowed) at the next selection.
  void refresh_pages(const int64_t *pages, int64_t n);
  void refresh_positions(int64_t page);                      // position range of one page
  void refresh_bounds(int64_t page, const NativeRows &rows);  // bounds of one page from rows
  void refresh_stale(const sa_context &ctx, const NativeRows &rows);  // every page in stale_pages_
  void resize_pages();              // bound and position arrays for pages() pages
  void refresh_slot_pages(const int32_t *slots, int64_t n);  // every page holding one of the slots

  KeyStore keys_;
  int page_size_;
  bool refine_;
  bool joint_;  // centres_ holds rows [centre | radius] of 2 D codes; else centres_ and radii_ rows of D
  // Per KV head: int8 codes, and one scale and one magnitude per page (page_bounds.hpp).
  std::vector<std::vector<int8_t>> centres_, radii_;
  std::vector<std::vector<float>> scales_, magnitudes_;
  // Smallest and largest position in each page, [row][page]: one row for every head, or one per
  // KV head once heads hold their own tokens (KeyStore::per_head). Pages no query can use are
  // skipped.
  std::vector<std::vector<int64_t>> page_min_pos_, page_max_pos_;
  // Borrowed keys: pages whose bounds wait for the next selection's host keys.
  std::vector<int64_t> stale_pages_;
  DeferredWork stale_;
  // Buffers lent to selections (bounds of every page, per-list and per-task state).
  mutable ScratchPool<PageSelectScratch> scratch_;
};

}  // namespace sa
