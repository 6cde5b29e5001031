/*
 * Attention in a ggml graph through sparseattn, next to ggml_flash_attn_ext.
 *
 * An f16 KV cache, in llama.cpp's layout (per layer, one row of H_kv * D
 * values per token) or head-major (--cache head: per KV head, its n_kv rows
 * together), is attended by the queries of one decode step and of a causal
 * prefill chunk, three ways, each a ggml graph on the CPU backend:
 *   - sa_attend as a ggml custom op, dense (ggml_sa_ops.c);
 *   - ggml_flash_attn_ext on the same tensors (views, no copies);
 *   - sparse: sa_select (page selector over the same K) then sa_attend over
 *     the selected rows, both custom ops.
 * Every output is compared with a float64 reference (reference_attention_f64.c);
 * the sparse one both with the reference over the rows it selected (how exact
 * its attention is) and with the dense reference (what selecting costs).
 * Exits 1 when a sparseattn result is off its reference by more than --tol
 * (relative to the reference's largest magnitude) or a call fails.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ggml-cpu.h"
#include "ggml.h"
#include "ggml_sa_ops.h"
#include "reference_attention_f64.h"
#include "sparseattn.h"

typedef struct options {
    int64_t n_kv, h_q, h_kv, d, prefill;
    int threads, reps, top_k, window, sinks, page_size;
    double tol;
    int head_major; /* --cache head: [D, n_kv, H_kv]; else token-major [D, H_kv, n_kv] */
} options;

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--keys N] [--heads H_q] [--kv-heads H_kv] [--dim D] [--prefill N]\n"
            "          [--threads N] [--reps N] [--top-k K] [--window W] [--sinks S]\n"
            "          [--page P] [--tol T] [--cache token|head]\n"
            "defaults: 32768 keys, 32 query heads, 8 KV heads, D 128, a 16-query prefill\n"
            "chunk, all online CPUs, 5 timed runs, page selector top-k 1024 + window 64 +\n"
            "sinks 4 over pages of 16, tolerance 2e-5, token-major cache (llama.cpp's)\n",
            argv0);
}

static int parse_options(int argc, char **argv, options *o) {
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (options){32768, 32, 8, 128, 16, cpus > 0 ? (int)cpus : 1, 5, 1024, 64, 4, 16, 2e-5, 0};
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 0;
        if (i + 1 >= argc) return 0;
        const char *v = argv[++i];
        if (!strcmp(a, "--keys")) o->n_kv = atoll(v);
        else if (!strcmp(a, "--heads")) o->h_q = atoll(v);
        else if (!strcmp(a, "--kv-heads")) o->h_kv = atoll(v);
        else if (!strcmp(a, "--dim")) o->d = atoll(v);
        else if (!strcmp(a, "--prefill")) o->prefill = atoll(v);
        else if (!strcmp(a, "--threads")) o->threads = atoi(v);
        else if (!strcmp(a, "--reps")) o->reps = atoi(v);
        else if (!strcmp(a, "--top-k")) o->top_k = atoi(v);
        else if (!strcmp(a, "--window")) o->window = atoi(v);
        else if (!strcmp(a, "--sinks")) o->sinks = atoi(v);
        else if (!strcmp(a, "--page")) o->page_size = atoi(v);
        else if (!strcmp(a, "--tol")) o->tol = atof(v);
        else if (!strcmp(a, "--cache") && !strcmp(v, "token")) o->head_major = 0;
        else if (!strcmp(a, "--cache") && !strcmp(v, "head")) o->head_major = 1;
        else return 0;
    }
    return o->n_kv > 0 && o->h_kv > 0 && o->h_q > 0 && o->h_q % o->h_kv == 0 && o->d > 0 &&
           o->prefill >= 1 && o->prefill <= o->n_kv && o->threads >= 1 && o->reps >= 1 &&
           o->top_k >= 1 && o->window >= 0 && o->sinks >= 0 && o->page_size >= 1 && o->tol > 0;
}

/* splitmix64: reproducible inputs on every platform. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double uniform(uint64_t *s) { return ((next_u64(s) >> 11) + 0.5) * 0x1.0p-53; }
static float gaussian(uint64_t *s) {
    return (float)(sqrt(-2.0 * log(uniform(s))) * cos(6.283185307179586 * uniform(s)));
}

/* Attention that is neither flat nor trivial: the query heads of a GQA group
 * share a direction, and about one key in 512 per KV head points along it
 * (those hold most of the attention, as in real layers); the rest is weaker
 * noise, which still draws a part of the attention spread over all keys. */
