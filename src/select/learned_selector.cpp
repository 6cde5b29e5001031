#include "select/learned_selector.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "select/dot_product_select.hpp"
#include "select/score_matmul.hpp"

namespace sa {

namespace {

constexpr int64_t kProjectChunk = 8192;  // key rows projected at once (bounds the buffer)
constexpr int64_t kGemmMinRows = 16;     // fewer rows: a plain loop beats the GEMM set-up

// A projection tensor: [sets, d_search, dim], or [d_search, dim] for one shared matrix.
void take_projection(const WeightTensor &w, const char *what, int heads, int dim, int64_t *sets, int64_t *d_search,
                     std::vector<float> *values, const std::string &path) {
  const bool shared = w.shape.size() == 2;
  *sets = shared ? 1 : w.shape[0];
  *d_search = w.shape[shared ? 0 : 1];
  const int64_t in = w.shape[shared ? 1 : 2];
  if (in != dim)
    fail(SA_ERR_SHAPE, "%s: %s \"%s\" has shape %s: its last dimension must be the index's head_dim %d", path.c_str(),
         what, w.name.c_str(), shape_string(w.shape).c_str(), dim);
  if (*d_search < 1 || *sets < 1)
    fail(SA_ERR_SHAPE, "%s: %s \"%s\" has shape %s: no search dimensions", path.c_str(), what, w.name.c_str(),
         shape_string(w.shape).c_str());
  if (*sets != 1 && *sets % heads != 0)
    fail(SA_ERR_SHAPE, "%s: %s \"%s\" has shape %s: the first dimension must be 1 or a multiple of num_kv_heads %d",
         path.c_str(), what, w.name.c_str(), shape_string(w.shape).c_str(), heads);
  *values = w.values;
}

// The projected rows as a contiguous [n, heads, d_search] view for the key store.
TensorView projected_view(std::vector<float> &rows, int64_t n, int heads, int S) {
  TensorView v;
  v.data = rows.data();
  v.dtype = SA_DTYPE_F32;
  v.rank = 3;
  v.shape[0] = n, v.shape[1] = heads, v.shape[2] = S;
  v.stride[0] = int64_t(heads) * S, v.stride[1] = S, v.stride[2] = 1;
  v.numel = n * heads * S;
  return v;
}

}  // namespace

LearnedSelector::LearnedSelector(const sa_context &ctx, const LayerWeights &weights, int heads, int dim,
                                 sa_dtype dtype, int64_t capacity_hint, int64_t rescore_factor, bool borrow)
    : ctx_(ctx), borrow_(borrow), heads_(heads), dim_(dim), d_search_(0), q_sets_(0), k_sets_(0), search_keys_(heads, 1, dtype, 0),
      rescore_factor_(rescore_factor) {
  const WeightTensor q = weights.get("q_proj", {3, 2});
  const WeightTensor k = weights.get("k_proj", {3, 2});
  int64_t dq = 0, dk = 0;
  take_projection(q, "query projection", heads, dim, &q_sets_, &dq, &q_proj_, weights.path());
  take_projection(k, "key projection", heads, dim, &k_sets_, &dk, &k_proj_, weights.path());
  if (dq != dk)
    fail(SA_ERR_SHAPE, "%s: \"%s\" maps to %lld search dimensions, \"%s\" to %lld; they must agree",
         weights.path().c_str(), q.name.c_str(), (long long)dq, k.name.c_str(), (long long)dk);
  if (k_sets_ != 1 && k_sets_ != heads)
    fail(SA_ERR_SHAPE, "%s: \"%s\" holds %lld matrices; expected 1 (shared) or num_kv_heads = %d",
         weights.path().c_str(), k.name.c_str(), (long long)k_sets_, heads);
  if (dq > (int64_t(1) << 16))
    fail(SA_ERR_SHAPE, "%s: %lld search dimensions; at most 65536", weights.path().c_str(), (long long)dq);
  d_search_ = int(dq);
  search_keys_ = KeyStore(heads, d_search_, dtype, capacity_hint);
  if (rescore_factor_ > 0 && !borrow_) native_keys_ = std::make_unique<KeyStore>(heads, dim, dtype, capacity_hint);
}

LearnedSelector::LearnedSelector(const LearnedSelector &o)
    : ctx_(o.ctx_), heads_(o.heads_), dim_(o.dim_), d_search_(o.d_search_), q_sets_(o.q_sets_), k_sets_(o.k_sets_),
      q_proj_(o.q_proj_), k_proj_(o.k_proj_), search_keys_(o.search_keys_), rescore_factor_(o.rescore_factor_),
      native_keys_(o.native_keys_ ? std::make_unique<KeyStore>(*o.native_keys_) : nullptr) {}

void LearnedSelector::truncate(int64_t keep) {
  search_keys_.truncate(keep);
  if (native_keys_) native_keys_->truncate(keep);
}

std::vector<float> LearnedSelector::project_keys(const TensorView &keys, int64_t r0, int64_t r1) const {
  const int64_t n = r1 - r0, H = heads_, D = dim_, S = d_search_;
  std::vector<float> native(size_t(n * D)), out(size_t(n * H * S));
  OmpThreadLimit omp_limit(ctx_.threads);
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t r = 0; r < n; ++r) {
      const int64_t base = (r0 + r) * keys.stride[0] + h * keys.stride[1];
      for (int64_t d = 0; d < D; ++d) native[size_t(r * D + d)] = read_float(keys, base + d * keys.stride[2]);
    }
    const float *W = &k_proj_[size_t((k_sets_ == 1 ? 0 : h) * S * D)];
    if (n >= kGemmMinRows) {
      matmul_abt(native.data(), n, W, S, D, &out[size_t(h * S)], H * S);
    } else {
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < S; ++j) {
          float acc = 0.f;
          for (int64_t d = 0; d < D; ++d) acc += W[j * D + d] * native[size_t(r * D + d)];
          out[size_t((r * H + h) * S + j)] = acc;
        }
    }
  }
  return out;
}

