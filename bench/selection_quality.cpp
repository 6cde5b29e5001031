#include "selection_quality.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace quality {
namespace {

int64_t filled(const int32_t *list, int64_t width) {
  int64_t n = 0;
  while (n < width && list[n] >= 0) ++n;
  return n;
}

}  // namespace

bool always_kept(int64_t slot, int64_t pos, const DecodeSetting &setting) {
  return slot <= pos && (slot > pos - setting.window || slot < setting.sinks);
}

std::string check_list(const int32_t *list, int64_t width, int64_t pos, int32_t top_k, const DecodeSetting &setting) {
  const int64_t n = filled(list, width);
  for (int64_t c = n; c < width; ++c)
    if (list[c] != -1) return "entry " + std::to_string(c) + " is " + std::to_string(list[c]) + " after the -1 padding began";
  int64_t scored = 0, kept = 0;
  for (int64_t c = 0; c < n; ++c) {
    if (list[c] > pos) return "slot " + std::to_string(list[c]) + " is after the query's position " + std::to_string(pos);
    if (c > 0 && list[c] <= list[c - 1]) return "slots not strictly ascending at entry " + std::to_string(c);
    if (always_kept(list[c], pos, setting)) ++kept;
    else ++scored;
  }
  int64_t want_kept = 0;
  for (int64_t s = 0; s <= pos; ++s) want_kept += always_kept(s, pos, setting);
  if (kept != want_kept)
    return "holds " + std::to_string(kept) + " of the " + std::to_string(want_kept) + " window and sink slots";
  if (scored > top_k) return "holds " + std::to_string(scored) + " scored slots, more than top_k " + std::to_string(top_k);
  return "";
}

std::string check_selection(const DecodeSelection &selection, const std::vector<int64_t> &positions, int32_t top_k,
                            const DecodeSetting &setting) {
  if (selection.indices.size() != positions.size() * size_t(selection.lists) * size_t(selection.width))
    return "the selection does not hold one list per query and head";
  for (size_t i = 0; i < positions.size(); ++i)
    for (int64_t l = 0; l < selection.lists; ++l) {
      std::string why = check_list(selection.list(i, l), selection.width, positions[i], top_k, setting);
      if (!why.empty())
        return "query at position " + std::to_string(positions[i]) + ", list " + std::to_string(l) + ": " + why;
    }
  return "";
}

int64_t short_lists(const DecodeSelection &selection, const std::vector<int64_t> &positions, int32_t top_k,
                    const DecodeSetting &setting) {
  int64_t n_short = 0;
  for (size_t i = 0; i < positions.size(); ++i) {
    const int64_t pos = positions[i];
    int64_t choosable = 0;
    for (int64_t s = 0; s <= pos; ++s) choosable += !always_kept(s, pos, setting);
    const int64_t want = std::min<int64_t>(top_k, choosable);
    for (int64_t l = 0; l < selection.lists; ++l) {
      const int32_t *list = selection.list(i, l);
      int64_t scored = 0;
      for (int64_t c = 0; c < selection.width && list[c] >= 0; ++c) scored += !always_kept(list[c], pos, setting);
      n_short += scored < want;
    }
  }
  return n_short;
}

double list_mass(const double *probs, const int32_t *list, int64_t width) {
  double m = 0;
  for (int64_t c = 0; c < width && list[c] >= 0; ++c) m += probs[list[c]];
  return m;
}

double list_recall(const int32_t *list, const int32_t *exact, int64_t width, int64_t pos, const DecodeSetting &setting) {
  // Both lists ascending: merge.
  int64_t want = 0, hit = 0, a = 0;
  const int64_t n = filled(list, width), m = filled(exact, width);
  for (int64_t b = 0; b < m; ++b) {
    if (always_kept(exact[b], pos, setting)) continue;
    ++want;
    while (a < n && list[a] < exact[b]) ++a;
    if (a < n && list[a] == exact[b]) ++hit;
  }
  return want ? double(hit) / double(want) : 1.0;
}

double relative_l2(const float *out, const double *ref, int64_t d) {
  double num = 0, den = 0;
  for (int64_t x = 0; x < d; ++x) {
    const double e = double(out[x]) - ref[x];
    num += e * e;
    den += ref[x] * ref[x];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

SelectionScores score_selection(const ReferenceAttention &ref, const DecodeSelection &selection,
                                const DecodeSelection &exact, const std::vector<float> *outputs,
                                const DecodeSetting &setting) {
  if (selection.lists != exact.lists || selection.width != exact.width)
    throw std::invalid_argument("score_selection: the selection and the exact one differ in shape");
  const int64_t hq = ref.heads(), d = ref.head_dim();
  const int64_t group = hq / selection.lists;  // 1 with lists per query head
  const size_t n_q = ref.queries();
  if (outputs && outputs->size() != n_q * size_t(hq * d))
    throw std::invalid_argument("score_selection: outputs are not [n_q, H_q, D]");
  SelectionScores s;
  double recall = 0, mass = 0, err = 0;
  for (size_t i = 0; i < n_q; ++i) {
    for (int64_t l = 0; l < selection.lists; ++l)
      recall += list_recall(selection.list(i, l), exact.list(i, l), selection.width, ref.position(i), setting);
    for (int64_t h = 0; h < hq; ++h) {
      mass += list_mass(ref.probs(i, h), selection.list(i, h / group), selection.width);
      if (outputs) err += relative_l2(outputs->data() + (i * size_t(hq) + size_t(h)) * size_t(d), ref.output(i, h), d);
    }
  }
  s.recall = recall / double(n_q * size_t(selection.lists));
  s.mass = mass / double(n_q * size_t(hq));
  s.rel_err = outputs ? err / double(n_q * size_t(hq)) : std::numeric_limits<double>::quiet_NaN();
  return s;
}

double mass_bar(const std::string &kind) {
  if (kind == "exact") return 0;
  if (kind == "page" || kind == "hnsw") return 0.01;
  if (kind == "lsh") return 0.02;
  if (kind == "learned" || kind == "indexer") return 0.03;
  return -1;
}

double relative_shortfall(double mass, double exact_mass) {
  return exact_mass > 0 ? (exact_mass - mass) / exact_mass : 0;
}

}  // namespace quality