typedef struct workload {
    float *directions; /* [h_kv][d] */
    uint64_t seed;
} workload;

/* One layer's K and V and where element (row, KV head, dim) lives in each. */
typedef struct kv_cache {
    struct ggml_tensor *k, *v;
    int64_t row_stride, head_stride; /* elements; dims are contiguous */
    int head_major;
} kv_cache;

static kv_cache new_cache(struct ggml_context *ctx, const options *o) {
    kv_cache c = {NULL, NULL, o->head_major ? o->d : o->h_kv * o->d,
                  o->head_major ? o->n_kv * o->d : o->d, o->head_major};
    const int64_t ne1 = o->head_major ? o->n_kv : o->h_kv, ne2 = o->head_major ? o->h_kv : o->n_kv;
    c.k = ggml_new_tensor_3d(ctx, GGML_TYPE_F16, o->d, ne1, ne2);
    c.v = ggml_new_tensor_3d(ctx, GGML_TYPE_F16, o->d, ne1, ne2);
    return c;
}

/* The [D, n_kv, H_kv] operand attention takes: the head-major cache itself, or a
 * permuted view of the token-major one (llama.cpp's view; no copy either way). */
static struct ggml_tensor *attention_view(struct ggml_context *ctx, const kv_cache *c,
                                          struct ggml_tensor *t) {
    return c->head_major ? t : ggml_permute(ctx, t, 0, 2, 1, 3);
}

static void fill_cache(const options *o, workload *w, const kv_cache *cache) {
    ggml_fp16_t *kd = cache->k->data, *vd = cache->v->data;
    for (int64_t i = 0; i < o->h_kv * o->d; ++i) w->directions[i] = gaussian(&w->seed);
    for (int64_t j = 0; j < o->n_kv; ++j)
        for (int64_t h = 0; h < o->h_kv; ++h) {
            const int hot = next_u64(&w->seed) % 512 == 0;
            const float *dir = w->directions + h * o->d;
            for (int64_t c = 0; c < o->d; ++c) {
                const int64_t at = j * cache->row_stride + h * cache->head_stride + c;
                const float noise = gaussian(&w->seed);
                kd[at] = ggml_fp32_to_fp16(hot ? 0.5f * noise + dir[c] : 0.6f * noise);
                vd[at] = ggml_fp32_to_fp16(gaussian(&w->seed));
            }
        }
}

static void fill_queries(const options *o, workload *w, struct ggml_tensor *q) {
    float *qd = q->data; /* [n_q][h_q][d] */
    const int64_t group = o->h_q / o->h_kv;
    for (int64_t i = 0; i < q->ne[2]; ++i)
        for (int64_t h = 0; h < o->h_q; ++h)
            for (int64_t c = 0; c < o->d; ++c)
                qd[(i * o->h_q + h) * o->d + c] =
                    w->directions[(h / group) * o->d + c] + 0.7f * gaussian(&w->seed);
}

typedef struct timing {
    double first_ms, mean_ms, min_ms;
} timing;

typedef struct timed_graph {
    struct ggml_cgraph *graph;
    timing t;
} timed_graph;

static double compute_ms(struct ggml_cgraph *graph, struct ggml_cplan *plan) {
    const int64_t start = ggml_time_us();
    if (ggml_graph_compute(graph, plan) != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "ggml_graph_compute failed\n");
        exit(1);
    }
    return (ggml_time_us() - start) / 1000.0;
}

/* Each graph once untimed (the first run also fills lazily built state: page
 * bounds), then reps rounds of one run of each: on a shared machine the graphs
 * then meet the same load. */
static void time_graphs(timed_graph *g, int n, int threads, int reps) {
    struct ggml_cplan plans[8];
    void *work[8];
    GGML_ASSERT(n <= 8);
    for (int i = 0; i < n; ++i) {
        plans[i] = ggml_graph_plan(g[i].graph, threads, NULL);
        work[i] = plans[i].work_size ? malloc(plans[i].work_size) : NULL;
        if (plans[i].work_size && !work[i]) {
            fprintf(stderr, "out of memory (%zu bytes of ggml work buffer)\n", plans[i].work_size);
            exit(1);
        }
        plans[i].work_data = work[i];
        g[i].t = (timing){compute_ms(g[i].graph, &plans[i]), 0, INFINITY};
    }
    for (int r = 0; r < reps; ++r)
        for (int i = 0; i < n; ++i) {
            const double ms = compute_ms(g[i].graph, &plans[i]);
            g[i].t.mean_ms += ms / reps;
            if (ms < g[i].t.min_ms) g[i].t.min_ms = ms;
        }
    for (int i = 0; i < n; ++i) free(work[i]);
}

