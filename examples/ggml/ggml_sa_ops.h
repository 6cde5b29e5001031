/*
 * sparseattn as ggml custom ops: attention (sa_attend) and page selection
 * (sa_select) as nodes of a ggml graph, reading ggml's tensors in place.
 *
 * Layouts. ggml lists dimensions innermost first (ne[0] is the contiguous one)
 * with byte strides nb[]; sparseattn lists them outermost first with element
 * strides. The attention operands ggml_flash_attn_ext takes,
 *     q [D, n_q, H_q, 1], k and v [D, n_kv, H_kv, 1],
 * are sparseattn's [n, H, D] with dims 1 and 2 of ggml swapped: shape
 * {ne[1], ne[2], ne[0]}, strides {nb[1], nb[2], nb[0]} / element size. The
 * outputs here have flash_attn_ext's permuted layout [D, H_q, n_q, 1] (and the
 * selection [width, H_kv, n_q, 1]): shape {ne[2], ne[1], ne[0]}.
 */
#ifndef GGML_SA_OPS_H
#define GGML_SA_OPS_H

#include <stdint.h>

#include "ggml.h"
#include "sparseattn.h"

/* What the attention op needs besides its tensors. Lives as long as the graph. */
typedef struct ggml_sa_attend_params {
    sa_context *ctx;                /* threads = 1: see ggml_sa_attend */
    float scale;                    /* 0: 1/sqrt(D) */
    const int64_t *query_positions; /* n_q positions; query i sees keys at rows <= it */
} ggml_sa_attend_params;

/* What the selection op needs besides its tensors. */
typedef struct ggml_sa_select_params {
    sa_index *index;                /* holds the same keys as k, slot = row */
    sa_select_options options;      /* top_k, window, sinks; query_positions and keys
                                       are set per call */
    const int64_t *query_positions; /* n_q positions */
} ggml_sa_select_params;

/* Causal attention of q [D, n_q, H_q, 1] over k, v [D, n_kv, H_kv, 1] (F16,
 * F32 or BF16; q F32 or the K/V type), as a new F32 tensor [D, H_q, n_q, 1]
 * (flash_attn_ext's layout). With indices ([width, H_kv, n_q, 1] I32, from
 * ggml_sa_select) each query attends only to its KV head's listed rows;
 * indices NULL: dense. The graph's threads split the work; p must outlive the
 * graph's computations. */
struct ggml_tensor *ggml_sa_attend(struct ggml_context *gctx, struct ggml_tensor *q,
                                   struct ggml_tensor *k, struct ggml_tensor *v,
                                   struct ggml_tensor *indices,
                                   const ggml_sa_attend_params *p);

/* The rows each query should attend to, per KV head: a new I32 tensor
 * [width, H_kv, n_q, 1], width = sinks + window + top_k, rows ascending then
 * -1. k is the cache the index was built over (it borrows the keys), passed
 * so the graph orders this node after whatever writes k. */
struct ggml_tensor *ggml_sa_select(struct ggml_context *gctx, struct ggml_tensor *q,
                                   struct ggml_tensor *k, const ggml_sa_select_params *p);

/* The first failure any op of this file met (status SA_OK when none), with its
 * message; ops cannot return errors through ggml. */
sa_status ggml_sa_first_error(const char **message);

#endif
