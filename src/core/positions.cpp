#include "core/positions.hpp"

#include "core/error.hpp"
#include "sparseattn.h"

namespace sa {

void check_positions(const int64_t *positions, int64_t n, int64_t stride, const char *what, PositionsOf of) {
  const int64_t lowest = of == PositionsOf::tokens ? 0 : of == PositionsOf::keys ? -1 : -SA_MAX_POSITION;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = positions[i * stride];
    if (p < lowest || p > SA_MAX_POSITION) fail_position(what, i, p, of);
  }
}

void fail_position(const char *what, int64_t i, int64_t p, PositionsOf of) {
  fail(SA_ERR_INVALID_ARGUMENT, "%s[%lld] is %lld, expected %s .. SA_MAX_POSITION (2^62)", what, (long long)i,
       (long long)p, of == PositionsOf::tokens ? "0" : of == PositionsOf::keys ? "-1 (empty) or 0" : "-SA_MAX_POSITION");
}

}  // namespace sa
