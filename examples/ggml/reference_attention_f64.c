#include "reference_attention_f64.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double half_to_double(uint16_t h) {
    const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    double magnitude;
    if (exponent == 0) magnitude = ldexp(mantissa, -24); /* subnormal */
    else if (exponent == 31) magnitude = mantissa ? NAN : INFINITY;
    else magnitude = ldexp(1024 + mantissa, exponent - 25);
    return sign ? -magnitude : magnitude;
}

/* One (query, query head): out[d] = sum_j softmax(scale * q.k_j)_j v_j over the keys listed. */
static void attend_one(const reference_problem *p, int64_t i, int64_t h, const int64_t *keys,
                       int64_t n_keys, double *scores, double *out) {
    const int64_t kh = h / (p->h_q / p->h_kv), d = p->d;
    const float *q = p->q + (i * p->h_q + h) * d;
    double max_score = -INFINITY;
    for (int64_t j = 0; j < n_keys; ++j) {
        const uint16_t *k = p->k + keys[j] * p->row_stride + kh * p->head_stride;
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += (double)q[c] * half_to_double(k[c]);
        scores[j] = p->scale * dot;
        if (scores[j] > max_score) max_score = scores[j];
    }
    memset(out, 0, (size_t)d * sizeof *out);
    double denominator = 0;
    for (int64_t j = 0; j < n_keys; ++j) {
        const double w = exp(scores[j] - max_score);
        const uint16_t *v = p->v + keys[j] * p->row_stride + kh * p->head_stride;
        denominator += w;
        for (int64_t c = 0; c < d; ++c) out[c] += w * half_to_double(v[c]);
    }
    if (denominator > 0)
        for (int64_t c = 0; c < d; ++c) out[c] /= denominator;
}

void reference_attention_f64(const reference_problem *p, double *out) {
    const int64_t pairs = p->n_q * p->h_q;
#pragma omp parallel
    {
        int64_t *keys = malloc((size_t)(p->rows ? p->width : p->n_kv) * sizeof *keys);
        double *scores = malloc((size_t)(p->rows ? p->width : p->n_kv) * sizeof *scores);
        if (!keys || !scores) abort(); /* a few hundred KiB per thread */
#pragma omp for schedule(dynamic)
        for (int64_t pair = 0; pair < pairs; ++pair) {
            const int64_t i = pair / p->h_q, h = pair % p->h_q;
            int64_t n_keys = 0;
            if (p->rows) {
                const int32_t *list = p->rows + (i * p->h_kv + h / (p->h_q / p->h_kv)) * p->width;
                for (int64_t j = 0; j < p->width; ++j)
                    if (list[j] >= 0) keys[n_keys++] = list[j];
            } else {
                for (int64_t j = 0; j <= p->query_positions[i] && j < p->n_kv; ++j) keys[n_keys++] = j;
            }
            attend_one(p, i, h, keys, n_keys, scores, out + pair * p->d);
        }
        free(keys);
        free(scores);
    }
}
