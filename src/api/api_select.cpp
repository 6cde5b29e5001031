// sa_select and sa_select_batch: validate what every backend shares, then hand the request to
// the index's backend (sa_select) or to each CPU index's selector (sa_select_batch).
#include <cmath>
#include <cstring>
#include <vector>

#include "api/cpu_select.hpp"
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

// sa_select_batch on device indexes: the whole batch in one plugin call where the plugin
// batches it (page indexes), else one selection per sequence on its index, each writing its
// query's row of indices, through the page table when kv is given. Every check is made before
// the first selection is queued.
void select_batch_on_device(sa_index *const *indexes, int64_t n_seqs, const sa_tensor *queries,
                            const sa_tensor *query_starts, const sa_select_options &o, const sa_paged_kv *kv,
                            sa_tensor *indices) {
  const Device dev = indexes[0]->backend->device();
  const TensorView q = view_tensor(queries, "queries", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);
  const TensorView out = view_tensor(indices, "indices", 3, {SA_DTYPE_I32}, dev);
  if (query_starts)
    fail(SA_ERR_UNSUPPORTED, "query_starts with device indexes: sa_select_batch on CUDA takes one query per sequence "
                             "(query_starts NULL)");
  if (q.shape[0] != n_seqs)
    fail(SA_ERR_SHAPE, "queries hold %lld rows but there are %lld sequences; without query_starts each sequence has one "
                       "query", (long long)q.shape[0], (long long)n_seqs);
  for (int64_t b = 0; b < n_seqs; ++b) {
    if (!indexes[b]) fail(SA_ERR_NULL_POINTER, "indexes[%lld] is NULL", (long long)b);
    const sa_index &ix = *indexes[b];
    expect_usable(ix);
    if (ix.opt.borrow_keys && ix.opt.kind == SA_SELECTOR_EXACT)  // a device page index keeps its bounds either way
      fail(SA_ERR_UNSUPPORTED, "indexes[%lld] is an exact index that borrows its keys (borrow_keys); sa_select_batch "
           "on CUDA devices does not read keys through kv yet (call sa_select per sequence with opt->keys)",
           (long long)b);
    const Device d = ix.backend->device();
    if (d.type != dev.type || d.id != dev.id)
      fail(SA_ERR_INVALID_ARGUMENT, "indexes[%lld] lives %s, indexes[0] on CUDA device %d; a batch's indexes share one "
           "device", (long long)b, d.type == SA_DEVICE_CUDA ? "on another CUDA device" : "on the CPU", int(dev.id));
    if (ix.opt.num_kv_heads != indexes[0]->opt.num_kv_heads || ix.opt.head_dim != indexes[0]->opt.head_dim)
      fail(SA_ERR_SHAPE, "indexes[%lld] has %d KV heads of %d dimensions, indexes[0] %d of %d", (long long)b,
           int(ix.opt.num_kv_heads), int(ix.opt.head_dim), int(indexes[0]->opt.num_kv_heads),
           int(indexes[0]->opt.head_dim));
  }
  check_select_shapes(q, out, indexes[0]->opt, o);
  PagedTensors t;
  if (kv) {
    t = view_paged_tensors(kv, false, dev);
    if (t.batch != n_seqs)
      fail(SA_ERR_SHAPE, "kv holds %lld sequences, expected n_seqs = %lld", (long long)t.batch, (long long)n_seqs);
    // The page table row must cover every slot an index may name (its values are the device's
    // to check: pages out of range become -1).
    const int64_t capacity = t.page_table.rank ? t.page_table.shape[1] * t.page_size : t.num_slots;
    for (int64_t b = 0; b < n_seqs; ++b)
      if (indexes[b]->backend->size() > capacity)
        fail(SA_ERR_SHAPE, "indexes[%lld] holds %lld slots, beyond the %lld tokens its page table row can hold",
             (long long)b, (long long)indexes[b]->backend->size(), (long long)capacity);
  }
  SelectCall whole;
  whole.opt = o;
  whole.queries = q;
  whole.indices = out;
  if (t.page_table.rank) {
    whole.page_table = t.page_table.ptr<const int32_t>();
    whole.page_table_stride = t.page_table.stride[1];
    whole.page_size = t.page_size;
    whole.num_pages = t.num_pages;
  }
  const int64_t table_row_stride = t.page_table.rank ? t.page_table.stride[0] : 0;
  if (select_batch_on_plugin(indexes, n_seqs, whole, table_row_stride)) return;
  for (int64_t b = 0; b < n_seqs; ++b) {  // the whole call, moved to sequence b's row
    SelectCall call = whole;
    call.queries.shape[0] = 1;
    call.queries.data = q.bytes() + b * q.stride[0] * int64_t(dtype_size(q.dtype));
    call.indices.shape[0] = 1;
    call.indices.data = out.bytes() + b * out.stride[0] * int64_t(sizeof(int32_t));
    if (whole.page_table) call.page_table = whole.page_table + b * table_row_stride;
    indexes[b]->backend->select(call);
  }
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
    SelectCall call;
    call.opt = read_select_options(opt);
    const Device dev = ix->backend->device();
    call.queries = view_tensor(queries, "queries", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);
    call.indices = view_tensor(indices, "indices", 3, {SA_DTYPE_I32}, dev);
    check_select_shapes(call.queries, call.indices, ix->opt, call.opt);
    ix->backend->select(call);
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
    if (n_seqs > 0 && indexes && indexes[0] && indexes[0]->backend->device().type == SA_DEVICE_CUDA) {
      select_batch_on_device(indexes, n_seqs, queries, query_starts, o, kv, indices);
      return;
    }
    const TensorView q = view_tensor(queries, "queries", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16});
    const TensorView out = view_tensor(indices, "indices", 3, {SA_DTYPE_I32});
    for (int64_t b = 0; b < n_seqs; ++b) {
      if (!indexes[b]) fail(SA_ERR_NULL_POINTER, "indexes[%lld] is NULL", (long long)b);
      const sa_index &ix = *indexes[b];
      expect_usable(ix);
      const Selector *selector = ix.cpu_selector();
      if (!selector)
        fail(SA_ERR_UNSUPPORTED, "indexes[%lld] lives on CUDA device %d; sa_select_batch takes CPU indexes for now",
             (long long)b, int(ix.backend->device().id));
      if (o.mass_target > 0.f && !selector->scores_are_attention())
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
      SelectRequest req = cpu_request(ix.opt, ix.max_position(), q, tmp, o, q0, q1);
      std::vector<int32_t> pages;
      std::vector<char> packed;
      HostKeys host;
      if (ix.opt.borrow_keys) {
        host = paged_keys(paged, b, ix.size(), pages, packed);
        req.host_keys = &host;
      }
      ix.cpu_selector()->select(*ix.ctx, req);
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
