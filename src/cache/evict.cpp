#include "cache/evict.hpp"

#include <algorithm>
#include <cmath>

#include "cache/evict_rule.hpp"
#include "core/error.hpp"

namespace sa {

void fail_nan_score(int64_t slot, bool summed) {
  if (summed)
    fail(SA_ERR_INVALID_ARGUMENT, "scores for slot %lld are NaN (+inf and -inf summed over heads)", (long long)slot);
  fail(SA_ERR_INVALID_ARGUMENT, "scores for slot %lld are NaN", (long long)slot);
}

void fail_budget(const EvictRequest &req, int64_t protected_count) {
  fail(SA_ERR_INVALID_ARGUMENT,
       "opt->budget %lld cannot hold the %lld sink and window slots (positions repeat) plus %lld incoming tokens",
       (long long)req.budget, (long long)protected_count, (long long)req.incoming);
}

std::vector<int32_t> choose_evictions(const EvictRequest &req) {
  std::vector<int32_t> empty;
  int64_t max_pos = -1, occupied = 0;
  for (int64_t s = 0; s < req.n; ++s) {
    const int64_t p = req.positions[s * req.pos_stride];
    if (p == -1) {
      empty.push_back(int32_t(s));
    } else {
      ++occupied;
      max_pos = std::max(max_pos, p);
    }
  }
  // incoming <= budget and positions are in range (checked by the caller): nothing overflows.
  const int64_t evict = std::max<int64_t>(0, occupied - (req.budget - req.incoming));

  struct Entry {
    float score;
    int64_t pos;
    int32_t slot;
  };
  std::vector<Entry> evictable;
  int64_t protected_count = 0;
  for (int64_t s = 0; s < req.n; ++s) {
    const int64_t p = req.positions[s * req.pos_stride];
    float score = 0.f;
    for (int64_t r = 0; r < req.rows; ++r) {
      const float v = req.scores[r * req.row_stride + s * req.col_stride];
      if (std::isnan(v)) fail_nan_score(s, false);
      score = fold_score(score, v, r, req.row_max);
    }
    if (std::isnan(score)) fail_nan_score(s, true);
    if (p == -1) continue;
    score = ranked_score(score, p, max_pos, req.mean, req.decay);
    if (protected_slot(p, max_pos, req.sinks, req.window)) {
      ++protected_count;
      continue;
    }
    evictable.push_back({score, p, int32_t(s)});
  }
  if (int64_t(evictable.size()) < evict) fail_budget(req, protected_count);

  std::vector<int32_t> freed(empty.begin(), empty.begin() + std::min<int64_t>(int64_t(empty.size()), req.incoming));
  auto worse = [](const Entry &a, const Entry &b) {
    if (a.score != b.score) return a.score < b.score;
    if (a.pos != b.pos) return a.pos < b.pos;
    return a.slot < b.slot;
  };
  if (evict > 0) {
    std::partial_sort(evictable.begin(), evictable.begin() + evict, evictable.end(), worse);
    for (int64_t i = 0; i < evict; ++i) freed.push_back(evictable[size_t(i)].slot);
  }
  return freed;
}

}  // namespace sa
