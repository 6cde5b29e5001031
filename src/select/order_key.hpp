// Floats as unsigned keys that order as the floats compare, for the radix select of
// kth_largest.hpp (the page selector's best pages, write_selection's best candidates) and
// best_floor: +0 and -0 give one key; NaNs are the caller's to leave out.
#pragma once

#include <cstdint>
#include <cstring>

namespace sa {

inline uint32_t order_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) == 0) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The float of a key (+0 for the zeros' key).
inline float key_float(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace sa
