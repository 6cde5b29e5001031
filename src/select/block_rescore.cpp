#include "select/block_rescore.hpp"

#include <algorithm>

#include "core/threading.hpp"
#include "select/dot_product_select.hpp"
#include "select/score_matmul.hpp"

namespace sa {
namespace {

// A block is scored by one GEMM over the prefix its columns reach when its lists' scores cover
// at least 1/kDenseShare of that GEMM's (rows x prefix): the GEMM scores every key of the
// prefix, the per-list path only the candidates, several times slower per score (rows gathered,
// a few query heads per pass).
constexpr int64_t kDenseShare = 4;
// The prefix is rounded up to this many slots, so that blocks share few GEMM shapes (oneDNN
// keeps a primitive per shape).
constexpr int64_t kPrefixRound = 64;
// Query rows of one GEMM (1 MB of scores per 1024 keys).
constexpr int64_t kGemmRows = 256;

}  // namespace

KeysF32::KeysF32(const NativeRows &rows, int64_t heads, int64_t n)
    : rows_(rows), n_(n), in_place_(rows.dtype() == SA_DTYPE_F32 && rows.contiguous()), copy_(size_t(heads)),
      converted_(size_t(heads), 0), mutex_(new std::mutex[size_t(heads)]) {}

const float *KeysF32::head(int h, int64_t prefix) {
  if (in_place_) return n_ > 0 ? static_cast<const float *>(rows_.row(h, 0)) : nullptr;
  const int64_t D = rows_.dim();
  std::lock_guard<std::mutex> lock(mutex_[size_t(h)]);
  std::unique_ptr<float[]> &c = copy_[size_t(h)];
  if (!c) c.reset(new float[size_t(n_ * D)]);  // pages are touched as slots are converted
  for (int64_t &j = converted_[size_t(h)]; j < std::min(prefix, n_); ++j) rows_.load(h, j, rows_.dtype(), &c[size_t(j * D)]);
  return c.get();
}

int block_task_slots(const sa_context &ctx, const SelectRequest &req, int64_t kv_heads) {
  const int64_t n_q = req.queries.shape[0];
  return loop_slots(ctx.threads, (n_q + kBlockRescoreQueries - 1) / kBlockRescoreQueries * kv_heads);
}

void select_by_blocks(const sa_context &ctx, const KeyStore &keys, const SelectRequest &req,
                      const ProposeCandidates &propose) {
  const int64_t n_q = req.queries.shape[0], H = keys.heads();
  const int64_t head_lists = selection_list_count(req, H) / H;  // lists of one KV head per query
  const int64_t n_blocks = (n_q + kBlockRescoreQueries - 1) / kBlockRescoreQueries;
  const int slots = block_task_slots(ctx, req, H);
  std::vector<BlockRescoreScratch> blocks(static_cast<size_t>(slots));
  const NativeRows rows = native_rows(keys, req);
  KeysF32 keys_f32(rows, H, keys.size());
  OmpThreadLimit omp_limit(ctx.threads);  // oneDNN inside follows the context's thread count
  // Task order: the KV heads of a block side by side, so tasks running at once convert
  // different heads' keys.
  parallel_for_slots(slots, n_blocks * H, [&](int64_t task, int slot) {
    const int64_t h = task % H, i0 = task / H * kBlockRescoreQueries, i1 = std::min(n_q, i0 + kBlockRescoreQueries);
    BlockRescoreScratch &b = blocks[size_t(slot)];
    b.own.resize(size_t(kBlockRescoreQueries * head_lists));
    b.lists.clear();
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t k = h * head_lists; k < (h + 1) * head_lists; ++k) {
        RescoreScratch &rs = b.own[b.lists.size()];
        const SelectionList l = selection_list(req, H, k);
        propose(i, l, slot, rs);
        b.lists.push_back({i, l, &rs});
      }
    rescore_block(ctx, keys, rows, keys_f32, req, b.lists.data(), int64_t(b.lists.size()), b);
  });
}

VisibleCounts::VisibleCounts(const KeyStore &keys, const SelectRequest &req) : keys_(keys), req_(req) {}

int64_t VisibleCounts::operator()(int64_t i) const {
  const int64_t p = req_.positions[size_t(i)], N = keys_.size();
  const int64_t heads = keys_.per_head() ? keys_.heads() : 1;
  int64_t fewest = N;
  if (req_.query_segments) {  // segments: count exactly
    const QueryVisibility vis = query_visibility(req_, i);
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t *pos = keys_.positions(h);
      int64_t c = 0;
      for (int64_t j = 0; j < N; ++j) c += vis(int32_t(j), pos[j]);
      fewest = std::min(fewest, c);
    }
    return fewest;
  }
  if (p >= keys_.max_position()) return N;
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t *sorted = keys_.sorted_positions(h);
    fewest = std::min(fewest, int64_t(std::upper_bound(sorted, sorted + N, p) - sorted));
  }
  return fewest;
}

