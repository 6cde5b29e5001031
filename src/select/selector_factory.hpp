// Creates the selector an sa_index_options asks for.
#pragma once

#include <memory>

#include "select/selector.hpp"

namespace sa {

// Throws SA_ERR_UNSUPPORTED for kinds this build does not implement, SA_ERR_INVALID_ARGUMENT
// for options outside their range. Learned kinds read their weights file now (errors name
// opt->learned.weights_path). ctx must outlive the selector (its kernels and threads are used
// by appends and updates too, and some build their structures with them).
std::unique_ptr<Selector> make_selector(const sa_index_options &opt, const sa_context &ctx);

}  // namespace sa
