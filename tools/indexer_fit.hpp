// Lightning-indexer weights built from fitted projections, and the check tools/learned_fit runs
// before it writes them (a header so tests/learned_test.cpp runs the same code on tests/data).
//
// Construction: for query head j (KV head h = j / G) the bilinear fit with uncentred keys gives
// Wq_h, Wk_h with a_j = (Wq_h q_j) . (Wk_h k) ~ q_j . k, absolute logits included. Indexer key
// z = [Wk_0 k_0; ...; Wk_{H_kv-1} k_{H_kv-1}] (d_index = H_kv * d). Query head j gets two
// indexer heads, +Wq_h q_j and -Wq_h q_j in KV head h's block, with constant head weights b_j
// and -leak * b_j (b_j = 1 / the spread of a_j on training pairs, so no head drowns the
// others): b_j ReLU(a_j) - leak b_j ReLU(-a_j) is a leaky ReLU, and
//   score(t, s) = sum_j b_j (max(a_j, 0) + leak * min(a_j, 0)).
// The positive part keeps what a trained model's absolute logits say (measured better than a
// plain sum of centred logits on every layer of tinylm-qkv); the leak keeps every unit alive.
// A single ReLU per head (the earlier construction) is dead wherever the logits are negative,
// as most of a trained model's are: its scores were exactly 0 for 99.9% of the keys of a layer,
// and the selection fell back to tie order.
//
// The check: on held-out query positions, the share of scored keys whose indexer score is
// exactly 0, and recall / attention mass of the indexer's top K against exact top K (one list
// per KV head) and against the best single list (top K by probability summed over all query
// heads, the ceiling of any one-list selector).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "projection_fit.hpp"

namespace fit {

// One layer of a tinylm-qkv-style data set: keys of positions [0, T), queries of positions
// [q_pos0, q_pos0 + Tq) (tests/data keeps only the last queries).
struct Layer {
  const float *q = nullptr, *k = nullptr;  // [Tq][Hq][D], [T][Hkv][D]
  int64_t T = 0, Tq = 0, q_pos0 = 0;
  int Hq = 0, Hkv = 0, D = 0;
  const float *query(int64_t pos, int head) const { return q + size_t(((pos - q_pos0) * Hq + head) * D); }
  const float *key(int64_t pos, int kv_head) const { return k + size_t((pos * Hkv + kv_head) * D); }
};

// Wq, Wk of every KV head, [Hkv][d][D], fitted on keys and queries of positions < train_end.
struct Projections {
  int d = 0;
  std::vector<float> wq, wk;
};

inline Projections fit_projections(const Layer &L, int d, const std::string &method, int64_t train_end, bool centre) {
  Projections p;
  p.d = d;
  const int G = L.Hq / L.Hkv;
  const int64_t key_end = std::min(train_end, L.T), query_end = std::min(train_end, L.q_pos0 + L.Tq);
  for (int h = 0; h < L.Hkv; ++h) {
    std::vector<const float *> keys, queries;
    for (int64_t t = 0; t < key_end; ++t) keys.push_back(L.key(t, h));
    for (int64_t t = L.q_pos0; t < query_end; ++t)
      for (int g = 0; g < G; ++g) queries.push_back(L.query(t, h * G + g));
    Mat A, B;
    fit_head(queries, keys, L.D, d, method, centre, A, B);
    for (double x : A) p.wq.push_back(float(x));
    for (double x : B) p.wk.push_back(float(x));
  }
  return p;
}

// Tensors of layers.{L}.indexer.* (layout: include/sparseattn.h, SA_SELECTOR_INDEXER).
struct IndexerWeights {
  int64_t n_heads = 0, d_index = 0, in_q = 0, in_k = 0;
  std::vector<float> q_proj, head_weights, head_bias, k_proj;
};

// The leaky construction of the file's head, from uncentred projections; b_j from query
// positions < train_end.
inline IndexerWeights build_indexer(const Layer &L, const Projections &p, double leak, int64_t train_end) {
  const int d = p.d, D = L.D, G = L.Hq / L.Hkv;
  IndexerWeights w;
  w.n_heads = 2 * int64_t(L.Hq), w.d_index = int64_t(L.Hkv) * d, w.in_q = int64_t(L.Hq) * D,
  w.in_k = int64_t(L.Hkv) * D;
  w.q_proj.assign(size_t(w.n_heads * w.d_index * w.in_q), 0.f);
  w.k_proj.assign(size_t(w.d_index * w.in_k), 0.f);
  w.head_weights.assign(size_t(w.n_heads * w.in_q), 0.f);
  w.head_bias.assign(size_t(w.n_heads), 0.f);
  for (int h = 0; h < L.Hkv; ++h)
    for (int r = 0; r < d; ++r)
      for (int i = 0; i < D; ++i) w.k_proj[size_t((h * d + r) * w.in_k + h * D + i)] = p.wk[size_t((h * d + r) * D + i)];
  const int64_t T = std::min(train_end, L.T);
  std::vector<double> u(static_cast<size_t>(d)), z(static_cast<size_t>(d));
  for (int j = 0; j < L.Hq; ++j) {
    const int h = j / G;
    for (int sign = 0; sign < 2; ++sign)
      for (int r = 0; r < d; ++r)
        for (int i = 0; i < D; ++i)
          w.q_proj[size_t(((2 * j + sign) * w.d_index + h * d + r) * w.in_q + j * D + i)] =
              (sign ? -1.f : 1.f) * p.wq[size_t((h * d + r) * D + i)];
    // b_j: 1 / the spread of head j's approximate logits over a sample of training pairs.
    double sum = 0, sum2 = 0, count = 0;
    for (int64_t t = L.q_pos0; t < std::min(T, L.q_pos0 + L.Tq); t += 4) {
      const float *qv = L.query(t, j);
      for (int r = 0; r < d; ++r) {
        u[size_t(r)] = 0;
        for (int i = 0; i < D; ++i) u[size_t(r)] += double(p.wq[size_t((h * d + r) * D + i)]) * qv[i];
      }
      for (int64_t s = t % 7; s <= t; s += 7) {
        double dot = 0;
        for (int r = 0; r < d; ++r) {
          double zr = 0;
          for (int i = 0; i < D; ++i) zr += double(p.wk[size_t((h * d + r) * D + i)]) * L.key(s, h)[i];
          dot += u[size_t(r)] * zr;
        }
        sum += dot, sum2 += dot * dot, count += 1;
      }
    }
    const double var = count > 0 ? sum2 / count - (sum / count) * (sum / count) : 1.0;
    const double b = 1.0 / std::sqrt(std::max(var, 1e-12));
    w.head_bias[size_t(2 * j)] = float(b);
    w.head_bias[size_t(2 * j + 1)] = float(-leak * b);
  }
  return w;
}

// Indexer keys of positions [0, n) in double: [n][d_index].
inline std::vector<double> indexer_keys(const IndexerWeights &w, const Layer &L, int64_t n) {
  std::vector<double> z(size_t(n * w.d_index), 0.0);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t r = 0; r < w.d_index; ++r) {
      const float *row = &w.k_proj[size_t(r * w.in_k)], *y = L.key(s, 0);  // KV heads are contiguous
      double acc = 0;
      for (int64_t x = 0; x < w.in_k; ++x) acc += double(row[x]) * y[x];
      z[size_t(s * w.d_index + r)] = acc;
    }
  return z;
}

