#include "reference_attention.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace quality {

ReferenceAttention::ReferenceAttention(const QkvLayer &layer, std::vector<int64_t> positions, double scale)
    : positions_(std::move(positions)), hq_(layer.hq), d_(layer.d) {
  if (!(scale > 0)) throw std::invalid_argument("ReferenceAttention: scale must be positive");
  size_t total = 0;
  for (int64_t p : positions_) {
    if (p < layer.first_query || p >= layer.tokens)
      throw std::out_of_range("ReferenceAttention: query position " + std::to_string(p) + " outside [" +
                              std::to_string(layer.first_query) + ", " + std::to_string(layer.tokens) + ")");
    prob_offset_.push_back(total);
    total += size_t(hq_) * size_t(p + 1);
  }
  probs_.resize(total);
  outputs_.assign(positions_.size() * size_t(hq_) * size_t(d_), 0.0);

  // Keys and values in double once (converting element by element in the loops is slow).
  std::vector<double> k(size_t(layer.k.numel())), v(size_t(layer.v.numel()));
  for (size_t e = 0; e < k.size(); ++e) k[e] = layer.k.at(int64_t(e));
  for (size_t e = 0; e < v.size(); ++e) v[e] = layer.v.at(int64_t(e));

  const int64_t group = layer.hq / layer.hkv;
  const int64_t units = int64_t(positions_.size()) * hq_;
#pragma omp parallel for schedule(dynamic)
  for (int64_t u = 0; u < units; ++u) {
    const size_t i = size_t(u / hq_);
    const int64_t h = u % hq_, p = positions_[i];
    std::vector<double> q(static_cast<size_t>(d_));
    const int64_t kvh = h / group;
    for (int64_t x = 0; x < d_; ++x) q[size_t(x)] = layer.q.at(layer.q_offset(p, h) + x);
    double *pr = probs_.data() + prob_offset_[i] + size_t(h) * size_t(p + 1);
    double top = -INFINITY;
    for (int64_t j = 0; j <= p; ++j) {
      double s = 0;
      const int64_t kb = layer.kv_offset(j, kvh);
      for (int64_t x = 0; x < d_; ++x) s += q[size_t(x)] * k[size_t(kb + x)];
      pr[j] = scale * s;
      top = std::max(top, pr[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j <= p; ++j) sum += (pr[j] = std::exp(pr[j] - top));
    double *out = outputs_.data() + (i * size_t(hq_) + size_t(h)) * size_t(d_);
    for (int64_t j = 0; j <= p; ++j) {
      pr[j] /= sum;
      const int64_t vb = layer.kv_offset(j, kvh);
      for (int64_t x = 0; x < d_; ++x) out[x] += pr[j] * v[size_t(vb + x)];
    }
  }
}

}  // namespace quality
