#include "select/exact_selector.hpp"

#include "select/dot_product_select.hpp"

namespace sa {

ExactSelector::ExactSelector(int heads, int dim, sa_dtype dtype, int64_t capacity_hint, bool borrow)
    : keys_(heads, dim, dtype, capacity_hint, !borrow) {}

void ExactSelector::select(const sa_context &ctx, const SelectRequest &req) const {
  select_by_dot_product(ctx, req, keys_,
                        [&, f16c = kernels_have_f16c(*ctx.kernels)](int64_t i, const SelectionList &l, float *out) {
                          load_list_queries(req, i, l, out, f16c);
                        });
}

}  // namespace sa
