// The step every selector ends with: keep the sinks and the recent window, add the best
// scored candidates (up to top_k, or fewer once a mass target is reached), and write the
// slots ascending with -1 padding.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
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
// which candidates were found (threads, hash tables). write_selection ranks with it. An object,
// not a function, so that the sorts it is passed to inline it.
struct RanksBefore {
  bool operator()(const Candidate &a, const Candidate &b) const {
    return a.score > b.score || (a.score == b.score && a.slot < b.slot);
  }
};
constexpr RanksBefore ranks_before{};

// Collects the candidates of one list keeping only those that may be among the best `keep`
// (by ranks_before): whenever 4 * keep are held, the best keep stay and the worst of them sets
// a score below which no later candidate can enter. write_selection then ranks a few hundred
// candidates instead of every visible key, and chooses what it would have chosen from all of
// them (with keep = top_k). keep <= 0: every candidate is kept.
class BestCandidates {
 public:
  BestCandidates(std::vector<Candidate> &cands, int64_t keep) : c_(cands), keep_(size_t(std::max<int64_t>(keep, 0))) {
    c_.clear();
    if (keep <= 0) keep_ = SIZE_MAX;
  }
  void add(float score, int32_t slot) {
    if (score < floor_) return;
    c_.push_back({score, slot});
    if (c_.size() >= 4 * keep_ && keep_ > 0) {
      std::nth_element(c_.begin(), c_.begin() + long(keep_ - 1), c_.end(), ranks_before);
      floor_ = c_[keep_ - 1].score;  // ties at the floor may still rank before it by slot
      c_.resize(keep_);
    }
  }

 private:
  std::vector<Candidate> &c_;
  size_t keep_;
  float floor_ = -std::numeric_limits<float>::infinity();
};

// A floor for collecting the best `keep` of n scores: at least keep of them (NaN aside) reach
// it, so no score below it ranks among the best keep, and BestCandidates need not see it. One
// histogram pass over the scores' top bits (an eighth of an octave): few more than keep reach
// the floor. -inf when keep <= 0 or keep >= n, or fewer than keep scores are not NaN. On a
// prefill's lists (thousands of visible keys, K = 128), BestCandidates alone took a quarter of
// exact selection's time, in its compare-and-push and the nth_elements it runs.
float best_floor(const float *scores, int64_t n, int64_t keep);

// forced: visible slots kept by always_kept(); forced_mass: their estimated mass (used only
// with a mass target, where candidate scores must be masses on the same scale).
// The list holds every forced slot, then the best candidates in what remains of `width` (at
// most top_k). Forced slots outnumber `width` only with repeated positions: then the window's
// are kept first, the most recent first, then the sinks', the oldest first (equal positions:
// lower slot first), read from key_positions (the position of each slot), and no candidate.
// Reorders cands and forced. Writes exactly `width` entries to out (stride out_stride).
// scratch: the task's (its buffers grow to the largest list and are reused).
struct WriteScratch {
  std::vector<uint64_t> bitmap;  // sorting many slots
  // The radix select of the best candidates: their score bits, the partitioned candidates,
  // those tied with the k-th best.
  std::vector<uint32_t> keys;
  std::vector<Candidate> best, tied;
};
void write_selection(std::vector<Candidate> &cands, std::vector<int32_t> &forced, float forced_mass,
                     const KeepRule &rule, const int64_t *key_positions, int32_t *out, int64_t width,
                     int64_t out_stride, WriteScratch &scratch);

// Every list of an i32 [n_q, H, width] output is padding (-1): an empty index.
void write_all_padding(const TensorView &out);

}  // namespace sa
