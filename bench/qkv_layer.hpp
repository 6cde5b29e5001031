// One layer's attention tensors read from a directory laid out like the tinylm-qkv data set
// (not in the repository; tests/data holds a cut): q{L}.npy [T_q, H_q, D], k{L}.npy and v{L}.npy [T, H_kv, D],
// f16 or f32, all of one dtype. The keys and values cover positions 0 .. T-1; the queries
// cover the last T_q of them (T_q == T in the shared data; a cut fixture may keep fewer).
#pragma once

#include <cstdint>
#include <string>

#include "npy.hpp"

namespace quality {

struct QkvLayer {
  int layer = 0;
  npy::Array q, k, v;
  int64_t tokens = 0;       // T
  int64_t first_query = 0;  // position of q's row 0: T - T_q
  int64_t hq = 0, hkv = 0, d = 0;

  // Element (position, head, dim) of q (position >= first_query), k or v.
  int64_t q_offset(int64_t pos, int64_t h) const { return ((pos - first_query) * hq + h) * d; }
  int64_t kv_offset(int64_t pos, int64_t h) const { return (pos * hkv + h) * d; }
};

std::string layer_file(const std::string &dir, char tensor, int layer);

// Reads and checks q, k and v of `layer`. Throws npy::FormatError on a malformed file and
// std::runtime_error when the three do not fit together.
QkvLayer load_layer(const std::string &dir, int layer);

// The first `tokens` positions of keys and values and the queries of the last
// `query_rows` of those positions (what the model computes on that prefix, since
// attention is causal).
QkvLayer cut_layer(const QkvLayer &src, int64_t tokens, int64_t query_rows);

// Writes q{L}.npy, k{L}.npy and v{L}.npy into dir (which must exist).
void save_layer(const std::string &dir, const QkvLayer &layer);

}  // namespace quality
