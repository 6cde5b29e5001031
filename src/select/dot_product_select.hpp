// Selection by attention probability: every visible key of a KeyStore (or, for a store without
// rows, of the request's host keys) scored against the queries, softmax per query head, ranked by the list's summed probability. The engine of the
// exact selector (native keys) and of the learned selector (keys and queries mapped into a
// smaller search space, optionally followed by an exact rescoring of the best candidates).
// Forced slots, visibility, query loading and scoring are candidate_rescore's shared pieces.
#pragma once

#include <cstdint>
#include <functional>

#include "select/candidate_rescore.hpp"
#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

// Writes query i's heads [l.q_head0, l.q_head0 + l.q_heads) in the key store's space,
// multiplied by req.scale * log2(e) (base-2 logits): out[g * dim + d]. load_list_queries is
// the map of the native space.
using QueryMap = std::function<void(int64_t i, const SelectionList &l, float *out)>;

// Second stage: the best `candidates` slots of each list (by probability in the scored space;
// forced slots apart) rescored with rescore_candidates against `native` keys, which hold the
// same slots and positions. candidates <= 0 or native == nullptr: no second stage. borrowed:
// native gives the positions only, the rows are the request's host keys.
struct RescoreStage {
  const KeyStore *native = nullptr;
  int64_t candidates = 0;
  bool borrowed = false;
};

void select_by_dot_product(const sa_context &ctx, const SelectRequest &req, const KeyStore &keys,
                           const QueryMap &map_query, const RescoreStage &rescore = RescoreStage());

}  // namespace sa
