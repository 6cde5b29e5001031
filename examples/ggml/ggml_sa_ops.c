/*
 * sparseattn as ggml custom ops (see ggml_sa_ops.h).
 *
 * Threading. ggml calls a custom op on every thread of the graph, as (ith,
 * nth), and waits for all of them before the next node. Two ways to use
 * sparseattn there: thread 0 alone calls it with the library's own threads, or
 * every thread calls it on its share with a threads = 1 context. The second is
 * the one that works: ggml's CPU backend (built with OpenMP, its default) runs
 * the graph inside an OpenMP parallel region, and a sparseattn call made from
 * inside one runs on the calling thread alone (no nested team); thread 0 would
 * compute the whole attention on one core while the others wait at ggml's
 * barrier. With ggml's own thread pool (GGML_OPENMP=OFF) the split also avoids
 * running two pools on the same cores. Results do not depend on the split:
 * each (query, head) is computed by one call, the same way whatever the split.
 */
#include "ggml_sa_ops.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static atomic_int first_status = SA_OK;
static char first_message[512];

static void record_failure(sa_status status) {
    int expected = SA_OK;
    if (atomic_compare_exchange_strong(&first_status, &expected, (int)status)) {
        snprintf(first_message, sizeof first_message, "%s: %s", sa_status_name(status),
                 sa_last_error());
    }
}

sa_status ggml_sa_first_error(const char **message) {
    if (message) *message = first_message;
    return (sa_status)atomic_load(&first_status);
}

static sa_dtype sa_dtype_of(enum ggml_type type) {
    switch (type) {
    case GGML_TYPE_F32: return SA_DTYPE_F32;
    case GGML_TYPE_F16: return SA_DTYPE_F16;
    case GGML_TYPE_BF16: return SA_DTYPE_BF16;
    case GGML_TYPE_I32: return SA_DTYPE_I32;
    default: GGML_ABORT("ggml_sa_ops: tensor type %s has no sparseattn dtype", ggml_type_name(type));
    }
}

/* ggml dims (a, b, c) = (ne[ia], ne[ib], ne[ic]) as sparseattn's [a, b, c], in place. */
static sa_tensor sa_view(const struct ggml_tensor *t, int ia, int ib, int ic) {
    const int64_t es = (int64_t)ggml_type_size(t->type);
    sa_tensor v;
    memset(&v, 0, sizeof v);
    v.data = t->data;
    v.dtype = sa_dtype_of(t->type);
    v.device = SA_DEVICE_CPU;
    v.rank = 3;
    const int dims[3] = {ia, ib, ic};
    for (int i = 0; i < 3; ++i) {
        v.shape[i] = t->ne[dims[i]];
        v.strides[i] = (int64_t)t->nb[dims[i]] / es;
    }
    return v;
}

/* flash_attn_ext's operands, ggml [D, n, H, 1]: sparseattn [n, H, D]. */
static sa_tensor sa_view_operand(const struct ggml_tensor *t) { return sa_view(t, 1, 2, 0); }

/* Outputs and selections, ggml [X, H, n, 1]: sparseattn [n, H, X]. */
static sa_tensor sa_view_result(const struct ggml_tensor *t) { return sa_view(t, 2, 1, 0); }

/* Rows [r0, r0 + nr) and heads [h0, h0 + nh) of an [n, H, X] view. */
static sa_tensor sa_block(sa_tensor t, int64_t r0, int64_t nr, int64_t h0, int64_t nh) {
    static const size_t dtype_bytes[] = {4, 2, 2, 4, 8};
    t.data = (char *)t.data + (size_t)(r0 * t.strides[0] + h0 * t.strides[1]) * dtype_bytes[t.dtype];
    t.shape[0] = nr;
    t.shape[1] = nh;
    return t;
}

/* One rectangle of (query row, KV head) pairs: that row range, those KV heads
 * and their query heads. */
static void attend_block(struct ggml_tensor *dst, const ggml_sa_attend_params *p,
                         int64_t r0, int64_t nr, int64_t h0, int64_t nh) {
    const struct ggml_tensor *idx = dst->src[3];
    const int64_t group = dst->src[0]->ne[2] / dst->src[1]->ne[2];
    const sa_tensor q = sa_block(sa_view_operand(dst->src[0]), r0, nr, h0 * group, nh * group);
    const sa_tensor k = sa_block(sa_view_operand(dst->src[1]), 0, dst->src[1]->ne[1], h0, nh);
    const sa_tensor v = sa_block(sa_view_operand(dst->src[2]), 0, dst->src[2]->ne[1], h0, nh);
    sa_tensor out = sa_block(sa_view_result(dst), r0, nr, h0 * group, nh * group);
    sa_tensor list = SA_TENSOR_ABSENT;
    if (idx) list = sa_block(sa_view_result(idx), r0, nr, h0, nh);

    sa_attend_options opt = SA_ATTEND_OPTIONS_INIT;
    opt.scale = p->scale;
    opt.causal = 1;
    opt.query_positions = p->query_positions + r0;
    const sa_status st = sa_attend(p->ctx, &q, &k, &v, idx ? &list : NULL, &opt, &out, NULL);
    if (st != SA_OK) record_failure(st);
}

