#include "select/selection_merge.hpp"

#include <algorithm>

namespace sa {

namespace {
// Higher score first; equal scores by lower slot, so results never depend on the order in
// which candidates were found (threads, hash tables).
bool better(const Candidate &a, const Candidate &b) {
  return a.score > b.score || (a.score == b.score && a.slot < b.slot);
}
}  // namespace

void write_selection(std::vector<Candidate> &cands, std::vector<int32_t> &forced, float forced_mass,
                     const KeepRule &rule, int32_t *out, int64_t width, int64_t out_stride) {
  size_t k = std::min(cands.size(), size_t(rule.top_k > 0 ? rule.top_k : 0));
  if (k < cands.size()) std::nth_element(cands.begin(), cands.begin() + k, cands.end(), better);
  if (rule.mass_target > 0.f && k > 0) {
    std::sort(cands.begin(), cands.begin() + k, better);
    float mass = forced_mass;
    size_t taken = 0;
    while (taken < k && mass < rule.mass_target) mass += cands[taken++].score;
    k = taken;
  }
  // Window and sinks come first; at most `width` slots fit (more only with duplicate positions).
  std::vector<int32_t> &chosen = forced;
  for (size_t i = 0; i < k; ++i) chosen.push_back(cands[i].slot);
  std::sort(chosen.begin(), chosen.end());
  int64_t n = std::min<int64_t>(int64_t(chosen.size()), width);
  for (int64_t i = 0; i < n; ++i) out[i * out_stride] = chosen[size_t(i)];
  for (int64_t i = n; i < width; ++i) out[i * out_stride] = -1;
}

}  // namespace sa
