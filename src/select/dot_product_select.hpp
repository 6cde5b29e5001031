// Selection by attention probability: every visible key of a KeyStore scored against the
// queries, softmax per query head, ranked by the group's summed probability. The engine of the
// exact selector (native keys) and of the learned selector (keys and queries mapped into a
// smaller search space).
#pragma once

#include <cstdint>
#include <functional>

#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

// Writes query row i, query head hq as keys.dim() floats into dst, each multiplied by factor.
using QueryMap = std::function<void(int64_t i, int64_t hq, float factor, float *dst)>;

// Scores use req.scale; the query map decides what space they live in.
void select_by_dot_product(const sa_context &ctx, const SelectRequest &req, const KeyStore &keys,
                           const QueryMap &map_query);

// The query map of the exact selector: the query itself.
QueryMap native_queries(const TensorView &queries);

}  // namespace sa
