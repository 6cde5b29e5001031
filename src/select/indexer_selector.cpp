#include "select/indexer_selector.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/threading.hpp"
#include "select/candidate_rescore.hpp"
#include "select/score_matmul.hpp"

namespace sa {

namespace {

constexpr int64_t kProjectChunk = 8192;
constexpr int64_t kGemmMinRows = 16;
constexpr int64_t kGemmMinQueries = 8;
constexpr int64_t kScoreBlockFloats = 1 << 22;
constexpr int64_t kMaxQueryBlock = 64;

struct Scratch : RescoreScratch {  // ranked and forced go to write_ranked_candidates
  std::vector<float> concat, queries, weights, raw, score;
  std::vector<int32_t> pool;  // two stages: the slots every list rescores
};

}  // namespace

IndexerSelector::IndexerSelector(const sa_context &ctx, const LayerWeights &weights, int heads, int dim,
                                 sa_dtype dtype, int64_t capacity_hint, int64_t rescore_factor, bool borrow)
    : ctx_(ctx), heads_(heads), dim_(dim), keys_(1, 1, dtype, 0), rescore_factor_(rescore_factor) {
  const WeightTensor q = weights.get("indexer.q_proj", {3});
  const WeightTensor w = weights.get("indexer.head_weights", {2});
  const WeightTensor k = weights.get("indexer.k_proj", {2});
  const char *path = weights.path().c_str();
  n_index_heads_ = q.shape[0];
  d_index_ = q.shape[1];
  const int64_t q_in = q.shape[2];
  if (n_index_heads_ < 1 || d_index_ < 1 || d_index_ > (int64_t(1) << 16))
    fail(SA_ERR_SHAPE, "%s: \"%s\" has shape %s; expected [n_heads >= 1, 1 <= d_index <= 65536, H_q * head_dim]",
         path, q.name.c_str(), shape_string(q.shape).c_str());
  if (q_in % dim != 0 || q_in / dim < 1 || (q_in / dim) % heads != 0)
    fail(SA_ERR_SHAPE, "%s: \"%s\" has shape %s; its last dimension must be H_q * head_dim (%d) with H_q a multiple "
         "of num_kv_heads %d", path, q.name.c_str(), shape_string(q.shape).c_str(), dim, heads);
  q_heads_ = q_in / dim;
  if (w.shape[0] != n_index_heads_ || w.shape[1] != q_in)
    fail(SA_ERR_SHAPE, "%s: \"%s\" has shape %s; expected [%lld, %lld] to match \"%s\"", path, w.name.c_str(),
         shape_string(w.shape).c_str(), (long long)n_index_heads_, (long long)q_in, q.name.c_str());
  if (k.shape[0] != d_index_ || k.shape[1] != int64_t(heads) * dim)
    fail(SA_ERR_SHAPE, "%s: \"%s\" has shape %s; expected [d_index = %lld, num_kv_heads * head_dim = %lld]", path,
         k.name.c_str(), shape_string(k.shape).c_str(), (long long)d_index_, (long long)heads * dim);
  head_bias_.assign(size_t(n_index_heads_), 0.f);
  if (weights.has("indexer.head_bias")) {
    const WeightTensor b = weights.get("indexer.head_bias", {1});
    if (b.shape[0] != n_index_heads_)
      fail(SA_ERR_SHAPE, "%s: \"%s\" has shape %s; expected [%lld], one per indexer head of \"%s\"", path,
           b.name.c_str(), shape_string(b.shape).c_str(), (long long)n_index_heads_, q.name.c_str());
    head_bias_ = b.values;
  }
  q_proj_ = q.values;
  head_weights_ = w.values;
  k_proj_ = k.values;
  keys_ = KeyStore(1, int(d_index_), dtype, capacity_hint);
  if (rescore_factor_ > 0) native_keys_.emplace(heads, dim, dtype, capacity_hint, !borrow);
}

void IndexerSelector::truncate(int64_t keep) {
  keys_.truncate(keep);
  if (native_keys_) native_keys_->truncate(keep);
}

std::vector<float> IndexerSelector::project_keys(const TensorView &keys, int64_t r0, int64_t r1) const {
  const int64_t n = r1 - r0, in = int64_t(heads_) * dim_, S = d_index_;
  std::vector<float> concat(size_t(n * in)), out(size_t(n * S));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t h = 0; h < heads_; ++h)
      for (int64_t d = 0; d < dim_; ++d)
        concat[size_t(r * in + h * dim_ + d)] =
            read_float(keys, (r0 + r) * keys.stride[0] + h * keys.stride[1] + d * keys.stride[2]);
  if (n >= kGemmMinRows) {
    OmpThreadLimit omp_limit(ctx_.threads);
    matmul_abt(concat.data(), n, k_proj_.data(), S, in, out.data(), S);
  } else {
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < S; ++j) {
        float acc = 0.f;
        for (int64_t x = 0; x < in; ++x) acc += k_proj_[size_t(j * in + x)] * concat[size_t(r * in + x)];
        out[size_t(r * S + j)] = acc;
      }
  }
  return out;
}

