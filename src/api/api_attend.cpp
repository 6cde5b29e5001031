// sa_attend and sa_attend_paged: validate shapes, dtypes and index ranges, then run the
// attention driver, or hand device tensors to the CUDA plugin.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attend/attention.hpp"
#include "core/error.hpp"
#include "core/paged_kv.hpp"
#include "core/plugin_loader.hpp"
#include "core/positions.hpp"
#include "core/visibility.hpp"

namespace {

using namespace sa;

sa_attend_options read_attend_options(const sa_attend_options *opt) {
  sa_attend_options o = read_options(opt, sa_attend_options_default(),
                                     offsetof(sa_attend_options, key_positions) + sizeof(const int64_t *), "opt");
  if (!(o.scale >= 0.f) || std::isinf(o.scale))
    fail(SA_ERR_INVALID_ARGUMENT, "opt->scale is %g, expected 0 (default) or a positive finite value", double(o.scale));
  return o;
}

// Views of q, out and lse checked against the keys' heads, dimension and dtype; fills p.q,
// p.out, p.lse (lse_view holds the view p.lse points to) and p.scale.
void view_queries(const sa_tensor *q, sa_tensor *out, sa_tensor *lse, const sa_attend_options &o, Device dev,
                  AttendProblem &p, TensorView &lse_view) {
  p.q = view_tensor(q, "q", 3, {SA_DTYPE_F32, p.k.dtype}, dev);
  p.out = view_tensor(out, "out", 3, {SA_DTYPE_F32, p.q.dtype}, dev);
  const int64_t n_q = p.q.shape[0], H_q = p.q.shape[1], D = p.q.shape[2], H_kv = p.k.shape[1];
  expect_dim(p.k, "k", 2, D, "q.shape[2], the head dimension");
  if (D < 1) fail(SA_ERR_SHAPE, "q.shape[2] (head dimension) is 0");
  if (H_kv < 1 || H_q < 1 || H_q % H_kv != 0)
    fail(SA_ERR_SHAPE, "q has %lld heads and k %lld; expected a positive multiple", (long long)H_q, (long long)H_kv);
  expect_dim(p.out, "out", 0, n_q, "q.shape[0]");
  expect_dim(p.out, "out", 1, H_q, "q.shape[1]");
  expect_dim(p.out, "out", 2, D, "q.shape[2]");
  expect_distinct_elements(p.out, "out");
  if (lse) {
    lse_view = view_tensor(lse, "lse", 2, {SA_DTYPE_F32}, dev);
    expect_dim(lse_view, "lse", 0, n_q, "q.shape[0]");
    expect_dim(lse_view, "lse", 1, H_q, "q.shape[1]");
    expect_distinct_elements(lse_view, "lse");
    p.lse = &lse_view;
  }
  p.scale = o.scale > 0.f ? o.scale : 1.f / std::sqrt(float(D));
}

// indices [n_q, H_kv or H_q, width] into v, set as p's lists (per query head when H_q wide); on
// the CPU every entry is checked to lie in [-1, n_kv).
void view_indices(const sa_tensor *indices, AttendProblem &p, TensorView &v, Device dev, bool check_entries) {
  const int64_t H_q = p.q.shape[1], H_kv = p.k.shape[1], n_kv = p.k.shape[0];
  v = view_tensor(indices, "indices", 3, {SA_DTYPE_I32}, dev);
  expect_dim(v, "indices", 0, p.q.shape[0], "q.shape[0]");
  if (v.shape[1] != H_kv && v.shape[1] != H_q)
    fail(SA_ERR_SHAPE, "indices.shape[1] is %lld, expected H_kv = %lld or H_q = %lld", (long long)v.shape[1],
         (long long)H_kv, (long long)H_q);
  const int32_t *ix = v.ptr<const int32_t>();
  for (int64_t a = 0; check_entries && a < v.shape[0]; ++a)
    for (int64_t b = 0; b < v.shape[1]; ++b)
      for (int64_t c = 0; c < v.shape[2]; ++c) {
        const int32_t r = ix[a * v.stride[0] + b * v.stride[1] + c * v.stride[2]];
        if (r < -1 || r >= n_kv)
          fail(SA_ERR_OUT_OF_RANGE, "indices[%lld][%lld][%lld] is %d, outside [-1, %lld)", (long long)a, (long long)b,
               (long long)c, int(r), (long long)n_kv);
      }
  p.indices = &v;
  p.per_query_head = v.shape[1] == H_q && H_q != H_kv;
}

// opt->slot_mass [H_kv, n_kv] or [n_kv] over the key rows (physical slots of a paged cache).
void view_slot_mass(const sa_attend_options &o, AttendProblem &p, TensorView &mass_view, Device dev) {
  if (!o.slot_mass) return;
  const int64_t H_kv = p.k.shape[1], n_kv = p.k.shape[0];
  const int rank = o.slot_mass->rank;
  if (rank != 1 && rank != 2)
    fail(SA_ERR_SHAPE, "opt->slot_mass has rank %d, expected 2 ([H_kv, n_kv]) or 1 ([n_kv])", int(rank));
  if (rank == 1 && o.head_key_positions)
    fail(SA_ERR_SHAPE, "opt->slot_mass is [n_kv]; with opt->head_key_positions a slot holds another token per KV "
                       "head, so it must be [H_kv, n_kv]");
  mass_view = view_tensor(o.slot_mass, "opt->slot_mass", rank, {SA_DTYPE_F32}, dev);
  if (rank == 2) expect_dim(mass_view, "opt->slot_mass", 0, H_kv, "the KV heads");
  expect_dim(mass_view, "opt->slot_mass", rank - 1, n_kv, "the key rows (slots)");
  expect_distinct_elements(mass_view, "opt->slot_mass");
  if (!(o.mass_decay >= 0.f && o.mass_decay <= 1.f))
    fail(SA_ERR_INVALID_ARGUMENT, "opt->mass_decay is %g, expected in [0, 1] (1: no decay)", double(o.mass_decay));
  p.slot_mass = &mass_view;
  p.mass_decay = o.mass_decay;
}

// opt->head_key_positions lives where the tensors live: a host array for CPU tensors (checked
// value by value here), memory of the tensors' device for CUDA ones (the plugin reads it; its
// values are the plugin's to treat). The wrong kind is refused before anything reads it.
void check_head_positions_memory(const int64_t *positions, Device dev) {
  try {
    check_memory(positions, "opt->head_key_positions", dev.type, dev.id);
  } catch (const Error &e) {
    fail(e.status, "%s; it goes with the tensors: %s", e.message.c_str(),
         dev.type == SA_DEVICE_CUDA ? "with CUDA tensors, I64 [H_kv, n_kv] in memory of their device"
                                    : "with CPU tensors, a host array");
  }
}

// sa_attend_paged with device tensors: checked from their descriptors (the plugin clamps what
// the core cannot read: page numbers, lengths, query starts, index entries) and handed to the
// plugin as one request.
void attend_paged_on_device(sa_context &ctx, const sa_tensor *q, const sa_tensor *query_starts, const sa_paged_kv *kv,
                            const sa_tensor *indices, const sa_attend_options &o, sa_tensor *out, sa_tensor *lse,
                            Device dev) {
  const Plugin &plugin = context_plugin(ctx, dev.id);
  const PagedTensors t = view_paged_tensors(kv, true, dev);
  // The keys as rows [num_slots, H_kv, D], for the shape checks q, out and indices share with
  // sa_attend; the plugin gets the pages themselves.
  AttendProblem p;
  p.k = t.k;
  p.k.rank = 3;
  for (int d = 0; d < 3; ++d) p.k.shape[d] = t.k.rank == 4 ? t.k.shape[d + 1] : t.k.shape[d];
  p.k.shape[0] = t.num_slots;
  TensorView lse_view, idx_view, starts_view;
  view_queries(q, out, lse, o, dev, p, lse_view);
  const int64_t n_q = p.q.shape[0];
  if (query_starts) {
    starts_view = view_tensor(query_starts, "query_starts", 1, {SA_DTYPE_I32, SA_DTYPE_I64}, dev);
    expect_dim(starts_view, "query_starts", 0, t.batch + 1, "the sequences + 1");
  } else if (n_q != t.batch) {
    fail(SA_ERR_SHAPE, "queries hold %lld rows but there are %lld sequences; without query_starts each sequence has "
                       "one query", (long long)n_q, (long long)t.batch);
  }
  if (indices) view_indices(indices, p, idx_view, dev, false);
  if (o.key_positions)
    fail(SA_ERR_INVALID_ARGUMENT, "opt->key_positions must be NULL with a paged cache (give kv->slot_positions)");
  if (o.head_key_positions) {  // [H_kv, num_slots] in device memory, read by the kernels
    if (t.slot_positions.rank)
      fail(SA_ERR_INVALID_ARGUMENT, "kv->slot_positions and opt->head_key_positions are both set; give one "
                                    "(head_key_positions: [H_kv, num_pages * page_size], a row per KV head)");
    checked_mul(p.k.shape[1], t.num_slots, "opt->head_key_positions' H_kv * num_slots values");
    if (!has_entry(plugin.api, &sa_plugin_api::index_update_heads))
      fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates opt->head_key_positions with a paged cache on CUDA",
           plugin.path.c_str());
    check_head_positions_memory(o.head_key_positions, dev);
  }
  if (o.slot_mass) fail(SA_ERR_UNSUPPORTED, "opt->slot_mass with a paged cache is CPU only for now");
  if (o.causal && (o.query_positions || t.slot_positions.rank))
    fail(SA_ERR_UNSUPPORTED, "causal attention over a paged cache on CUDA takes the default positions only "
                             "(opt->query_positions and kv->slot_positions absent)");
  if (n_q == 0) return;
  if (!has_entry(plugin.api, &sa_plugin_api::attend_paged))
    fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates sa_attend_paged with CUDA tensors", plugin.path.c_str());
  // Rank 3 (llama.cpp's cells) as pages of one row.
  TensorView k4 = t.k, v4 = t.v;
  if (t.k.rank == 3)
    for (TensorView *x : {&k4, &v4}) {
      x->rank = 4;
      for (int d = 3; d >= 1; --d) {
        x->shape[d] = x->shape[d - 1];
        x->stride[d] = x->stride[d - 1];
      }
      x->shape[1] = 1;
    }
  sa_tensor tq = describe(p.q), tk = describe(k4), tv = describe(v4), tout = describe(p.out);
  sa_tensor ttable = describe(t.page_table), tlens = describe(t.seq_lens), tpos = describe(t.slot_positions);
  sa_tensor tstarts = query_starts ? describe(starts_view) : sa_tensor{};
  sa_tensor tidx = indices ? describe(idx_view) : sa_tensor{}, tlse = lse ? describe(lse_view) : sa_tensor{};
  sa_plugin_attend_paged_args a{};
  a.struct_size = sizeof a;
  a.q = &tq;
  a.k = &tk;
  a.v = &tv;
  a.page_table = t.page_table.rank ? &ttable : nullptr;
  a.seq_lens = t.seq_lens.rank ? &tlens : nullptr;
  a.query_starts = query_starts ? &tstarts : nullptr;
  a.slot_positions = t.slot_positions.rank ? &tpos : nullptr;
  a.indices = indices ? &tidx : nullptr;
  a.out = &tout;
  a.lse = lse ? &tlse : nullptr;
  a.batch = t.batch;
  a.per_query_head = p.per_query_head;
  // Sparse entries are taken as given (no slot positions), unless per-head positions mask them.
  a.causal = o.causal != 0 && (!indices || o.head_key_positions);
  a.head_key_positions = o.head_key_positions;
  a.scale = p.scale;
  a.stream = call_stream(ctx, o.cuda_stream);
  a.owner = &ctx;
  check_plugin(plugin, plugin.api.attend_paged(&a), "CUDA paged attention");
}

}  // namespace

