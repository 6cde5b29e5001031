// sa_attend: validate shapes, dtypes and index ranges, then run the attention driver, or hand
// device tensors to the CUDA plugin.
#include <cmath>

#include "attend/attention.hpp"
#include "core/error.hpp"
#include "core/plugin_loader.hpp"

extern "C" {

SA_API sa_attend_options sa_attend_options_default(void) {
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  return o;
}

SA_API sa_status sa_attend(sa_context *ctx, const sa_tensor *q, const sa_tensor *k, const sa_tensor *v,
                           const sa_tensor *indices, const sa_attend_options *opt, sa_tensor *out,
                           sa_tensor *lse) {
  using namespace sa;
  return guarded("sa_attend", [&] {
    if (!ctx) fail(SA_ERR_NULL_POINTER, "ctx is NULL");
    sa_attend_options o = read_options(opt, sa_attend_options_default(),
                                       offsetof(sa_attend_options, key_positions) + sizeof(const int64_t *), "opt");
    // A CUDA tensor anywhere sends the call to the plugin (loaded now if needed); the others
    // must then be on the same device.
    const Device dev = first_cuda_device({q, k, v, indices, out, lse});
    const Plugin *plugin = dev.type == SA_DEVICE_CUDA ? &context_plugin(*ctx, dev.id) : nullptr;
    AttendProblem p;
    p.k = view_tensor(k, "k", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);
    p.v = view_tensor(v, "v", 3, {p.k.dtype}, dev);
    p.q = view_tensor(q, "q", 3, {SA_DTYPE_F32, p.k.dtype}, dev);
    p.out = view_tensor(out, "out", 3, {SA_DTYPE_F32, p.q.dtype}, dev);
    const int64_t n_q = p.q.shape[0], H_q = p.q.shape[1], D = p.q.shape[2];
    const int64_t n_kv = p.k.shape[0], H_kv = p.k.shape[1];
    for (int d = 0; d < 3; ++d) expect_dim(p.v, "v", d, p.k.shape[d], "the shape of k");
    expect_dim(p.k, "k", 2, D, "q.shape[2], the head dimension");
    if (D < 1) fail(SA_ERR_SHAPE, "q.shape[2] (head dimension) is 0");
    if (H_kv < 1 || H_q < 1 || H_q % H_kv != 0)
      fail(SA_ERR_SHAPE, "q has %lld heads and k %lld; expected a positive multiple", (long long)H_q, (long long)H_kv);
    expect_dim(p.out, "out", 0, n_q, "q.shape[0]");
    expect_dim(p.out, "out", 1, H_q, "q.shape[1]");
    expect_dim(p.out, "out", 2, D, "q.shape[2]");
    TensorView lse_view;
    if (lse) {
      lse_view = view_tensor(lse, "lse", 2, {SA_DTYPE_F32}, dev);
      expect_dim(lse_view, "lse", 0, n_q, "q.shape[0]");
      expect_dim(lse_view, "lse", 1, H_q, "q.shape[1]");
      p.lse = &lse_view;
    }
    TensorView idx_view;
    if (indices) {
      idx_view = view_tensor(indices, "indices", 3, {SA_DTYPE_I32}, dev);
      expect_dim(idx_view, "indices", 0, n_q, "q.shape[0]");
      if (idx_view.shape[1] != H_kv && idx_view.shape[1] != H_q)
        fail(SA_ERR_SHAPE, "indices.shape[1] is %lld, expected H_kv = %lld or H_q = %lld",
             (long long)idx_view.shape[1], (long long)H_kv, (long long)H_q);
      const int32_t *ix = idx_view.ptr<const int32_t>();
      // Device memory is not ours to read: the plugin skips entries out of range instead.
      for (int64_t a = 0; !plugin && a < idx_view.shape[0]; ++a)
        for (int64_t b = 0; b < idx_view.shape[1]; ++b)
          for (int64_t c = 0; c < idx_view.shape[2]; ++c) {
            const int32_t r = ix[a * idx_view.stride[0] + b * idx_view.stride[1] + c * idx_view.stride[2]];
            if (r < -1 || r >= n_kv)
              fail(SA_ERR_OUT_OF_RANGE, "indices[%lld][%lld][%lld] is %d, outside [-1, %lld)", (long long)a,
                   (long long)b, (long long)c, int(r), (long long)n_kv);
          }
      p.indices = &idx_view;
      p.per_query_head = idx_view.shape[1] == H_q && H_q != H_kv;
    }
    if (!(o.scale >= 0.f) || std::isinf(o.scale))
      fail(SA_ERR_INVALID_ARGUMENT, "opt->scale is %g, expected 0 (default) or a positive finite value", double(o.scale));
    p.scale = o.scale > 0.f ? o.scale : 1.f / std::sqrt(float(D));
    p.causal = o.causal != 0;
    p.query_positions = o.query_positions;
    p.key_positions = o.key_positions;
    TensorView mass_view;
    if (o.slot_mass) {
      const int rank = o.slot_mass->rank;
      if (rank != 1 && rank != 2)
        fail(SA_ERR_SHAPE, "opt->slot_mass has rank %d, expected 2 ([H_kv, n_kv]) or 1 ([n_kv])", int(rank));
      mass_view = view_tensor(o.slot_mass, "opt->slot_mass", rank, {SA_DTYPE_F32});
      if (rank == 2) expect_dim(mass_view, "opt->slot_mass", 0, H_kv, "k.shape[1], the KV heads");
      expect_dim(mass_view, "opt->slot_mass", rank - 1, n_kv, "k.shape[0], the key rows");
      if (!(o.mass_decay >= 0.f && o.mass_decay <= 1.f))
        fail(SA_ERR_INVALID_ARGUMENT, "opt->mass_decay is %g, expected in [0, 1] (1: no decay)", double(o.mass_decay));
      p.slot_mass = &mass_view;
      p.mass_decay = o.mass_decay;
    }
    if (n_q == 0 && !p.slot_mass) return;
    if (!plugin) {
      attend(*ctx, p);
      return;
    }
    if (p.slot_mass) fail(SA_ERR_UNSUPPORTED, "opt->slot_mass is not supported with CUDA tensors");
    if (p.causal && (o.query_positions || o.key_positions))
      fail(SA_ERR_UNSUPPORTED, "opt->query_positions and opt->key_positions are host arrays; with CUDA tensors causal "
                               "attention takes the default positions only (set both to NULL)");
    sa_tensor tq = describe(p.q), tk = describe(p.k), tv = describe(p.v), tout = describe(p.out);
    sa_tensor tidx = indices ? describe(idx_view) : sa_tensor{}, tlse = lse ? describe(lse_view) : sa_tensor{};
    sa_plugin_attend_args a{};
    a.struct_size = sizeof a;
    a.q = &tq;
    a.k = &tk;
    a.v = &tv;
    a.indices = indices ? &tidx : nullptr;
    a.out = &tout;
    a.lse = lse ? &tlse : nullptr;
    a.per_query_head = p.per_query_head;
    a.causal = p.causal;
    a.scale = p.scale;
    a.stream = call_stream(*ctx, o.cuda_stream);
    check_plugin(*plugin, plugin->api.attend(&a), "CUDA attention");
  });
}

}  // extern "C"
