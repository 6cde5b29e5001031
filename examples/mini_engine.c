/* mini_engine: a small inference-engine host, the way vLLM- or llama.cpp-style engines would
 * adopt sparseattn. It keeps a paged KV cache per layer with its own page allocator, decodes a
 * batch of sequences of different lengths, keeps each sequence within a budget of slots by
 * evicting the tokens that received the least attention, and calls the library only through
 * its function table, from inside an OpenMP parallel region of its own (one host thread per
 * layer, as engines run their CPU work).
 *
 * Per decode step and layer, one sa_select_batch and one sa_attend_paged serve the whole
 * batch. For comparison the same step also runs dense attention over every retained slot; the
 * program prints the error of sparse against dense and the time of both. It fails (exit 1) on
 * any library error, and when a sequence whose whole cache fits the selection (sinks + window
 * + top_k) does not match dense attention exactly.
 *
 * Usage: mini_engine [-s STEPS] [-b BUDGET] [-k TOP_K] [-t HOST_THREADS] */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparseattn.h"

enum { LAYERS = 2, BATCH = 5, H_Q = 8, H_KV = 2, D = 64, PAGE = 16, SINKS = 4, WINDOW = 64 };
static const int64_t prompt_lens[BATCH] = {37, 300, 900, 1000, 9};

static const sa_api *api;

