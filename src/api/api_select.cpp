// sa_select: validate, resolve defaults, hand the request to the index's selector.
#include <cmath>
#include <cstring>
#include <vector>

#include "api/index.hpp"
#include "core/context.hpp"
#include "core/error.hpp"

namespace {

using namespace sa;

// The host's keys of a borrow_keys index (opt->keys), validated, as the selectors read them.
// A head dimension that is not contiguous is packed into `packed` ([n, H_kv, D], this call's).
HostKeys borrowed_keys(const sa_index &ix, const sa_tensor *keys, std::vector<char> &packed) {
  if (!keys)
    fail(SA_ERR_NULL_POINTER, "opt->keys is NULL; ix was created with borrow_keys, so sa_select reads the host's "
                              "keys [n_slots, H_kv, D] from it");
  const TensorView k = view_tensor(keys, "opt->keys", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16});
  expect_dim(k, "opt->keys", 1, ix.opt.num_kv_heads, "the index's num_kv_heads");
  expect_dim(k, "opt->keys", 2, ix.opt.head_dim, "the index's head_dim");
  const int64_t n = ix.selector->size();
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

}  // namespace

extern "C" {

SA_API sa_select_options sa_select_options_default(void) {
  sa_select_options o = SA_SELECT_OPTIONS_INIT;
  return o;
}

SA_API sa_status sa_select(sa_index *ix, const sa_tensor *queries, const sa_select_options *opt,
                           sa_tensor *indices) {
  using namespace sa;
  return guarded("sa_select", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    sa_select_options o = read_options(opt, sa_select_options_default(),
                                       offsetof(sa_select_options, key_segments) + sizeof(const int32_t *), "opt");
    const Device dev = ix->on_device() ? Device{SA_DEVICE_CUDA, ix->device_id} : Device{};
    SelectRequest req;
    req.queries = view_tensor(queries, "queries", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);
    const int64_t n_q = req.queries.shape[0], H_q = req.queries.shape[1];
    const int64_t H_kv = ix->opt.num_kv_heads;
    expect_dim(req.queries, "queries", 2, ix->opt.head_dim, "the index's head_dim");
    if (H_q < 1 || H_q % H_kv != 0)
      fail(SA_ERR_SHAPE, "queries.shape[1] is %lld query heads, expected a positive multiple of the index's %lld KV heads",
           (long long)H_q, (long long)H_kv);
    if (o.top_k < 1) fail(SA_ERR_INVALID_ARGUMENT, "opt->top_k is %d, expected >= 1", int(o.top_k));
    if (o.window < 0) fail(SA_ERR_INVALID_ARGUMENT, "opt->window is %d, expected >= 0", int(o.window));
    if (o.sinks < 0) fail(SA_ERR_INVALID_ARGUMENT, "opt->sinks is %d, expected >= 0", int(o.sinks));
    if (!(o.mass_target >= 0.f && o.mass_target <= 1.f))
      fail(SA_ERR_INVALID_ARGUMENT, "opt->mass_target is %g, expected 0 (off) or in (0, 1]", double(o.mass_target));
    if (!(o.scale >= 0.f) || std::isinf(o.scale))
      fail(SA_ERR_INVALID_ARGUMENT, "opt->scale is %g, expected 0 (default) or a positive finite value", double(o.scale));
    if ((o.query_segments == nullptr) != (o.key_segments == nullptr))
      fail(SA_ERR_INVALID_ARGUMENT, "opt->query_segments and opt->key_segments must be given together");

    const bool per_head = o.per_query_head != 0;
    req.indices = view_tensor(indices, "indices", 3, {SA_DTYPE_I32}, dev);
    expect_dim(req.indices, "indices", 0, n_q, "queries.shape[0]");
    expect_dim(req.indices, "indices", 1, per_head ? H_q : H_kv,
               per_head ? "query heads (per_query_head)" : "the index's KV heads");
    const int64_t need = int64_t(o.sinks) + int64_t(o.window) + int64_t(o.top_k);
    if (req.indices.shape[2] < need)
      fail(SA_ERR_SHAPE, "indices.shape[2] is %lld, expected >= sinks + window + top_k = %lld",
           (long long)req.indices.shape[2], (long long)need);

    const int64_t max_pos = ix->max_position();
    if (ix->on_device()) {
      if (o.mass_target > 0.f || per_head || o.query_positions || o.query_segments)
        fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, which selects without opt->mass_target, "
             "opt->per_query_head, opt->query_positions and segments (leave them 0/NULL)", int(ix->device_id));
      if (n_q == 0) return;
      sa_tensor tq = describe(req.queries), tidx = describe(req.indices);
      sa_plugin_select_args a{};
      a.struct_size = sizeof a;
      a.queries = &tq;
      a.indices = &tidx;
      a.top_k = o.top_k;
      a.window = o.window;
      a.sinks = o.sinks;
      a.scale = o.scale > 0.f ? o.scale : 1.f / std::sqrt(float(ix->opt.head_dim));
      a.first_query_position = max_pos - n_q + 1;
      a.stream = call_stream(*ix->ctx, o.cuda_stream);
      check_plugin(*ix->plugin, ix->plugin->api.select(ix->device_index, &a), "CUDA selection");
      return;
    }
    req.positions.resize(size_t(n_q));
    for (int64_t i = 0; i < n_q; ++i)
      req.positions[size_t(i)] = o.query_positions ? o.query_positions[i] : max_pos - n_q + 1 + i;
    req.query_segments = o.query_segments;
    req.key_segments = o.key_segments;
    req.top_k = o.top_k;
    req.window = o.window;
    req.sinks = o.sinks;
    req.per_query_head = per_head;
    req.mass_target = o.mass_target;
    req.scale = o.scale > 0.f ? o.scale : 1.f / std::sqrt(float(ix->opt.head_dim));
    std::vector<char> packed;
    HostKeys host;
    if (ix->opt.borrow_keys) {
      host = borrowed_keys(*ix, o.keys, packed);
      req.host_keys = &host;
    }
    if (n_q == 0) return;
    ix->selector->select(*ix->ctx, req);
  });
}

}  // extern "C"