extern "C" {

SA_API sa_attend_options sa_attend_options_default(void) {
  sa_attend_options o = SA_ATTEND_OPTIONS_INIT;
  return o;
}

SA_API sa_status sa_attend(sa_context *ctx, const sa_tensor *q, const sa_tensor *k, const sa_tensor *v,
                           const sa_tensor *indices, const sa_attend_options *opt, sa_tensor *out,
                           sa_tensor *lse) {
  return guarded("sa_attend", [&] {
    if (!ctx) fail(SA_ERR_NULL_POINTER, "ctx is NULL");
    const sa_attend_options o = read_attend_options(opt);
    // A CUDA tensor anywhere sends the call to the plugin (loaded now if needed); the others
    // must then be on the same device.
    const Device dev = first_cuda_device({q, k, v, indices, out, lse});
    const Plugin *plugin = dev.type == SA_DEVICE_CUDA ? &context_plugin(*ctx, dev.id) : nullptr;
    AttendProblem p;
    p.k = view_tensor(k, "k", 3, {SA_DTYPE_F32, SA_DTYPE_F16, SA_DTYPE_BF16}, dev);
    p.v = view_tensor(v, "v", 3, {p.k.dtype}, dev);
    for (int d = 0; d < 3; ++d) expect_dim(p.v, "v", d, p.k.shape[d], "the shape of k");
    TensorView lse_view, idx_view, mass_view;
    view_queries(q, out, lse, o, dev, p, lse_view);
    if (o.query_positions) check_positions(o.query_positions, p.q.shape[0], 1, "opt->query_positions", PositionsOf::queries);
    if (o.key_positions) check_positions(o.key_positions, p.k.shape[0], 1, "opt->key_positions", PositionsOf::keys);
    if (o.head_key_positions) {
      if (o.key_positions)
        fail(SA_ERR_INVALID_ARGUMENT, "opt->key_positions and opt->head_key_positions are both set; give one");
      const int64_t n = checked_mul(p.k.shape[0], p.k.shape[1], "opt->head_key_positions' H_kv * n_kv values");
      if (plugin && !has_entry(plugin->api, &sa_plugin_api::evict_heads))
        fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates opt->head_key_positions with CUDA tensors",
             plugin->path.c_str());
      check_head_positions_memory(o.head_key_positions, dev);
      if (!plugin) check_positions(o.head_key_positions, n, 1, "opt->head_key_positions", PositionsOf::keys);
    }
    if (indices) {
      // Device memory is not ours to read: the plugin skips entries out of range instead.
      view_indices(indices, p, idx_view, dev, !plugin);
    }
    p.causal = o.causal != 0;
    p.query_positions = o.query_positions;
    p.key_positions = o.head_key_positions ? o.head_key_positions : o.key_positions;
    p.key_pos_head_stride = o.head_key_positions ? p.k.shape[0] : 0;
    view_slot_mass(o, p, mass_view, dev);
    if (p.q.shape[0] == 0 && !p.slot_mass) return;
    if (!plugin) {
      attend(*ctx, p);
      return;
    }
    if (p.slot_mass && !has_entry(plugin->api, &sa_plugin_api::index_update))
      fail(SA_ERR_UNSUPPORTED, "the CUDA plugin '%s' predates opt->slot_mass with CUDA tensors", plugin->path.c_str());
    if (p.causal && (o.query_positions || o.key_positions))
      fail(SA_ERR_UNSUPPORTED, "opt->query_positions and opt->key_positions are host arrays; with CUDA tensors causal "
                               "attention takes the default positions only (set both to NULL)");
    // The plugin attends every row: an empty slot (-1) must not reach it as a key.
    for (int64_t r = 0; o.key_positions && r < p.k.shape[0]; ++r)
      if (!holds_token(o.key_positions[r]))
        fail(SA_ERR_UNSUPPORTED, "opt->key_positions[%lld] is -1 (an empty slot); CUDA attention attends every key "
             "row: leave empty slots out of indices (or attend on the CPU)", (long long)r);
    sa_tensor tq = describe(p.q), tk = describe(p.k), tv = describe(p.v), tout = describe(p.out);
    sa_tensor tidx = indices ? describe(idx_view) : sa_tensor{}, tlse = lse ? describe(lse_view) : sa_tensor{};
    sa_tensor tmass = p.slot_mass ? describe(mass_view) : sa_tensor{};
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
    a.owner = ctx;  // its buffers go with it (sa_context_destroy)
    a.slot_mass = p.slot_mass ? &tmass : nullptr;
    a.mass_decay = p.mass_decay;
    a.head_key_positions = o.head_key_positions;
    check_plugin(*plugin, plugin->api.attend(&a), "CUDA attention");
  });
}

