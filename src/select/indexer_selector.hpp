// Lightning-indexer selection (DeepSeek V3.2 style): per query token n_heads small query
// vectors q_j and head weights w_j, one small key k_s per token, and
//   score(t, s) = sum_j w_j(t) * ReLU(q_j(t) . k_s).
// Inputs are what the host passes: indexer queries and head weights are linear in the
// concatenated query heads (head weights plus an optional constant), the indexer key is linear
// in the concatenated KV heads (projected when appended); equal scores go to the more recent
// position (a list of all-zero ReLUs holds the latest keys, not slots 0, 1, 2).
// One stage (rescore 0): the top-K by indexer score form one list per query, written to every
// row; the index keeps the projected keys and positions only. Two stages (rescore r > 0): the
// best r * top_k by indexer score are rescored exactly, per output list (each KV head, or each
// query head), like the learned selector's second stage; the index then keeps the native keys
// too (or, with borrow_keys, reads the host's). One list for every head cannot reach per-head
// top-K: on tinylm-qkv (T 4096, K 128) the best single list is itself 3.2% short of exact
// per-query-head mass on layer 3, 1.4-1.6% short of exact per-KV-head mass on layers 3 and 5.
// Weights layout and the option: include/sparseattn.h (SA_SELECTOR_INDEXER).
#pragma once

#include <optional>
#include <vector>

#include "io/layer_weights.hpp"
#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

class IndexerSelector final : public Selector {
 public:
  // Throws SA_ERR_SHAPE when the weights disagree with the index's heads and head_dim.
  // rescore_factor >= 0 (0: one stage); borrow: the second stage reads the host's keys.
  IndexerSelector(const sa_context &ctx, const LayerWeights &weights, int heads, int dim, sa_dtype dtype,
                  int64_t capacity_hint, int64_t rescore_factor = 0, bool borrow = false);
  void append(const TensorView &keys) override;
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override;
  // Indexer keys are kept as their appends computed them.
  void truncate(int64_t keep) override;
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
  int64_t rescore_factor_ = 0;
  // Two stages: positions of every KV head, and the native rows unless borrowed; in step with keys_.
  std::optional<KeyStore> native_keys_;
};

}  // namespace sa
