// Selection in the decode setting, through the public C ABI only: an index of one selector
// kind is built over a layer's keys up to the latest query, then each query (at position p)
// selects on its own, as a decoding engine would ask for one new token: the window
// (p - W, p] and the sinks [0, S) are always kept and top_k keys are chosen among the rest.
// Kinds the library does not build come back with SA_ERR_UNSUPPORTED, so a report can
// print them as such and measure them unchanged once they exist.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv_layer.hpp"
#include "sparseattn.h"

namespace quality {

struct DecodeSetting {
  int32_t window = 64;
  int32_t sinks = 0;
  bool per_query_head = false;  // one list per query head instead of per KV head
  double scale = 0;             // 0: 1/sqrt(D)

  double scale_for(int64_t d) const;
  int32_t width(int32_t top_k) const { return sinks + window + top_k; }
};

// A named selector configuration: the report's rows.
struct SelectorKind {
  std::string name;
  std::string about;
  sa_index_options options;  // kind and its sub-options; heads, dim and dtype set per layer
};

// exact, page (refined), page-norefine, lsh, hnsw with the library's default options.
const std::vector<SelectorKind> &selector_kinds();
// nullptr when no kind has that name.
const SelectorKind *find_selector_kind(const std::string &name);

// Query positions: `count` evenly spaced in [lo, hi), ascending, distinct.
std::vector<int64_t> spread_positions(int64_t lo, int64_t hi, int64_t count);

struct DecodeSelection {
  sa_status status = SA_OK;
  std::string error;      // which call failed and the library's message (status != SA_OK)
  int64_t lists = 0;      // per query: H_kv, or H_q when per_query_head
  int64_t width = 0;
  std::vector<int32_t> indices;  // [n_q, lists, width], ascending slots then -1
  double build_seconds = 0;      // sa_index_create + sa_index_append
  double select_seconds = 0;     // all sa_select calls together (the best of `repeat` passes)

  bool ok() const { return status == SA_OK; }
  const int32_t *list(size_t query, int64_t l) const {
    return indices.data() + (query * size_t(lists) + size_t(l)) * size_t(width);
  }
};

// Builds the index with ctx over keys [0, max(positions)] and selects for every query, one
// sa_select call each; `repeat` passes over the queries, timed, the best kept.
DecodeSelection select_decode(sa_context *ctx, const sa_index_options &kind, const QkvLayer &layer,
                              const std::vector<int64_t> &positions, int32_t top_k, const DecodeSetting &setting,
                              int repeat = 1);

// sa_attend over the selection's slots (causal at each query's position): out receives
// f32 [n_q, H_q, D]. On failure returns the status and sets *error.
sa_status attend_selection(sa_context *ctx, const QkvLayer &layer, const std::vector<int64_t> &positions,
                           const DecodeSelection &selection, const DecodeSetting &setting, std::vector<float> *out,
                           std::string *error);

}  // namespace quality
