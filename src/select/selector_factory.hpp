// Creates the selector an sa_index_options asks for.
#pragma once

#include <memory>

#include "select/selector.hpp"

namespace sa {

// Throws SA_ERR_UNSUPPORTED for kinds this build does not implement. Learned kinds read their
// weights file now (errors name opt->learned.weights_path). ctx must outlive the selector.
std::unique_ptr<Selector> make_selector(const sa_context &ctx, const sa_index_options &opt);

}  // namespace sa