static struct ggml_cgraph *graph_of(struct ggml_context *ctx, struct ggml_tensor *result) {
    struct ggml_cgraph *graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, result);
    return graph;
}

typedef struct error {
    double max_abs, rel, rel_l2;
} error;

/* Largest deviation, that relative to the reference's largest magnitude, and
 * the relative L2 norm of the difference (an average view: the sparse result
 * differs little over most values and more where the missed keys mattered). */
static error compare(const float *out, const double *ref, int64_t n) {
    double worst = 0, scale = 0, diff2 = 0, ref2 = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double e = fabs((double)out[i] - ref[i]);
        if (!(e <= worst)) worst = e; /* NaN sticks */
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
        diff2 += e * e;
        ref2 += ref[i] * ref[i];
    }
    return (error){worst, worst / (scale > 0 ? scale : 1), sqrt(diff2 / (ref2 > 0 ? ref2 : 1))};
}

static void print_row(const char *what, timing t, const char *versus, error e) {
    printf("  %-34s %9.3f %9.3f   %-14s %10.3g %10.3g %10.3g\n", what, t.mean_ms, t.min_ms, versus,
           e.max_abs, e.rel, e.rel_l2);
}

/* The queries of one step: n_q rows at the last n_q positions of the cache. */
static int run_step(const options *o, const char *name, int64_t n_q, workload *w,
                    const kv_cache *cache, sa_context *sa,
                    sa_index *index) {
    const int64_t width = (int64_t)o->sinks + o->window + o->top_k;
    const size_t out_bytes = (size_t)(o->d * o->h_q * n_q) * sizeof(float);
    const size_t data_bytes = 4 * out_bytes + (size_t)(o->n_kv * n_q) * sizeof(ggml_fp16_t) +
                              (size_t)(width * o->h_kv * n_q) * sizeof(int32_t);
    struct ggml_init_params ip = {
        data_bytes + 64 * ggml_tensor_overhead() + 4 * ggml_graph_overhead() + (1u << 20), NULL,
        false};
    struct ggml_context *ctx = ggml_init(ip);
    int64_t *positions = malloc((size_t)n_q * sizeof *positions);
    double *ref_dense = malloc(out_bytes / sizeof(float) * sizeof(double));
    double *ref_sparse = malloc(out_bytes / sizeof(float) * sizeof(double));
    if (!ctx || !positions || !ref_dense || !ref_sparse) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n_q; ++i) positions[i] = o->n_kv - n_q + i;

    /* The queries as a projection writes them, [D, H_q, n_q]; attention takes
     * [D, n_q, H_q] views of them and of the cache (llama.cpp's permutes). */
    struct ggml_tensor *q = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, o->d, o->h_q, n_q);
    fill_queries(o, w, q);
    struct ggml_tensor *qp = ggml_permute(ctx, q, 0, 2, 1, 3);
    struct ggml_tensor *kp = attention_view(ctx, cache, cache->k);
    struct ggml_tensor *vp = attention_view(ctx, cache, cache->v);
    const float scale = 1.0f / sqrtf((float)o->d);

    /* flash_attn_ext's causal mask: 0 where query i may look, -inf past it. */
    struct ggml_tensor *mask = NULL;
    if (n_q > 1) {
        mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, o->n_kv, n_q);
        ggml_fp16_t *m = mask->data;
        for (int64_t i = 0; i < n_q; ++i)
            for (int64_t j = 0; j < o->n_kv; ++j)
                m[i * o->n_kv + j] = ggml_fp32_to_fp16(j <= positions[i] ? 0.0f : -INFINITY);
    }
    struct ggml_tensor *fa = ggml_flash_attn_ext(ctx, qp, kp, vp, mask, scale, 0.0f, 0.0f);
    /* As llama.cpp asks; the CPU backend still accumulates V in f16 below
     * GGML_FA_TILE_Q (64) queries, which is most of its error here. */
    ggml_flash_attn_ext_set_prec(fa, GGML_PREC_F32);

    const ggml_sa_attend_params attend = {sa, scale, positions};
    ggml_sa_select_params select = {index, SA_SELECT_OPTIONS_INIT, positions};
    select.options.top_k = o->top_k;
    select.options.window = o->window;
    select.options.sinks = o->sinks;
    select.options.scale = scale;
    struct ggml_tensor *dense = ggml_sa_attend(ctx, qp, kp, vp, NULL, &attend);
    struct ggml_tensor *rows = ggml_sa_select(ctx, qp, kp, &select);
    struct ggml_tensor *sparse = ggml_sa_attend(ctx, qp, kp, vp, rows, &attend);

    timed_graph g[4] = {{.graph = graph_of(ctx, dense)}, {.graph = graph_of(ctx, fa)},
                        {.graph = graph_of(ctx, rows)}, {.graph = graph_of(ctx, sparse)}};
    time_graphs(g, 4, o->threads, o->reps);
    const timing t_dense = g[0].t, t_fa = g[1].t, t_select = g[2].t, t_sparse = g[3].t;

    const char *message;
    if (ggml_sa_first_error(&message) != SA_OK) {
        fprintf(stderr, "%s: a sparseattn op failed: %s\n", name, message);
        exit(1);
    }

    reference_problem rp = {q->data, cache->k->data, cache->v->data, cache->row_stride,
                            cache->head_stride, n_q, o->n_kv, o->h_q, o->h_kv, o->d, scale,
                            positions, NULL, 0};
    reference_attention_f64(&rp, ref_dense);
    rp.rows = rows->data;
    rp.width = width;
    reference_attention_f64(&rp, ref_sparse);

    const int64_t n_out = o->d * o->h_q * n_q;
    const error e_dense = compare(dense->data, ref_dense, n_out);
    const error e_fa = compare(fa->data, ref_dense, n_out);
    const error e_sparse = compare(sparse->data, ref_sparse, n_out);
    const error e_sparse_dense = compare(sparse->data, ref_dense, n_out);
    /* The sparse check compares over the selected rows, so it would pass on empty
     * lists: each list must hold rows, all visible to its query. */
    int64_t listed = 0, bad_lists = 0;
    const int32_t *list = rows->data;
    for (int64_t i = 0; i < n_q; ++i)
        for (int64_t h = 0; h < o->h_kv; ++h, list += width) {
            int64_t n = 0, invisible = 0;
            for (int64_t j = 0; j < width; ++j) {
                n += list[j] >= 0;
                invisible += list[j] > positions[i];
            }
            listed += n;
            bad_lists += n == 0 || invisible > 0;
        }
    printf("%s (n_q = %lld at positions %lld..%lld)\n", name, (long long)n_q,
           (long long)positions[0], (long long)positions[n_q - 1]);
    printf("  %-34s %9s %9s   %-14s %10s %10s %10s\n", "graph", "mean ms", "min ms", "versus f64",
           "max |err|", "rel max", "rel L2");
    print_row("sa_attend custom op (dense)", t_dense, "dense", e_dense);
    print_row("ggml_flash_attn_ext", t_fa, "dense", e_fa);
    printf("  %-34s %9.3f %9.3f   (first run %.3f ms)\n",
           "sa_select custom op (page)", t_select.mean_ms, t_select.min_ms, t_select.first_ms);
    print_row("sa_select + sa_attend (sparse)", t_sparse, "selected rows", e_sparse);
    printf("  %-34s %9s %9s   %-14s %10.3g %10.3g %10.3g\n", "", "", "", "dense",
           e_sparse_dense.max_abs, e_sparse_dense.rel, e_sparse_dense.rel_l2);
    printf("  rows attended per (query, KV head): sparse %.1f of %.1f visible on average\n",
           (double)listed / (double)(o->h_kv * n_q),
           (double)(positions[0] + positions[n_q - 1]) / 2 + 1);

    int failed = 0;
    if (bad_lists) {
        fprintf(stderr, "%s: %lld selections are empty or list rows their query may not see\n", name,
                (long long)bad_lists);
        failed = 1;
    }
    if (!(e_dense.rel <= o->tol)) {
        fprintf(stderr, "%s: dense sa_attend is off the float64 reference: rel %.3g > %.3g\n", name,
                e_dense.rel, o->tol);
        failed = 1;
    }
    if (!(e_sparse.rel <= o->tol)) {
        fprintf(stderr, "%s: sparse sa_attend is off the float64 reference over its rows: rel %.3g > %.3g\n",
                name, e_sparse.rel, o->tol);
        failed = 1;
    }
    free(ref_sparse);
    free(ref_dense);
    free(positions);
    ggml_free(ctx);
    return failed;
}

