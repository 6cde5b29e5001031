#include "select/hnsw_selector.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/threading.hpp"
#include "select/block_rescore.hpp"
#include "select/candidate_rescore.hpp"

namespace sa {
namespace {

// Upper bounds that keep a graph's memory and a search's cost sane: hnswlib allocates 2M
// links per key, and ef sizes the search's heaps.
constexpr int32_t kMaxM = 512;
constexpr int32_t kMaxEf = 1 << 16;
constexpr int64_t kConvertRows = 4096;  // keys converted to f32 at a time while building

// A query that sees no more than this many times the keys it asks for is scored exactly.
constexpr int64_t kFewVisibleFactor = 2;
// The same when top_k widens the beam past ef_search and the keys are fewer than this many
// times top_k: a search's cost grows with its beam, exact scoring with the keys. Measured
// (bench/decode_select_speed --top-k 2048, tinylm keys grown one per append, 8 KV heads, one
// thread, 16-core Xeon): a 2048-wide search took 12.8, 12.7-17.4 and 14.9 ms at 32K, 64K and
// 128K keys, exact scoring 18.1, 35.3-35.9 and 67.0 ms: they cross near 12 x top_k keys.
constexpr int64_t kWideBeamExactFactor = 12;

// In a call of many queries (prefill: kBlockRescoreMinQueries or more), exact scoring runs by
// GEMM over blocks of queries (block_rescore.hpp), so a query is scored exactly up to this many
// times the keys it asks for. Measured (bench_select select/{hnsw,exact}/prefill4k_k128, 4096
// queries over their own 4096 random f16 keys, H_kv 8, K = 128, one thread, 2-core EPYC):
// the graph's lists cost about 0.4 ms each (searching every query that sees more than 2 x 256
// keys: 11.8 s), exact's 0.06 ms (all 4096 queries by GEMM: 2.0 s, 0.03 us a visible key):
// they cross near 13K visible keys, 50 x the 256 a search returns; 32 x stays on the exact
// side of it. Decode (one query a call) keeps kFewVisibleFactor: the quality gate's decode
// order searches the graph as before.
constexpr int64_t kPrefillExactFactor = 32;

// The level-0 search also starts from the query's newest keys (positions p - kSeeds + 1 .. p):
// attention's keys drift with position (RoPE), and the greedy descent from the graph's entry
// point, an early key, can end in an old region. tinylm layers 1,3,5,7 at T = 8192 in decode
// order, K = 128: mass 0.942 of exact's without seeds, 0.992 with the 64 newest keys
// (bench/hnsw_tuning quality; 16 newest: 0.991).
constexpr int64_t kSeeds = 64;

struct Scratch {
  RescoreScratch rescore;
  std::vector<float> queries;
  std::vector<int64_t> sorted_positions;
  std::vector<float> group;
  std::vector<int32_t> forced, seeds;
};

}  // namespace

void validate_hnsw_options(const sa_hnsw_options &o) {
  if (o.m < 2 || o.m > kMaxM)
    fail(SA_ERR_INVALID_ARGUMENT, "opt->hnsw.m is %d, expected 2 .. %d", int(o.m), int(kMaxM));
  if (o.ef_construction < 1 || o.ef_construction > kMaxEf)
    fail(SA_ERR_INVALID_ARGUMENT, "opt->hnsw.ef_construction is %d, expected 1 .. %d", int(o.ef_construction),
         int(kMaxEf));
  if (o.ef_search < 1 || o.ef_search > kMaxEf)
    fail(SA_ERR_INVALID_ARGUMENT, "opt->hnsw.ef_search is %d, expected 1 .. %d", int(o.ef_search), int(kMaxEf));
}

HnswGraphConfig hnsw_graph_config(const sa_hnsw_options &opt, sa_isa isa) {
  HnswGraphConfig c;
  c.m = opt.m;
  c.ef_construction = opt.ef_construction;
  c.ef_search = opt.ef_search;
  // MIPS-to-L2: an inner-product graph built one key per append leaves keys that no link
  // reaches (tinylm layer 1 head 1: 630 of 3840 at M=8; hnsw_tuning HNSW_REACH=1), the
  // sphere's metric none; and with the search seeded (kSeeds) it finds more of the top-K.
  c.metric = HnswMetric::mips_to_l2;
  c.center = true;
  c.half = true;
  c.isa = isa;
  return c;
}

HnswSelector::HnswSelector(const sa_context &ctx, const sa_index_options &opt)
    : ctx_(ctx), keys_(opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity, opt.borrow_keys == 0),
      ef_search_(opt.hnsw.ef_search) {
  config_ = hnsw_graph_config(opt.hnsw, ctx.isa);
  graphs_ = empty_graphs();
}

HnswSelector::HnswSelector(const HnswSelector &o)
    : ctx_(o.ctx_), keys_(o.keys_), config_(o.config_), ef_search_(o.ef_search_) {
  for (const auto &g : o.graphs_) graphs_.push_back(g->clone());
}

HnswSelector::Graphs HnswSelector::empty_graphs() const {
  Graphs graphs;
  for (int h = 0; h < keys_.heads(); ++h) graphs.push_back(std::make_unique<HnswGraph>(keys_.dim(), config_));
  return graphs;
}

void HnswSelector::load_rows(int h, const TensorView &keys, int64_t first_row, int64_t first, int64_t n,
                             std::vector<float> &out) const {
  const int64_t D = keys_.dim();
  out.resize(size_t(n * D));
  if (!keys_.has_rows()) {  // borrowed: the call's tensor, as the index dtype would hold it
    for (int64_t r = 0; r < n; ++r) load_tensor_row(keys, first_row + r, h, keys_.dtype(), &out[size_t(r * D)]);
    return;
  }
  for (int64_t r = 0; r < n; ++r) {
    const void *src = keys_.row(h, first + r);
    float *dst = &out[size_t(r * D)];
    switch (keys_.dtype()) {
      case SA_DTYPE_F16:
        for (int64_t d = 0; d < D; ++d) dst[d] = f16_to_f32(static_cast<const uint16_t *>(src)[d]);
        break;
      case SA_DTYPE_BF16:
        for (int64_t d = 0; d < D; ++d) dst[d] = bf16_to_f32(static_cast<const uint16_t *>(src)[d]);
        break;
      default:
        for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<const float *>(src)[d];
        break;
    }
  }
}

void HnswSelector::add_to_graphs(Graphs &graphs, const TensorView &keys, int64_t first, int64_t n) const {
  // One thread per head: a head's graph is built in slot order, the same for any thread count.
  parallel_for(ctx_.threads, keys_.heads(), [&](int64_t h) {
    std::vector<float> rows;
    for (int64_t b = 0; b < n; b += kConvertRows) {
      const int64_t m = std::min(kConvertRows, n - b);
      load_rows(int(h), keys, b, first + b, m, rows);
      graphs[size_t(h)]->add(rows.data(), keys_.dim(), m, int32_t(first + b));
    }
  });
}

void HnswSelector::append(const TensorView &keys) {
  const int64_t first = keys_.size(), n = keys.shape[0];
  keys_.append(keys);
  if (n == 0) return;
  add_to_graphs(graphs_, keys, first, n);
}

void HnswSelector::truncate(int64_t keep) {
  if (keep >= keys_.size()) return;
  // New graphs from the kept slots, append by append (the last one cut at keep); the old
  // graphs and keys stay as they were until the new graphs are complete.
  Graphs graphs = empty_graphs();
  const std::vector<int32_t> &starts = keys_.append_starts();
  for (size_t a = 0; a < starts.size() && starts[a] < keep; ++a) {
    const int64_t end = a + 1 < starts.size() ? std::min<int64_t>(starts[a + 1], keep) : keep;
    add_to_graphs(graphs, TensorView(), starts[a], end - starts[a]);  // from the index's rows
  }
  graphs_.swap(graphs);
  keys_.truncate(keep);
}

void HnswSelector::update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) {
  keys_.update(slots, n, keys, positions);
  parallel_for(ctx_.threads, keys_.heads(), [&](int64_t h) {
    std::vector<float> row;
    for (int64_t i = 0; i < n; ++i) {
      load_rows(int(h), keys, i, slots[i], 1, row);
      graphs_[size_t(h)]->replace(slots[i], row.data());
    }
  });
}