bool VisibleCounts::select_exactly_if_all_within(const sa_context &ctx, int64_t limit) const {
  for (int64_t i = 0; i < req_.queries.shape[0]; ++i)
    if ((*this)(i) > limit) return false;
  select_by_dot_product(ctx, req_, keys_,
                        [&, f16c = kernels_have_f16c(*ctx.kernels)](int64_t i, const SelectionList &l, float *out) {
                          load_list_queries(req_, i, l, out, f16c);
                        });
  return true;
}

void VisibleCounts::select_exactly_within(const sa_context &ctx, int64_t limit,
                                          const std::function<void(const SelectRequest &)> &rest) const {
  const int64_t n_q = req_.queries.shape[0];
  for (int64_t i0 = 0, i1; i0 < n_q; i0 = i1) {
    const bool exact = (*this)(i0) <= limit;
    for (i1 = i0 + 1; i1 < n_q && ((*this)(i1) <= limit) == exact;) ++i1;
    const SelectRequest run = i0 == 0 && i1 == n_q ? req_ : query_chunk(req_, i0, i1);
    if (!exact) {
      rest(run);
      continue;
    }
    select_by_dot_product(ctx, run, keys_,
                          [&, f16c = kernels_have_f16c(*ctx.kernels)](int64_t i, const SelectionList &l, float *out) {
                            load_list_queries(run, i, l, out, f16c);
                          });
  }
}

SelectRequest query_chunk(const SelectRequest &req, int64_t i0, int64_t i1) {
  SelectRequest c = req;
  auto narrow = [&](TensorView &v) {
    v.data = v.bytes() + size_t(i0 * v.stride[0]) * dtype_size(v.dtype);
    v.numel = v.numel / std::max<int64_t>(v.shape[0], 1) * (i1 - i0);
    v.shape[0] = i1 - i0;
  };
  narrow(c.queries);
  narrow(c.indices);
  c.positions.assign(req.positions.begin() + i0, req.positions.begin() + i1);
  if (req.query_segments) c.query_segments = req.query_segments + i0;
  return c;
}

void rescore_block(const sa_context &ctx, const KeyStore &keys, const NativeRows &rows, KeysF32 &keys_f32,
                   const SelectRequest &req, const BlockList *lists, int64_t n, BlockRescoreScratch &t) {
  for (int64_t k = 0; k < n; ++k) plan_rescore(keys, req, lists[k].query, lists[k].list, *lists[k].scratch);
  // GEMMs of at most kGemmRows query rows: each with the prefix its own lists reach, and their
  // scores stay in the last-level cache while the lists read them.
  for (int64_t k0 = 0, k1; k0 < n; k0 = k1) {
    int64_t gemm_rows = 0, work = 0, prefix = 0;
    for (k1 = k0; k1 < n && (k1 == k0 || gemm_rows + lists[k1].list.q_heads <= kGemmRows); ++k1) {
      const RescoreScratch &s = *lists[k1].scratch;
      gemm_rows += lists[k1].list.q_heads;
      work += lists[k1].list.q_heads * s.column_count();
      // columns: the forced slots, then the candidates, each ascending.
      if (!s.forced.empty()) prefix = std::max<int64_t>(prefix, s.forced.back() + 1);
      if (!s.candidates.empty()) prefix = std::max<int64_t>(prefix, s.candidates.back() + 1);
    }
    prefix = std::min(keys.size(), (prefix + kPrefixRound - 1) / kPrefixRound * kPrefixRound);
    const bool dense = n >= kBlockRescoreMinQueries && prefix > 0 && work * kDenseShare >= gemm_rows * prefix;
    if (dense) {
      const int64_t D = rows.dim();
      const float *key_rows = keys_f32.head(int(lists[k0].list.kv_head), prefix);
      t.queries.resize(size_t(gemm_rows * D));
      t.scores.resize(size_t(gemm_rows * prefix));
      for (int64_t k = k0, r = 0; k < k1; r += lists[k].list.q_heads, ++k)
        std::copy_n(lists[k].scratch->queries.data(), lists[k].list.q_heads * D, &t.queries[size_t(r * D)]);
      matmul_abt(t.queries.data(), gemm_rows, key_rows, prefix, D, t.scores.data(), prefix);
      for (int64_t k = k0, r = 0; k < k1; r += lists[k].list.q_heads, ++k) {
        RescoreScratch &s = *lists[k].scratch;
        const int64_t cols = s.column_count();
        for (int64_t g = 0; g < lists[k].list.q_heads; ++g) {
          const float *src = &t.scores[size_t((r + g) * prefix)];
          float *dst = s.scores.data() + g * cols;  // cols may be 0: no element to name
          for (int64_t c = 0; c < cols; ++c) dst[c] = src[s.columns[size_t(c)]];
        }
      }
    }
    for (int64_t k = k0; k < k1; ++k) {
      const BlockList &b = lists[k];
      if (!dense) score_rescore_columns(ctx, rows, b.list, *b.scratch, 0, b.scratch->column_count(), t.task);
      finish_rescore(ctx, keys, req, b.query, b.list, *b.scratch);
    }
  }
}

}  // namespace sa