static void attend_op(struct ggml_tensor *dst, int ith, int nth, void *userdata) {
    const ggml_sa_attend_params *p = userdata;
    const int64_t n_q = dst->ne[2];
    const int64_t h_kv = dst->src[1]->ne[2];
    /* Thread ith takes a contiguous share of the (row, KV head) pairs in row-major
     * order: whole KV heads (a GQA group shares its K/V reads), and for a decode
     * step (one row) still a share for each thread up to H_kv threads. A share is
     * at most three rectangles: the end of a row, whole rows, the start of a row. */
    const int64_t n_items = n_q * h_kv;
    int64_t i = n_items * ith / nth;
    const int64_t end = n_items * (ith + 1) / nth;
    while (i < end) {
        const int64_t r = i / h_kv, h = i % h_kv;
        if (h == 0 && end - i >= h_kv) {
            const int64_t rows = (end - i) / h_kv;
            attend_block(dst, p, r, rows, 0, h_kv);
            i += rows * h_kv;
        } else {
            const int64_t heads = end - i < h_kv - h ? end - i : h_kv - h;
            attend_block(dst, p, r, 1, h, heads);
            i += heads;
        }
    }
}

struct ggml_tensor *ggml_sa_attend(struct ggml_context *gctx, struct ggml_tensor *q,
                                   struct ggml_tensor *k, struct ggml_tensor *v,
                                   struct ggml_tensor *indices,
                                   const ggml_sa_attend_params *p) {
    GGML_ASSERT(q->ne[0] == k->ne[0] && k->ne[0] == v->ne[0]);
    GGML_ASSERT(k->ne[1] == v->ne[1] && k->ne[2] == v->ne[2]);
    GGML_ASSERT(q->ne[2] % k->ne[2] == 0);
    GGML_ASSERT(q->ne[3] == 1 && k->ne[3] == 1 && v->ne[3] == 1);
    if (indices) {
        GGML_ASSERT(indices->type == GGML_TYPE_I32);
        GGML_ASSERT(indices->ne[1] == k->ne[2] && indices->ne[2] == q->ne[1]);
    }
    struct ggml_tensor *args[4] = {q, k, v, indices};
    return ggml_custom_4d(gctx, GGML_TYPE_F32, v->ne[0], q->ne[2], q->ne[1], 1, args,
                          indices ? 4 : 3, attend_op, GGML_N_TASKS_MAX, (void *)p);
}

static void select_op(struct ggml_tensor *dst, int ith, int nth, void *userdata) {
    const ggml_sa_select_params *p = userdata;
    /* One index serves every KV head, so threads share out query rows (safe:
     * sa_select may run concurrently on one index). A decode step's single row
     * runs on thread 0. */
    const int64_t n_q = dst->ne[2];
    const int64_t r0 = n_q * ith / nth, r1 = n_q * (ith + 1) / nth;
    if (r0 == r1) return;
    const struct ggml_tensor *q = dst->src[0];
    const sa_tensor queries = sa_block(sa_view_operand(q), r0, r1 - r0, 0, q->ne[2]);
    const sa_tensor keys = sa_view_operand(dst->src[1]);
    sa_tensor rows = sa_block(sa_view_result(dst), r0, r1 - r0, 0, dst->ne[1]);

    sa_select_options opt = p->options;
    opt.query_positions = p->query_positions + r0;
    opt.keys = &keys;
    const sa_status st = sa_select(p->index, &queries, &opt, &rows);
    if (st != SA_OK) record_failure(st);
}

struct ggml_tensor *ggml_sa_select(struct ggml_context *gctx, struct ggml_tensor *q,
                                   struct ggml_tensor *k, const ggml_sa_select_params *p) {
    GGML_ASSERT(q->ne[0] == k->ne[0] && q->ne[2] % k->ne[2] == 0);
    GGML_ASSERT(q->ne[3] == 1 && k->ne[3] == 1);
    const int64_t width = (int64_t)p->options.sinks + p->options.window + p->options.top_k;
    struct ggml_tensor *args[2] = {q, k};
    return ggml_custom_4d(gctx, GGML_TYPE_I32, width, k->ne[2], q->ne[1], 1, args, 2,
                          select_op, GGML_N_TASKS_MAX, (void *)p);
}
