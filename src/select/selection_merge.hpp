// The step every selector ends with: keep the sinks and the recent window, add the best
// scored candidates (up to top_k, or fewer once a mass target is reached), and write the
// slots ascending with -1 padding.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor_view.hpp"
#include "core/visibility.hpp"

namespace sa {

struct KeepRule {
  int64_t query_pos;  // the query sees positions <= query_pos
  int32_t window, sinks, top_k;
  float mass_target;  // 0: off
};

// Sinks and the window: positions [0, sinks) and (query_pos - window, query_pos] (never an
// empty slot; core/visibility.hpp).
inline bool always_kept(int64_t pos, const KeepRule &r) { return in_sinks_or_window(pos, r.query_pos, r.window, r.sinks); }

struct Candidate {
  float score;   // estimated attention mass (or any score; higher is better)
  int32_t slot;
};

// Higher score first; equal scores by lower slot, so results never depend on the order in
// which candidates were found (threads, hash tables). write_selection ranks with it.
inline bool ranks_before(const Candidate &a, const Candidate &b) {
  return a.score > b.score || (a.score == b.score && a.slot < b.slot);
}

// forced: visible slots kept by always_kept(); forced_mass: their estimated mass (used only
// with a mass target, where candidate scores must be masses on the same scale).
// The list holds every forced slot, then the best candidates in what remains of `width` (at
// most top_k). Forced slots outnumber `width` only with repeated positions: then the window's
// are kept first, the most recent first, then the sinks', the oldest first (equal positions:
// lower slot first), read from key_positions (the position of each slot), and no candidate.
// Reorders cands and forced. Writes exactly `width` entries to out (stride out_stride).
// bitmap: the task's scratch (sorting many slots).
void write_selection(std::vector<Candidate> &cands, std::vector<int32_t> &forced, float forced_mass,
                     const KeepRule &rule, const int64_t *key_positions, int32_t *out, int64_t width,
                     int64_t out_stride, std::vector<uint64_t> &bitmap);

// Every list of an i32 [n_q, H, width] output is padding (-1): an empty index.
void write_all_padding(const TensorView &out);

}  // namespace sa
