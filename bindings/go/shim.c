/* See shim.h: builds sa_tensor, sa_paged_kv and options structs on the C stack. */
#include "shim.h"

#include <string.h>

static sa_status fail(sa_status st, char **msg)
{
    if (st != SA_OK && msg != NULL) {
        const char *m = sa_last_error();
        size_t n = strlen(m);
        char *copy = (char *)malloc(n + 1);
        if (copy != NULL)
            memcpy(copy, m, n + 1);
        *msg = copy;
    }
    return st;
}

static sa_tensor bind(const sa_tensor *desc, void *data)
{
    sa_tensor t = *desc;
    if (data != NULL)
        t.data = data;
    return t;
}

/* An optional tensor: NULL stays NULL, else bound into *storage. */
static sa_tensor *bind_optional(const sa_tensor *desc, void *data, sa_tensor *storage)
{
    if (desc == NULL)
        return NULL;
    *storage = bind(desc, data);
    return storage;
}

static sa_paged_kv bind_paged(const sa_paged_kv *kv, void *k, void *v, void *page_table,
                              void *seq_lens, void *slot_positions)
{
    sa_paged_kv p = *kv;
    p.k = bind(&kv->k, k);
    p.v = bind(&kv->v, v);
    p.page_table = bind(&kv->page_table, page_table);
    p.seq_lens = bind(&kv->seq_lens, seq_lens);
    p.slot_positions = bind(&kv->slot_positions, slot_positions);
    return p;
}

static sa_select_options bind_select(const sa_select_options *opt, const int64_t *query_positions,
                                     const int32_t *query_segments, const int32_t *key_segments,
                                     const sa_tensor *keys, void *keys_data, sa_tensor *keys_storage)
{
    sa_select_options o = *opt;
    o.query_positions = query_positions;
    o.query_segments = query_segments;
    o.key_segments = key_segments;
    o.keys = bind_optional(keys, keys_data, keys_storage);
    return o;
}

static sa_attend_options bind_attend(const sa_attend_options *opt, const int64_t *query_positions,
                                     const int64_t *key_positions, const sa_tensor *slot_mass,
                                     void *slot_mass_data, sa_tensor *slot_mass_storage)
{
    sa_attend_options o = *opt;
    o.query_positions = query_positions;
    o.key_positions = key_positions;
    o.slot_mass = bind_optional(slot_mass, slot_mass_data, slot_mass_storage);
    return o;
}

sa_status sago_context_create(const sa_context_options *opt, const char *cuda_plugin_path,
                              sa_context **out, char **msg)
{
    sa_context_options o = *opt;
    o.cuda_plugin_path = cuda_plugin_path;
    return fail(sa_context_create(&o, out), msg);
}

sa_status sago_index_create(sa_context *ctx, const sa_index_options *opt,
                            const char *weights_path, sa_index **out, char **msg)
{
    sa_index_options o = *opt;
    o.learned.weights_path = weights_path;
    return fail(sa_index_create(ctx, &o, out), msg);
}

sa_status sago_index_append(sa_index *ix, const sa_tensor *keys, void *keys_data, char **msg)
{
    sa_tensor k = bind(keys, keys_data);
    return fail(sa_index_append(ix, &k), msg);
}

sa_status sago_index_update(sa_index *ix, const int32_t *slots, int64_t n,
                            const sa_tensor *keys, void *keys_data,
                            const int64_t *positions, char **msg)
{
    sa_tensor k = bind(keys, keys_data);
    return fail(sa_index_update(ix, slots, n, &k, positions), msg);
}

sa_status sago_index_size(const sa_index *ix, int64_t *n, char **msg)
{
    return fail(sa_index_size(ix, n), msg);
}

sa_status sago_index_truncate(sa_index *ix, int64_t position, char **msg)
{
    return fail(sa_index_truncate(ix, position), msg);
}

sa_status sago_index_clone(const sa_index *ix, sa_index **out, char **msg)
{
    return fail(sa_index_clone(ix, out), msg);
}

sa_status sago_select(sa_index *ix, const sa_tensor *queries, void *queries_data,
                      const sa_select_options *opt, const int64_t *query_positions,
                      const int32_t *query_segments, const int32_t *key_segments,
                      const sa_tensor *keys, void *keys_data,
                      const sa_tensor *indices, void *indices_data, char **msg)
{
    sa_tensor q = bind(queries, queries_data);
    sa_tensor idx = bind(indices, indices_data);
    sa_tensor k;
    sa_select_options o = bind_select(opt, query_positions, query_segments, key_segments,
                                      keys, keys_data, &k);
    return fail(sa_select(ix, &q, &o, &idx), msg);
}

