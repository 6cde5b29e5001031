#include "select/selector_factory.hpp"

#include "sa_build_config.h"

#include "core/error.hpp"
#include "io/layer_weights.hpp"
#include "select/exact_selector.hpp"
#if SA_HAVE_HNSWLIB
#include "select/hnsw_selector.hpp"
#endif
#include "select/indexer_selector.hpp"
#include "select/learned_selector.hpp"
#include "select/lsh_selector.hpp"
#include "select/page_selector.hpp"

namespace sa {

namespace {

constexpr int64_t kMaxRescore = 65536;  // rescore * top_k stays far inside int64

std::unique_ptr<Selector> make_learned(const sa_context &ctx, const sa_index_options &opt, bool indexer) {
  try {
    const LayerWeights w(opt.learned.weights_path, opt.learned.layer);
    if (indexer)
      return std::make_unique<IndexerSelector>(ctx, w, opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity,
                                               opt.learned.rescore, opt.borrow_keys != 0);
    return std::make_unique<LearnedSelector>(ctx, w, opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity,
                                             opt.learned.rescore, opt.borrow_keys != 0);
  } catch (Error &e) {
    e.message = "opt->learned.weights_path: " + e.message;
    throw;
  }
}

}  // namespace

void check_index_options(const sa_index_options &opt) {
  if (opt.num_kv_heads < 1) fail(SA_ERR_INVALID_ARGUMENT, "opt->num_kv_heads is %d, expected >= 1", int(opt.num_kv_heads));
  if (opt.head_dim < 1) fail(SA_ERR_INVALID_ARGUMENT, "opt->head_dim is %d, expected >= 1", int(opt.head_dim));
  const int dtype = enum_value(opt.dtype);
  if (dtype != SA_DTYPE_F32 && dtype != SA_DTYPE_F16 && dtype != SA_DTYPE_BF16)
    fail(SA_ERR_DTYPE, "opt->dtype is %d; the index stores keys as f32 (%d), f16 (%d) or bf16 (%d)", dtype,
         int(SA_DTYPE_F32), int(SA_DTYPE_F16), int(SA_DTYPE_BF16));
  if (opt.capacity < 0) fail(SA_ERR_INVALID_ARGUMENT, "opt->capacity is %lld, expected >= 0", (long long)opt.capacity);
  if (opt.capacity > INT32_MAX) fail(SA_ERR_OVERFLOW, "opt->capacity %lld exceeds the int32 slot range", (long long)opt.capacity);
  const int kind = enum_value(opt.kind);
  switch (kind) {
    case SA_SELECTOR_EXACT:
      return;
    case SA_SELECTOR_HNSW:
#if SA_HAVE_HNSWLIB
      validate_hnsw_options(opt.hnsw);
#endif
      return;
    case SA_SELECTOR_PAGE:
      if (opt.page.page_size < 1)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->page.page_size is %d, expected >= 1", int(opt.page.page_size));
      return;
    case SA_SELECTOR_LSH:
      if (opt.lsh.rounds < 1 || opt.lsh.rounds > LshLimits::kMaxRounds)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->lsh.rounds is %d, expected 1 to %d", int(opt.lsh.rounds), LshLimits::kMaxRounds);
      if (opt.lsh.bits < 0 || opt.lsh.bits > LshLimits::kMaxBits)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->lsh.bits is %d, expected 0 (adapted to the index size) to %d", int(opt.lsh.bits),
             LshLimits::kMaxBits);
      if (opt.lsh.probes < 0 || opt.lsh.probes > LshLimits::kMaxProbes)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->lsh.probes is %d, expected 0 to %d", int(opt.lsh.probes), LshLimits::kMaxProbes);
      return;
    case SA_SELECTOR_LEARNED:
    case SA_SELECTOR_INDEXER: {
      const bool indexer = kind == SA_SELECTOR_INDEXER;
      if (!opt.learned.weights_path)
        fail(SA_ERR_NULL_POINTER, "opt->learned.weights_path is NULL; the %s selector reads its weights from a file",
             indexer ? "indexer" : "learned");
      if (opt.learned.layer < 0)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->learned.layer is %d, expected >= 0", int(opt.learned.layer));
      if ((opt.learned.rescore < 0 || opt.learned.rescore > kMaxRescore))
        fail(SA_ERR_INVALID_ARGUMENT, "opt->learned.rescore is %lld, expected 0 (one stage) to %lld",
             (long long)opt.learned.rescore, (long long)kMaxRescore);
      return;
    }
  }
  fail(SA_ERR_INVALID_ARGUMENT, "opt->kind is %d, not an sa_selector_kind value", kind);
}

std::unique_ptr<Selector> make_selector(const sa_index_options &opt, const sa_context &ctx) {
  const int kind = enum_value(opt.kind);
  switch (kind) {
    case SA_SELECTOR_EXACT:
      return std::make_unique<ExactSelector>(opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity,
                                             opt.borrow_keys != 0);
    case SA_SELECTOR_HNSW:
#if SA_HAVE_HNSWLIB
      return std::make_unique<HnswSelector>(ctx, opt);
#else
      fail(SA_ERR_UNSUPPORTED,
           "opt->kind is SA_SELECTOR_HNSW, but this build of sparseattn has no HNSW selector (it was built "
           "without hnswlib: meson option hnswlib=disabled, or libhnswlib-dev missing)");
#endif
    case SA_SELECTOR_PAGE:
      return std::make_unique<PageSelector>(opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity, opt.page.page_size,
                                            opt.page.refine != 0, opt.borrow_keys != 0);
    case SA_SELECTOR_LSH:
      return std::make_unique<LshSelector>(opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity, opt.lsh, ctx,
                                           opt.borrow_keys != 0);
    case SA_SELECTOR_LEARNED: return make_learned(ctx, opt, false);
    case SA_SELECTOR_INDEXER: return make_learned(ctx, opt, true);
  }
  fail(SA_ERR_INVALID_ARGUMENT, "opt->kind is %d, not an sa_selector_kind value", kind);
}

}  // namespace sa
