// sa_select and sa_select_batch: validate, resolve defaults, hand each request to its index's
// selector.
#include <cmath>
#include <cstring>
#include <vector>

#include "api/index.hpp"
#include "core/context.hpp"
#include "core/error.hpp"
#include "core/paged_kv.hpp"
#include "core/positions.hpp"
#include "core/threading.hpp"

namespace {

using namespace sa;

sa_select_options read_select_options(const sa_select_options *opt) {
  sa_select_options o = read_options(opt, sa_select_options_default(),
                                     offsetof(sa_select_options, key_segments) + sizeof(const int32_t *), "opt");
  if (o.top_k < 1) fail(SA_ERR_INVALID_ARGUMENT, "opt->top_k is %d, expected >= 1", int(o.top_k));
  if (o.window < 0) fail(SA_ERR_INVALID_ARGUMENT, "opt->window is %d, expected >= 0", int(o.window));
  if (o.sinks < 0) fail(SA_ERR_INVALID_ARGUMENT, "opt->sinks is %d, expected >= 0", int(o.sinks));
  if (!(o.mass_target >= 0.f && o.mass_target <= 1.f))
    fail(SA_ERR_INVALID_ARGUMENT, "opt->mass_target is %g, expected 0 (off) or in (0, 1]", double(o.mass_target));
  if (!(o.scale >= 0.f) || std::isinf(o.scale))
    fail(SA_ERR_INVALID_ARGUMENT, "opt->scale is %g, expected 0 (default) or a positive finite value", double(o.scale));
  if ((o.query_segments == nullptr) != (o.key_segments == nullptr))
    fail(SA_ERR_INVALID_ARGUMENT, "opt->query_segments and opt->key_segments must be given together");
  return o;
}

// Checks queries [n_q, H_q, D] and indices [n_q, H, width] against an index's heads and the options.
void check_select_shapes(const TensorView &queries, const TensorView &indices, const sa_index_options &io,
                         const sa_select_options &o) {
  const int64_t n_q = queries.shape[0], H_q = queries.shape[1], H_kv = io.num_kv_heads;
  expect_dim(queries, "queries", 2, io.head_dim, "the index's head_dim");
  if (H_q < 1 || H_q % H_kv != 0)
    fail(SA_ERR_SHAPE, "queries.shape[1] is %lld query heads, expected a positive multiple of the index's %lld KV heads",
         (long long)H_q, (long long)H_kv);
  const bool per_head = o.per_query_head != 0;
  expect_dim(indices, "indices", 0, n_q, "queries.shape[0]");
  expect_dim(indices, "indices", 1, per_head ? H_q : H_kv, per_head ? "query heads (per_query_head)" : "the index's KV heads");
  const int64_t need = int64_t(o.sinks) + int64_t(o.window) + int64_t(o.top_k);
  if (indices.shape[2] < need)
    fail(SA_ERR_SHAPE, "indices.shape[2] is %lld, expected >= sinks + window + top_k = %lld", (long long)indices.shape[2],
         (long long)need);
  expect_distinct_elements(indices, "indices");
}

// Selections go to a contiguous scratch copy of `out` first and reach the caller's tensor only
// once the whole call succeeded (an allocation failing halfway leaves `out` untouched).
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

// The host's keys of sequence b of a paged cache, for a borrow_keys index of n slots: slot j of
// the index is token j of the sequence. pages holds the sequence's pages for the call; a head
// dimension that is not contiguous is packed, token by token, into `packed` ([n, H_kv, D]).
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

// The request for the queries rows [q0, q1) of one CPU index, written to `indices` (those rows).
SelectRequest cpu_request(const sa_index &ix, const TensorView &queries, const TensorView &indices,
                          const sa_select_options &o, int64_t q0, int64_t q1) {
  SelectRequest req;
  req.queries = queries;
  req.queries.data = queries.bytes() + size_t(q0 * queries.stride[0]) * dtype_size(queries.dtype);
  req.queries.shape[0] = q1 - q0;
  req.indices = indices;
  req.indices.data = indices.ptr<int32_t>() + q0 * indices.stride[0];
  req.indices.shape[0] = q1 - q0;
  const int64_t n_q = q1 - q0, max_pos = ix.max_position();
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
  req.scale = o.scale > 0.f ? o.scale : 1.f / std::sqrt(float(ix.opt.head_dim));
  return req;
}

}  // namespace

