// Learned selection: keys and queries mapped by per-layer linear projections (head_dim ->
// d_search) into a small search space, where keys are scored like the exact selector scores
// native keys. Keys are projected once, when appended; queries when selecting. Attention still
// runs over the host's native keys. With a rescore factor r > 0 the selector also keeps the
// native keys and rescores the best r * top_k slots of each list exactly (candidate_rescore),
// which recovers most of the mass a small search space loses; borrowing the host's keys
// (borrow_keys), it keeps no native copy and the rescoring reads the request's host keys.
// Weights layout and the option: include/sparseattn.h (SA_SELECTOR_LEARNED).
#pragma once

#include <memory>
#include <vector>

#include "io/layer_weights.hpp"
#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

class LearnedSelector final : public Selector {
 public:
  // Reads q_proj and k_proj of the layer; throws SA_ERR_SHAPE when they disagree with the
  // index's heads and head_dim or with each other. rescore_factor >= 0 (0: one stage).
  LearnedSelector(const sa_context &ctx, const LayerWeights &weights, int heads, int dim, sa_dtype dtype,
                  int64_t capacity_hint, int64_t rescore_factor, bool borrow = false);
  LearnedSelector(const LearnedSelector &other);  // deep: the native keys are copied too
  void append(const TensorView &keys) override;
  void update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) override;
  // Projected keys are kept as their appends computed them.
  void truncate(int64_t keep) override;
  std::unique_ptr<Selector> clone() const override { return std::make_unique<LearnedSelector>(*this); }
  void select(const sa_context &ctx, const SelectRequest &req) const override;
  int64_t size() const override { return search_keys_.size(); }
  int64_t max_position() const override { return search_keys_.max_position(); }
  size_t memory_bytes() const override;
  const KeyStore &slots() const override { return search_keys_; }
  int d_search() const { return d_search_; }
  // The native keys kept for rescoring (nullptr without a second stage, or when borrowed).
  const KeyStore *native_keys() const { return native_keys_.get(); }
  const KeyStore &search_keys() const { return search_keys_; }

 private:
  // keys rows [r0, r1) projected: f32 [r1 - r0, heads, d_search].
  std::vector<float> project_keys(const TensorView &keys, int64_t r0, int64_t r1) const;

  const sa_context &ctx_;
  bool borrow_;
  int heads_, dim_, d_search_;
  int64_t q_sets_, k_sets_;         // projection matrices in q_proj / k_proj
  std::vector<float> q_proj_, k_proj_;  // [sets][d_search][dim]
  KeyStore search_keys_;            // [heads] x [slot][d_search]
  int64_t rescore_factor_;
  std::unique_ptr<KeyStore> native_keys_;  // [heads] x [slot][dim], in step with search_keys_
};

}  // namespace sa