SA_API sa_status sa_attend_paged(sa_context *ctx, const sa_tensor *q, const sa_tensor *query_starts,
                                 const sa_paged_kv *kv, const sa_tensor *indices,
                                 const sa_attend_options *opt, sa_tensor *out, sa_tensor *lse) {
  return guarded("sa_attend_paged", [&] {
    if (!ctx) fail(SA_ERR_NULL_POINTER, "ctx is NULL");
    const sa_attend_options o = read_attend_options(opt);
    if (!kv) fail(SA_ERR_NULL_POINTER, "kv is NULL");
    const sa_paged_kv kvo = read_options(kv, sa_paged_kv{}, sizeof(sa_paged_kv), "kv");
    const Device dev = first_cuda_device({q, query_starts, &kvo.k, &kvo.v, &kvo.page_table, &kvo.seq_lens,
                                         &kvo.slot_positions, indices, out, lse});
    if (dev.type == SA_DEVICE_CUDA) {
      attend_paged_on_device(*ctx, q, query_starts, kv, indices, o, out, lse, dev);
      return;
    }
    const PagedKV cache = view_paged_kv(kv, true);
    AttendProblem p;
    p.k = cache.k;
    p.v = cache.v;
    TensorView lse_view, idx_view, mass_view;
    view_queries(q, out, lse, o, Device{}, p, lse_view);
    const int64_t n_q = p.q.shape[0];
    const std::vector<int64_t> starts = view_query_starts(query_starts, cache.batch, n_q);
    if (o.key_positions)
      fail(SA_ERR_INVALID_ARGUMENT, "opt->key_positions must be NULL with a paged cache (give kv->slot_positions, or "
                                    "opt->head_key_positions per KV head)");
    // Per-KV-head positions: opt->head_key_positions [H_kv, num_slots] over physical slots,
    // as slot_mass is; they replace kv->slot_positions.
    const int64_t H_kv = cache.k.shape[1];
    if (o.head_key_positions) {
      if (cache.slot_positions)
        fail(SA_ERR_INVALID_ARGUMENT, "kv->slot_positions and opt->head_key_positions are both set; give one "
                                      "(head_key_positions: [H_kv, num_pages * page_size], a row per KV head)");
      const int64_t n = checked_mul(H_kv, cache.num_slots, "opt->head_key_positions' H_kv * num_slots values");
      check_head_positions_memory(o.head_key_positions, Device{});
      check_positions(o.head_key_positions, n, 1, "opt->head_key_positions", PositionsOf::keys);
    }
    const bool by_position = cache.slot_positions || o.head_key_positions;
    if (o.query_positions) check_positions(o.query_positions, n_q, 1, "opt->query_positions", PositionsOf::queries);
    if (o.causal && cache.slot_positions && !o.query_positions)
      fail(SA_ERR_INVALID_ARGUMENT, "opt->query_positions is NULL, but kv->slot_positions is given and causal is set: "
                                    "positions no longer count tokens, so each query's position is needed");
    // Each query's position: given, or the last tokens of its sequence (with per-head positions,
    // counted back from the largest position any head holds in the sequence's slots).
    std::vector<int64_t> positions(static_cast<size_t>(n_q));
    for (int64_t b = 0; b < cache.batch; ++b) {
      const int64_t n_b = starts[size_t(b) + 1] - starts[size_t(b)];
      int64_t last = cache.lens[size_t(b)] - 1;
      if (o.head_key_positions && !o.query_positions && n_b > 0) {
        last = -1;
        for (int64_t t = 0; t < cache.lens[size_t(b)]; ++t)
          for (int64_t h = 0, s = cache.slot(b, t); h < H_kv; ++h)
            last = std::max(last, o.head_key_positions[h * cache.num_slots + s]);
      }
      for (int64_t i = starts[size_t(b)]; i < starts[size_t(b) + 1]; ++i)
        positions[size_t(i)] = o.query_positions ? o.query_positions[i] : last - n_b + 1 + (i - starts[size_t(b)]);
    }
    p.query_positions = positions.data();
    p.key_positions = o.head_key_positions ? o.head_key_positions : cache.slot_positions;
    p.key_pos_head_stride = o.head_key_positions ? cache.num_slots : 0;
    view_slot_mass(o, p, mass_view, Device{});

    // Dense: each sequence's slots in token order, one list its queries share; without slot
    // positions a causal query reads the prefix up to its own position.
    std::vector<int32_t> lists;
    std::vector<int64_t> list_start(static_cast<size_t>(n_q)), list_len(static_cast<size_t>(n_q));
    if (indices) {
      view_indices(indices, p, idx_view, Device{}, true);
      p.causal = o.causal && by_position;  // without positions, entries are taken as given
    } else {
      int64_t total = 0;
      for (int64_t b = 0; b < cache.batch; ++b) total = checked_add(total, cache.lens[size_t(b)], "the batch's tokens");
      lists.resize(size_t(total));
      int64_t at = 0;
      for (int64_t b = 0; b < cache.batch; ++b) {
        const int64_t len = cache.lens[size_t(b)];
        for (int64_t t = 0; t < len; ++t) lists[size_t(at + t)] = int32_t(cache.slot(b, t));
        for (int64_t i = starts[size_t(b)]; i < starts[size_t(b) + 1]; ++i) {
          const int64_t pos = positions[size_t(i)];
          list_start[size_t(i)] = at;
          list_len[size_t(i)] = !o.causal || by_position ? len : pos >= len ? len : std::max<int64_t>(0, pos + 1);
        }
        at += len;
      }
      p.shared_lists = true;  // lists.data() is NULL when every sequence is empty
      p.list_data = lists.data();
      p.list_start = list_start.data();
      p.list_len = list_len.data();
      p.causal = o.causal != 0;
    }
    if (n_q == 0 && !p.slot_mass) return;
    attend(*ctx, p);
  });
}

}  // extern "C"
