// sa_select: validate, resolve defaults, hand the request to the index's selector.
#include <cmath>

#include "api/index.hpp"
#include "core/context.hpp"
#include "core/error.hpp"

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
    if (n_q == 0) return;
    ix->selector->select(*ix->ctx, req);
  });
}

}  // extern "C"
