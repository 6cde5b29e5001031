#include "select/page_selector.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#include "core/half.hpp"
#include "core/threading.hpp"
#include "select/candidate_rescore.hpp"
#include "select/dot_product_select.hpp"

namespace sa {
namespace {

// With refine, the candidate pages hold top_k + this many keys. The Quest bound is loose (its
// radius term grows with the head dimension), so the pages that really hold the top keys rank
// among many spread-out ones; on tinylm-qkv (layers 1-7, K=128) a reserve of 1024 keys left
// layer 5 2.4% short of the exact mass, 2048 brings every layer within 0.6% (there, with 4K
// keys, that rescored about 60% of them). A fixed reserve rather than a multiple of top_k keeps
// large budgets cheap: K=2048 at 128K keys rescores 4096 (3%).
constexpr int64_t kRefineReserveKeys = 2048;

void store(sa_dtype dt, char *row, int64_t d, float x) {
  switch (dt) {
    case SA_DTYPE_F16: reinterpret_cast<uint16_t *>(row)[d] = f32_to_f16(x); break;
    case SA_DTYPE_BF16: reinterpret_cast<uint16_t *>(row)[d] = f32_to_bf16(x); break;
    default: reinterpret_cast<float *>(row)[d] = x; break;
  }
}

// Bound rows up to this width are one SIMD kernel pass (the kernels' largest vectorised row).
constexpr int64_t kJointRowMax = 256;

struct PageScratch {
  RescoreScratch rescore;
  std::vector<float> q_joint, bound, radius_dot, unusable, page_score, top;
  std::vector<std::pair<float, int32_t>> order;  // (-score, page): ascending = best first
};

}  // namespace

PageSelector::PageSelector(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, int page_size, bool refine,
                           bool borrow)
    : keys_(heads, dim, dtype, capacity_hint, !borrow), page_size_(page_size), refine_(refine),
      joint_(2 * int64_t(dim) <= kJointRowMax), centres_(size_t(heads)), radii_(size_t(heads)) {}

void PageSelector::refresh_bounds(int64_t page, const NativeRows &rows) {
  const int64_t first = page * page_size_, last = std::min(keys_.size(), first + page_size_);
  const int64_t D = keys_.dim();
  const sa_dtype dt = keys_.dtype();
  const size_t rb = keys_.row_bytes();
  std::vector<float> lo(static_cast<size_t>(D)), hi(static_cast<size_t>(D)), x(static_cast<size_t>(D));
  for (int h = 0; h < keys_.heads(); ++h) {
    std::fill(lo.begin(), lo.end(), std::numeric_limits<float>::infinity());
    std::fill(hi.begin(), hi.end(), -std::numeric_limits<float>::infinity());
    for (int64_t s = first; s < last; ++s) {
      rows.load(h, s, dt, x.data());  // as the index dtype holds them
      for (int64_t d = 0; d < D; ++d) {
        lo[size_t(d)] = std::min(lo[size_t(d)], x[size_t(d)]);
        hi[size_t(d)] = std::max(hi[size_t(d)], x[size_t(d)]);
      }
    }
    char *c = centres_[size_t(h)].data() + size_t(page) * rb * (joint_ ? 2 : 1);
    char *r = joint_ ? c + rb : radii_[size_t(h)].data() + size_t(page) * rb;
    for (int64_t d = 0; d < D; ++d) {
      store(dt, c, d, 0.5f * (hi[size_t(d)] + lo[size_t(d)]));
      store(dt, r, d, 0.5f * (hi[size_t(d)] - lo[size_t(d)]));
    }
  }
}

void PageSelector::refresh_positions(int64_t page) {
  const int64_t first = page * page_size_, last = std::min(keys_.size(), first + page_size_);
  const int64_t *pos = keys_.positions();
  int64_t pmin = INT64_MAX, pmax = INT64_MIN;
  for (int64_t s = first; s < last; ++s) pmin = std::min(pmin, pos[s]), pmax = std::max(pmax, pos[s]);
  page_min_pos_[size_t(page)] = pmin;
  page_max_pos_[size_t(page)] = pmax;
}

void PageSelector::refresh_pages(const int64_t *pages, int64_t n) {
  for (int64_t i = 0; i < n; ++i) refresh_positions(pages[i]);
  if (keys_.has_rows()) {
    const NativeRows rows(keys_);
    for (int64_t i = 0; i < n; ++i) refresh_bounds(pages[i], rows);
    return;
  }
  // Borrowed keys: the bounds wait for the host's keys of the next selection.
  stale_pages_.insert(stale_pages_.end(), pages, pages + n);
  stale_.set_pending();
}

void PageSelector::refresh_stale(const sa_context &ctx, const NativeRows &rows) {
  std::sort(stale_pages_.begin(), stale_pages_.end());
  stale_pages_.erase(std::unique(stale_pages_.begin(), stale_pages_.end()), stale_pages_.end());
  const int64_t n_pages = pages();
  while (!stale_pages_.empty() && stale_pages_.back() >= n_pages) stale_pages_.pop_back();
  parallel_for(ctx.threads, int64_t(stale_pages_.size()), [&](int64_t i) { refresh_bounds(stale_pages_[size_t(i)], rows); });
  stale_pages_.clear();
  if (stale_pages_.capacity() > 1024) stale_pages_.shrink_to_fit();  // after a prompt: decode needs few
}

void PageSelector::append(const TensorView &keys) {
  const int64_t old_size = keys_.size();
  keys_.append(keys);
  if (keys_.size() == old_size) return;
  resize_pages();
  std::vector<int64_t> touched;  // the old last page may grow
  for (int64_t p = old_size / page_size_; p < pages(); ++p) touched.push_back(p);
  refresh_pages(touched.data(), int64_t(touched.size()));
}

void PageSelector::resize_pages() {
  const int64_t n_pages = pages();
  for (int h = 0; h < keys_.heads(); ++h) {
    centres_[size_t(h)].resize(size_t(n_pages) * keys_.row_bytes() * (joint_ ? 2 : 1));
    if (!joint_) radii_[size_t(h)].resize(size_t(n_pages) * keys_.row_bytes());
  }
  page_min_pos_.resize(size_t(n_pages));
  page_max_pos_.resize(size_t(n_pages));
}

void PageSelector::truncate(int64_t keep) {
  if (keep >= keys_.size()) return;
  keys_.truncate(keep);
  resize_pages();
  // A last page left partial gets the bounds of the slots it keeps, as an append that stopped
  // there would have left it.
  if (keep % page_size_ != 0) {
    const int64_t last = keep / page_size_;
    refresh_pages(&last, 1);
  }
}

void PageSelector::update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) {
  keys_.update(slots, n, keys, positions);
  std::vector<int64_t> touched;
  touched.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) touched.push_back(slots[i] / page_size_);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  refresh_pages(touched.data(), int64_t(touched.size()));
}

