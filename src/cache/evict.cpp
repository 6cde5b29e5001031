#include "cache/evict.hpp"

#include <algorithm>
#include <cmath>
#include <deque>

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

namespace {

// Every entry's score becomes the best score among the entries whose positions lie within
// `radius` of its own (a sliding maximum over the entries in position order, O(n log n)).
template <class Entry>
void pool_scores(std::vector<Entry> &entries, int64_t radius) {
  std::vector<size_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return entries[a].pos < entries[b].pos; });
  std::vector<float> pooled(entries.size());
  std::deque<size_t> best;  // indices into order, scores decreasing, positions inside the window
  size_t next = 0;          // the first entry of `order` not yet in the window
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t p = entries[order[i]].pos;
    // Entries from `next` on are at positions >= p (sorted): the difference cannot overflow,
    // nor p - radius below (positions >= 0, 0 < radius <= INT64_MAX).
    for (; next < order.size() && entries[order[next]].pos - p <= radius; ++next) {
      while (!best.empty() && entries[order[best.back()]].score <= entries[order[next]].score) best.pop_back();
      best.push_back(next);
    }
    while (entries[order[best.front()]].pos < p - radius) best.pop_front();
    pooled[order[i]] = entries[order[best.front()]].score;
  }
  for (size_t i = 0; i < entries.size(); ++i) entries[i].score = pooled[i];
}

}  // namespace

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
    bool kept;  // protected: a sink or in the window
  };
  std::vector<Entry> occupied_slots;
  occupied_slots.reserve(size_t(occupied));
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
    const bool kept = protected_slot(p, max_pos, req.sinks, req.window);
    protected_count += kept;
    occupied_slots.push_back({ranked_score(score, p, max_pos, req.mean, req.decay), p, int32_t(s), kept});
  }
  if (req.pool > 0) pool_scores(occupied_slots, req.pool);
  // Protected slots only lent their scores to the pooling; the rest may be evicted.
  std::vector<Entry> &evictable = occupied_slots;
  evictable.erase(std::remove_if(evictable.begin(), evictable.end(), [](const Entry &e) { return e.kept; }),
                  evictable.end());
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
