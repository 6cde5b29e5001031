// The CPU side of sa_select and sa_select_batch (cpu_select.hpp).
#include "api/cpu_select.hpp"

#include <cmath>
#include <cstring>

#include "core/error.hpp"

namespace sa {

TensorView scratch_for(const TensorView &out, std::vector<int32_t> &buf) {
  const int64_t H = out.shape[1], width = out.shape[2];
  buf.resize(size_t(checked_mul(checked_mul(out.shape[0], H, "indices"), width, "indices")));
  TensorView tmp = out;
  tmp.data = buf.data();
  tmp.stride[0] = H * width;
  tmp.stride[1] = width;
  tmp.stride[2] = 1;
  return tmp;
}

void copy_out(const std::vector<int32_t> &buf, const TensorView &out) {
  const int64_t H = out.shape[1], width = out.shape[2];
  int32_t *dst = out.ptr<int32_t>();
  for (int64_t i = 0; i < out.shape[0]; ++i)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t c = 0; c < width; ++c)
        dst[i * out.stride[0] + h * out.stride[1] + c * out.stride[2]] = buf[size_t((i * H + h) * width + c)];
}

HostKeys borrowed_keys(const sa_index_options &io, int64_t n, const sa_tensor *keys, std::vector<char> &packed) {
  if (!keys)
    fail(SA_ERR_NULL_POINTER, "opt->keys is NULL; ix was created with borrow_keys, so sa_select reads the host's "
                              "keys [n_slots, H_kv, D] from it");
  const TensorView k = view_tensor(keys, "opt->keys", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16});
  expect_dim(k, "opt->keys", 1, io.num_kv_heads, "the index's num_kv_heads");
  expect_dim(k, "opt->keys", 2, io.head_dim, "the index's head_dim");
  if (k.shape[0] < n)
    fail(SA_ERR_SHAPE, "opt->keys.shape[0] is %lld, but the index holds %lld slots: the host's keys must cover every "
         "slot", (long long)k.shape[0], (long long)n);
  HostKeys h;
  h.dtype = k.dtype;
  if (k.stride[2] == 1 || k.shape[2] == 1) {
    h.data = k.data;
    h.token_stride = k.stride[0];
    h.head_stride = k.stride[1];
    return h;
  }
  const int64_t H = k.shape[1], D = k.shape[2];
  const size_t elem = dtype_size(k.dtype);
  packed.resize(size_t(checked_mul(checked_mul(n, H * D, "opt->keys elements"), int64_t(elem), "opt->keys bytes")));
  for (int64_t s = 0; s < n; ++s)
    for (int64_t hh = 0; hh < H; ++hh)
      for (int64_t d = 0; d < D; ++d)
        std::memcpy(packed.data() + size_t((s * H + hh) * D + d) * elem,
                    k.bytes() + size_t(s * k.stride[0] + hh * k.stride[1] + d * k.stride[2]) * elem, elem);
  h.data = packed.data();
  h.token_stride = H * D;
  h.head_stride = D;
  return h;
}

HostKeys paged_keys(const PagedKV &kv, int64_t b, int64_t n, std::vector<int32_t> &pages, std::vector<char> &packed) {
  HostKeys h;
  h.dtype = kv.k.dtype;
  if (kv.k.stride[2] != 1 && kv.k.shape[2] > 1) {
    const int64_t H = kv.k.shape[1], D = kv.k.shape[2];
    const size_t elem = dtype_size(kv.k.dtype);
    packed.resize(size_t(checked_mul(checked_mul(n, H * D, "kv->k elements"), int64_t(elem), "kv->k bytes")));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t row = kv.slot(b, t) * kv.k.stride[0];
      for (int64_t hh = 0; hh < H; ++hh)
        for (int64_t d = 0; d < D; ++d)
          std::memcpy(packed.data() + size_t((t * H + hh) * D + d) * elem,
                      kv.k.bytes() + size_t(row + hh * kv.k.stride[1] + d * kv.k.stride[2]) * elem, elem);
    }
    h.data = packed.data();
    h.token_stride = H * D;
    h.head_stride = D;
    return h;
  }
  h.data = kv.k.data;
  h.token_stride = kv.k.stride[0];
  h.head_stride = kv.k.stride[1];
  pages = kv.pages_of(b);
  h.pages = pages.empty() ? nullptr : pages.data();
  h.page_size = kv.page_size;
  h.page_stride = kv.page_size * kv.k.stride[0];
  return h;
}

SelectRequest cpu_request(const sa_index_options &io, int64_t max_pos, const TensorView &queries, const TensorView &indices,
                          const sa_select_options &o, int64_t q0, int64_t q1) {
  SelectRequest req;
  req.queries = queries;
  req.queries.data = queries.bytes() + size_t(q0 * queries.stride[0]) * dtype_size(queries.dtype);
  req.queries.shape[0] = q1 - q0;
  req.indices = indices;
  req.indices.data = indices.ptr<int32_t>() + q0 * indices.stride[0];
  req.indices.shape[0] = q1 - q0;
  const int64_t n_q = q1 - q0;
  req.positions.resize(size_t(n_q));
  for (int64_t i = 0; i < n_q; ++i)
    req.positions[size_t(i)] = o.query_positions ? o.query_positions[q0 + i] : max_pos - n_q + 1 + i;
  req.query_segments = o.query_segments;
  req.key_segments = o.key_segments;
  req.top_k = o.top_k;
  req.window = o.window;
  req.sinks = o.sinks;
  req.per_query_head = o.per_query_head != 0;
  req.mass_target = o.mass_target;
  req.scale = o.scale > 0.f ? o.scale : 1.f / std::sqrt(float(io.head_dim));
  return req;
}

}  // namespace sa