void LearnedSelector::append(const TensorView &keys) {
  for (int64_t r0 = 0; r0 < keys.shape[0]; r0 += kProjectChunk) {
    const int64_t r1 = std::min(keys.shape[0], r0 + kProjectChunk);
    std::vector<float> rows = project_keys(keys, r0, r1);
    search_keys_.append(projected_view(rows, r1 - r0, heads_, d_search_));
  }
  if (native_keys_) native_keys_->append(keys);
}

void LearnedSelector::update(const int32_t *slots, int64_t n, const TensorView &keys, const int64_t *positions) {
  for (int64_t r0 = 0; r0 < n; r0 += kProjectChunk) {
    const int64_t r1 = std::min(n, r0 + kProjectChunk);
    std::vector<float> rows = project_keys(keys, r0, r1);
    search_keys_.update(slots + r0, r1 - r0, projected_view(rows, r1 - r0, heads_, d_search_),
                        positions ? positions + r0 : nullptr);
  }
  if (native_keys_) native_keys_->update(slots, n, keys, positions);
}

size_t LearnedSelector::memory_bytes() const {
  return search_keys_.memory_bytes() + (native_keys_ ? native_keys_->memory_bytes() : 0) +
         (q_proj_.capacity() + k_proj_.capacity()) * sizeof(float);
}

void LearnedSelector::select(const sa_context &ctx, const SelectRequest &req) const {
  const TensorView &q = req.queries;
  const int64_t H_q = q.shape[1], G = H_q / heads_, D = dim_, S = d_search_;
  if (q_sets_ != 1 && q_sets_ != heads_ && q_sets_ != H_q)
    fail(SA_ERR_SHAPE, "queries have %lld heads; the layer's q_proj holds %lld matrices (expected 1, num_kv_heads = %d "
         "or the query heads)", (long long)H_q, (long long)q_sets_, heads_);
  const float qscale = req.scale * kLog2e;  // base-2 logits
  auto map = [&](int64_t i, const SelectionList &l, float *out) {
    for (int64_t g = 0; g < l.q_heads; ++g) {
      const int64_t hq = l.q_head0 + g;
      const int64_t set = q_sets_ == 1 ? 0 : q_sets_ == H_q ? hq : hq / G;
      const float *W = &q_proj_[size_t(set * S * D)];
      const int64_t base = i * q.stride[0] + hq * q.stride[1];
      float *dst = out + g * S;
      for (int64_t j = 0; j < S; ++j) dst[j] = 0.f;
      for (int64_t d = 0; d < D; ++d) {
        const float x = read_float(q, base + d * q.stride[2]);
        for (int64_t j = 0; j < S; ++j) dst[j] += W[j * D + d] * x;
      }
      for (int64_t j = 0; j < S; ++j) dst[j] *= qscale;
    }
  };
  RescoreStage rescore;
  if (native_keys_) {
    rescore.native = native_keys_.get();
    rescore.candidates = rescore_factor_ * std::max<int64_t>(req.top_k, 1);
  } else if (rescore_factor_ > 0) {  // borrowed: positions of the search keys, rows of the host
    rescore.native = &search_keys_;
    rescore.candidates = rescore_factor_ * std::max<int64_t>(req.top_k, 1);
    rescore.borrowed = true;
  }
  select_by_dot_product(ctx, req, search_keys_, map, rescore);
}

}  // namespace sa
