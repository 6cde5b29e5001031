/* A host built against an installed sparseattn, through its CMake package (cmake/) or pkg-config (pkgconfig/). */
#include <sparseattn.h>
#include <stdio.h>

enum { N_KV = 64, H_KV = 2, H_Q = 4, D = 8, TOP_K = 4, WINDOW = 4, SINKS = 2 };
enum { WIDTH = TOP_K + WINDOW + SINKS };

static int fail(const char *what, sa_status st)
{
    fprintf(stderr, "%s: %s: %s\n", what, sa_status_name(st), sa_last_error());
    return 1;
}

int main(void)
{
    static float keys[N_KV * H_KV * D], values[N_KV * H_KV * D], query[H_Q * D], out[H_Q * D];
    int32_t slots[H_KV * WIDTH];
    sa_context *ctx = NULL;
    sa_index *ix = NULL;
    sa_index_options iopt = SA_INDEX_OPTIONS_INIT;
    sa_select_options sopt = SA_SELECT_OPTIONS_INIT;
    sa_tensor k = {0}, v = {0}, q = {0}, idx = {0}, o = {0};
    sa_status st;
    int i;

    for (i = 0; i < N_KV * H_KV * D; ++i) {
        keys[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
        values[i] = (float)(i % 5);
    }
    for (i = 0; i < H_Q * D; ++i)
        query[i] = (float)((i * 11) % 7) / 7.0f - 0.5f;

    k.data = keys; k.dtype = SA_DTYPE_F32; k.rank = 3;
    k.shape[0] = N_KV; k.shape[1] = H_KV; k.shape[2] = D;
    v = k; v.data = values;
    q.data = query; q.dtype = SA_DTYPE_F32; q.rank = 3;
    q.shape[0] = 1; q.shape[1] = H_Q; q.shape[2] = D;
    o = q; o.data = out;
    idx.data = slots; idx.dtype = SA_DTYPE_I32; idx.rank = 3;
    idx.shape[0] = 1; idx.shape[1] = H_KV; idx.shape[2] = WIDTH;

    if ((st = sa_context_create(NULL, &ctx)) != SA_OK) return fail("sa_context_create", st);
    iopt.num_kv_heads = H_KV; iopt.head_dim = D; iopt.dtype = SA_DTYPE_F32;
    if ((st = sa_index_create(ctx, &iopt, &ix)) != SA_OK) return fail("sa_index_create", st);
    if ((st = sa_index_append(ix, &k)) != SA_OK) return fail("sa_index_append", st);
    sopt.top_k = TOP_K; sopt.window = WINDOW; sopt.sinks = SINKS;
    if ((st = sa_select(ix, &q, &sopt, &idx)) != SA_OK) return fail("sa_select", st);
    if ((st = sa_attend(ctx, &q, &k, &v, &idx, NULL, &o, NULL)) != SA_OK) return fail("sa_attend", st);

    printf("sparseattn %s (header %d.%d.%d): selected", sa_version_string(), SA_VERSION_MAJOR,
           SA_VERSION_MINOR, SA_VERSION_PATCH);
    for (i = 0; i < WIDTH; ++i)
        printf(" %d", (int)slots[i]);
    printf("; out[0] = %.4f\n", (double)out[0]);

    sa_index_destroy(&ix);
    sa_context_destroy(&ctx);
    return (ix == NULL && ctx == NULL && sa_version() >> 16 == SA_VERSION_MAJOR) ? 0 : 1;
}