int main(int argc, char **argv) {
    options o;
    if (!parse_options(argc, argv, &o)) {
        usage(argv[0]);
        return 2;
    }
    ggml_time_init();
    ggml_cpu_init();

    /* One layer's cache, f16, in the layout --cache names. */
    const size_t cache_bytes = (size_t)(o.n_kv * o.h_kv * o.d) * sizeof(ggml_fp16_t);
    struct ggml_init_params ip = {2 * cache_bytes + 4 * ggml_tensor_overhead() + 4096, NULL, false};
    struct ggml_context *cache_ctx = ggml_init(ip);
    if (!cache_ctx) {
        fprintf(stderr, "out of memory (KV cache of %zu bytes)\n", 2 * cache_bytes);
        return 1;
    }
    const kv_cache cache = new_cache(cache_ctx, &o);
    workload w = {malloc((size_t)(o.h_kv * o.d) * sizeof(float)), 0x5eed};
    if (!w.directions) return 1;
    fill_cache(&o, &w, &cache);

    /* threads = 1: each of ggml's threads calls the library on its share (ggml_sa_ops.c). */
    sa_context_options co = SA_CONTEXT_OPTIONS_INIT;
    co.threads = 1;
    sa_context *sa = NULL;
    sa_index *index = NULL;
    sa_status st = sa_context_create(&co, &sa);

    /* A page index that borrows the cache's keys: it keeps page bounds, not a copy of K. */
    sa_index_options io = SA_INDEX_OPTIONS_INIT;
    io.kind = SA_SELECTOR_PAGE;
    io.num_kv_heads = (int32_t)o.h_kv;
    io.head_dim = (int32_t)o.d;
    io.dtype = SA_DTYPE_F16;
    io.capacity = o.n_kv;
    io.page.page_size = o.page_size;
    io.borrow_keys = 1;
    const sa_tensor keys = {cache.k->data, SA_DTYPE_F16, SA_DEVICE_CPU, 0, 3,
                            {o.n_kv, o.h_kv, o.d}, {cache.row_stride, cache.head_stride, 1}};
    const int64_t start = ggml_time_us();
    if (st == SA_OK) st = sa_index_create(sa, &io, &index);
    if (st == SA_OK) st = sa_index_append(index, &keys);
    const double append_ms = (ggml_time_us() - start) / 1000.0;
    if (st != SA_OK) {
        fprintf(stderr, "sparseattn: %s: %s\n", sa_status_name(st), sa_last_error());
        return 1;
    }

    printf("ggml_attention: n_kv %lld, H_q %lld, H_kv %lld, D %lld, f16 K/V %s; %d ggml threads, "
           "%d timed runs\n",
           (long long)o.n_kv, (long long)o.h_q, (long long)o.h_kv, (long long)o.d,
           o.head_major ? "head-major [D, n_kv, H_kv]" : "token-major [D, H_kv, n_kv] (llama.cpp)",
           o.threads, o.reps);
    printf("sparseattn %s (%s); page selector: pages of %d, top-k %d + window %d + sinks %d; "
           "index created and keys appended in %.3f ms\n",
           sa_version_string(), sa_isa_name(sa_context_isa(sa)), o.page_size, o.top_k, o.window,
           o.sinks, append_ms);
    printf("errors: against float64 softmax attention of the same f16 K/V; rel max = max |err| / "
           "max |reference|, rel L2 = |err| / |reference|;\ntolerance on rel max for sparseattn: "
           "%.3g\n\n",
           o.tol);

    int failed = run_step(&o, "decode step", 1, &w, &cache, sa, index);
    printf("\n");
    failed |= run_step(&o, "prefill chunk, causal", o.prefill, &w, &cache, sa, index);

    sa_index_destroy(&index);
    sa_context_destroy(&sa);
    free(w.directions);
    ggml_free(cache_ctx);
    printf("\n%s\n", failed ? "FAILED" : "OK");
    return failed;
}