namespace {
TensorView key_rows_view(std::vector<float> &rows, int64_t n, int64_t S) {
  TensorView v;
  v.data = rows.data();
  v.dtype = SA_DTYPE_F32;
  v.rank = 3;
  v.shape[0] = n, v.shape[1] = 1, v.shape[2] = S;
  v.stride[0] = S, v.stride[1] = S, v.stride[2] = 1;
  v.numel = n * S;
  return v;
}
}  // namespace

void IndexerSelector::append(const TensorView &keys) {
  for (int64_t r0 = 0; r0 < keys.shape[0]; r0 += kProjectChunk) {
    const int64_t r1 = std::min(keys.shape[0], r0 + kProjectChunk);
    std::vector<float> rows = project_keys(keys, r0, r1);
    keys_.append(key_rows_view(rows, r1 - r0, d_index_));
  }
  if (native_keys_) native_keys_->append(keys);
}

void IndexerSelector::update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) {
  for (int64_t r0 = 0; r0 < n; r0 += kProjectChunk) {
    const int64_t r1 = std::min(n, r0 + kProjectChunk);
    std::vector<float> rows = project_keys(keys, r0, r1);
    keys_.update(slots + r0, r1 - r0, key_rows_view(rows, r1 - r0, d_index_), positions ? positions + r0 : nullptr);
  }
  if (native_keys_) native_keys_->update(slots, n, keys, positions);
}

size_t IndexerSelector::memory_bytes() const {
  return keys_.memory_bytes() + (native_keys_ ? native_keys_->memory_bytes() : 0) +
         (q_proj_.capacity() + head_weights_.capacity() + head_bias_.capacity() + k_proj_.capacity()) * sizeof(float);
}

