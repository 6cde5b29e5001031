// The object behind the opaque sa_index handle.
#pragma once

#include <memory>

#include "select/selector.hpp"
#include "sparseattn.h"

struct sa_index {
  sa_context *ctx = nullptr;
  sa_index_options opt{};
  std::unique_ptr<sa::Selector> selector;
};
