// Brute-force oracle for sa_select with the exact selector. It mirrors the index (keys as
// stored, rounded to the index dtype, and the position of every slot) and, for one query row,
// computes which slots are visible, which are forced (sinks, window) and how the rest rank.
//
// Scores: per KV head (default) the group's summed softmax probability
//   score(s) = sum_g exp(scale * q_g . k_s - lse_g),  lse_g over the keys visible to the query;
// per query head the head's own probability (the same order as q . k).
// The mass of a set is its summed score divided by the group size (1 per query head), so a
// mass_target in (0, 1] means the same fraction of attention in both modes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "sparseattn.h"
#include "test_util.hpp"

namespace ref {

struct KeyCache {
  int64_t h_kv = 0, d = 0;
  sa_dtype dtype = SA_DTYPE_F32;  // the index's storage dtype
  std::vector<double> keys;        // [slot][h_kv][d]
  std::vector<int64_t> pos;

  KeyCache(int64_t h, int64_t dim, sa_dtype dt) : h_kv(h), d(dim), dtype(dt) {}
  int64_t size() const { return int64_t(pos.size()); }
  int64_t max_pos() const {
    int64_t m = -1;
    for (int64_t p : pos) m = std::max(m, p);
    return m;
  }
  double key(int64_t s, int64_t h, int64_t x) const { return keys[size_t((s * h_kv + h) * d + x)]; }
  void set_row(int64_t s, const sat::Tensor &k, int64_t r) {
    for (int64_t h = 0; h < h_kv; ++h)
      for (int64_t x = 0; x < d; ++x) keys[size_t((s * h_kv + h) * d + x)] = sat::round_to(dtype, k.get({r, h, x}));
  }
  void append(const sat::Tensor &k) {
    for (int64_t r = 0; r < k.dim(0); ++r) {
      int64_t s = size();
      int64_t p = max_pos() + 1;
      pos.push_back(p);
      keys.resize(size_t((s + 1) * h_kv * d));
      set_row(s, k, r);
    }
  }
  void update(const std::vector<int32_t> &slots, const sat::Tensor &k, const int64_t *positions) {
    int64_t next = max_pos() + 1;
    for (size_t n = 0; n < slots.size(); ++n) {
      set_row(slots[n], k, int64_t(n));
      pos[size_t(slots[n])] = positions ? positions[n] : next++;
    }
  }
};

struct SelectArgs {
  int32_t top_k = 64, window = 64, sinks = 4;
  bool per_query_head = false;
  double mass_target = 0, scale = 0;
  const int64_t *query_positions = nullptr;
  const int32_t *query_segments = nullptr, *key_segments = nullptr;

