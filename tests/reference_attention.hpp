// Double-precision dense attention, the oracle for sa_attend. It reads the very descriptors
// passed to the library (shape and strides, all-zero strides meaning contiguous) and decodes
// f16/bf16 with the test's own decoders, so layout and dtype handling are checked too.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "sparseattn.h"
#include "test_util.hpp"

namespace ref {

// Element (i, j, k) of a rank-3 descriptor, or (i, j) of a rank-2 one.
inline int64_t element_offset(const sa_tensor &t, std::initializer_list<int64_t> idx) {
  bool zero = true;
  for (int i = 0; i < t.rank; ++i) zero = zero && t.strides[i] == 0;
  int64_t stride[SA_MAX_RANK] = {0, 0, 0, 0};
  if (zero) {
    int64_t s = 1;
    for (int i = t.rank - 1; i >= 0; --i) {
      stride[i] = s;
      s *= t.shape[i] > 0 ? t.shape[i] : 1;
    }
  } else {
    for (int i = 0; i < t.rank; ++i) stride[i] = t.strides[i];
  }
  int64_t off = 0;
  int i = 0;
  for (int64_t x : idx) off += x * stride[i++];
  return off;
}
inline double at(const sa_tensor &t, std::initializer_list<int64_t> idx) {
  return sat::load_as_double(t.data, t.dtype, element_offset(t, idx));
}

struct AttendArgs {
  const sa_tensor *q = nullptr, *k = nullptr, *v = nullptr;
  const sa_tensor *indices = nullptr;  // NULL: all keys
  double scale = 0;                    // 0: 1/sqrt(D)
  bool causal = false;
  const int64_t *query_positions = nullptr;
  const int64_t *key_positions = nullptr;
  // [h_kv][n_kv]: the position row j holds in KV head h (per-KV-head eviction); replaces
  // key_positions. With either, a row at position -1 is empty and never attended.
  const int64_t *head_key_positions = nullptr;
};

struct AttendResult {
  int64_t n_q = 0, h_q = 0, d = 0;
  std::vector<double> out;  // [n_q, H_q, D] row-major
  std::vector<double> lse;  // [n_q, H_q], natural log; -inf when no key is visible
  // [H_kv, n_kv]: the softmax probability each key row received, summed over the queries and
  // the KV head's query heads (a row listed twice adds twice): slot_mass of one call.
  std::vector<double> mass;
};

inline AttendResult attend(const AttendArgs &a) {
  const sa_tensor &q = *a.q, &k = *a.k, &v = *a.v;
  AttendResult r;
  r.n_q = q.shape[0];
  r.h_q = q.shape[1];
  r.d = q.shape[2];
  const int64_t n_kv = k.shape[0], h_kv = k.shape[1], D = r.d;
  const int64_t group = r.h_q / h_kv;
  const double scale = a.scale != 0 ? a.scale : 1.0 / std::sqrt(double(D));
  r.out.assign(size_t(r.n_q * r.h_q * D), 0.0);
  r.lse.assign(size_t(r.n_q * r.h_q), -std::numeric_limits<double>::infinity());
  r.mass.assign(size_t(h_kv * n_kv), 0.0);

  const bool positioned = a.key_positions || a.head_key_positions;
  std::vector<int64_t> kpos(size_t(h_kv * n_kv));  // [h_kv][n_kv]
  int64_t max_kpos = n_kv - 1;
  for (int64_t hk = 0; hk < h_kv; ++hk)
    for (int64_t j = 0; j < n_kv; ++j)
      kpos[size_t(hk * n_kv + j)] = a.head_key_positions ? a.head_key_positions[hk * n_kv + j]
                                    : a.key_positions      ? a.key_positions[j]
                                                           : j;
  if (positioned) {
    max_kpos = std::numeric_limits<int64_t>::min();
    for (int64_t p : kpos) max_kpos = std::max(max_kpos, p);
  }

  for (int64_t i = 0; i < r.n_q; ++i) {
    int64_t p = a.query_positions ? a.query_positions[i] : max_kpos - (r.n_q - 1) + i;
    for (int64_t h = 0; h < r.h_q; ++h) {
      int64_t hk = h / group;
      std::vector<int64_t> rows;
      if (!a.indices) {
        for (int64_t j = 0; j < n_kv; ++j) rows.push_back(j);
      } else {
        const sa_tensor &ix = *a.indices;
        int64_t list = ix.shape[1] == r.h_q ? h : hk;  // per query head or per KV head
        for (int64_t w = 0; w < ix.shape[2]; ++w) {
          int64_t j = int64_t(at(ix, {i, list, w}));
          if (j != -1) rows.push_back(j);
        }
      }
      if (a.causal || positioned) {
        std::vector<int64_t> kept;
        for (int64_t j : rows) {
          const int64_t kp = kpos[size_t(hk * n_kv + j)];
          if ((!positioned || kp >= 0) && (!a.causal || kp <= p)) kept.push_back(j);
        }
        rows.swap(kept);
      }
      if (rows.empty()) continue;  // out stays 0, lse -inf
      std::vector<double> s(rows.size());
      double m = -std::numeric_limits<double>::infinity();
      for (size_t n = 0; n < rows.size(); ++n) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += at(q, {i, h, d}) * at(k, {rows[n], hk, d});
        s[n] = scale * dot;
        m = std::max(m, s[n]);
      }
      double denom = 0;
      for (double &x : s) denom += (x = std::exp(x - m));
      double *o = &r.out[size_t((i * r.h_q + h) * D)];
      for (size_t n = 0; n < rows.size(); ++n) {
        for (int64_t d = 0; d < D; ++d) o[d] += s[n] / denom * at(v, {rows[n], hk, d});
        r.mass[size_t(hk * n_kv + rows[n])] += s[n] / denom;
      }
      r.lse[size_t(i * r.h_q + h)] = m + std::log(denom);
    }
  }
  return r;
}

}  // namespace ref
