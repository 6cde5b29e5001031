#include "select/selection_merge.hpp"

#include <algorithm>

namespace sa {

namespace {
// Ascending order of distinct slots: a bitmap pass when that is cheaper than a comparison sort
// (thousands of slots out of a large index).
void sort_distinct_slots(std::vector<int32_t> &slots) {
  if (slots.size() < 64) {
    std::sort(slots.begin(), slots.end());
    return;
  }
  const int32_t top = *std::max_element(slots.begin(), slots.end());
  const size_t words = size_t(top) / 64 + 1;
  if (words > 4 * slots.size()) {
    std::sort(slots.begin(), slots.end());
    return;
  }
  static thread_local std::vector<uint64_t> bits;
  bits.assign(words, 0);
  for (int32_t s : slots) bits[size_t(s) >> 6] |= uint64_t(1) << (s & 63);
  size_t n = 0;
  for (size_t w = 0; w < words; ++w)
    for (uint64_t b = bits[w]; b; b &= b - 1) slots[n++] = int32_t(w * 64 + size_t(__builtin_ctzll(b)));
}

}  // namespace

void write_selection(std::vector<Candidate> &cands, std::vector<int32_t> &forced, float forced_mass,
                     const KeepRule &rule, int32_t *out, int64_t width, int64_t out_stride) {
  size_t k = std::min(cands.size(), size_t(rule.top_k > 0 ? rule.top_k : 0));
  if (k < cands.size()) std::nth_element(cands.begin(), cands.begin() + k, cands.end(), ranks_before);
  if (rule.mass_target > 0.f && k > 0) {
    std::sort(cands.begin(), cands.begin() + k, ranks_before);
    float mass = forced_mass;
    size_t taken = 0;
    while (taken < k && mass < rule.mass_target) mass += cands[taken++].score;
    k = taken;
  }
  // Window and sinks come first; at most `width` slots fit (more only with duplicate positions).
  std::vector<int32_t> &chosen = forced;
  for (size_t i = 0; i < k; ++i) chosen.push_back(cands[i].slot);
  sort_distinct_slots(chosen);
  int64_t n = std::min<int64_t>(int64_t(chosen.size()), width);
  for (int64_t i = 0; i < n; ++i) out[i * out_stride] = chosen[size_t(i)];
  for (int64_t i = n; i < width; ++i) out[i * out_stride] = -1;
}

void write_all_padding(const TensorView &out) {
  for (int64_t i = 0; i < out.shape[0]; ++i)
    for (int64_t h = 0; h < out.shape[1]; ++h)
      for (int64_t c = 0; c < out.shape[2]; ++c) out.ptr<int32_t>()[i * out.stride[0] + h * out.stride[1] + c * out.stride[2]] = -1;
}

}  // namespace sa