// score(t, s) for s in [0, n), from the indexer keys z (the library's formula, in double).
inline void indexer_scores(const IndexerWeights &w, const Layer &L, const std::vector<double> &z, int64_t t, int64_t n,
                           std::vector<double> &out) {
  const float *x = L.query(t, 0);  // query heads are contiguous
  out.assign(size_t(n), 0.0);
  std::vector<double> u(size_t(w.d_index));
  for (int64_t j = 0; j < w.n_heads; ++j) {
    double weight = w.head_bias.empty() ? 0.0 : w.head_bias[size_t(j)];
    for (int64_t c = 0; c < w.in_q; ++c) weight += double(w.head_weights[size_t(j * w.in_q + c)]) * x[c];
    for (int64_t r = 0; r < w.d_index; ++r) {
      const float *row = &w.q_proj[size_t((j * w.d_index + r) * w.in_q)];
      double acc = 0;
      for (int64_t c = 0; c < w.in_q; ++c) acc += double(row[c]) * x[c];
      u[size_t(r)] = acc;
    }
    for (int64_t s = 0; s < n; ++s) {
      double dot = 0;
      for (int64_t r = 0; r < w.d_index; ++r) dot += u[size_t(r)] * z[size_t(s * w.d_index + r)];
      out[size_t(s)] += weight * std::max(dot, 0.0);
    }
  }
}

// The k best of values[0, n), higher first, equal values by higher position (the selector's
// tie rule).
inline std::vector<int64_t> top_positions(const std::vector<double> &values, int64_t n, int64_t k) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) order[size_t(s)] = s;
  k = std::min(k, n);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return values[size_t(a)] > values[size_t(b)] || (values[size_t(a)] == values[size_t(b)] && a > b);
  });
  order.resize(size_t(k));
  return order;
}

struct IndexerCheck {
  bool finite = true;  // every weight
  int64_t queries = 0;
  double zero_share = 0;       // scored keys whose indexer score is exactly 0
  double recall_exact = 0;     // |indexer top K & exact top K of a KV head| / K, mean over KV heads
  double recall_one_list = 0;  // |indexer top K & best single list| / K
  // Attention mass (mean over query heads) of window + list: exact per KV head, best single
  // list, indexer.
  double mass_exact = 0, mass_one_list = 0, mass_indexer = 0;
};

