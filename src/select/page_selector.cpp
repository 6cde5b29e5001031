#include "select/page_selector.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/countdown.hpp"
#include "core/phase_times.hpp"
#include "core/ready_flags.hpp"
#include "core/threading.hpp"
#include "select/block_rescore.hpp"
#include "select/candidate_rescore.hpp"
#include "select/chunk_digest.hpp"
#include "select/kth_largest.hpp"
#include "select/order_key.hpp"
#include "select/page_bounds.hpp"

namespace sa {
namespace {

// With refine, the candidate pages hold top_k + this many keys. The Quest bound is loose (its
// radius term grows with the head dimension), so the pages that really hold the top keys rank
// among many spread-out ones; on tinylm-qkv (layers 1-7, K=128) a reserve of 1024 keys left
// layer 5 2.4% short of the exact mass, 2048 brings every layer within 0.6% (there, with 4K
// keys, that rescored about 60% of them). A fixed reserve rather than a multiple of top_k keeps
// large budgets cheap: K=2048 at 128K keys rescores 4096 (3%).
constexpr int64_t kRefineReserveKeys = 2048;

// In a call of many queries (prefill), with refine, a query that sees at most this many times
// its candidate keys (top_k + kRefineReserveKeys) is scored exactly, by the exact selector's
// path (block_rescore.hpp: VisibleCounts); one query a call (decode) always bounds pages.
// Below that, bounding the pages and rescoring half of the keys or more costs more than
// scoring them all by GEMM. Measured (bench_select select/{exact,page}/prefill256_k{128,2048}:
// 256 queries at the last positions of n random f16 keys, H_kv 8, one thread, CPU time, one
// run, load 8 on 2 cores): K = 128 (2176 candidates): exact 411 / 569 / 915 ms at 6K / 8K /
// 12K keys, page 315 / 298 / 395; K = 2048 (4096): exact 1071 / 1264 / 2037 at 12K / 16K /
// 24K, page 1122 / 886 / 1127. Bounding below the cut (before it, loaded): K = 128 at 4K keys
// 392 ms against exact's 335, and a 4K prompt (select/page/prefill4k_k128) 1.7x exact's time.
constexpr int64_t kPrefillExactFactor = 2;

// A prefill's per-list state at once (see select()): 32 MB holds 1024 queries' bounds over 4K
// keys (8 KV heads of 4 query heads), reused from chunk to chunk; a chunk has at least
// kBlockRescoreQueries queries, so that its parallel loops are few. Measured (bench_select
// select/page*/prefill4k_k128, 1 thread, loaded): the whole call's 134 MB of bounds without
// refine cost 1.3x chunks of 256 queries (first touch), and chunks of 256 with refine 0.5x the
// whole call's 2.6 GB.
constexpr int64_t kPrefillChunkBytes = int64_t(32) << 20;

// Bound rows up to this width are one kernel pass over [centre | radius]: every head dimension
// the CUDA plugin takes (up to 256), so that both compute page_code::page_bound's bits (two
// passes add s dot_c + s dot_r in f32, another rounding: 40% of bounds differ at D 256).
// Wider rows (D > 256, CPU only) are scored as two rows of D.
constexpr int64_t kJointRowMax = 512;

// Bound scoring is split into tasks of this many pages (per query and list), so one decode
// step uses every thread, not one per KV head: 512 pages are 256 KB of f16 bound rows at D 128.
constexpr int64_t kChunkPages = 512;
// Refinement scores are split into tasks of this many candidate columns per list: a decode
// step's 8 lists of 4164 columns (K = 2048) are 72 tasks, enough for 16 threads.
constexpr int64_t kRescoreColumns = 512;

}  // namespace

// One selection's buffers, kept by the selector between calls (ScratchPool).
struct PageSelectScratch {
  // One (query, list) of a selection, carried between the steps of select().
  struct ListState {
    SelectionList list;
    int64_t query = 0;
    int64_t use_lo = 0, use_hi = -1;  // positions the budget is for
    // Each page's smallest and largest position in the list's KV head (page_min_pos_ row).
    const int64_t *page_min_pos = nullptr, *page_max_pos = nullptr;
    // The first and last page holding a usable position (none: first > last); only those are
    // bounded. bounded: whether bounds are needed at all (with refine, not when every usable
    // page is a candidate anyway: a prefill's first queries, which see few pages).
    int64_t first_page = 0, last_page = -1;
    bool bounded = false;
    RescoreScratch rescore;           // queries, candidates, columns and their scores
    // With refine: pages scoring above `threshold` are candidates, and of those equal to it
    // the first chunk_ties[c] of chunk c (ties go to the lower page).
    float threshold = 0.f;
    std::vector<int64_t> chunk_ties;
    std::vector<int16_t> q_codes;     // [q | |q|] per head as codes (page_bounds.hpp)
    std::vector<float> q_scale;       // per head
  };