  static SelectArgs from(const sa_select_options &o) {
    SelectArgs a;
    a.top_k = o.top_k;
    a.window = o.window;
    a.sinks = o.sinks;
    a.per_query_head = o.per_query_head != 0;
    a.mass_target = o.mass_target;
    a.scale = o.scale;
    a.query_positions = o.query_positions;
    a.query_segments = o.query_segments;
    a.key_segments = o.key_segments;
    return a;
  }
};

struct RowExpectation {
  int64_t position = 0;
  std::vector<char> visible, forced;  // per slot
  std::vector<double> score;          // per slot; meaningful where visible
  std::vector<int64_t> ranked;        // visible, not forced, best first
  int64_t n_scored = 0;               // how many of `ranked` the selection takes
};

// Which slots query i sees and which of those are forced (sinks, window), with no scores and
// no ranking: all that the shared contract of an approximate selector is checked against. The
// same for every output head of the query.
inline RowExpectation expect_visible(const KeyCache &c, const sat::Tensor &queries, const SelectArgs &a, int64_t i) {
  const int64_t n_q = queries.dim(0), N = c.size();
  RowExpectation e;
  e.position = a.query_positions ? a.query_positions[i] : c.max_pos() - n_q + 1 + i;
  e.visible.assign(size_t(N), 0);
  e.forced.assign(size_t(N), 0);
  e.score.assign(size_t(N), 0.0);
  for (int64_t s = 0; s < N; ++s) {
    int64_t p = c.pos[size_t(s)];
    bool vis = p <= e.position && (!a.query_segments || a.query_segments[i] == a.key_segments[s]);
    e.visible[size_t(s)] = vis;
    e.forced[size_t(s)] = vis && (p < a.sinks || p > e.position - a.window);
  }
  return e;
}

// Expectation for query i and output head `head` (a KV head, or a query head when
// per_query_head).
inline RowExpectation expect_row(const KeyCache &c, const sat::Tensor &queries, const SelectArgs &a, int64_t i,
                                 int64_t head) {
  const int64_t h_q = queries.dim(1), D = c.d, N = c.size();
  const int64_t group = h_q / c.h_kv;
  const double scale = a.scale != 0 ? a.scale : 1.0 / std::sqrt(double(D));
  RowExpectation e = expect_visible(c, queries, a, i);
  int64_t hk = a.per_query_head ? head / group : head;
  int64_t g0 = a.per_query_head ? head : head * group, g1 = a.per_query_head ? head + 1 : (head + 1) * group;
  // The query head's row read once, not once per key (the reference's cost in long tests).
  std::vector<double> q_row(static_cast<size_t>(D)), logit(static_cast<size_t>(N)), weight(static_cast<size_t>(N));
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t x = 0; x < D; ++x) q_row[size_t(x)] = queries.get({i, g, x});
    std::fill(logit.begin(), logit.end(), -std::numeric_limits<double>::infinity());
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t s = 0; s < N; ++s) {
      if (!e.visible[size_t(s)]) continue;
      const double *k = &c.keys[size_t((s * c.h_kv + hk) * D)];
      double dot = 0;
      for (int64_t x = 0; x < D; ++x) dot += q_row[size_t(x)] * k[x];
      logit[size_t(s)] = scale * dot;
      m = std::max(m, logit[size_t(s)]);
    }
    double z = 0;
    for (int64_t s = 0; s < N; ++s)
      if (e.visible[size_t(s)]) z += weight[size_t(s)] = std::exp(logit[size_t(s)] - m);
    for (int64_t s = 0; s < N; ++s)
      if (e.visible[size_t(s)]) e.score[size_t(s)] += weight[size_t(s)] / z;
  }
  double gsize = double(g1 - g0), mass = 0;
  for (int64_t s = 0; s < N; ++s) {
    if (e.forced[size_t(s)]) mass += e.score[size_t(s)] / gsize;
    else if (e.visible[size_t(s)]) e.ranked.push_back(s);
  }
  std::stable_sort(e.ranked.begin(), e.ranked.end(),
                   [&](int64_t x, int64_t y) { return e.score[size_t(x)] > e.score[size_t(y)]; });
  int64_t cap = std::min<int64_t>(a.top_k, int64_t(e.ranked.size()));
  if (a.mass_target > 0) {
    while (e.n_scored < cap && mass < a.mass_target) mass += e.score[size_t(e.ranked[size_t(e.n_scored++)])] / gsize;
  } else {
    e.n_scored = cap;
  }
  return e;
}

// Checks one output row: ascending slots then -1 padding, only visible slots, every forced
// slot, and a scored part that is a valid top set. Two keys whose scores agree within
// tie_rel may swap places; the count may differ from the reference by count_slack (float
// ties at a mass threshold).
inline ::testing::AssertionResult check_row(const RowExpectation &e, const std::vector<int32_t> &row, double tie_rel = 1e-4,
                                            int64_t count_slack = 0) {
  const int64_t N = int64_t(e.visible.size());
  std::vector<char> chosen(size_t(N), 0);
  size_t used = 0;
  while (used < row.size() && row[used] != -1) ++used;
  for (size_t w = used; w < row.size(); ++w)
    if (row[w] != -1) return ::testing::AssertionFailure() << "entry " << w << " = " << row[w] << " after the -1 padding";
  for (size_t w = 0; w < used; ++w) {
    int32_t s = row[w];
    if (s < 0 || s >= N) return ::testing::AssertionFailure() << "entry " << w << " = " << s << " is not a slot";
    if (w > 0 && s <= row[w - 1]) return ::testing::AssertionFailure() << "entries not strictly ascending at " << w;
    if (!e.visible[size_t(s)])
      return ::testing::AssertionFailure() << "slot " << s << " is not visible to the query at position " << e.position;
    chosen[size_t(s)] = 1;
  }
  for (int64_t s = 0; s < N; ++s)
    if (e.forced[size_t(s)] && !chosen[size_t(s)])
      return ::testing::AssertionFailure() << "forced (sink/window) slot " << s << " is missing";
  int64_t n_scored = 0;
  double min_in = INFINITY, max_out = -INFINITY;
  int64_t worst_in = -1, worst_out = -1;
  for (int64_t s : e.ranked) {
    if (chosen[size_t(s)]) {
      ++n_scored;
      if (e.score[size_t(s)] < min_in) min_in = e.score[size_t(s)], worst_in = s;
    } else if (e.score[size_t(s)] > max_out) {
      max_out = e.score[size_t(s)], worst_out = s;
    }
  }
  if (std::llabs(n_scored - e.n_scored) > count_slack)
    return ::testing::AssertionFailure() << n_scored << " scored slots chosen, reference " << e.n_scored
                                         << " (row of " << used << ")";
  if (n_scored > 0 && worst_out >= 0 && min_in < max_out * (1 - tie_rel) - 1e-15)
    return ::testing::AssertionFailure() << "slot " << worst_in << " (score " << min_in << ") chosen over slot "
                                         << worst_out << " (score " << max_out << ")";
  return ::testing::AssertionSuccess();
}

}  // namespace ref