extern "C" {

SA_API sa_select_options sa_select_options_default(void) {
  sa_select_options o = SA_SELECT_OPTIONS_INIT;
  return o;
}

SA_API sa_status sa_select(sa_index *ix, const sa_tensor *queries, const sa_select_options *opt,
                           sa_tensor *indices) {
  return guarded("sa_select", [&] {
    if (!ix) fail(SA_ERR_NULL_POINTER, "ix is NULL");
    expect_usable(*ix);
    const sa_select_options o = read_select_options(opt);
    const Device dev = ix->on_device() ? Device{SA_DEVICE_CUDA, ix->device_id} : Device{};
    const TensorView q = view_tensor(queries, "queries", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);
    const TensorView out = view_tensor(indices, "indices", 3, {SA_DTYPE_I32}, dev);
    check_select_shapes(q, out, ix->opt, o);
    const int64_t n_q = q.shape[0];
    if (ix->on_device()) {
      if (o.mass_target > 0.f || o.per_query_head || o.query_positions || o.query_segments)
        fail(SA_ERR_UNSUPPORTED, "ix lives on CUDA device %d, which selects without opt->mass_target, "
             "opt->per_query_head, opt->query_positions and segments (leave them 0/NULL)", int(ix->device_id));
      if (n_q == 0) return;
      sa_tensor tq = describe(q), tidx = describe(out);
      sa_plugin_select_args a{};
      a.struct_size = sizeof a;
      a.queries = &tq;
      a.indices = &tidx;
      a.top_k = o.top_k;
      a.window = o.window;
      a.sinks = o.sinks;
      a.scale = o.scale > 0.f ? o.scale : 1.f / std::sqrt(float(ix->opt.head_dim));
      a.first_query_position = ix->max_position() - n_q + 1;
      a.stream = call_stream(*ix->ctx, o.cuda_stream);
      a.owner = ix->ctx;  // its buffers go with the index's context (sa_context_destroy)
      check_plugin(*ix->plugin, ix->plugin->api.select(ix->device_index, &a), "CUDA selection");
      return;
    }
    if (o.query_positions) check_positions(o.query_positions, n_q, 1, "opt->query_positions", PositionsOf::queries);
    if (o.mass_target > 0.f && !ix->selector->scores_are_attention())
      fail(SA_ERR_UNSUPPORTED, "opt->mass_target is %g; this selector's scores are not attention masses (use 0)",
           double(o.mass_target));
    std::vector<int32_t> scratch;
    const TensorView tmp = scratch_for(out, scratch);
    SelectRequest req = cpu_request(*ix, q, tmp, o, 0, n_q);
    std::vector<char> packed;
    HostKeys host;
    if (ix->opt.borrow_keys) {
      host = borrowed_keys(*ix, o.keys, packed);
      req.host_keys = &host;
    }
    if (n_q == 0) return;
    ix->selector->select(*ix->ctx, req);
    copy_out(scratch, out);
  });
}

SA_API sa_status sa_select_batch(sa_index *const *indexes, int64_t n_seqs, const sa_tensor *queries,
                                 const sa_tensor *query_starts, const sa_select_options *opt,
                                 const sa_paged_kv *kv, sa_tensor *indices) {
  return guarded("sa_select_batch", [&] {
    if (n_seqs < 0) fail(SA_ERR_INVALID_ARGUMENT, "n_seqs is %lld, expected >= 0", (long long)n_seqs);
    if (n_seqs > 0 && !indexes) fail(SA_ERR_NULL_POINTER, "indexes is NULL");
    const sa_select_options o = read_select_options(opt);
    if (o.query_segments)
      fail(SA_ERR_INVALID_ARGUMENT, "opt->query_segments: a batch keeps its sequences apart already (leave segments NULL)");
    const TensorView q = view_tensor(queries, "queries", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16});
    const TensorView out = view_tensor(indices, "indices", 3, {SA_DTYPE_I32});
    for (int64_t b = 0; b < n_seqs; ++b) {
      if (!indexes[b]) fail(SA_ERR_NULL_POINTER, "indexes[%lld] is NULL", (long long)b);
      const sa_index &ix = *indexes[b];
      expect_usable(ix);
      if (ix.on_device())
        fail(SA_ERR_UNSUPPORTED, "indexes[%lld] lives on CUDA device %d; sa_select_batch takes CPU indexes for now",
             (long long)b, int(ix.device_id));
      if (o.mass_target > 0.f && !ix.selector->scores_are_attention())
        fail(SA_ERR_UNSUPPORTED, "opt->mass_target is %g; the selector of indexes[%lld] does not score by attention "
             "(use 0)", double(o.mass_target), (long long)b);
      if (ix.opt.num_kv_heads != indexes[0]->opt.num_kv_heads || ix.opt.head_dim != indexes[0]->opt.head_dim)
        fail(SA_ERR_SHAPE, "indexes[%lld] has %d KV heads of %d dimensions, indexes[0] %d of %d", (long long)b,
             int(ix.opt.num_kv_heads), int(ix.opt.head_dim), int(indexes[0]->opt.num_kv_heads),
             int(indexes[0]->opt.head_dim));
    }
    if (n_seqs > 0) check_select_shapes(q, out, indexes[0]->opt, o);
    const std::vector<int64_t> starts = view_query_starts(query_starts, n_seqs, q.shape[0]);
    PagedKV paged;
    for (int64_t b = 0; b < n_seqs && !kv; ++b)
      if (indexes[b]->opt.borrow_keys)
        fail(SA_ERR_NULL_POINTER, "kv is NULL, but indexes[%lld] borrows its keys (borrow_keys): pass the cache they "
             "live in", (long long)b);
    if (kv) {
      paged = view_paged_kv(kv, false);
      if (paged.batch != n_seqs)
        fail(SA_ERR_SHAPE, "kv holds %lld sequences, n_seqs is %lld", (long long)paged.batch, (long long)n_seqs);
      for (int64_t b = 0; b < n_seqs; ++b)
        if (indexes[b]->size() > paged.lens[size_t(b)])
          fail(SA_ERR_SHAPE, "indexes[%lld] holds %lld slots, but kv->seq_lens[%lld] is %lld", (long long)b,
               (long long)indexes[b]->size(), (long long)b, (long long)paged.lens[size_t(b)]);
    }
    const int64_t n_q = q.shape[0];
    if (o.query_positions) check_positions(o.query_positions, n_q, 1, "opt->query_positions", PositionsOf::queries);
    if (n_q == 0) return;

    // Selected into a scratch copy, mapped to physical slots, then copied out: nothing is
    // written unless every sequence succeeds.
    const int64_t H = out.shape[1], width = out.shape[2];
    std::vector<int32_t> scratch;
    const TensorView tmp = scratch_for(out, scratch);
    const sa_context &ctx = *indexes[0]->ctx;
    auto run = [&](int64_t b) {
      const int64_t q0 = starts[size_t(b)], q1 = starts[size_t(b) + 1];
      if (q1 == q0) return;
      const sa_index &ix = *indexes[b];
      SelectRequest req = cpu_request(ix, q, tmp, o, q0, q1);
      std::vector<int32_t> pages;
      std::vector<char> packed;
      HostKeys host;
      if (ix.opt.borrow_keys) {
        host = paged_keys(paged, b, ix.size(), pages, packed);
        req.host_keys = &host;
      }
      ix.selector->select(*ix.ctx, req);
      if (!kv) return;
      for (int64_t e = q0 * H * width; e < q1 * H * width; ++e)
        if (scratch[size_t(e)] >= 0) scratch[size_t(e)] = int32_t(paged.slot(b, scratch[size_t(e)]));
    };
    // Enough sequences to keep the threads busy: one task each (selectors then run on the
    // calling thread); else one after another, each selection with the context's threads.
    if (n_seqs >= ctx.threads) parallel_for(ctx.threads, n_seqs, run);
    else
      for (int64_t b = 0; b < n_seqs; ++b) run(b);
    copy_out(scratch, out);
  });
}

}  // extern "C"
