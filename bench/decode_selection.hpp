// Selection in the decode setting, through the public C ABI only: an index of one selector
// kind is built over a layer's keys in one of the orders engines build it (BuildOrder), and
// each query (at position p) selects on its own, as a decoding engine would ask for one new
// token: the window (p - W, p] and the sinks [0, S) are always kept and top_k keys are chosen
// among the rest.
// Kinds the library does not build come back with SA_ERR_UNSUPPORTED, so a report can
// print them as such and measure them unchanged once they exist.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qkv_layer.hpp"
#include "sparseattn.h"

namespace quality {

// A contiguous CPU tensor [a, b, c] over data (the library reads or writes it in place).
sa_tensor tensor3(const void *data, sa_dtype dtype, int64_t a, int64_t b, int64_t c);

// How the index receives the keys. In the orders past `all`, queries select as their key
// arrives (the index then holds exactly keys 0 .. p), as an engine interleaves appends and
// selections; approximate selectors whose state depends on the appends (HNSW's graph and
// centring, LSH's tables) are judged in each.
enum class BuildOrder {
  all,            // one append of every key up to the latest query, then every query selects
  decode,         // one key per append from the first
  prompt_decode,  // one append of the prompt, then one key per append
};
const char *order_name(BuildOrder order);  // all, decode, prompt+decode
// false when `name` is none of those.
bool parse_order(const std::string &name, BuildOrder *order);

struct DecodeSetting {
  BuildOrder order = BuildOrder::all;
  int64_t prompt = -1;  // prompt_decode: keys in the first append; -1: up to the first query's position
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
  bool needs_weights = false;  // learned, indexer: a safetensors file (tools/learned_fit)

  // options with the weights file and the layer whose tensors to use (kinds that need them).
  // The pointer into `weights` lives as long as that string.
  sa_index_options index_options(const std::string &weights, int layer) const;
};

// exact, page (refined), page-norefine, lsh, hnsw with the library's default options.
const std::vector<SelectorKind> &selector_kinds();
// Those, then learned and indexer (default options; needs_weights: a file given per run).
const std::vector<SelectorKind> &all_selector_kinds();
// Among all_selector_kinds(); nullptr when no kind has that name.
const SelectorKind *find_selector_kind(const std::string &name);

// Query positions: `count` evenly spaced in [lo, hi), ascending, distinct.
std::vector<int64_t> spread_positions(int64_t lo, int64_t hi, int64_t count);

struct DecodeSelection {
  sa_status status = SA_OK;
  std::string error;      // which call failed and the library's message (status != SA_OK)
  int64_t lists = 0;      // per query: H_kv, or H_q when per_query_head
  int64_t width = 0;
  std::vector<int32_t> indices;  // [n_q, lists, width], ascending slots then -1
  double build_seconds = 0;      // sa_index_create + every sa_index_append
  double select_seconds = 0;     // all sa_select calls together (each the best of `repeat`)

  bool ok() const { return status == SA_OK; }
  const int32_t *list(size_t query, int64_t l) const {
    return indices.data() + (query * size_t(lists) + size_t(l)) * size_t(width);
  }
};

// Builds the index with ctx over keys [0, max(positions)] in setting.order and selects for
// every query, one sa_select call each, timed `repeat` times, the best kept per query.
// Orders past `all` need ascending positions (std::invalid_argument otherwise).
DecodeSelection select_decode(sa_context *ctx, const sa_index_options &kind, const QkvLayer &layer,
                              const std::vector<int64_t> &positions, int32_t top_k, const DecodeSetting &setting,
                              int repeat = 1);

// sa_attend over the selection's slots (causal at each query's position): out receives
// f32 [n_q, H_q, D]. On failure returns the status and sets *error.
sa_status attend_selection(sa_context *ctx, const QkvLayer &layer, const std::vector<int64_t> &positions,
                           const DecodeSelection &selection, const DecodeSetting &setting, std::vector<float> *out,
                           std::string *error);

}  // namespace quality
