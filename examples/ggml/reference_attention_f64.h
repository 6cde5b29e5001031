/*
 * Softmax attention in float64, straight from the definition: the independent
 * reference the example checks sa_attend (and ggml_flash_attn_ext) against.
 * It shares no code with either: it reads the f16 cache bits itself.
 */
#ifndef REFERENCE_ATTENTION_F64_H
#define REFERENCE_ATTENTION_F64_H

#include <stdint.h>

typedef struct reference_problem {
    const float *q;        /* [n_q][h_q][d] */
    const uint16_t *k, *v; /* IEEE binary16 bits; element (row, KV head, dim) at */
    int64_t row_stride, head_stride; /* row * row_stride + head * head_stride + dim */
    int64_t n_q, n_kv, h_q, h_kv, d;
    double scale;
    const int64_t *query_positions; /* n_q; dense: query i sees rows 0 .. position */
    const int32_t *rows;   /* NULL: dense; else [n_q][h_kv][width], -1 skipped:
                              each query head attends to its KV head's list */
    int64_t width;
} reference_problem;

/* out: [n_q][h_q][d]. A query with no key gets zeros. */
void reference_attention_f64(const reference_problem *p, double *out);

#endif
