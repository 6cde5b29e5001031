// The per-slot pieces of the eviction policy (cache/evict.cpp), shared with the CUDA plugin's
// device kernels (SA_HOST_DEVICE) so that both rank slots by the same values: a slot's score
// over the rows, and the mean of an accumulated mass per step seen.
// Internal linkage on purpose, as core/visibility.hpp.
#pragma once

#include <math.h>

#include <cstdint>

#include "core/visibility.hpp"

namespace sa {
namespace {

// sum_{i < age} decay^i: the weight slot_mass gave the queries that saw a slot `age` steps.
SA_HOST_DEVICE inline double steps_seen(int64_t age, double decay) {
  if (decay >= 1.0) return double(age);
  if (decay <= 0.0) return 1.0;
  return -::expm1(double(age) * ::log(decay)) / (1.0 - decay);
}

// One more row folded into a slot's score: the sum in row order, or the best row (the first
// of equal ones, as std::max keeps).
SA_HOST_DEVICE inline float fold_score(float score, float v, int64_t row, bool row_max) {
  return row_max ? (row == 0 ? v : (score < v ? v : score)) : score + v;
}

// The score a slot at position p is ranked by, given the newest position max_pos.
SA_HOST_DEVICE inline float ranked_score(float score, int64_t p, int64_t max_pos, bool mean, double decay) {
  return mean ? float(double(score) / steps_seen(max_pos - p + 1, decay)) : score;
}

// Whether a slot at position p (>= 0) is protected: a sink or in the window of the newest.
SA_HOST_DEVICE constexpr bool protected_slot(int64_t p, int64_t max_pos, int32_t sinks, int32_t window) {
  return p < sinks || p > max_pos - window;
}

}  // namespace
}  // namespace sa
