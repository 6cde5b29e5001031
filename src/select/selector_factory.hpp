// Creates the selector an sa_index_options asks for.
#pragma once

#include <memory>

#include "select/selector.hpp"

namespace sa {

// The one check of an sa_index_options (sa_index_create runs it, whichever backend follows):
// heads, dimension, dtype, capacity and the chosen kind's own options. SA_ERR_INVALID_ARGUMENT
// (SA_ERR_NULL_POINTER, SA_ERR_DTYPE, SA_ERR_OVERFLOW) naming the field.
void check_index_options(const sa_index_options &opt);

// For options check_index_options accepted. Throws SA_ERR_UNSUPPORTED for kinds this build
// does not implement. Learned kinds read their weights file now (errors name
// opt->learned.weights_path). ctx must outlive the selector (its kernels and threads are used
// by appends and updates too, and some build their structures with them).
std::unique_ptr<Selector> make_selector(const sa_index_options &opt, const sa_context &ctx);

}  // namespace sa
