#include "select/selection_merge.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "select/kth_largest.hpp"
#include "select/order_key.hpp"

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

// Moves the k best candidates by ranks_before to the front of c, in no particular order, as
// nth_element(c.begin(), c.begin() + k, c.end(), ranks_before) does (0 < k < c.size()): the
// k-th best score and how many of the scores equal to it are among the best, by a radix select
// over the scores' bits (kth_largest_key), then the candidates above it and the lowest slots
// of those equal to it, with no data-dependent branch (a comparison select mispredicts on
// every other candidate). NaN scores, which ranks_before does not order, take nth_element.
void partition_best(std::vector<Candidate> &c, size_t k, WriteScratch &s) {
  const size_t n = c.size();
  bool nan = false;
  for (const Candidate &x : c) nan |= std::isnan(x.score);
  if (n < 256 || nan) {
    std::nth_element(c.begin(), c.begin() + long(k), c.end(), ranks_before);
    return;
  }
  std::vector<uint32_t> &keys = s.keys;
  keys.resize(n);
  for (size_t i = 0; i < n; ++i) keys[i] = order_key(c[i].score);
  const KthKey kth = kth_largest_key(keys.data(), n, k);  // overwrites keys
  // c becomes [above | equal, by slot first | below]; the best are those above and the `rank`
  // lowest slots of those equal.
  std::vector<Candidate> &out = s.best, &tied = s.tied;
  out.resize(n);
  tied.resize(n);
  size_t above = 0, equal = 0, below = n;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t key = order_key(c[i].score);
    const bool gt = key > kth.key, eq = key == kth.key;
    out[gt ? above : below - 1] = c[i];
    tied[equal] = c[i];
    above += gt;
    below -= !gt && !eq;
    equal += eq;
  }
  const auto by_slot = [](const Candidate &a, const Candidate &b) { return a.slot < b.slot; };
  std::nth_element(tied.begin(), tied.begin() + long(kth.rank - 1), tied.begin() + long(equal), by_slot);
  std::copy(tied.begin(), tied.begin() + long(equal), out.begin() + long(above));
  c.swap(out);
}

}  // namespace

float best_floor(const float *scores, int64_t n, int64_t keep) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (keep <= 0 || keep >= n) return kNegInf;
  constexpr int kBins = 2048, kShift = 21;  // the keys' top 11 bits
  // Two histograms, alternating, so that runs of equal bins do not wait on one counter.
  uint32_t hist[2][kBins] = {};
  int64_t j = 0;
  for (; j + 2 <= n; j += 2) {
    hist[0][order_key(scores[j]) >> kShift] += scores[j] == scores[j];  // NaN: not counted
    hist[1][order_key(scores[j + 1]) >> kShift] += scores[j + 1] == scores[j + 1];
  }
  if (j < n) hist[0][order_key(scores[j]) >> kShift] += scores[j] == scores[j];
  int64_t reached = 0;
  for (int b = kBins - 1; b >= 0; --b) {
    reached += int64_t(hist[0][b]) + hist[1][b];
    if (reached < keep) continue;
    // The lowest score whose key is in bin b: every score below it has a lower key.
    const float f = key_float(uint32_t(b) << kShift);
    return std::isnan(f) ? kNegInf : f;
  }
  return kNegInf;
}

void write_selection(std::vector<Candidate> &cands, std::vector<int32_t> &forced, float forced_mass,
                     const KeepRule &rule, const int64_t *key_positions, int32_t *out, int64_t width,
                     int64_t out_stride, WriteScratch &scratch) {
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
  if (k > 0 && k < cands.size()) partition_best(cands, k, scratch);
  if (rule.mass_target > 0.f && k > 0) {
    std::sort(cands.begin(), cands.begin() + long(k), ranks_before);
    float mass = forced_mass;
    size_t taken = 0;
    while (taken < k && mass < rule.mass_target) mass += cands[taken++].score;
    k = taken;
  }
  std::vector<int32_t> &chosen = forced;
  for (size_t i = 0; i < k; ++i) chosen.push_back(cands[i].slot);
  sort_distinct_slots(chosen, scratch.bitmap);
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
