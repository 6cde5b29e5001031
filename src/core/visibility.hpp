// The one visibility rule (issue 17): a query at position p sees a slot when the slot holds a
// token (position >= 0; -1 marks an empty slot, as sa_cache_evict writes and hosts keep until
// they refill it) at a position <= p (no limit without causality) of the query's own segment;
// of the visible slots, the sinks (positions [0, sinks)) and the recent window (positions
// (p - window, p]) are kept whatever their score. Segments stay with their callers for now.
// Internal linkage on purpose: the attention kernels include it from objects built with their
// own -m flags (row_walk.hpp), and a shared inline copy could be merged across them.
#pragma once

#include <cstdint>

namespace sa {
namespace {

constexpr int64_t kEmptySlotPosition = -1;

// Whether a slot at key_pos holds a token at all.
constexpr bool holds_token(int64_t key_pos) { return key_pos >= 0; }

// Whether a query limited to positions <= pos_limit sees a slot at key_pos.
constexpr bool sees(int64_t pos_limit, int64_t key_pos) { return holds_token(key_pos) && key_pos <= pos_limit; }

// Whether a slot at key_pos is a sink or in the window of a query at query_pos.
constexpr bool in_sinks_or_window(int64_t key_pos, int64_t query_pos, int64_t window, int64_t sinks) {
  return holds_token(key_pos) && (key_pos < sinks || key_pos > query_pos - window);
}

}  // namespace
}  // namespace sa