  // A task's own buffers (its slot of the call's scratch).
  struct TaskScratch {
    std::vector<float> query_row;        // [q | |q|] of one head, for its codes
    std::vector<float> radius_dot, top;  // top: usable pages' scores in page order
    std::vector<int64_t> chunk_start;    // where each chunk's pages start in top
    std::vector<uint32_t> keys;          // kth_largest's (ChunkDigest::kth_largest's)
    std::vector<int16_t> codes;  // half of a list's query codes (bounds in two passes)
    std::vector<std::pair<float, int32_t>> order;  // (-score, page): ascending = best first
    RescoreTaskScratch rescore;
  };

  std::vector<ListState> state;    // per (query, list)
  std::vector<TaskScratch> tasks;  // per task slot
  // bound[(list * G + g) * n_pages + p]: head g's bound of page p (base-2 logit), -inf when
  // the page holds no usable position; chunk_max[(list * chunks + c) * G + g] its chunk maxima.
  std::vector<float> bound, chunk_max, head_max;
  std::vector<std::pair<int64_t, int64_t>> ranges;  // rescoring tasks: (list, first column)
  std::vector<std::vector<int32_t>> pieces;         // per (list, chunk): its candidate slots
  std::vector<ChunkDigest> digests;  // a decode step's, with refine: per (list, chunk), its scores
  Countdown lists_left;  // a decode step's lists: tasks left before the list's own step
  Countdown stage_left[4];  // a decode step with refine (one loop): per stage and list
  ReadyFlags ready;         // and which lists have finished which stage
};

PageSelector::~PageSelector() = default;

std::unique_ptr<Selector> PageSelector::clone() const { return std::make_unique<PageSelector>(*this); }

PageSelector::PageSelector(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, int page_size, bool refine,
                           bool borrow)
    : keys_(heads, dim, dtype, capacity_hint, !borrow), page_size_(page_size), refine_(refine),
      joint_(2 * int64_t(dim) <= kJointRowMax), centres_(size_t(heads)), radii_(size_t(heads)),
      scales_(size_t(heads)), magnitudes_(size_t(heads)) {}

void PageSelector::refresh_bounds(int64_t page, const NativeRows &rows) {
  const int64_t first = page * page_size_, last = std::min(keys_.size(), first + page_size_);
  const int64_t D = keys_.dim();
  const sa_dtype dt = keys_.dtype();
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
    int8_t *c = centres_[size_t(h)].data() + size_t(page * D) * (joint_ ? 2 : 1);
    int8_t *r = joint_ ? c + D : radii_[size_t(h)].data() + size_t(page * D);
    quantize_page_bound(lo.data(), hi.data(), D, c, r, &scales_[size_t(h)][size_t(page)],
                        &magnitudes_[size_t(h)][size_t(page)]);
  }
}

void PageSelector::refresh_positions(int64_t page) {
  const int64_t first = page * page_size_, last = std::min(keys_.size(), first + page_size_);
  for (size_t r = 0; r < page_min_pos_.size(); ++r) {
    const int64_t *pos = keys_.positions(int64_t(r));
    int64_t pmin = INT64_MAX, pmax = INT64_MIN;
    for (int64_t s = first; s < last; ++s) pmin = std::min(pmin, pos[s]), pmax = std::max(pmax, pos[s]);
    page_min_pos_[r][size_t(page)] = pmin;
    page_max_pos_[r][size_t(page)] = pmax;
  }
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
    centres_[size_t(h)].resize(size_t(n_pages * keys_.dim()) * (joint_ ? 2 : 1));
    if (!joint_) radii_[size_t(h)].resize(size_t(n_pages * keys_.dim()));
    scales_[size_t(h)].resize(size_t(n_pages));
    magnitudes_[size_t(h)].resize(size_t(n_pages));
  }
  // Heads that start keeping their own tokens start from the shared ranges (update_heads then
  // refreshes the pages it touched).
  const size_t rows = keys_.per_head() ? size_t(keys_.heads()) : 1;
  if (page_min_pos_.size() < rows) {
    page_min_pos_.resize(rows, page_min_pos_.empty() ? std::vector<int64_t>() : page_min_pos_[0]);
    page_max_pos_.resize(rows, page_max_pos_.empty() ? std::vector<int64_t>() : page_max_pos_[0]);
  }
  for (size_t r = 0; r < rows; ++r) {
    page_min_pos_[r].resize(size_t(n_pages));
    page_max_pos_[r].resize(size_t(n_pages));
  }
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
  refresh_slot_pages(slots, n);
}

void PageSelector::update_heads(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) {
  keys_.update_heads(slots, n, keys, positions);
  resize_pages();  // position ranges per head from now on
  refresh_slot_pages(slots, n * keys_.heads());  // each page's bounds are recomputed for every head
}

void PageSelector::refresh_slot_pages(const int32_t *slots, int64_t n) {
  std::vector<int64_t> touched;
  touched.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) touched.push_back(slots[i] / page_size_);
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  refresh_pages(touched.data(), int64_t(touched.size()));
}

