// HNSW selection: one hnswlib graph per KV head over its keys (select/hnsw_graph.hpp), grown
// by append and patched by update. Each output list searches its KV head's graph once, with
// the sum of its query heads (each at unit length; one search per group instead of one per
// query head cost 0.2-0.4% of tinylm's mass at K=128 and saves G-1 searches), and what it finds
// is rescored exactly per query head (candidate_rescore.hpp), with the sinks and the window
// added by position. Each search starts from the graph's entry point and from the query's 64
// newest keys (kSeeds): attention keys drift with position, and from the entry point alone a
// late query's search stayed among old keys (tinylm at 8192 tokens in decode order).
// Queries the graph cannot serve faster (few visible keys, or a list wider than 1/12 of them)
// are scored exactly, by the exact selector's path when the whole call is. In a call of many
// queries (a prompt's prefill, 8 or more) exact scoring runs by GEMM and costs a seventh of a
// search per list at 4K keys: there a query that sees up to 32 x max(ef_search, top_k) keys
// (8192 by default) is scored exactly (measured: hnsw_selector.cpp, kPrefillExactFactor), so
// a prefill over fewer keys selects as the exact selector does. Decode (fewer queries a call)
// searches the graph from 2 x that many keys on, as the quality gate's decode order checks.
//
// Causal prefill: the graphs hold every key; the search passes over keys the query may not
// see (and the window and sinks, kept anyway), so its beam holds only keys it may choose. A
// query that sees few keys compared with what it asks for (large top_k) scores them exactly.
//
// Determinism: each head's graph is built by one thread in slot order (heads in parallel), so
// the graphs, and the selections, do not depend on the thread count.
//
// Keys: hnswlib stores each key's vector (centred, f16) inside its graph and needs it to insert
// and to search, so the graph is a copy of the keys in any case. borrow_keys drops the second
// copy (the KeyStore rows the rescoring reads): rescoring then reads the request's host keys,
// and appends and updates build the graph from the call's tensor.
// Truncation: hnswlib cannot remove a key, so the graphs are built again from the kept slots,
// replaying the appends that brought them (the mean and scale follow the keys as they did): the
// graphs of an index that was only appended to come out as those appends made them. Updates
// are not replayed: refilled slots enter with their current keys, in slot order.
#pragma once

#include <memory>
#include <vector>

#include "core/scratch_pool.hpp"
#include "select/hnsw_graph.hpp"
#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

// Throws SA_ERR_INVALID_ARGUMENT naming the field when opt.hnsw is out of range.
void validate_hnsw_options(const sa_hnsw_options &opt);

// The graph settings an index with these options builds its graphs with.
HnswGraphConfig hnsw_graph_config(const sa_hnsw_options &opt, sa_isa isa);

class HnswSelector final : public Selector {
 public:
  HnswSelector(const sa_context &ctx, const sa_index_options &opt);
  HnswSelector(const HnswSelector &other);  // deep: the graphs are copied
  void append(const TensorView &keys) override;
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override;
  void truncate(int64_t keep) override;
  std::unique_ptr<Selector> clone() const override { return std::make_unique<HnswSelector>(*this); }
  void select(const sa_context &ctx, const SelectRequest &req) const override;
  int64_t size() const override { return keys_.size(); }
  int64_t max_position() const override { return keys_.max_position(); }
  size_t memory_bytes() const override;
  const KeyStore &slots() const override { return keys_; }

 private:
  using Graphs = std::vector<std::unique_ptr<HnswGraph>>;
  Graphs empty_graphs() const;
  // Keys of head h, slots [first, first + n), as f32 rows: from the index's rows, or, when it
  // keeps none, rows [first_row, first_row + n) of keys (the append's or update's tensor).
  void load_rows(int h, const TensorView &keys, int64_t first_row, int64_t first, int64_t n,
                 std::vector<float> &out) const;
  // Adds slots [first, first + n) to the graphs, as one append does (keys: the append's tensor,
  // row 0 = slot first; read only when the index keeps no rows).
  void add_to_graphs(Graphs &graphs, const TensorView &keys, int64_t first, int64_t n) const;

  const sa_context &ctx_;  // threads for append and update (the context outlives the index)
  KeyStore keys_;
  HnswGraphConfig config_;
  Graphs graphs_;
  mutable ScratchPool<HnswSearchScratch> search_scratch_;  // leased per select() call
  int ef_search_;
};

}  // namespace sa