#define CHECK(call)                                                                          \
    do {                                                                                     \
        sa_status st_ = (call);                                                              \
        if (st_ != SA_OK) {                                                                  \
            fprintf(stderr, "%s failed: %s: %s\n", #call, api->status_name(st_), api->last_error()); \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

/* ----------------------------------------------------------- synthetic model */

static float hash_noise(uint64_t x) { /* uniform in [-1, 1) */
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (float)(x >> 40) / 8388608.0f - 1.0f;
}
static uint64_t key_of(int layer, int seq, int64_t pos, int what) {
    return ((uint64_t)layer << 56) ^ ((uint64_t)seq << 48) ^ ((uint64_t)pos << 4) ^ (uint64_t)what;
}
/* K and V of token `pos` of sequence `seq`: noise. */
static void token_kv(int layer, int seq, int64_t pos, float *k, float *v) {
    for (int i = 0; i < H_KV * D; ++i) {
        k[i] = hash_noise(key_of(layer, seq, pos, 1) + (uint64_t)i * 0x9e3779b97f4a7c15ULL);
        v[i] = hash_noise(key_of(layer, seq, pos, 2) + (uint64_t)i * 0x9e3779b97f4a7c15ULL);
    }
}
/* The query of token `pos` looks for a few earlier tokens (retrieval heads): a sum of their
 * keys, scaled so that attention is peaked, plus noise. */
static void token_q(int layer, int seq, int64_t pos, float *q) {
    float k[H_KV * D], v[H_KV * D];
    for (int i = 0; i < H_Q * D; ++i) q[i] = 0.3f * hash_noise(key_of(layer, seq, pos, 3) + (uint64_t)i);
    for (int r = 0; r < 3 && pos > 0; ++r) {
        int64_t target = (int64_t)((hash_noise(key_of(layer, seq, pos, 4 + r)) + 1.0f) * 0.5f * (float)pos);
        token_kv(layer, seq, target, k, v);
        for (int h = 0; h < H_Q; ++h)
            for (int d = 0; d < D; ++d) q[h * D + d] += 3.0f * k[(h / (H_Q / H_KV)) * D + d];
    }
}

/* ----------------------------------------------------------- the paged cache */

typedef struct {
    int64_t num_pages;
    float *k, *v;            /* [num_pages][PAGE][H_KV][D] */
    int64_t *slot_pos;       /* [num_pages * PAGE]: position held, -1 empty */
    float *mass;             /* [H_KV][num_pages * PAGE]: accumulated attention (slot_mass) */
    int32_t *free_pages;     /* the allocator: a stack of free page ids */
    int64_t n_free;
    int32_t *table;          /* [BATCH][max_pages] */
    int64_t max_pages;
    int64_t len[BATCH];      /* slots in use per sequence (<= budget) */
    int64_t next_pos[BATCH]; /* position of the next token */
    sa_index *index[BATCH];  /* one selection index per sequence: slot j = its j-th row */
} layer_cache;

static int32_t alloc_page(layer_cache *c) {
    if (c->n_free == 0) {
        fprintf(stderr, "out of pages\n");
        exit(1);
    }
    return c->free_pages[--c->n_free];
}
static int64_t phys(const layer_cache *c, int b, int64_t slot) {
    return (int64_t)c->table[b * c->max_pages + slot / PAGE] * PAGE + slot % PAGE;
}
static void write_row(layer_cache *c, int64_t s, const float *k, const float *v, int64_t pos) {
    memcpy(c->k + s * H_KV * D, k, sizeof(float) * H_KV * D);
    memcpy(c->v + s * H_KV * D, v, sizeof(float) * H_KV * D);
    c->slot_pos[s] = pos;
    for (int h = 0; h < H_KV; ++h) c->mass[h * c->num_pages * PAGE + s] = 0.0f;
}

static sa_tensor view(void *data, sa_dtype dtype, int rank, int64_t a, int64_t b, int64_t c, int64_t d) {
    sa_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dtype;
    t.device = SA_DEVICE_CPU;
    t.rank = rank;
    t.shape[0] = a;
    t.shape[1] = b;
    t.shape[2] = c;
    t.shape[3] = d;
    return t;
}

static sa_paged_kv describe(layer_cache *c, int64_t *lens) {
    sa_paged_kv kv = SA_PAGED_KV_INIT;
    kv.k = view(c->k, SA_DTYPE_F32, 4, c->num_pages, PAGE, H_KV, D);
    kv.v = view(c->v, SA_DTYPE_F32, 4, c->num_pages, PAGE, H_KV, D);
    kv.page_table = view(c->table, SA_DTYPE_I32, 2, BATCH, c->max_pages, 0, 0);
    kv.seq_lens = view(lens, SA_DTYPE_I64, 1, BATCH, 0, 0, 0);
    kv.slot_positions = view(c->slot_pos, SA_DTYPE_I64, 1, c->num_pages * PAGE, 0, 0, 0);
    return kv;
}

/* Adds token next_pos[b] of sequence b: into a new slot while the budget allows, else into
 * the slot sa_cache_evict frees (the one with the least accumulated attention). */
static int add_token(sa_context *ctx, layer_cache *c, int layer, int b, int64_t budget) {
    const int64_t pos = c->next_pos[b]++;
    float k[H_KV * D], v[H_KV * D];
    token_kv(layer, b, pos, k, v);
    sa_tensor key = view(k, SA_DTYPE_F32, 3, 1, H_KV, D, 0);
    if (c->len[b] < budget) {
        const int64_t slot = c->len[b]++;
        if (slot % PAGE == 0) c->table[b * c->max_pages + slot / PAGE] = alloc_page(c);
        write_row(c, phys(c, b, slot), k, v, pos);
        CHECK(api->index_append(c->index[b], &key));
        return 0;
    }
    /* The sequence's slots' scores and positions, gathered from the physical slots. */
    const int64_t n = c->len[b], n_slots = c->num_pages * PAGE;
    float *scores = malloc(sizeof(float) * (size_t)(H_KV * n));
    int64_t *positions = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t j = 0; j < n; ++j) {
        positions[j] = c->slot_pos[phys(c, b, j)];
        for (int h = 0; h < H_KV; ++h) scores[h * n + j] = c->mass[h * n_slots + phys(c, b, j)];
    }
    sa_evict_options eo = SA_EVICT_OPTIONS_INIT;
    eo.budget = budget;
    eo.incoming = 1;
    eo.sinks = SINKS;
    eo.window = WINDOW;
    int32_t freed[2];
    int64_t n_freed = 0;
    sa_tensor ts = view(scores, SA_DTYPE_F32, 2, H_KV, n, 0, 0), tp = view(positions, SA_DTYPE_I64, 1, n, 0, 0, 0);
    sa_tensor tf = view(freed, SA_DTYPE_I32, 1, 2, 0, 0, 0);
    CHECK(api->cache_evict(ctx, &eo, &ts, &tp, &tf, &n_freed));
    free(scores);
    free(positions);
    if (n_freed != 1) {
        fprintf(stderr, "sa_cache_evict freed %lld slots for one token\n", (long long)n_freed);
        exit(1);
    }
    write_row(c, phys(c, b, freed[0]), k, v, pos);
    CHECK(api->index_update(c->index[b], &freed[0], 1, &key, &pos));
    return 1;
}

typedef struct {
    double select_attend_s, dense_s, max_err, sum_err;
    int64_t n_err, evictions, exact_checked;
    int failed;
} layer_stats;

/* One decode step of layer `layer` for the whole batch. */
static void decode_step(sa_context *ctx, layer_cache *c, int layer, int64_t budget, int32_t top_k, layer_stats *st) {
    for (int b = 0; b < BATCH; ++b) st->evictions += add_token(ctx, c, layer, b, budget);
    float q[BATCH][H_Q * D], sparse[BATCH][H_Q * D], dense[BATCH][H_Q * D];
    int64_t qpos[BATCH];
    for (int b = 0; b < BATCH; ++b) {
        qpos[b] = c->next_pos[b] - 1; /* the token just added */
        token_q(layer, b, qpos[b], q[b]);
    }
    const int64_t width = SINKS + WINDOW + top_k;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(BATCH * H_KV * width));
    sa_paged_kv kv = describe(c, c->len);
    sa_tensor tq = view(q, SA_DTYPE_F32, 3, BATCH, H_Q, D, 0);
    sa_tensor tidx = view(idx, SA_DTYPE_I32, 3, BATCH, H_KV, width, 0);
    sa_tensor tsparse = view(sparse, SA_DTYPE_F32, 3, BATCH, H_Q, D, 0), tdense = view(dense, SA_DTYPE_F32, 3, BATCH, H_Q, D, 0);
    sa_tensor tmass = view(c->mass, SA_DTYPE_F32, 2, H_KV, c->num_pages * PAGE, 0, 0);

    sa_select_options so = SA_SELECT_OPTIONS_INIT;
    so.top_k = top_k;
    so.window = WINDOW;
    so.sinks = SINKS;
    so.query_positions = qpos;
    sa_attend_options ao = SA_ATTEND_OPTIONS_INIT;
    ao.causal = 1;
    ao.query_positions = qpos;
    ao.slot_mass = &tmass;
    ao.mass_decay = 0.99f;

    double t0 = omp_get_wtime();
    CHECK(api->select_batch(c->index, BATCH, &tq, NULL, &so, &kv, &tidx));
    CHECK(api->attend_paged(ctx, &tq, NULL, &kv, &tidx, &ao, &tsparse, NULL));
    double t1 = omp_get_wtime();
    ao.slot_mass = NULL;
    CHECK(api->attend_paged(ctx, &tq, NULL, &kv, NULL, &ao, &tdense, NULL));
    double t2 = omp_get_wtime();
    st->select_attend_s += t1 - t0;
    st->dense_s += t2 - t1;
    free(idx);

    for (int b = 0; b < BATCH; ++b) {
        double num = 0, den = 0;
        for (int i = 0; i < H_Q * D; ++i) {
            num += (double)(sparse[b][i] - dense[b][i]) * (sparse[b][i] - dense[b][i]);
            den += (double)dense[b][i] * dense[b][i];
        }
        const double err = sqrt(num / (den > 0 ? den : 1));
        if (err > st->max_err) st->max_err = err;
        st->sum_err += err;
        st->n_err++;
        /* Every retained slot fits the selection: sparse must be dense. */
        if (c->len[b] <= width) {
            st->exact_checked++;
            if (err > 1e-5) {
                fprintf(stderr, "layer %d sequence %d: %lld slots fit the selection, but sparse differs from dense by %g\n",
                        layer, b, (long long)c->len[b], err);
                st->failed = 1;
            }
        }
    }
}

int main(int argc, char **argv) {
    int64_t steps = 200, budget = 1024;
    int32_t top_k = 128;
    int host_threads = LAYERS;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-s")) steps = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-b")) budget = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "-k")) top_k = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) host_threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [-s STEPS] [-b BUDGET] [-k TOP_K] [-t HOST_THREADS]\n", argv[0]);
            return 2;
        }
    }
    if (budget < SINKS + WINDOW + 1 || budget % PAGE != 0 || top_k < 1 || steps < 1) {
        fprintf(stderr, "budget must be a multiple of %d above %d; top_k and steps >= 1\n", PAGE, SINKS + WINDOW);
        return 2;
    }
    api = sa_get_api(SA_ABI_VERSION);
    if (!api || api->struct_size < sizeof(sa_api)) {
        fprintf(stderr, "libsparseattn is older than this host (ABI %d)\n", SA_ABI_VERSION);
        return 1;
    }
    sa_context *ctx = NULL;
    sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
    co.threads = 2; /* inside the host's region the library runs on the calling thread */
    CHECK(api->context_create(&co, &ctx));

    layer_cache caches[LAYERS];
    for (int l = 0; l < LAYERS; ++l) {
        layer_cache *c = &caches[l];
        memset(c, 0, sizeof *c);
        c->max_pages = budget / PAGE;
        c->num_pages = BATCH * c->max_pages + 3; /* a few spare */
        const size_t rows = (size_t)(c->num_pages * PAGE);
        c->k = malloc(sizeof(float) * rows * H_KV * D);
        c->v = malloc(sizeof(float) * rows * H_KV * D);
        c->slot_pos = malloc(sizeof(int64_t) * rows);
        c->mass = calloc(rows * H_KV, sizeof(float));
        c->free_pages = malloc(sizeof(int32_t) * (size_t)c->num_pages);
        c->table = calloc((size_t)(BATCH * c->max_pages), sizeof(int32_t));
        if (!c->k || !c->v || !c->slot_pos || !c->mass || !c->free_pages || !c->table) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        for (size_t s = 0; s < rows; ++s) c->slot_pos[s] = -1;
        /* Pages handed out from the top: a sequence's pages are not in physical order. */
        for (int64_t p = 0; p < c->num_pages; ++p) c->free_pages[p] = (int32_t)(c->num_pages - 1 - (p * 7) % c->num_pages);
        c->n_free = c->num_pages;
        for (int b = 0; b < BATCH; ++b) {
            sa_index_options io = SA_INDEX_OPTIONS_INIT;
            io.kind = SA_SELECTOR_PAGE;
            io.num_kv_heads = H_KV;
            io.head_dim = D;
            CHECK(api->index_create(ctx, &io, &c->index[b]));
        }
    }
    /* Any permutation works for the allocator; check the one above is one. */
    for (int l = 0; l < LAYERS; ++l) {
        char *seen = calloc((size_t)caches[l].num_pages, 1);
        for (int64_t p = 0; p < caches[l].num_pages; ++p) seen[caches[l].free_pages[p]]++;
        for (int64_t p = 0; p < caches[l].num_pages; ++p)
            if (seen[p] != 1) {
                fprintf(stderr, "page allocator: page %lld listed %d times\n", (long long)p, seen[p]);
                return 1;
            }
        free(seen);
    }

    /* Prompts: each sequence's tokens, up to the budget, as decode steps would add them. */
    for (int l = 0; l < LAYERS; ++l)
        for (int b = 0; b < BATCH; ++b)
            for (int64_t t = 0; t < prompt_lens[b]; ++t) add_token(ctx, &caches[l], l, b, budget);

    layer_stats stats[LAYERS];
    memset(stats, 0, sizeof stats);
    double wall = omp_get_wtime();
    /* The host's own parallel region: one thread per layer, each decoding its layer's batch. */