size_t PageSelector::memory_bytes() const {
  size_t bytes = keys_.memory_bytes() + (page_min_pos_.capacity() + page_max_pos_.capacity()) * sizeof(std::vector<int64_t>) +
                 stale_pages_.capacity() * sizeof(int64_t);
  for (size_t r = 0; r < page_min_pos_.size(); ++r)
    bytes += (page_min_pos_[r].capacity() + page_max_pos_[r].capacity()) * sizeof(int64_t);
  for (const auto &c : centres_) bytes += c.capacity();
  for (const auto &r : radii_) bytes += r.capacity();
  for (const auto &s : scales_) bytes += s.capacity() * sizeof(float);
  for (const auto &m : magnitudes_) bytes += m.capacity() * sizeof(float);
  return bytes + (centres_.capacity() + radii_.capacity()) * sizeof(std::vector<int8_t>) +
         (scales_.capacity() + magnitudes_.capacity()) * sizeof(std::vector<float>);
}

void PageSelector::select(const sa_context &ctx, const SelectRequest &req) const {
  // Borrowed keys: bounds of pages appended or refilled since the last selection, first.
  stale_.run_if_pending([&] { const_cast<PageSelector *>(this)->refresh_stale(ctx, host_rows(req, keys_.dim())); });
  const int64_t n_q = req.queries.shape[0];
  if (n_q < kBlockRescoreMinQueries) return select_queries(ctx, req, false);
  // Prefill with refine: the queries that see few keys are scored exactly (kPrefillExactFactor).
  if (refine_) {
    const VisibleCounts visible(keys_, req);
    const int64_t exact_below = kPrefillExactFactor * (int64_t(req.top_k) + kRefineReserveKeys);
    return visible.select_exactly_within(ctx, exact_below, [&](const SelectRequest &run) { select_prefill(ctx, run); });
  }
  select_prefill(ctx, req);
}

void PageSelector::select_prefill(const sa_context &ctx, const SelectRequest &req) const {
  // In chunks of queries whose per-list state (every page's bound per query head, and
  // with exact scores the candidates' columns and scores) fits kPrefillChunkBytes, or of
  // kBlockRescoreQueries queries: for the whole call it was 2.6 GB at 4096 queries over 4096
  // keys (K = 128, 8 KV heads), 4 GB of bounds alone over 128K keys.
  const int64_t n_q = req.queries.shape[0];
  const bool exact_scores = refine_ || req.mass_target > 0.f;
  const int64_t lists = selection_list_count(req, keys_.heads());
  const int64_t G = req.queries.shape[1] / lists;
  const int64_t columns = exact_scores ? std::min<int64_t>(keys_.size(), req.top_k + kRefineReserveKeys) + req.window + req.sinks : 0;
  const int64_t list_bytes = int64_t(sizeof(float)) * (G * pages() + (G + 4) * columns) + 1;
  const int64_t chunk = std::min(n_q, std::max(kBlockRescoreQueries, kPrefillChunkBytes / (lists * list_bytes)));
  for (int64_t i0 = 0; i0 < n_q; i0 += chunk)
    select_queries(ctx, chunk < n_q ? query_chunk(req, i0, std::min(n_q, i0 + chunk)) : req, true);
}

