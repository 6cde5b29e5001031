/* See shim.h: builds sa_tensor and options structs on the C stack. */
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
    t.data = data;
    return t;
}

sa_status sago_context_create(const sa_context_options *opt, sa_context **out, char **msg)
{
    return fail(sa_context_create(opt, out), msg);
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

sa_status sago_select(sa_index *ix, const sa_tensor *queries, void *queries_data,
                      const sa_select_options *opt, const int64_t *query_positions,
                      const int32_t *query_segments, const int32_t *key_segments,
                      const sa_tensor *indices, void *indices_data, char **msg)
{
    sa_tensor q = bind(queries, queries_data);
    sa_tensor idx = bind(indices, indices_data);
    sa_select_options o = *opt;
    o.query_positions = query_positions;
    o.query_segments = query_segments;
    o.key_segments = key_segments;
    return fail(sa_select(ix, &q, &o, &idx), msg);
}

sa_status sago_attend(sa_context *ctx,
                      const sa_tensor *q, void *q_data,
                      const sa_tensor *k, void *k_data,
                      const sa_tensor *v, void *v_data,
                      const sa_tensor *indices, void *indices_data,
                      const sa_attend_options *opt,
                      const int64_t *query_positions, const int64_t *key_positions,
                      const sa_tensor *out, void *out_data,
                      const sa_tensor *lse, void *lse_data, char **msg)
{
    sa_tensor tq = bind(q, q_data);
    sa_tensor tk = bind(k, k_data);
    sa_tensor tv = bind(v, v_data);
    sa_tensor tout = bind(out, out_data);
    sa_tensor tidx, tlse;
    sa_attend_options o = *opt;
    o.query_positions = query_positions;
    o.key_positions = key_positions;
    if (indices != NULL)
        tidx = bind(indices, indices_data);
    if (lse != NULL)
        tlse = bind(lse, lse_data);
    return fail(sa_attend(ctx, &tq, &tk, &tv, indices != NULL ? &tidx : NULL, &o, &tout,
                          lse != NULL ? &tlse : NULL),
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
