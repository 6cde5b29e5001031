#include "qkv_layer.hpp"

#include <stdexcept>

namespace quality {
namespace {

std::string shape_text(const npy::Array &a) {
  std::string s = "[";
  for (size_t i = 0; i < a.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(a.shape[i]);
  return s + "]";
}

[[noreturn]] void mismatch(const std::string &dir, int layer, const std::string &why) {
  throw std::runtime_error(dir + ": layer " + std::to_string(layer) + ": " + why);
}

// Rows [first, first + rows) of a [rows, ...] array.
npy::Array rows_of(const npy::Array &a, int64_t first, int64_t rows) {
  npy::Array out;
  out.dtype = a.dtype;
  out.shape = a.shape;
  out.shape[0] = rows;
  const size_t row_bytes = size_t(a.shape[1] * a.shape[2]) * npy::itemsize(a.dtype);
  out.data.assign(a.data.begin() + std::ptrdiff_t(size_t(first) * row_bytes),
                  a.data.begin() + std::ptrdiff_t(size_t(first + rows) * row_bytes));
  return out;
}

}  // namespace

std::string layer_file(const std::string &dir, char tensor, int layer) {
  return dir + "/" + tensor + std::to_string(layer) + ".npy";
}

QkvLayer load_layer(const std::string &dir, int layer) {
  QkvLayer L;
  L.layer = layer;
  L.q = npy::read(layer_file(dir, 'q', layer));
  L.k = npy::read(layer_file(dir, 'k', layer));
  L.v = npy::read(layer_file(dir, 'v', layer));
  for (const npy::Array *a : {&L.q, &L.k, &L.v})
    if (a->shape.size() != 3) mismatch(dir, layer, "expected rank-3 arrays, found shape " + shape_text(*a));
  if (L.k.shape != L.v.shape)
    mismatch(dir, layer, "k " + shape_text(L.k) + " and v " + shape_text(L.v) + " differ in shape");
  if (L.q.dtype != L.k.dtype || L.k.dtype != L.v.dtype) mismatch(dir, layer, "q, k and v differ in dtype");
  L.tokens = L.k.shape[0];
  L.hkv = L.k.shape[1];
  L.d = L.k.shape[2];
  L.hq = L.q.shape[1];
  if (L.tokens < 1 || L.hkv < 1 || L.d < 1) mismatch(dir, layer, "empty keys " + shape_text(L.k));
  if (L.q.shape[2] != L.d)
    mismatch(dir, layer, "q " + shape_text(L.q) + " and k " + shape_text(L.k) + " differ in head_dim");
  if (L.hq < 1 || L.hq % L.hkv != 0)
    mismatch(dir, layer, "q has " + std::to_string(L.hq) + " heads, not a multiple of k's " + std::to_string(L.hkv));
  if (L.q.shape[0] < 1 || L.q.shape[0] > L.tokens)
    mismatch(dir, layer, "q has " + std::to_string(L.q.shape[0]) + " rows, expected 1 .. " + std::to_string(L.tokens));
  L.first_query = L.tokens - L.q.shape[0];
  return L;
}

QkvLayer cut_layer(const QkvLayer &src, int64_t tokens, int64_t query_rows) {
  if (tokens < 1 || tokens > src.tokens)
    throw std::runtime_error("cut: " + std::to_string(tokens) + " tokens asked of a layer of " + std::to_string(src.tokens));
  if (query_rows < 1 || query_rows > tokens || tokens - query_rows < src.first_query)
    throw std::runtime_error("cut: queries of the last " + std::to_string(query_rows) + " of " + std::to_string(tokens) +
                             " positions are not all in the source (its queries start at position " +
                             std::to_string(src.first_query) + ")");
  QkvLayer L = src;
  L.tokens = tokens;
  L.first_query = tokens - query_rows;
  L.k = rows_of(src.k, 0, tokens);
  L.v = rows_of(src.v, 0, tokens);
  L.q = rows_of(src.q, L.first_query - src.first_query, query_rows);
  return L;
}

void save_layer(const std::string &dir, const QkvLayer &layer) {
  npy::write(layer_file(dir, 'q', layer.layer), layer.q);
  npy::write(layer_file(dir, 'k', layer.layer), layer.k);
  npy::write(layer_file(dir, 'v', layer.layer), layer.v);
}

}  // namespace quality
