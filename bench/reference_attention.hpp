// Attention of a layer's queries at chosen positions over every key each one sees
// (positions 0 .. p), computed in double from the stored values: the softmax probability of
// each visible key per query head, and the dense attention output. The yardstick for the
// attention mass and the output error of a selection.
#pragma once

#include <cstdint>
#include <vector>

#include "qkv_layer.hpp"

namespace quality {

class ReferenceAttention {
 public:
  // positions: each in [layer.first_query, layer.tokens). scale > 0.
  ReferenceAttention(const QkvLayer &layer, std::vector<int64_t> positions, double scale);

  size_t queries() const { return positions_.size(); }
  int64_t heads() const { return hq_; }
  int64_t head_dim() const { return d_; }
  int64_t position(size_t i) const { return positions_[i]; }
  // positions[i] + 1 probabilities of query i, query head h (they sum to 1).
  const double *probs(size_t i, int64_t h) const {
    return probs_.data() + prob_offset_[i] + size_t(h) * size_t(positions_[i] + 1);
  }
  // The D values of query i, head h's dense attention output.
  const double *output(size_t i, int64_t h) const { return outputs_.data() + (i * size_t(hq_) + size_t(h)) * size_t(d_); }

 private:
  std::vector<int64_t> positions_;
  int64_t hq_, d_;
  std::vector<size_t> prob_offset_;
  std::vector<double> probs_, outputs_;
};

}  // namespace quality