void PageSelector::select_queries(const sa_context &ctx, const SelectRequest &req, bool prefill) const {
  using ListState = PageSelectScratch::ListState;
  using TaskScratch = PageSelectScratch::TaskScratch;
  const int64_t n_q = req.queries.shape[0], D = keys_.dim(), P = page_size_;
  const int64_t lists = selection_list_count(req, keys_.heads()), n_pages = pages();
  const int64_t n_lists = n_q * lists;
  const int64_t G = selection_list(req, keys_.heads(), 0).q_heads;
  const int64_t chunks = std::max<int64_t>(1, (n_pages + kChunkPages - 1) / kChunkPages);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  // The call's scratch (lent by scratch_ for the call): per list, per task slot, and the
  // bounds of every list. Step 1 writes every entry of bound that later steps read.
  SA_PHASE_START(phase);
  const auto lease = scratch_.take();
  PageSelectScratch &call = *lease;
  std::vector<ListState> &state = call.state;
  state.resize(size_t(n_lists));
  const int slots = loop_slots(ctx.threads, std::max(n_lists * chunks, n_lists));
  std::vector<TaskScratch> &scratch = call.tasks;
  if (scratch.size() < size_t(slots)) scratch.resize(size_t(slots));
  std::vector<float> &bound = call.bound, &chunk_max = call.chunk_max;
  bound.resize(size_t(n_lists * G * n_pages));
  chunk_max.assign(size_t(n_lists * chunks * G), kNegInf);
  const int64_t refine_pages = (req.top_k + kRefineReserveKeys + P - 1) / P;  // candidate pages with refine
  auto usable = [&](const ListState &ls, int64_t p) {
    return ls.page_min_pos[p] <= ls.use_hi && ls.page_max_pos[p] >= ls.use_lo;
  };
  // Each list's usable pages and query codes, over lists: serially they were 50-70 us of a
  // decode step that took 1.3 ms on 16 threads (page_step 128K, 8 lists, phase timing, Xeon).
  // A decode step with refine runs its steps as one loop of stages (`if (pipelined)` below);
  // the other calls (prefill, decode without refine) run a parallel loop per step.
  const bool pipelined = refine_ && !prefill;
  auto setup_list = [&](int64_t t, int slot) {
    ListState &ls = state[size_t(t)];
    ls.query = t / lists;
    ls.list = selection_list(req, keys_.heads(), t % lists);
    ls.first_page = 0;
    ls.last_page = -1;
    ls.bounded = false;
    // Keys the budget is for: positions in [sinks, qpos - window] (the rest are forced or unseen).
    const PositionRange scored = scored_positions(req.positions[size_t(ls.query)], req.window, req.sinks);
    ls.use_lo = scored.lo;
    ls.use_hi = scored.hi;
    if (n_pages == 0 || ls.use_lo > ls.use_hi) return;
    const size_t row = page_min_pos_.size() > 1 ? size_t(ls.list.kv_head) : 0;
    ls.page_min_pos = page_min_pos_[row].data();
    ls.page_max_pos = page_max_pos_[row].data();
    int64_t first = 0, last = n_pages - 1;
    while (first < n_pages && !usable(ls, first)) ++first;
    while (last >= first && !usable(ls, last)) --last;
    ls.first_page = first;
    ls.last_page = last;
    ls.bounded = last >= first && (!refine_ || last - first + 1 > refine_pages);
    if (!ls.bounded) return;  // no query codes needed
    std::vector<float> &q = ls.rescore.queries, &x = scratch[size_t(slot)].query_row;
    x.resize(size_t(2 * D));
    q.resize(size_t(G * D));
    load_list_queries(req, ls.query, ls.list, q.data());
    ls.q_codes.resize(size_t(G * 2 * D));
    ls.q_scale.resize(size_t(G));
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t d = 0; d < D; ++d) {
        x[size_t(d)] = q[size_t(g * D + d)];
        x[size_t(D + d)] = std::fabs(q[size_t(g * D + d)]);
      }
      quantize_query(x.data(), 2 * D, &ls.q_codes[size_t(g * 2 * D)], &ls.q_scale[size_t(g)]);
    }
  };
  if (!pipelined) parallel_for_slots(slots, n_lists, setup_list);
  SA_PHASE_LAP(phase, 0, "setup");
  // A decode step with refine ranks its pages by a threshold found from each chunk's digest
  // (chunk_digest.hpp), built by the task that finishes the chunk's scores: the list's own
  // serial part is then a walk over 16 digests, not a pass over its 8192 pages.
  std::vector<ChunkDigest> &digests = call.digests;
  if (pipelined && digests.size() < size_t(n_lists * chunks)) digests.resize(size_t(n_lists * chunks));
  auto digest_chunk = [&](int64_t t, int64_t c) {
    const ListState &ls = state[size_t(t)];
    ChunkDigest &d = digests[size_t(t * chunks + c)];
    const int64_t p0 = std::max(c * kChunkPages, ls.first_page), p1 = std::min((c + 1) * kChunkPages, ls.last_page + 1);
    if (!ls.bounded || p1 <= p0) return d.clear();
    const float *score = bound.data() + t * G * n_pages + p0;
    d.build(score, p1 - p0, [&](int64_t j) { return usable(ls, p0 + j); });
  };
  // 1. Bounds, over (list, chunk of pages): q . centre + |q| . radius per head, from the codes.
  auto bound_chunk = [&](int64_t task, int slot) {
    const int64_t t = task / chunks, c = task % chunks;
    const ListState &ls = state[size_t(t)];
    if (!ls.bounded) return;
    const int64_t p0 = std::max(c * kChunkPages, ls.first_page);
    const int64_t np = std::min({n_pages, (c + 1) * kChunkPages, ls.last_page + 1}) - p0;
    if (np <= 0) return;  // chunk_max stays -inf
    const int kv = int(ls.list.kv_head);
    const float *scale = scales_[size_t(kv)].data() + p0, *mag = magnitudes_[size_t(kv)].data() + p0;
    float *b = bound.data() + t * G * n_pages + p0;
    if (joint_) {  // rows [centre | radius] against [q | |q|]: the bound in one pass
      score_page_bounds(*ctx.kernels, ls.q_codes.data(), ls.q_scale.data(), G, 2 * D,
                        centres_[size_t(kv)].data() + p0 * 2 * D, scale, mag, np, b, n_pages);
    } else {  // rows of D centre codes against the q codes, then radius codes against the |q| codes
      std::vector<float> &rd = scratch[size_t(slot)].radius_dot;
      std::vector<int16_t> &half = scratch[size_t(slot)].codes;
      rd.resize(size_t(G * np));
      half.resize(size_t(G * D));
      for (int part = 0; part < 2; ++part) {
        for (int64_t g = 0; g < G; ++g)
          std::copy_n(&ls.q_codes[size_t(g * 2 * D + part * D)], D, &half[size_t(g * D)]);
        const int8_t *rows = (part == 0 ? centres_ : radii_)[size_t(kv)].data() + p0 * D;
        score_codes_grouped(*ctx.kernels, half.data(), G, D, rows, scale, np, part == 0 ? b : rd.data(),
                            part == 0 ? n_pages : np);
      }
      for (int64_t g = 0; g < G; ++g) {
        const float qs = ls.q_scale[size_t(g)];
        for (int64_t p = 0; p < np; ++p)
          b[g * n_pages + p] = page_code::coded_bound(b[g * n_pages + p] + rd[size_t(g * np + p)], mag[p], qs);
      }
    }
    for (int64_t p = 0; p < np; ++p)
      if (!usable(ls, p0 + p))
        for (int64_t g = 0; g < G; ++g) b[g * n_pages + p] = kNegInf;
    for (int64_t g = 0; g < G; ++g)
      chunk_max[size_t((t * chunks + c) * G + g)] = ctx.kernels->max_of(b + g * n_pages, np);
  };
  if (!pipelined) parallel_for_slots(slots, n_lists * chunks, bound_chunk);

  SA_PHASE_LAP(phase, 1, "bounds");
  // 3. (defined first: in a decode step, step 2's tasks run it) Per list: the best pages;
  // without refine, whole pages fill the budget and the list is done.
  // Candidates to score exactly are planned for step 4 (a decode step: its few lists split
  // over tasks), or in a prefill scored and ranked in the list's own task (rescore_candidates):
  // its many lists keep every thread busy, and each list's scores stay in cache from scoring
  // to ranking. Page candidates come in runs of a page, which the per-list kernels read
  // faster than a GEMM over every key they lie among (block_rescore.hpp; there dense from a
  // quarter of the keys on): 0.65x its time at 12K and 16K keys, K = 2048.
  const NativeRows rows = native_rows(keys_, req);
  auto rescore = [&](ListState &ls) {
    if (prefill) rescore_candidates(ctx, keys_, rows, req, ls.query, ls.list, ls.rescore);
    else plan_rescore(keys_, req, ls.query, ls.list, ls.rescore);
  };
  // With refine: appends the candidate slots of chunk c's chosen pages to out, ascending (the
  // slots a list may score: visible, neither sink nor window).
  auto collect_chunk = [&](const ListState &ls, int64_t c, std::vector<int32_t> &out) {
    const float *score = bound.data() + (&ls - state.data()) * G * n_pages;
    const QueryVisibility visible = query_visibility(req, ls.query);
    const KeepRule rule = keep_rule(req, ls.query);
    const int64_t *pos = keys_.positions(ls.list.kv_head);
    int64_t ties = ls.chunk_ties[size_t(c)];
    const int64_t p1 = std::min((c + 1) * kChunkPages, ls.last_page + 1);
    for (int64_t p = std::max(c * kChunkPages, ls.first_page); p < p1; ++p) {
      if (!usable(ls, p)) continue;
      bool take = score[p] > ls.threshold;
      if (!take && score[p] == ls.threshold && ties > 0) {
        take = true;
        --ties;
      }
      if (!take) continue;
      const int64_t first = p * P, end = std::min(keys_.size(), first + P);
      // A page whose positions all lie in [use_lo, use_hi] (sinks <= pos <= qpos - window)
      // holds only such slots, but for segments: no position to read (most pages).
      if (!visible.key_segments && ls.page_min_pos[p] >= ls.use_lo && ls.page_max_pos[p] <= ls.use_hi) {
        for (int64_t slot = first; slot < end; ++slot) out.push_back(int32_t(slot));
        continue;
      }
      for (int64_t slot = first; slot < end; ++slot)
        if (visible(int32_t(slot), pos[slot]) && !always_kept(pos[slot], rule)) out.push_back(int32_t(slot));
    }
  };
  // A decode step's threshold and ties from its chunks' digests: what rank_list's pass over
  // every usable page finds in a prefill (the same pages are taken).
  auto threshold_from_digests = [&](ListState &ls, const ChunkDigest *d, std::vector<uint32_t> &keys) {
    int64_t n_usable = 0, n_keys = 0;  // n_keys: the usable pages but NaNs
    for (int64_t c = 0; c < chunks; ++c) n_usable += d[c].kept(), n_keys += d[c].count();
    const int64_t want = std::min<int64_t>(n_usable, refine_pages);
    ls.chunk_ties.resize(size_t(chunks));
    if (want == 0 || want == n_usable) {  // every usable page is taken (ties to -inf too)
      ls.threshold = kNegInf;
      std::fill(ls.chunk_ties.begin(), ls.chunk_ties.end(), n_usable);
      return;
    }
    const uint32_t key = n_keys < want ? order_key(kNegInf) : ChunkDigest::kth_largest(d, chunks, size_t(want), keys);
    ls.threshold = key_float(key);
    int64_t ties = want, equal = 0;  // ties: taken among the pages equal to the threshold
    for (int64_t c = 0; c < chunks; ++c) ties -= d[c].above(key);
    for (int64_t c = 0; c < chunks; ++c) {  // ties go to the lower pages
      ls.chunk_ties[size_t(c)] = std::max<int64_t>(0, ties - equal);
      equal += d[c].equal(key);
    }
  };
  // A prefill's lists in KV head order (the queries of a list side by side): tasks running
  // together rescore among one head's keys (4 MB at 16K keys), not every head's; 0.55x the
  // time at 16K keys, K = 128.
  auto rank_list = [&](int64_t task, int slot) {
    const int64_t t = prefill ? task % n_q * lists + task / n_q : task;
    ListState &ls = state[size_t(t)];
    TaskScratch &s = scratch[size_t(slot)];
    RescoreScratch &rs = ls.rescore;
    const int64_t i = ls.query;
    const SelectionList &l = ls.list;
    rs.candidates.clear();
    s.order.clear();
    const float *score = bound.data() + t * G * n_pages;  // no element when n_pages == 0
    // f(page) for every page with a usable position, ascending.
    auto for_usable = [&](auto &&f) {
      for (int64_t p = ls.first_page; p <= ls.last_page; ++p)
        if (usable(ls, p)) f(p);
    };
    auto add_page = [&](int64_t p) {
      for (int64_t slot = p * P, end = std::min(keys_.size(), slot + P); slot < end; ++slot) rs.candidates.push_back(int32_t(slot));
    };
    if (refine_ && !ls.bounded) {  // every usable page is a candidate
      for_usable(add_page);
      return rescore(ls);
    }
    if (refine_ && !prefill) return threshold_from_digests(ls, &digests[size_t(t * chunks)], s.keys);
    if (refine_) {
      // The best `want` pages (ties to the lower page), found by the threshold score, and the
      // ties left to each chunk of pages: a chunk's candidates are then found on their own.
      s.top.resize(size_t(n_pages));
      s.chunk_start.resize(size_t(chunks) + 1);
      int64_t n_usable = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        s.chunk_start[size_t(c)] = n_usable;
        const int64_t p1 = std::min((c + 1) * kChunkPages, ls.last_page + 1);
        for (int64_t p = std::max(c * kChunkPages, ls.first_page); p < p1; ++p) {  // branch-free
          s.top[size_t(n_usable)] = score[p];
          n_usable += usable(ls, p);
        }
      }
      s.chunk_start[size_t(chunks)] = n_usable;
      const int64_t want = std::min<int64_t>(n_usable, refine_pages);
      const bool cut = want > 0 && want < n_usable;
      const float threshold = cut ? kth_largest(s.top.data(), n_usable, size_t(want), s.keys) : kNegInf;
      int64_t ties = want, equal = 0;
      ls.threshold = threshold;
      ls.chunk_ties.resize(size_t(chunks));
      for (int64_t c = 0; c < chunks; ++c) {  // chunk_ties: the ties left after earlier chunks'
        int64_t above = 0, eq = 0;
        for (int64_t j = s.chunk_start[size_t(c)]; j < s.chunk_start[size_t(c) + 1]; ++j) {
          above += s.top[size_t(j)] > threshold;
          eq += s.top[size_t(j)] == threshold;
        }
        if (cut) ties -= above;
        ls.chunk_ties[size_t(c)] = equal;  // for now: the equal pages before the chunk
        equal += eq;
      }
      for (int64_t &t : ls.chunk_ties) t = std::max<int64_t>(0, ties - t);
      for (int64_t c = 0; c < chunks; ++c) collect_chunk(ls, c, rs.candidates);
      return rescore(ls);
    }
    // Without refine: pages by bound, sorted in stretches as they are needed.
    s.order.resize(size_t(n_pages));
    size_t n_order = 0;  // fields stored one by one: a pushed pair went through the stack
    for_usable([&](int64_t p) {
      s.order[n_order].first = -score[p];
      s.order[n_order++].second = int32_t(p);
    });
    s.order.resize(n_order);
    // Without refine: whole pages in bound order until top_k usable keys are taken.
    const QueryVisibility visible = query_visibility(req, i);
    const KeepRule rule = keep_rule(req, i);
    const int64_t *pos = keys_.positions(l.kv_head);
    const int64_t top_k = std::max<int64_t>(req.top_k, 0);
    rs.ranked.resize(size_t(top_k));
    int64_t taken = 0;  // ranked[0, taken): fields stored one by one, as for order
    size_t sorted = 0;
    for (size_t k = 0; k < s.order.size() && taken < top_k; ++k) {
      if (k == sorted) {  // sort the next stretch of pages only when needed
        sorted = std::min(s.order.size(), std::max<size_t>(2 * k, size_t(2 * req.top_k / P + 8)));
        // What partial_sort gives (pages are distinct: one order), without its heap: 8% of a
        // prefill's time over 256 pages.
        if (sorted < s.order.size()) std::nth_element(s.order.begin() + long(k), s.order.begin() + long(sorted), s.order.end());
        std::sort(s.order.begin() + long(k), s.order.begin() + long(sorted));
      }
      const int32_t p = s.order[k].second;
      for (int64_t slot = int64_t(p) * P, end = std::min(keys_.size(), slot + P); slot < end && taken < top_k; ++slot)
        if (visible(int32_t(slot), pos[slot]) && !always_kept(pos[slot], rule)) {
          rs.ranked[size_t(taken)].score = -float(taken);
          rs.ranked[size_t(taken++)].slot = int32_t(slot);
          rs.candidates.push_back(int32_t(slot));
        }
    }
    rs.ranked.resize(size_t(taken));
    if (req.mass_target > 0.f) rescore(ls);  // masses need exact scores
    else write_ranked_candidates(keys_, req, i, l, rs);
  };
  // 2. The group's page scores, over (list, chunk): the summed bound probabilities, each
  // head's best page counting 1 (written over head 0's bounds). In a decode step the task
  // finishing a list's last chunk ranks the list (step 3) at once: lists ranked early overlap
  // the others' chunks, and no barrier waits for the last list (8 lists, 16 threads).
  const bool rank_in_group = G > 1 && !prefill;
  Countdown &lists_left = call.lists_left;
  std::vector<float> &head_max = call.head_max;
  head_max.assign(size_t(n_lists * G), kNegInf);
  auto list_head_max = [&](int64_t t) {  // each head's best bound over the list's chunks
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t g = 0; g < G; ++g)
        head_max[size_t(t * G + g)] = std::max(head_max[size_t(t * G + g)], chunk_max[size_t((t * chunks + c) * G + g)]);
  };
  auto group_chunk = [&](int64_t t, int64_t c) {
    const ListState &ls = state[size_t(t)];
    if (!ls.bounded) return;
    const int64_t p0 = std::max(c * kChunkPages, ls.first_page);
    const int64_t np = std::min({n_pages, (c + 1) * kChunkPages, ls.last_page + 1}) - p0;
    if (np <= 0) return;
    float *b = bound.data() + t * G * n_pages;
    float acc[kChunkPages];
    std::fill(acc, acc + np, 0.f);
    for (int64_t g = 0; g < G; ++g) {
      const float m = head_max[size_t(t * G + g)];
      if (m != kNegInf) ctx.kernels->exp2_accumulate(b + g * n_pages + p0, np, m, acc);
    }
    std::copy(acc, acc + np, b + p0);
  };
  // With refine, a decode step's candidates over (list, chunk of pages), so that its few lists
  // do not leave threads idle; each list is planned from its chunks' slots (already filtered)
  // by the task collecting its last chunk (collect_piece true). Measured (page_step
  // page_select, 128K keys, K = 2048, 1 thread, CPU time of the phases, loaded): the per-list
  // part of this step 1162-1343 us before (8 lists), then 620-670 us per list (the threshold,
  // the plan) and 354-386 us over the 128 chunk tasks.
  std::vector<std::vector<int32_t>> &pieces = call.pieces;
  if (pipelined && pieces.size() < size_t(n_lists * chunks)) pieces.resize(size_t(n_lists * chunks));
  auto collect_piece = [&](int64_t t, int64_t c, Countdown &left) {
    ListState &ls = state[size_t(t)];
    std::vector<int32_t> &piece = pieces[size_t(t * chunks + c)];
    piece.clear();
    if (ls.bounded) collect_chunk(ls, c, piece);
    if (!left.finish(t)) return false;
    if (!ls.bounded) return true;  // planned by rank_list
    RescoreScratch &rs = ls.rescore;
    for (int64_t k = 0; k < chunks; ++k) {
      const std::vector<int32_t> &part = pieces[size_t(t * chunks + k)];
      rs.candidates.insert(rs.candidates.end(), part.begin(), part.end());
    }
    plan_rescore(keys_, req, ls.query, ls.list, rs, true);
    return true;
  };
  if (pipelined) {
    // Steps 0-4 of a decode step with refine as one loop of stages, in this order: setup
    // (per list), bounds, group scores (G > 1), candidates (per list and chunk of pages),
    // exact scores (per list and range of columns). Tasks are claimed in order and wait only
    // for their own list's previous stage (core/ready_flags.hpp), done by the task finishing
    // that stage's last piece of the list: no barrier between stages, so lists finished early
    // overlap the others' work, and the team is woken once a step, not five times.
    const int64_t LC = n_lists * chunks;
    // Ranges per list: enough for the most columns a list can have (refine_pages pages and
    // the forced slots); the last range takes any columns beyond (repeated positions).
    const int64_t most_columns = refine_pages * P + int64_t(req.window) + req.sinks;
    const int64_t R = std::max<int64_t>(1, (most_columns + kRescoreColumns - 1) / kRescoreColumns);
    const int64_t bounds0 = n_lists, group0 = bounds0 + LC, collect0 = group0 + (G > 1 ? LC : 0),
                  score0 = collect0 + LC, total = score0 + n_lists * R;
    Countdown *left = call.stage_left;  // bounds, group, collect, score
    for (int k = 0; k < 3; ++k) left[k].start(n_lists, [&](int64_t) { return chunks; });
    left[3].start(n_lists, [&](int64_t) { return R; });
    ReadyFlags &ready = call.ready;  // list t's stage k done: flag k * n_lists + t
    enum Stage { kSetUp = 0, kScored = 1, kRanked = 2, kPlanned = 3 };
    ready.reset(4 * n_lists);
    auto done = [&](Stage k, int64_t t) { ready.set(k * n_lists + t); };
    auto wait = [&](Stage k, int64_t t) { return ready.wait(k * n_lists + t); };
    parallel_pipeline_slots(slots, total, [&](int64_t task, int slot) {
      try {
        if (task < bounds0) {
          setup_list(task, slot);
          return done(kSetUp, task);
        }
        if (task < group0) {  // bounds; G == 1: they are the scores, ranked by the last task
          const int64_t t = (task - bounds0) / chunks, c = (task - bounds0) % chunks;
          if (!wait(kSetUp, t)) return;
          bound_chunk(task - bounds0, slot);
          if (G == 1) digest_chunk(t, c);
          if (!left[0].finish(t)) return;
          if (G == 1) {
            rank_list(t, slot);
            return done(kRanked, t);
          }
          list_head_max(t);
          return done(kScored, t);
        }
        if (task < collect0) {  // the group's scores, ranked by the last task
          const int64_t t = (task - group0) / chunks, c = (task - group0) % chunks;
          if (!wait(kScored, t)) return;
          group_chunk(t, c);
          digest_chunk(t, c);
          if (!left[1].finish(t)) return;
          rank_list(t, slot);
          return done(kRanked, t);
        }
        if (task < score0) {  // candidates, planned by the last task
          const int64_t t = (task - collect0) / chunks, c = (task - collect0) % chunks;
          if (!wait(kRanked, t)) return;
          if (collect_piece(t, c, left[2])) done(kPlanned, t);
          return;
        }
        const int64_t t = (task - score0) / R, r = (task - score0) % R;  // exact scores
        if (!wait(kPlanned, t)) return;
        ListState &ls = state[size_t(t)];
        RescoreScratch &rs = ls.rescore;
        const int64_t c0 = r * kRescoreColumns, c1 = r == R - 1 ? rs.column_count() : c0 + kRescoreColumns;
        score_rescore_columns(ctx, rows, ls.list, rs, c0, std::min(rs.column_count(), c1), scratch[size_t(slot)].rescore);
        if (left[3].finish(t)) finish_rescore(ctx, keys_, req, ls.query, ls.list, rs);
      } catch (...) {
        ready.abort();  // no task waits for this one's stage any more
        throw;
      }
    });
    SA_PHASE_LAP(phase, 4, "pipeline");
    return;
  }
  if (G > 1) {
    for (int64_t t = 0; t < n_lists; ++t) list_head_max(t);
    lists_left.start(n_lists, [&](int64_t) { return chunks; });
    parallel_for_slots(slots, n_lists * chunks, [&](int64_t task, int slot) {
      const int64_t t = task / chunks;
      group_chunk(t, task % chunks);
      if (rank_in_group && lists_left.finish(t)) rank_list(t, slot);
    });
  }
  SA_PHASE_LAP(phase, 2, "group");
  if (!rank_in_group) parallel_for_slots(slots, n_lists, rank_list);
  SA_PHASE_LAP(phase, 3, "rank");
  if (prefill || !(req.mass_target > 0.f)) return;
  // 4. Exact scores of the candidates over (list, range of columns); the task scoring a
  // list's last range ranks the list as finish_rescore does (the heads' softmax normalisers,
  // the masses, the best written), while other lists are still scored. A list of no column
  // gets one empty range, so that it is written too.
  std::vector<std::pair<int64_t, int64_t>> &ranges = call.ranges;  // (list, first column)
  ranges.clear();
  for (int64_t t = 0; t < n_lists; ++t) {
    const int64_t n = state[size_t(t)].rescore.column_count();
    for (int64_t c = 0; c < std::max<int64_t>(n, 1); c += kRescoreColumns) ranges.push_back({t, c});
  }
  lists_left.start(n_lists, [&](int64_t t) {
    return std::max<int64_t>(1, (state[size_t(t)].rescore.column_count() + kRescoreColumns - 1) / kRescoreColumns);
  });
  parallel_for_slots(slots, int64_t(ranges.size()), [&](int64_t r, int slot) {
    const int64_t t = ranges[size_t(r)].first, c0 = ranges[size_t(r)].second;
    ListState &ls = state[size_t(t)];
    RescoreScratch &rs = ls.rescore;
    score_rescore_columns(ctx, rows, ls.list, rs, c0, std::min(rs.column_count(), c0 + kRescoreColumns),
                          scratch[size_t(slot)].rescore);
    if (lists_left.finish(t)) finish_rescore(ctx, keys_, req, ls.query, ls.list, rs);
  });
  SA_PHASE_LAP(phase, 9, "score+write");
}

}  // namespace sa