sa_status sago_select_batch(sa_index *const *indexes, int64_t n_seqs,
                            const sa_tensor *queries, void *queries_data,
                            const sa_tensor *query_starts, void *query_starts_data,
                            const sa_select_options *opt, const int64_t *query_positions,
                            const int32_t *query_segments, const int32_t *key_segments,
                            const sa_tensor *keys, void *keys_data,
                            const sa_paged_kv *kv, void *k_data, void *v_data,
                            void *page_table_data, void *seq_lens_data,
                            void *slot_positions_data,
                            const sa_tensor *indices, void *indices_data, char **msg)
{
    sa_tensor q = bind(queries, queries_data);
    sa_tensor idx = bind(indices, indices_data);
    sa_tensor starts, k;
    sa_select_options o = bind_select(opt, query_positions, query_segments, key_segments,
                                      keys, keys_data, &k);
    sa_paged_kv paged;
    if (kv != NULL)
        paged = bind_paged(kv, k_data, v_data, page_table_data, seq_lens_data, slot_positions_data);
    return fail(sa_select_batch(indexes, n_seqs, &q,
                                bind_optional(query_starts, query_starts_data, &starts), &o,
                                kv != NULL ? &paged : NULL, &idx),
                msg);
}

sa_status sago_attend(sa_context *ctx,
                      const sa_tensor *q, void *q_data,
                      const sa_tensor *k, void *k_data,
                      const sa_tensor *v, void *v_data,
                      const sa_tensor *indices, void *indices_data,
                      const sa_attend_options *opt,
                      const int64_t *query_positions, const int64_t *key_positions,
                      const sa_tensor *slot_mass, void *slot_mass_data,
                      const sa_tensor *out, void *out_data,
                      const sa_tensor *lse, void *lse_data, char **msg)
{
    sa_tensor tq = bind(q, q_data);
    sa_tensor tk = bind(k, k_data);
    sa_tensor tv = bind(v, v_data);
    sa_tensor tout = bind(out, out_data);
    sa_tensor tidx, tlse, tmass;
    sa_attend_options o = bind_attend(opt, query_positions, key_positions, slot_mass,
                                      slot_mass_data, &tmass);
    return fail(sa_attend(ctx, &tq, &tk, &tv, bind_optional(indices, indices_data, &tidx), &o,
                          &tout, bind_optional(lse, lse_data, &tlse)),
                msg);
}

sa_status sago_attend_paged(sa_context *ctx,
                            const sa_tensor *q, void *q_data,
                            const sa_tensor *query_starts, void *query_starts_data,
                            const sa_paged_kv *kv, void *k_data, void *v_data,
                            void *page_table_data, void *seq_lens_data,
                            void *slot_positions_data,
                            const sa_tensor *indices, void *indices_data,
                            const sa_attend_options *opt,
                            const int64_t *query_positions, const int64_t *key_positions,
                            const sa_tensor *slot_mass, void *slot_mass_data,
                            const sa_tensor *out, void *out_data,
                            const sa_tensor *lse, void *lse_data, char **msg)
{
    sa_tensor tq = bind(q, q_data);
    sa_tensor tout = bind(out, out_data);
    sa_tensor starts, tidx, tlse, tmass;
    sa_attend_options o = bind_attend(opt, query_positions, key_positions, slot_mass,
                                      slot_mass_data, &tmass);
    sa_paged_kv paged;
    if (kv != NULL)
        paged = bind_paged(kv, k_data, v_data, page_table_data, seq_lens_data, slot_positions_data);
    return fail(sa_attend_paged(ctx, &tq, bind_optional(query_starts, query_starts_data, &starts),
                                kv != NULL ? &paged : NULL,
                                bind_optional(indices, indices_data, &tidx), &o, &tout,
                                bind_optional(lse, lse_data, &tlse)),
                msg);
}

sa_status sago_cache_evict(sa_context *ctx, const sa_evict_options *opt,
                           const sa_tensor *scores, void *scores_data,
                           const sa_tensor *positions, void *positions_data,
                           const sa_tensor *freed, void *freed_data,
                           int64_t *n_freed, char **msg)
{
    sa_tensor s = bind(scores, scores_data);
    sa_tensor p = bind(positions, positions_data);
    sa_tensor f = bind(freed, freed_data);
    return fail(sa_cache_evict(ctx, opt, &s, &p, &f, n_freed), msg);
}