void IndexerSelector::select(const sa_context &ctx, const SelectRequest &req) const {
  const TensorView &q = req.queries;
  const TensorView &out = req.indices;
  const int64_t n_q = q.shape[0], H_q = q.shape[1], n = keys_.size(), width = out.shape[2];
  const int64_t NI = n_index_heads_, S = d_index_, in = q_heads_ * dim_;
  if (H_q != q_heads_)
    fail(SA_ERR_SHAPE, "queries.shape[1] is %lld query heads; the indexer weights take %lld", (long long)H_q,
         (long long)q_heads_);
  int32_t *const base = out.ptr<int32_t>();
  if (n == 0) return write_all_padding(out);  // nothing to choose from
  const bool gemm = n_q >= kGemmMinQueries;
  const int64_t qblock =
      gemm ? std::max<int64_t>(1, std::min<int64_t>(kMaxQueryBlock, kScoreBlockFloats / std::max<int64_t>(1, NI * n)))
           : 1;
  const int64_t n_blocks = (n_q + qblock - 1) / qblock;
  const int threads = ctx.threads;
  const int64_t *const pos = keys_.positions();

  std::vector<float> keys_f32;  // the GEMM takes f32 keys
  const float *keys_gemm = nullptr;
  if (gemm) {
    if (keys_.dtype() == SA_DTYPE_F32) {
      keys_gemm = static_cast<const float *>(keys_.head_rows(0));
    } else {
      const uint16_t *src = static_cast<const uint16_t *>(keys_.head_rows(0));
      keys_f32.resize(size_t(n * S));
      for (int64_t e = 0; e < n * S; ++e)
        keys_f32[size_t(e)] = keys_.dtype() == SA_DTYPE_F16 ? f16_to_f32(src[e]) : bf16_to_f32(src[e]);
      keys_gemm = keys_f32.data();
    }
  }

  const int slots = loop_slots(threads, n_blocks);
  std::vector<Scratch> scratch(static_cast<size_t>(slots));
  for (Scratch &s : scratch) {
    s.concat.resize(size_t(in));
    s.queries.resize(size_t(qblock * NI * S));
    s.weights.resize(size_t(qblock * NI));
    s.raw.resize(size_t(qblock * NI * n));
    s.score.resize(size_t(n));
    s.ranked.reserve(size_t(n));
  }
  OmpThreadLimit omp_limit(threads);

  parallel_for_slots(slots, n_blocks, [&](int64_t b, int slot) {
    Scratch &s = scratch[size_t(slot)];
    const int64_t i0 = b * qblock, i1 = std::min(n_q, i0 + qblock);
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t h = 0; h < H_q; ++h)
        for (int64_t d = 0; d < dim_; ++d)
          s.concat[size_t(h * dim_ + d)] = read_float(q, i * q.stride[0] + h * q.stride[1] + d * q.stride[2]);
      for (int64_t r = 0; r < NI * S; ++r) {  // indexer queries
        const float *W = &q_proj_[size_t(r * in)];
        float acc = 0.f;
        for (int64_t x = 0; x < in; ++x) acc += W[x] * s.concat[size_t(x)];
        s.queries[size_t((i - i0) * NI * S + r)] = acc;
      }
      for (int64_t j = 0; j < NI; ++j) {  // head weights
        const float *W = &head_weights_[size_t(j * in)];
        float acc = head_bias_[size_t(j)];
        for (int64_t x = 0; x < in; ++x) acc += W[x] * s.concat[size_t(x)];
        s.weights[size_t((i - i0) * NI + j)] = acc;
      }
    }
    if (gemm) {
      matmul_abt(s.queries.data(), (i1 - i0) * NI, keys_gemm, n, S, s.raw.data(), n);
    } else {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j0 = 0; j0 < NI; j0 += kMaxGroup)
          ctx.kernels->of(keys_.dtype()).score_rows(&s.queries[size_t(((i - i0) * NI + j0) * S)],
                                                    int(std::min<int64_t>(kMaxGroup, NI - j0)), int(S),
                                                    keys_.head_rows(0), n, &s.raw[size_t(((i - i0) * NI + j0) * n)], n);
    }
    for (int64_t i = i0; i < i1; ++i) {
      std::fill(s.score.begin(), s.score.end(), 0.f);
      for (int64_t j = 0; j < NI; ++j) {
        const float w = s.weights[size_t((i - i0) * NI + j)];
        const float *raw = &s.raw[size_t(((i - i0) * NI + j) * n)];
        for (int64_t t = 0; t < n; ++t) s.score[size_t(t)] += w * std::max(raw[t], 0.f);
      }
      // The best `keep` visible, non-forced slots by indexer score, equal scores by the more
      // recent position (then the higher slot): write_selection's tie order (lower slot) would
      // fill a list of equal scores (all ReLUs 0) with the oldest keys.
      const QueryVisibility vis = query_visibility(req, i);
      const KeepRule rule = keep_rule(req, i);
      s.ranked.clear();
      for (int64_t t = 0; t < n; ++t)
        if (vis(int32_t(t), pos[t]) && !always_kept(pos[t], rule)) s.ranked.push_back({s.score[size_t(t)], int32_t(t)});
      const int64_t top_k = std::max<int32_t>(req.top_k, 0);
      const size_t keep = size_t(std::min<int64_t>(int64_t(s.ranked.size()),
                                                   native_keys_ ? rescore_factor_ * std::max<int64_t>(top_k, 1) : top_k));
      if (keep < s.ranked.size()) {
        std::nth_element(s.ranked.begin(), s.ranked.begin() + long(keep), s.ranked.end(),
                         [pos](const Candidate &a, const Candidate &b) {
                           return a.score > b.score ||
                                  (a.score == b.score && (pos[a.slot] > pos[b.slot] ||
                                                          (pos[a.slot] == pos[b.slot] && a.slot > b.slot)));
                         });
        s.ranked.resize(keep);
      }
      if (native_keys_) {
        // Second stage: every output list ranks the same candidates by its own exact scores.
        s.pool.clear();
        for (const Candidate &c : s.ranked) s.pool.push_back(c.slot);
        for (int64_t li = 0; li < selection_list_count(req, heads_); ++li) {
          s.candidates.assign(s.pool.begin(), s.pool.end());
          rescore_candidates(ctx, *native_keys_, req, i, selection_list(req, heads_, li), s);
        }
        continue;
      }
      // One list, written to the first row and copied to the others. Exactly top_k candidates
      // remain, so write_ranked_candidates keeps them all.
      write_ranked_candidates(keys_, req, i, selection_list(req, keys_.heads(), 0), s);
      int32_t *row0 = base + i * out.stride[0];
      for (int64_t h = 1; h < out.shape[1]; ++h)
        for (int64_t c = 0; c < width; ++c) row0[h * out.stride[1] + c * out.stride[2]] = row0[c * out.stride[2]];
    }
  });
}

}  // namespace sa
