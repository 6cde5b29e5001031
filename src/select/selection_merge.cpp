#include "select/selection_merge.hpp"

#include <algorithm>

namespace sa {

namespace {
// Ascending order of distinct slots: a bitmap pass when that is cheaper than a comparison sort
// (thousands of slots out of a large index).
void sort_distinct_slots(std::vector<int32_t> &slots, std::vector<uint64_t> &bits) {
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
  bits.assign(words, 0);
  for (int32_t s : slots) bits[size_t(s) >> 6] |= uint64_t(1) << (s & 63);
  size_t n = 0;
  for (size_t w = 0; w < words; ++w)
    for (uint64_t b = bits[w]; b; b &= b - 1) slots[n++] = int32_t(w * 64 + size_t(__builtin_ctzll(b)));
}

}  // namespace

void write_selection(std::vector<Candidate> &cands, std::vector<int32_t> &forced, float forced_mass,
                     const KeepRule &rule, const int64_t *key_positions, int32_t *out, int64_t width,
                     int64_t out_stride, std::vector<uint64_t> &bitmap) {
  const size_t room = size_t(std::max<int64_t>(width, 0));
  // Window and sinks come first. They outnumber the list only when positions repeat
  // (sa_index_update); then the window is kept from the query's position down, then the sinks
  // from position 0 up (ties by lower slot), and no scored slot.
  if (forced.size() > room) {
    auto rank = [&](int32_t s) {  // window first, the most recent first; then sinks, the oldest first
      const int64_t p = key_positions[s];
      return in_window(p, rule.query_pos, rule.window) ? rule.query_pos - p : int64_t(rule.window) + p;
    };
    std::nth_element(forced.begin(), forced.begin() + long(room), forced.end(), [&](int32_t a, int32_t b) {
      const int64_t ra = rank(a), rb = rank(b);
      return ra < rb || (ra == rb && a < b);
    });
    forced.resize(room);
  }
  size_t k = std::min({cands.size(), size_t(rule.top_k > 0 ? rule.top_k : 0), room - forced.size()});
  if (k < cands.size()) std::nth_element(cands.begin(), cands.begin() + long(k), cands.end(), ranks_before);
  if (rule.mass_target > 0.f && k > 0) {
    std::sort(cands.begin(), cands.begin() + long(k), ranks_before);
    float mass = forced_mass;
    size_t taken = 0;
    while (taken < k && mass < rule.mass_target) mass += cands[taken++].score;
    k = taken;
  }
  std::vector<int32_t> &chosen = forced;
  for (size_t i = 0; i < k; ++i) chosen.push_back(cands[i].slot);
  sort_distinct_slots(chosen, bitmap);
  const int64_t n = int64_t(chosen.size());  // <= width
  for (int64_t i = 0; i < n; ++i) out[i * out_stride] = chosen[size_t(i)];
  for (int64_t i = n; i < width; ++i) out[i * out_stride] = -1;
}

void write_all_padding(const TensorView &out) {
  for (int64_t i = 0; i < out.shape[0]; ++i)
    for (int64_t h = 0; h < out.shape[1]; ++h)
      for (int64_t c = 0; c < out.shape[2]; ++c) out.ptr<int32_t>()[i * out.stride[0] + h * out.stride[1] + c * out.stride[2]] = -1;
}

}  // namespace sa
