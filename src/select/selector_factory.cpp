#include "select/selector_factory.hpp"

#include "core/error.hpp"
#include "select/exact_selector.hpp"
#include "select/hnsw_selector.hpp"
#include "select/lsh_selector.hpp"
#include "select/page_selector.hpp"

namespace sa {

std::unique_ptr<Selector> make_selector(const sa_index_options &opt, const sa_context &ctx) {
  const int kind = enum_value(opt.kind);
  switch (kind) {
    case SA_SELECTOR_EXACT:
      return std::make_unique<ExactSelector>(opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity);
    case SA_SELECTOR_HNSW:
      return std::make_unique<HnswSelector>(ctx, opt);
    case SA_SELECTOR_PAGE:
      if (opt.page.page_size < 1)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->page.page_size is %d, expected >= 1", int(opt.page.page_size));
      return std::make_unique<PageSelector>(opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity, opt.page.page_size,
                                            opt.page.refine != 0);
    case SA_SELECTOR_LSH:
      if (opt.lsh.rounds < 1 || opt.lsh.rounds > LshLimits::kMaxRounds)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->lsh.rounds is %d, expected 1 to %d", int(opt.lsh.rounds), LshLimits::kMaxRounds);
      if (opt.lsh.bits < 0 || opt.lsh.bits > LshLimits::kMaxBits)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->lsh.bits is %d, expected 0 (adapted to the index size) to %d", int(opt.lsh.bits),
             LshLimits::kMaxBits);
      if (opt.lsh.probes < 0 || opt.lsh.probes > LshLimits::kMaxProbes)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->lsh.probes is %d, expected 0 to %d", int(opt.lsh.probes), LshLimits::kMaxProbes);
      return std::make_unique<LshSelector>(opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity, opt.lsh, ctx);
    case SA_SELECTOR_LEARNED:
    case SA_SELECTOR_INDEXER:
      fail(SA_ERR_UNSUPPORTED, "opt->kind %d (%s) is not implemented in sparseattn %s yet", kind,
           kind == SA_SELECTOR_LEARNED ? "learned" : "indexer",
           sa_version_string());
  }
  fail(SA_ERR_INVALID_ARGUMENT, "opt->kind is %d, not an sa_selector_kind value", kind);
}

}  // namespace sa