size_t HnswSelector::memory_bytes() const {
  size_t bytes = keys_.memory_bytes() + graphs_.capacity() * sizeof(graphs_[0]);
  for (const auto &g : graphs_) bytes += g->memory_bytes();
  return bytes;
}

namespace {

// Slots a search may return for one query: visible to it and not kept anyway.
struct SearchFilter {
  const int64_t *positions;
  QueryVisibility visibility;
  KeepRule rule;
  static bool accept(const void *context, int32_t slot) {
    const SearchFilter &f = *static_cast<const SearchFilter *>(context);
    const int64_t p = f.positions[slot];
    return f.visibility(slot, p) && !always_kept(p, f.rule);
  }
};

}  // namespace

void HnswSelector::select(const sa_context &ctx, const SelectRequest &req) const {
  const int64_t n_q = req.queries.shape[0], D = keys_.dim(), H = keys_.heads();
  const int64_t lists = selection_list_count(req, H);
  const int64_t *pos = keys_.positions();
  // Each search returns this many selectable keys (window, sinks and invisible keys are
  // filtered out during the search).
  const int64_t want = std::max<int64_t>(ef_search_, req.top_k);
  const VisibleCounts visible_count(keys_, req);

  // Queries that see few keys, or ask for a list too wide for the graph to win, are scored
  // exactly (visible_count); when every query of the call is, the exact selector's own path
  // does it (it streams the keys; candidate rescoring over every slot took 1.2-1.7x its time).
  const bool prefill = n_q >= kBlockRescoreMinQueries;
  const int64_t exact_below = std::max((req.top_k > ef_search_ ? kWideBeamExactFactor : kFewVisibleFactor) * want,
                                       prefill ? kPrefillExactFactor * want : 0);
  if (visible_count.select_exactly_if_all_within(ctx, exact_below)) return;

  const int slots = prefill ? block_task_slots(ctx, req, H) : loop_slots(ctx.threads, n_q * lists);
  std::vector<Scratch> scratch(static_cast<size_t>(slots));
  // The visited marks (4 bytes per key) are leased from the index for the call: clearing them
  // per call would cost more than a search at 128K keys.
  auto search_scratch = search_scratch_.lease(slots);
  // The candidates of list l of query i, into cands.
  auto propose = [&](int64_t i, const SelectionList &l, Scratch &s, int slot, std::vector<int32_t> &cands) {
    cands.clear();
    const int64_t visible = visible_count(i);
    if (visible > 0 && visible <= exact_below) {
      // Few visible keys, or many of them wanted: scoring them all is cheaper.
      keys_.slots_at_positions(0, req.positions[size_t(i)], cands);
    } else if (visible > 0) {
      const SearchFilter filter{pos, query_visibility(req, i), keep_rule(req, i)};
      const HnswFilter hf{&SearchFilter::accept, &filter};
      s.queries.resize(size_t(l.q_heads * D));
      load_list_queries(req, i, l, s.queries.data());
      // One search for the list: the sum of its query heads scaled to unit length each, so
      // every head pulls the beam towards its keys; the candidates are rescored per head.
      s.group.assign(size_t(D), 0.f);
      for (int64_t g = 0; g < l.q_heads; ++g) {
        const float *qg = &s.queries[size_t(g * D)];
        double n2 = 0;
        for (int64_t d = 0; d < D; ++d) n2 += double(qg[d]) * qg[d];
        const float w = n2 > 0 ? float(1.0 / std::sqrt(n2)) : 0.f;
        for (int64_t d = 0; d < D; ++d) s.group[size_t(d)] += w * qg[d];
      }
      s.seeds.clear();
      keys_.slots_at_positions(req.positions[size_t(i)] - kSeeds + 1, req.positions[size_t(i)], s.seeds);
      graphs_[size_t(l.kv_head)]->search(s.group.data(), size_t(want), size_t(want), hf, search_scratch[slot], cands,
                                         HnswSeeds{s.seeds.data(), s.seeds.size()});
      // A list holds min(top_k, selectable) keys: when the search reached fewer (a graph region
      // it could not leave, or most keys it met invisible or kept anyway), score them all.
      collect_forced(keys_, req, i, l.kv_head, s.forced);
      const int64_t selectable = visible - int64_t(s.forced.size());
      if (int64_t(cands.size()) < std::min<int64_t>(req.top_k, selectable)) {
        cands.clear();
        keys_.slots_at_positions(0, req.positions[size_t(i)], cands);
      }
    }
  };
  if (prefill) {  // every list's candidates by blocks of queries, then one block rescoring
    select_by_blocks(ctx, keys_, req, [&](int64_t i, const SelectionList &l, int slot, RescoreScratch &rs) {
      propose(i, l, scratch[size_t(slot)], slot, rs.candidates);
    });
    return;
  }
  parallel_for_slots(slots, n_q * lists, [&](int64_t t, int slot) {
    Scratch &s = scratch[size_t(slot)];
    const int64_t i = t / lists;
    const SelectionList l = selection_list(req, H, t % lists);
    propose(i, l, s, slot, s.rescore.candidates);
    rescore_candidates(ctx, keys_, req, i, l, s.rescore);
  });
}

}  // namespace sa
