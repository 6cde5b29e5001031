// Lightning-indexer selection (DeepSeek V3.2 style): per query token n_heads small query
// vectors q_j and head weights w_j, one small key k_s per token, and
//   score(t, s) = sum_j w_j(t) * ReLU(q_j(t) . k_s).
// Inputs are what the host passes: indexer queries and head weights are linear in the
// concatenated query heads (head weights plus an optional constant), the indexer key is linear
// in the concatenated KV heads (projected
// when appended). It keeps the projected keys and positions only, never the native keys (so
// borrow_keys changes nothing for it). One top-K list per query, written to every head's row;
// equal scores go to the more recent position (a list of all-zero ReLUs holds the latest keys,
// not slots 0, 1, 2). Weights layout:
// include/sparseattn.h (SA_SELECTOR_INDEXER).
#pragma once

#include <vector>

#include "io/layer_weights.hpp"
#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

class IndexerSelector final : public Selector {
 public:
  // Throws SA_ERR_SHAPE when the weights disagree with the index's heads and head_dim.
  IndexerSelector(const sa_context &ctx, const LayerWeights &weights, int heads, int dim, sa_dtype dtype,
                  int64_t capacity_hint);
  void append(const TensorView &keys) override;
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override;
  // Indexer keys are kept as their appends computed them.
  void truncate(int64_t keep) override { keys_.truncate(keep); }
  std::unique_ptr<Selector> clone() const override { return std::make_unique<IndexerSelector>(*this); }
  // Refuses a mass target (SA_ERR_UNSUPPORTED: indexer scores are not attention masses) and
  // queries whose head count differs from the weights' (SA_ERR_SHAPE).
  void select(const sa_context &ctx, const SelectRequest &req) const override;
  int64_t size() const override { return keys_.size(); }
  int64_t max_position() const override { return keys_.max_position(); }
  size_t memory_bytes() const override;
  bool scores_are_attention() const override { return false; }
  const KeyStore &slots() const override { return keys_; }

 private:
  std::vector<float> project_keys(const TensorView &keys, int64_t r0, int64_t r1) const;  // [r1 - r0, d_index]

  const sa_context &ctx_;
  int heads_, dim_;
  int64_t q_heads_ = 0, n_index_heads_ = 0, d_index_ = 0;
  std::vector<float> q_proj_;        // [n_index_heads * d_index][q_heads * dim]
  std::vector<float> head_weights_;  // [n_index_heads][q_heads * dim]
  std::vector<float> head_bias_;     // [n_index_heads] (zeros when the file has none)
  std::vector<float> k_proj_;        // [d_index][heads * dim]
  KeyStore keys_;                    // one head of d_index
};

}  // namespace sa
