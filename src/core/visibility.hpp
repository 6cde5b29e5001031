// The one visibility rule (issue 17): a query at position p sees a slot when the slot holds a
// token (position >= 0; -1 marks an empty slot, as sa_cache_evict writes and hosts keep until
// they refill it) at a position <= p (no limit without causality) of the query's own segment
// (when segments are given); of the visible slots, the sinks (positions [0, sinks)) and the
// recent window (positions (p - window, p]) are kept whatever their score, and the rest
// ([sinks, p - window]) are chosen by score. CPU and CUDA code (selection, attention, slot
// mass) all ask here.
// Internal linkage on purpose: the attention kernels include it from objects built with their
// own -m flags (row_walk.hpp), and a shared inline copy could be merged across them. Usable
// from CUDA device code (SA_HOST_DEVICE).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SA_HOST_DEVICE __host__ __device__
#else
#define SA_HOST_DEVICE
#endif

namespace sa {
namespace {

constexpr int64_t kEmptySlotPosition = -1;
constexpr int64_t kNoPositionLimit = INT64_MAX;  // a query without causality

// Whether a slot at key_pos holds a token at all.
SA_HOST_DEVICE constexpr bool holds_token(int64_t key_pos) { return key_pos >= 0; }

// Whether a query limited to positions <= pos_limit sees a slot at key_pos.
SA_HOST_DEVICE constexpr bool sees(int64_t pos_limit, int64_t key_pos) {
  return holds_token(key_pos) && key_pos <= pos_limit;
}

// The same with segments: key_segments (one per slot; nullptr: no segments) must give `slot`
// the query's segment.
SA_HOST_DEVICE constexpr bool sees(int64_t pos_limit, int64_t key_pos, const int32_t *key_segments, int64_t slot,
                                   int32_t query_segment) {
  return sees(pos_limit, key_pos) && (!key_segments || key_segments[slot] == query_segment);
}

// Whether a slot at key_pos is in the recent window of a query at query_pos.
SA_HOST_DEVICE constexpr bool in_window(int64_t key_pos, int64_t query_pos, int64_t window) {
  return holds_token(key_pos) && key_pos > query_pos - window;
}

// Whether a slot at key_pos is a sink or in the window of a query at query_pos.
SA_HOST_DEVICE constexpr bool in_sinks_or_window(int64_t key_pos, int64_t query_pos, int64_t window, int64_t sinks) {
  return holds_token(key_pos) && (key_pos < sinks || in_window(key_pos, query_pos, window));
}

// The same rule as position ranges, inclusive ([lo, hi]; empty when lo > hi), for callers
// that find slots by position (binary search, or slot == position on a device index).
struct PositionRange {
  int64_t lo, hi;
};

// The sinks a query at query_pos sees.
SA_HOST_DEVICE constexpr PositionRange sink_positions(int64_t query_pos, int64_t sinks) {
  return {0, sinks - 1 < query_pos ? sinks - 1 : query_pos};
}

// Its window, less the sinks (which come first).
SA_HOST_DEVICE constexpr PositionRange window_positions(int64_t query_pos, int64_t window, int64_t sinks) {
  return {query_pos - window + 1 > sinks ? query_pos - window + 1 : sinks, query_pos};
}

// The positions it chooses by score: visible, neither sink nor window.
SA_HOST_DEVICE constexpr PositionRange scored_positions(int64_t query_pos, int64_t window, int64_t sinks) {
  return {sinks, query_pos - window};
}

}  // namespace
}  // namespace sa
