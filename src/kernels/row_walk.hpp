// Walks the visible rows of a RowSet in order, skipping -1 entries, empty rows (a negative key
// position) and rows past the causal limit. Shared by every kernel so that all instruction
// sets see the same rows. Internal linkage on purpose: each kernel object is built with its
// own -m flags, and a shared inline copy could be merged across them by the linker.
#pragma once

#include "kernels/kernels.hpp"
#include "core/visibility.hpp"

namespace sa {
namespace {

struct RowWalk {
  const RowSet &rs;
  int64_t cursor = 0;

  explicit RowWalk(const RowSet &r) : rs(r) {}

  int64_t raw_row(int64_t i) const { return rs.rows ? int64_t(rs.rows[i]) : rs.begin + i; }

  // Next visible row, or -1 when the set is exhausted.
  int64_t next() {
    while (cursor < rs.n) {
      int64_t r = raw_row(cursor++);
      if (r < 0) continue;
      int64_t pos = rs.key_pos ? rs.key_pos[r] : r;
      if (!sees(rs.pos_limit, pos)) continue;  // future, or an empty slot (position -1)
      return r;
    }
    return -1;
  }
};

}  // namespace
}  // namespace sa
