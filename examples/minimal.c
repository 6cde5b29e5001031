/* minimal: the four calls of sparseattn, linked directly. One decode query
 * attends to the 64 best of 4096 cached keys (plus window and sinks). */
#include <stdio.h>
#include <stdlib.h>

#include "sparseattn.h"

enum { N = 4096, H_KV = 2, H_Q = 8, D = 64, TOP_K = 64, WIDTH = TOP_K + 64 + 4 };

#define CHECK(call)                                                                     \
    do {                                                                                \
        sa_status st_ = (call);                                                         \
        if (st_ != SA_OK) {                                                             \
            fprintf(stderr, "%s: %s: %s\n", #call, sa_status_name(st_), sa_last_error()); \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

static float k[N][H_KV][D], v[N][H_KV][D], q[1][H_Q][D], out[1][H_Q][D];
static int32_t idx[1][H_KV][WIDTH];

static sa_tensor view(void *data, sa_dtype dtype, int64_t a, int64_t b, int64_t c) {
    sa_tensor t = {data, dtype, SA_DEVICE_CPU, 0, 3, {a, b, c, 0}, {0, 0, 0, 0}};
    return t;
}

static float noise(uint32_t x) { /* a hash of x, uniform in [-1, 1) */
    x = (x ^ 61u ^ (x >> 16)) * 9u;
    x = (x ^ (x >> 4)) * 0x27d4eb2du;
    return (float)((x ^ (x >> 15)) & 0xffffu) / 32768.0f - 1.0f;
}

int main(void) {
    for (int n = 0; n < N; ++n)
        for (int h = 0; h < H_KV; ++h)
            for (int d = 0; d < D; ++d) {
                k[n][h][d] = noise((uint32_t)((n * H_KV + h) * D + d));
                v[n][h][d] = noise((uint32_t)((n * H_KV + h) * D + d) + 0x9e3779b9u);
            }
    for (int h = 0; h < H_Q; ++h)
        for (int d = 0; d < D; ++d) q[0][h][d] = 4.0f * k[1234][h / (H_Q / H_KV)][d];

    /* README: begin (README.md shows these lines; tools/readme_snippets.py checks they match) */
    sa_context *ctx = NULL;
    sa_index *ix = NULL;
    CHECK(sa_context_create(NULL, &ctx));                   /* all cores, best instruction set */
    sa_index_options iopt = SA_INDEX_OPTIONS_INIT;          /* exact top-K; .kind picks another */
    iopt.num_kv_heads = H_KV, iopt.head_dim = D;
    CHECK(sa_index_create(ctx, &iopt, &ix));                /* 1. an index per layer */
    sa_tensor keys = view(k, SA_DTYPE_F32, N, H_KV, D);     /* [n, H_kv, D], zero strides: dense */
    CHECK(sa_index_append(ix, &keys));                      /* 2. keys as the cache grows */
    sa_select_options sopt = SA_SELECT_OPTIONS_INIT;        /* top_k 64, window 64, sinks 4 */
    sa_tensor qt = view(q, SA_DTYPE_F32, 1, H_Q, D), it = view(idx, SA_DTYPE_I32, 1, H_KV, WIDTH);
    CHECK(sa_select(ix, &qt, &sopt, &it));                  /* 3. which keys: slots, -1 padded */
    sa_tensor vt = view(v, SA_DTYPE_F32, N, H_KV, D), ot = view(out, SA_DTYPE_F32, 1, H_Q, D);
    CHECK(sa_attend(ctx, &qt, &keys, &vt, &it, NULL, &ot, NULL)); /* 4. attend to them */
    /* README: end */

    int found = 0;
    for (int j = 0; j < WIDTH; ++j) found |= idx[0][0][j] == 1234;
    printf("sparseattn %s: key 1234 %s; out[0][0][0..3] = %.4f %.4f %.4f %.4f\n",
           sa_version_string(), found ? "selected" : "NOT selected", out[0][0][0], out[0][0][1],
           out[0][0][2], out[0][0][3]);
    sa_index_destroy(&ix);
    sa_context_destroy(&ctx);
    return found ? 0 : 1;
}
