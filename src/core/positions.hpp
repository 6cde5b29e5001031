// The one rule for token positions given through the C ABI (sparseattn.h, SA_MAX_POSITION):
// a token's position is in [0, SA_MAX_POSITION]; a key or slot position is that or -1
// (empty); a query position in
// [-SA_MAX_POSITION, SA_MAX_POSITION] (a negative one sees no key). The bound keeps p + 1,
// p - window and differences of positions inside int64.
#pragma once

#include <cstdint>

namespace sa {

enum class PositionsOf { tokens, keys, queries };

// Fails with SA_ERR_INVALID_ARGUMENT naming `what[i]` when one of the n values (stride
// elements apart) is outside the rule.
void check_positions(const int64_t *positions, int64_t n, int64_t stride, const char *what, PositionsOf of);

// The same failure for `what[i]` = p, found elsewhere (a device that checked the rule).
[[noreturn]] void fail_position(const char *what, int64_t i, int64_t p, PositionsOf of);

}  // namespace sa