// Decode setting at each query position t: keys [0, t - window] are scored, the window
// (t - window, t] is always kept; K keys chosen among the scored ones.
inline IndexerCheck check_indexer(const IndexerWeights &w, const Layer &L, const std::vector<int64_t> &positions,
                                  int64_t K, int64_t window) {
  IndexerCheck c;
  for (const std::vector<float> *v : {&w.q_proj, &w.head_weights, &w.head_bias, &w.k_proj})
    for (float x : *v) c.finite = c.finite && std::isfinite(x);
  if (!c.finite) return c;
  const int G = L.Hq / L.Hkv;
  int64_t last = 0;
  for (int64_t t : positions) last = std::max(last, t);
  const std::vector<double> z = indexer_keys(w, L, last + 1);
  std::vector<double> score, prob(size_t(L.Hq * (last + 1))), summed;
  double scored_keys = 0, zeros = 0;
  for (int64_t t : positions) {
    const int64_t n = t - window + 1;  // scored keys [0, n)
    if (n < 1) continue;
    ++c.queries;
    for (int j = 0; j < L.Hq; ++j) {  // exact probabilities over [0, t]
      double *p = &prob[size_t(j * (last + 1))], m = -INFINITY, sum = 0;
      const float *qv = L.query(t, j);
      for (int64_t s = 0; s <= t; ++s) {
        const float *kv = L.key(s, j / G);
        double dot = 0;
        for (int i = 0; i < L.D; ++i) dot += double(qv[i]) * kv[i];
        p[s] = dot / std::sqrt(double(L.D));
        m = std::max(m, p[s]);
      }
      for (int64_t s = 0; s <= t; ++s) sum += (p[s] = std::exp(p[s] - m));
      for (int64_t s = 0; s <= t; ++s) p[s] /= sum;
    }
    auto list_mass = [&](int j, const std::vector<int64_t> &list) {  // window + list, head j
      const double *p = &prob[size_t(j * (last + 1))];
      double m = 0;
      for (int64_t s = n; s <= t; ++s) m += p[s];
      for (int64_t s : list) m += p[s];
      return m / L.Hq;
    };
    auto overlap = [](std::vector<int64_t> a, std::vector<int64_t> b) {
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      std::vector<int64_t> both;
      std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(both));
      return a.empty() ? 1.0 : double(both.size()) / double(a.size());
    };
    indexer_scores(w, L, z, t, n, score);
    for (int64_t s = 0; s < n; ++s) zeros += score[size_t(s)] == 0.0;
    scored_keys += double(n);
    const std::vector<int64_t> chosen = top_positions(score, n, K);
    summed.assign(size_t(n), 0.0);
    for (int j = 0; j < L.Hq; ++j)
      for (int64_t s = 0; s < n; ++s) summed[size_t(s)] += prob[size_t(j * (last + 1) + s)];
    const std::vector<int64_t> one_list = top_positions(summed, n, K);
    c.recall_one_list += overlap(one_list, chosen);
    for (int h = 0; h < L.Hkv; ++h) {
      summed.assign(size_t(n), 0.0);
      for (int j = h * G; j < (h + 1) * G; ++j)
        for (int64_t s = 0; s < n; ++s) summed[size_t(s)] += prob[size_t(j * (last + 1) + s)];
      const std::vector<int64_t> exact = top_positions(summed, n, K);
      c.recall_exact += overlap(exact, chosen) / L.Hkv;
      for (int j = h * G; j < (h + 1) * G; ++j) c.mass_exact += list_mass(j, exact);
    }
    for (int j = 0; j < L.Hq; ++j) c.mass_one_list += list_mass(j, one_list), c.mass_indexer += list_mass(j, chosen);
  }
  const double nq = double(std::max<int64_t>(c.queries, 1));
  c.zero_share = scored_keys > 0 ? zeros / scored_keys : 0.0;
  c.recall_exact /= nq, c.recall_one_list /= nq;
  c.mass_exact /= nq, c.mass_one_list /= nq, c.mass_indexer /= nq;
  return c;
}

// Why the checked indexer must not be written (empty: it may).
inline std::string degenerate_reason(const IndexerCheck &c, double max_zero_share, double min_recall) {
  if (!c.finite) return "a weight is not finite";
  if (c.queries == 0) return "no held-out query position to check it on";
  if (!(c.zero_share <= max_zero_share))
    return "scores are exactly 0 for " + std::to_string(100 * c.zero_share) + "% of the keys (bar " +
           std::to_string(100 * max_zero_share) + "%): dead ReLUs, selection by tie order";
  if (!(c.recall_one_list >= min_recall))
    return "recall against the best single list is " + std::to_string(c.recall_one_list) + " (bar " +
           std::to_string(min_recall) + ")";
  return "";
}

}  // namespace fit