size_t PageSelector::memory_bytes() const {
  size_t bytes = keys_.memory_bytes() + (page_min_pos_.capacity() + page_max_pos_.capacity()) * sizeof(int64_t) +
                 stale_pages_.capacity() * sizeof(int64_t);
  for (const auto &c : centres_) bytes += c.capacity();
  for (const auto &r : radii_) bytes += r.capacity();
  return bytes + (centres_.capacity() + radii_.capacity()) * sizeof(std::vector<char>);
}

void PageSelector::select(const sa_context &ctx, const SelectRequest &req) const {
  const int64_t n_q = req.queries.shape[0], D = keys_.dim(), P = page_size_;
  // Borrowed keys: bounds of pages appended or refilled since the last selection, first.
  stale_.run_if_pending([&] { const_cast<PageSelector *>(this)->refresh_stale(ctx, host_rows(req, D)); });
  // A prompt over a short index: exactly (whole pages without refine keep their own path).
  if (refine_ && prefill_selects_exactly(req, keys_.size())) return select_exactly(ctx, req, keys_);
  const int64_t lists = selection_list_count(req, keys_.heads()), n_pages = pages();
  parallel_for(ctx.threads, n_q * lists, [&](int64_t task) {
    // Per OS thread and kept between calls: no allocation (nor page faults) per selection,
    // and safe under concurrent calls.
    static thread_local PageScratch s;
    RescoreScratch &rs = s.rescore;
    const int64_t i = task / lists;
    const SelectionList l = selection_list(req, keys_.heads(), task % lists);
    const int64_t G = l.q_heads, qpos = req.positions[size_t(i)];
    // Keys the budget is for: positions in [sinks, qpos - window] (the rest are forced or unseen).
    const int64_t use_lo = req.sinks, use_hi = qpos - req.window;
    rs.candidates.clear();
    s.order.clear();
    if (n_pages > 0 && use_lo <= use_hi) {
      rs.queries.resize(size_t(G * D));
      load_list_queries(req, i, l, rs.queries.data());
      s.bound.resize(size_t(G * n_pages));
      const int kv = int(l.kv_head);
      if (joint_) {  // rows [centre | radius] against [q | |q|]: the bound in one pass
        s.q_joint.resize(size_t(G * 2 * D));
        for (int64_t g = 0; g < G; ++g)
          for (int64_t d = 0; d < D; ++d) {
            s.q_joint[size_t(g * 2 * D + d)] = rs.queries[size_t(g * D + d)];
            s.q_joint[size_t(g * 2 * D + D + d)] = std::fabs(rs.queries[size_t(g * D + d)]);
          }
        score_rows_grouped(ctx.kernels->of(keys_.dtype()), s.q_joint.data(), G, 2 * D, centres_[size_t(kv)].data(), n_pages,
                           s.bound.data(), n_pages);
      } else {
        s.q_joint.resize(size_t(G * D));
        for (size_t e = 0; e < s.q_joint.size(); ++e) s.q_joint[e] = std::fabs(rs.queries[e]);
        s.radius_dot.resize(size_t(G * n_pages));
        score_rows_grouped(ctx.kernels->of(keys_.dtype()), rs.queries.data(), G, D, centres_[size_t(kv)].data(), n_pages,
                           s.bound.data(), n_pages);
        score_rows_grouped(ctx.kernels->of(keys_.dtype()), s.q_joint.data(), G, D, radii_[size_t(kv)].data(), n_pages,
                           s.radius_dot.data(), n_pages);
        for (size_t e = 0; e < s.bound.size(); ++e) s.bound[e] += s.radius_dot[e];
      }
      // Bounds per head (base-2 logits), -inf for pages without a usable position; the group's
      // pages are scored by the summed bound probabilities, each head's best page counting 1.
      s.unusable.resize(size_t(n_pages));
      for (int64_t p = 0; p < n_pages; ++p)
        s.unusable[size_t(p)] = page_min_pos_[size_t(p)] <= use_hi && page_max_pos_[size_t(p)] >= use_lo
                                    ? 0.f : -std::numeric_limits<float>::infinity();
      for (int64_t g = 0; g < G; ++g) {
        float *b = &s.bound[size_t(g * n_pages)];
        for (int64_t p = 0; p < n_pages; ++p) b[p] += s.unusable[size_t(p)];
      }
      const float *score = s.bound.data();
      if (G > 1) {
        s.page_score.assign(size_t(n_pages), 0.f);
        for (int64_t g = 0; g < G; ++g) {
          const float *b = &s.bound[size_t(g * n_pages)];
          const float m = ctx.kernels->max_of(b, n_pages);
          if (m != -std::numeric_limits<float>::infinity()) ctx.kernels->exp2_accumulate(b, n_pages, m, s.page_score.data());
        }
        score = s.page_score.data();
      }
      for (int64_t p = 0; p < n_pages; ++p)
        if (s.unusable[size_t(p)] == 0.f) s.order.push_back({-score[p], int32_t(p)});
    }
    auto add_page = [&](int32_t p) {
      for (int64_t slot = p * P, end = std::min(keys_.size(), slot + P); slot < end; ++slot) rs.candidates.push_back(int32_t(slot));
    };
    if (refine_) {
      // The best `want` pages (ties to the lower page), found by the threshold score and
      // collected in page order, so the candidates come ascending and in runs.
      const size_t want = size_t(std::min<int64_t>(int64_t(s.order.size()), (req.top_k + kRefineReserveKeys + P - 1) / P));
      float threshold = -std::numeric_limits<float>::infinity();
      size_t ties = want;
      if (want > 0 && want < s.order.size()) {
        // The want-th largest score: a min-heap of the best want so far (most pages fail the
        // first comparison, so this beats nth_element over every page).
        s.top.clear();
        for (const auto &o : s.order) {
          const float score = -o.first;
          if (s.top.size() < want) {
            s.top.push_back(score);
            std::push_heap(s.top.begin(), s.top.end(), std::greater<float>());
          } else if (score > s.top.front()) {
            std::pop_heap(s.top.begin(), s.top.end(), std::greater<float>());
            s.top.back() = score;
            std::push_heap(s.top.begin(), s.top.end(), std::greater<float>());
          }
        }
        threshold = s.top.front();
        ties = want;
        for (const auto &o : s.order) ties -= -o.first > threshold;
      }
      for (const auto &o : s.order) {
        const float score = -o.first;
        bool take = score > threshold;
        if (!take && score == threshold && ties > 0) {
          take = true;
          --ties;
        }
        if (take) add_page(o.second);
      }
      rescore_candidates(ctx, keys_, req, i, l, rs);
      return;
    }
    // Without refine: whole pages in bound order until top_k usable keys are taken.
    const QueryVisibility visible = query_visibility(req, i);
    const KeepRule rule = keep_rule(req, i);
    const int64_t *pos = keys_.positions();
    rs.ranked.clear();
    size_t sorted = 0;
    for (size_t k = 0; k < s.order.size() && int64_t(rs.ranked.size()) < req.top_k; ++k) {
      if (k == sorted) {  // sort the next stretch of pages only when needed
        sorted = std::min(s.order.size(), std::max<size_t>(2 * k, size_t(2 * req.top_k / P + 8)));
        std::partial_sort(s.order.begin() + long(k), s.order.begin() + long(sorted), s.order.end());
      }
      const int32_t p = s.order[k].second;
      for (int64_t slot = int64_t(p) * P, end = std::min(keys_.size(), slot + P); slot < end && int64_t(rs.ranked.size()) < req.top_k; ++slot)
        if (visible(int32_t(slot), pos[slot]) && !always_kept(pos[slot], rule)) {
          rs.ranked.push_back({-float(rs.ranked.size()), int32_t(slot)});
          rs.candidates.push_back(int32_t(slot));
        }
    }
    if (req.mass_target > 0.f) rescore_candidates(ctx, keys_, req, i, l, rs);  // masses need exact scores
    else write_ranked_candidates(keys_, req, i, l, rs);
  });
}

}  // namespace sa
