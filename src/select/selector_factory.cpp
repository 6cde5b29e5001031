#include "select/selector_factory.hpp"

#include "core/error.hpp"
#include "select/exact_selector.hpp"
#include "select/hnsw_selector.hpp"

namespace sa {

std::unique_ptr<Selector> make_selector(const sa_context &ctx, const sa_index_options &opt) {
  const int kind = enum_value(opt.kind);
  switch (kind) {
    case SA_SELECTOR_EXACT:
      return std::make_unique<ExactSelector>(opt.num_kv_heads, opt.head_dim, opt.dtype, opt.capacity);
    case SA_SELECTOR_HNSW:
      return std::make_unique<HnswSelector>(ctx, opt);
    case SA_SELECTOR_PAGE:
    case SA_SELECTOR_LSH:
    case SA_SELECTOR_LEARNED:
    case SA_SELECTOR_INDEXER:
      fail(SA_ERR_UNSUPPORTED, "opt->kind %d (%s) is not implemented in sparseattn %s yet", kind,
           kind == SA_SELECTOR_PAGE ? "page"
           : kind == SA_SELECTOR_LSH ? "lsh"
           : kind == SA_SELECTOR_LEARNED ? "learned" : "indexer",
           sa_version_string());
  }
  fail(SA_ERR_INVALID_ARGUMENT, "opt->kind is %d, not an sa_selector_kind value", kind);
}

}  // namespace sa
