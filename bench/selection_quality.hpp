// How good a selection is, against the double-precision reference attention and the exact
// selector's choice: recall of the exact top-K, attention mass captured, and the error of
// the sparse attention output. Also checks each list against sa_select's contract, so a
// selector that breaks it is reported rather than measured.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "decode_selection.hpp"
#include "reference_attention.hpp"

namespace quality {

// Slots a query at `pos` keeps whatever it scores: the window (pos - W, pos] and the sinks.
bool always_kept(int64_t slot, int64_t pos, const DecodeSetting &setting);

// "" when the list is valid: ascending distinct slots in [0, pos] then -1 padding, every
// window and sink slot present, at most top_k others. Otherwise what is wrong.
std::string check_list(const int32_t *list, int64_t width, int64_t pos, int32_t top_k, const DecodeSetting &setting);
// check_list over every list of a selection; the first problem, naming the query and list.
std::string check_selection(const DecodeSelection &selection, const std::vector<int64_t> &positions, int32_t top_k,
                            const DecodeSetting &setting);

// Lists of the selection holding fewer scored slots (not always kept) than
// min(top_k, slots the query may choose): a selector that drops keys it could have chosen.
int64_t short_lists(const DecodeSelection &selection, const std::vector<int64_t> &positions, int32_t top_k,
                    const DecodeSetting &setting);

// Summed probability of the list's slots (probs: over slots 0 .. pos).
double list_mass(const double *probs, const int32_t *list, int64_t width);
// Share of the exact list's scored slots (not always kept) that the list also holds; 1
// when the exact list scored none.
double list_recall(const int32_t *list, const int32_t *exact, int64_t width, int64_t pos, const DecodeSetting &setting);
// ||out - ref|| / ||ref|| over d values.
double relative_l2(const float *out, const double *ref, int64_t d);

struct SelectionScores {
  double recall = 0;   // mean over queries and lists
  double mass = 0;     // mean over queries and query heads
  double rel_err = 0;  // mean over queries and query heads; NaN without outputs
};

// Scores a valid selection (check_selection) of ref's queries. outputs: sa_attend over the
// selection, f32 [n_q, H_q, D], or nullptr.
SelectionScores score_selection(const ReferenceAttention &ref, const DecodeSelection &selection,
                                const DecodeSelection &exact, const std::vector<float> *outputs,
                                const DecodeSetting &setting);

// The quality bars (DESIGN.md section 7, issue 13): the largest shortfall of attention mass
// allowed against exact top-K of the same list mode, relative to it, at K = 128 and 256:
// exact 0, page and hnsw 1%, lsh 2%, learned and indexer 3%. Negative: the kind has none
// (page-norefine, a speed/quality trade-off without a target).
double mass_bar(const std::string &kind);
// (exact_mass - mass) / exact_mass: positive when the selection holds less than exact top-K.
double relative_shortfall(double mass, double exact_mass);

}  // namespace quality
