#include "select/candidate_rescore.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/half.hpp"
#include "core/half_rows.hpp"

namespace sa {
namespace {

// Runs of at least this many consecutive slots are scored where they lie; shorter pieces are
// gathered first (the SIMD kernels score rows in blocks of up to 16).
constexpr int64_t kInPlaceRun = 16;
constexpr size_t kPrefetchRuns = 4;

// Scores columns [begin, end) of `cols` (slots) into scores + column (row stride ld): runs of
// consecutive slots of at least kInPlaceRun where they lie, the rest gathered into t.gathered
// first and scattered back. A column's score does not depend on the range it was scored in.
void score_column_range(const sa_context &ctx, const NativeRows &keys, const SelectionList &l, const float *queries,
                        const int32_t *cols, int64_t begin, int64_t end, float *scores, int64_t ld,
                        RescoreTaskScratch &t) {
  const int kv = int(l.kv_head);
  // Runs [a, b) of consecutive slots. Long runs are prefetched kPrefetchRuns ahead of the
  // one being scored: scattered pages defeat the hardware prefetcher.
  std::vector<std::pair<size_t, size_t>> &runs = t.runs;
  runs.clear();
  for (size_t a = size_t(begin); a < size_t(end);) {
    size_t b = a + 1;
    while (b < size_t(end) && cols[b] == cols[b - 1] + 1) ++b;
    runs.push_back({a, b});
    a = b;
  }
  auto prefetch = [&](size_t r) {
    if (r >= runs.size() || int64_t(runs[r].second - runs[r].first) < kInPlaceRun) return;
    if (keys.contiguous()) {
      const char *p = static_cast<const char *>(keys.row(kv, cols[runs[r].first]));
      for (size_t o = 0, bytes = (runs[r].second - runs[r].first) * keys.row_bytes(); o < bytes; o += 64)
        __builtin_prefetch(p + o, 0, 1);
      return;
    }
    for (size_t j = runs[r].first; j < runs[r].second; ++j) {  // the host's rows, one by one
      const char *p = static_cast<const char *>(keys.row(kv, cols[j]));
      for (size_t o = 0; o < keys.row_bytes(); o += 64) __builtin_prefetch(p + o, 0, 1);
    }
  };
  t.singles.clear();
  t.single_columns.clear();
  for (size_t r = 0; r < kPrefetchRuns; ++r) prefetch(r);
  for (size_t r = 0; r < runs.size(); ++r) {
    prefetch(r + kPrefetchRuns);
    const size_t a = runs[r].first, b = runs[r].second;
    if (int64_t(b - a) >= kInPlaceRun) {
      score_slot_range(*ctx.kernels, keys, kv, queries, l.q_heads, cols[a], int64_t(b - a), scores + a, ld, t.block);
    } else {
      for (size_t j = a; j < b; ++j) {
        t.singles.push_back(cols[j]);
        t.single_columns.push_back(int64_t(j));
      }
    }
  }
  if (t.singles.empty()) return;
  const int64_t m = int64_t(t.singles.size()), D = keys.dim();
  t.gathered.resize(size_t(m) * keys.row_bytes());
  keys.gather(kv, t.singles.data(), m, t.gathered.data());
  t.scores.resize(size_t(l.q_heads * m));
  score_rows_grouped(ctx.kernels->of(keys.dtype()), queries, l.q_heads, D, t.gathered.data(), m, t.scores.data(), m);
  for (int64_t g = 0; g < l.q_heads; ++g)
    for (int64_t j = 0; j < m; ++j) scores[g * ld + t.single_columns[size_t(j)]] = t.scores[size_t(g * m + j)];
}

}  // namespace

int64_t selection_list_count(const SelectRequest &req, int64_t kv_heads) {
  return req.per_query_head ? req.queries.shape[1] : kv_heads;
}

SelectionList selection_list(const SelectRequest &req, int64_t kv_heads, int64_t list) {
  const int64_t G = req.queries.shape[1] / kv_heads;
  SelectionList l;
  l.list = list;
  if (req.per_query_head) {
    l.kv_head = list / G;
    l.q_head0 = list;
    l.q_heads = 1;
  } else {
    l.kv_head = list;
    l.q_head0 = list * G;
    l.q_heads = G;
  }
  return l;
}

QueryVisibility query_visibility(const SelectRequest &req, int64_t i) {
  QueryVisibility v;
  v.query_pos = req.positions[size_t(i)];
  if (req.query_segments) {
    v.key_segments = req.key_segments;
    v.segment = req.query_segments[i];
  }
  return v;
}

KeepRule keep_rule(const SelectRequest &req, int64_t i) {
  return KeepRule{req.positions[size_t(i)], req.window, req.sinks, req.top_k, req.mass_target};
}

void collect_forced(const KeyStore &keys, const SelectRequest &req, int64_t i, int64_t kv_head,
                    std::vector<int32_t> &forced) {
  forced.clear();
  const QueryVisibility vis = query_visibility(req, i);
  const PositionRange sinks = sink_positions(vis.query_pos, req.sinks);
  const PositionRange window = window_positions(vis.query_pos, req.window, req.sinks);
  keys.slots_at_positions(sinks.lo, sinks.hi, forced, kv_head);
  keys.slots_at_positions(window.lo, window.hi, forced, kv_head);
  if (vis.key_segments) {
    const int64_t *pos = keys.positions(kv_head);
    forced.erase(std::remove_if(forced.begin(), forced.end(), [&](int32_t s) { return !vis(s, pos[s]); }), forced.end());
  }
  // Sinks then window: sorted already unless refilled slots hold positions out of slot order.
  if (!std::is_sorted(forced.begin(), forced.end())) std::sort(forced.begin(), forced.end());
}

void load_list_queries(const SelectRequest &req, int64_t i, const SelectionList &l, float *out, bool f16c) {
  const TensorView &q = req.queries;
  const int64_t D = q.shape[2];
  const float qscale = req.scale * kLog2e;
  // Each element as read_float reads it; the dtype switch hoisted out of the loops (a prefill
  // loads n_q x H_q x D of them: 5% of an exact selection's time element by element).
  for (int64_t g = 0; g < l.q_heads; ++g) {
    const int64_t base = i * q.stride[0] + (l.q_head0 + g) * q.stride[1], step = q.stride[2];
    float *o = out + g * D;
    switch (q.dtype) {
      case SA_DTYPE_F16: {
        const uint16_t *src = q.ptr<const uint16_t>() + base;
        if (step == 1 && f16c) {  // converted in place, then scaled: the same two roundings
          f16_to_f32_n(src, D, o, true);
          for (int64_t d = 0; d < D; ++d) o[d] *= qscale;
        } else {
          for (int64_t d = 0; d < D; ++d) o[d] = qscale * f16_to_f32(src[d * step]);
        }
        break;
      }
      case SA_DTYPE_BF16: {
        const uint16_t *src = q.ptr<const uint16_t>() + base;
        for (int64_t d = 0; d < D; ++d) o[d] = qscale * bf16_to_f32(src[d * step]);
        break;
      }
      default: {
        const float *src = q.ptr<const float>() + base;
        if (step == 1) {
          for (int64_t d = 0; d < D; ++d) o[d] = qscale * src[d];
        } else {
          for (int64_t d = 0; d < D; ++d) o[d] = qscale * src[d * step];
        }
      }
    }
  }
}

void prefetch_list_queries(const SelectRequest &req, int64_t i, const SelectionList &l) {
  const TensorView &q = req.queries;
  if (q.stride[2] != 1) return;
  const size_t row = size_t(q.shape[2]) * dtype_size(q.dtype);
  for (int64_t g = 0; g < l.q_heads; ++g) {
    const char *p = q.bytes() + size_t(i * q.stride[0] + (l.q_head0 + g) * q.stride[1]) * dtype_size(q.dtype);
    for (size_t b = 0; b < row; b += 64) __builtin_prefetch(p + b);
  }
}

void score_rows_grouped(const RowKernels &k, const float *q, int64_t q_heads, int64_t D,
                        const void *rows, int64_t n, float *scores, int64_t ld) {
  for (int64_t g0 = 0; g0 < q_heads; g0 += kMaxGroup) {
    const int g = int(std::min<int64_t>(kMaxGroup, q_heads - g0));
    k.score_rows(q + g0 * D, g, int(D), rows, n, scores + g0 * ld, ld);
  }
}

float softmax_inv_sum(const KernelTable &k, float *row, int64_t n) { return softmax_inv_sum(k, row, n, k.max_of(row, n)); }

float softmax_inv_sum(const KernelTable &k, float *row, int64_t n, float m) {
  if (m == -std::numeric_limits<float>::infinity()) return 0.f;  // nothing visible
  return 1.f / k.exp2_store_sum(row, n, m);  // >= 1 term of 1: no division by 0
}

void add_softmax_mass(const KernelTable &k, float *row, int64_t n, float *mass) {
  const float inv = softmax_inv_sum(k, row, n);
  if (inv == 0.f) return;
  for (int64_t j = 0; j < n; ++j) mass[j] += row[j] * inv;
}

int32_t *selection_row(const SelectRequest &req, int64_t i, const SelectionList &l) {
  return req.indices.ptr<int32_t>() + i * req.indices.stride[0] + l.list * req.indices.stride[1];
}

void rescore_candidates(const sa_context &ctx, const KeyStore &keys, const SelectRequest &req, int64_t i,
                        const SelectionList &l, RescoreScratch &s) {
  rescore_candidates(ctx, keys, native_rows(keys, req), req, i, l, s);
}

void rescore_candidates(const sa_context &ctx, const KeyStore &keys, const NativeRows &rows, const SelectRequest &req,
                        int64_t i, const SelectionList &l, RescoreScratch &s) {
  plan_rescore(keys, req, i, l, s);
  score_rescore_columns(ctx, rows, l, s, 0, s.column_count(), s.task);
  finish_rescore(ctx, keys, req, i, l, s);
}

void plan_rescore(const KeyStore &keys, const SelectRequest &req, int64_t i, const SelectionList &l, RescoreScratch &s,
                  bool filtered) {
  const QueryVisibility vis = query_visibility(req, i);
  const KeepRule rule = keep_rule(req, i);
  const int64_t *pos = keys.positions(l.kv_head);
  collect_forced(keys, req, i, l.kv_head, s.forced);

  std::vector<int32_t> &c = s.candidates;
  s.columns.assign(s.forced.begin(), s.forced.end());
  if (filtered) s.columns.insert(s.columns.end(), c.begin(), c.end());
  else if (!std::is_sorted(c.begin(), c.end())) std::sort(c.begin(), c.end());
  // One pass: each candidate once (duplicates are adjacent), visible and not forced.
  for (size_t j = 0; j < c.size() && !filtered; ++j) {
    const int32_t slot = c[j];
    if ((j == 0 || slot != c[j - 1]) && vis(slot, pos[slot]) && !always_kept(pos[slot], rule)) s.columns.push_back(slot);
  }
  const int64_t n = s.column_count(), D = req.queries.shape[2];
  s.queries.resize(size_t(l.q_heads * D));
  if (n > 0) load_list_queries(req, i, l, s.queries.data());
  s.scores.resize(size_t(l.q_heads * n));
  s.mass.resize(size_t(n));
}

void score_rescore_columns(const sa_context &ctx, const NativeRows &rows, const SelectionList &l,
                           RescoreScratch &s, int64_t begin, int64_t end, RescoreTaskScratch &t) {
  if (begin >= end) return;
  score_column_range(ctx, rows, l, s.queries.data(), s.columns.data(), begin, end, s.scores.data(), s.column_count(),
                     t);
}

void finish_rescore(const sa_context &ctx, const KeyStore &keys, const SelectRequest &req, int64_t i,
                    const SelectionList &l, RescoreScratch &s) {
  const KeepRule rule = keep_rule(req, i);
  const int64_t *pos = keys.positions(l.kv_head);
  const int64_t n = s.column_count();
  BestCandidates best(s.ranked, req.top_k);  // clears s.ranked
  float forced_mass = 0.f;
  if (n > 0) {
    // Each head's softmax over every column (softmax_inv_sum leaves its exps in the row), its
    // masses added in head order, element by element as add_softmax_mass adds them.
    s.mass.assign(size_t(n), 0.f);
    float *mass = s.mass.data();
    for (int64_t g = 0; g < l.q_heads; ++g) {
      float *row = &s.scores[size_t(g * n)];
      const float inv = softmax_inv_sum(*ctx.kernels, row, n);
      if (inv != 0.f)
        for (int64_t j = 0; j < n; ++j) mass[j] += row[j] * inv;
    }
    const float norm = 1.f / float(l.q_heads);
    for (int64_t j = 0; j < n; ++j) mass[j] *= norm;
    // plan_rescore put the forced slots first (each always_kept) and kept no always_kept
    // candidate after them: the columns say which is which, with no position to read (a
    // cache miss per page of candidates after a decode step's flush: 40 of a list's 80 us).
    const int64_t nf = std::min<int64_t>(n, int64_t(s.forced.size()));
    const float floor = best_floor(mass + nf, n - nf, req.top_k);
    for (int64_t j = 0; j < nf; ++j) forced_mass += mass[j];
    for (int64_t j = nf; j < n; ++j)
      if (!(mass[j] < floor)) best.add(mass[j], s.columns[size_t(j)]);
  }
  write_selection(s.ranked, s.forced, forced_mass, rule, pos, selection_row(req, i, l), req.indices.shape[2],
                  req.indices.stride[2], s.write);
}

void write_ranked_candidates(const KeyStore &keys, const SelectRequest &req, int64_t i, const SelectionList &l,
                             RescoreScratch &s) {
  const QueryVisibility vis = query_visibility(req, i);
  KeepRule rule = keep_rule(req, i);
  rule.mass_target = 0.f;  // no mass estimate behind these scores
  const int64_t *pos = keys.positions(l.kv_head);
  collect_forced(keys, req, i, l.kv_head, s.forced);
  s.ranked.erase(std::remove_if(s.ranked.begin(), s.ranked.end(),
                                [&](const Candidate &x) { return !vis(x.slot, pos[x.slot]) || always_kept(pos[x.slot], rule); }),
                 s.ranked.end());
  write_selection(s.ranked, s.forced, 0.f, rule, pos, selection_row(req, i, l), req.indices.shape[2], req.indices.stride[2],
                  s.write);
}

}  // namespace sa