#pragma omp parallel num_threads(host_threads)
    {
#pragma omp for schedule(static)
        for (int l = 0; l < LAYERS; ++l)
            for (int64_t s = 0; s < steps; ++s) decode_step(ctx, &caches[l], l, budget, top_k, &stats[l]);
    }
    wall = omp_get_wtime() - wall;

    int failed = 0;
    double sa = 0, dense = 0, max_err = 0, sum_err = 0;
    int64_t n_err = 0, evictions = 0, exact = 0;
    for (int l = 0; l < LAYERS; ++l) {
        failed |= stats[l].failed;
        sa += stats[l].select_attend_s;
        dense += stats[l].dense_s;
        if (stats[l].max_err > max_err) max_err = stats[l].max_err;
        sum_err += stats[l].sum_err;
        n_err += stats[l].n_err;
        evictions += stats[l].evictions;
        exact += stats[l].exact_checked;
    }
    printf("mini_engine: %d layers x %d sequences (prompts 37/300/900/1000/9 tokens), page size %d, budget %lld slots "
           "per sequence, %lld decode steps, host threads %d\n",
           LAYERS, BATCH, PAGE, (long long)budget, (long long)steps, host_threads);
    printf("  final lengths:");
    for (int b = 0; b < BATCH; ++b) printf(" %lld", (long long)caches[0].len[b]);
    printf(" slots; %lld evictions\n", (long long)evictions);
    printf("  per step and layer: select + sparse attend %.3f ms, dense attend %.3f ms (whole run %.2f s)\n",
           1e3 * sa / (double)(steps * LAYERS), 1e3 * dense / (double)(steps * LAYERS), wall);
    printf("  sparse vs dense over the retained slots: relative L2 error mean %.2e, max %.2e; %lld outputs with every "
           "slot selected matched dense exactly\n", sum_err / (double)n_err, max_err, (long long)exact);

    for (int l = 0; l < LAYERS; ++l) {
        for (int b = 0; b < BATCH; ++b) api->index_destroy(&caches[l].index[b]);
        free(caches[l].k);
        free(caches[l].v);
        free(caches[l].slot_pos);
        free(caches[l].mass);
        free(caches[l].free_pages);
        free(caches[l].table);
    }
    api->context_destroy(&ctx);
    if (failed || exact == 0) {
        fprintf(stderr, "mini_engine: FAILED\n");
        return 1;
    }
    return 0;
}
