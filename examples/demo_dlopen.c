/*
 * demo_dlopen: a C host that loads libsparseattn.so.0 at run time, resolves one
 * symbol (sa_get_api) and runs a decode loop over a long synthetic KV cache,
 * comparing sparse attention (page selection + gathered attention) with
 * dense attention over every key.
 *
 * Usage: demo_dlopen [LIBRARY] [-n KEYS] [-s STEPS] [-k TOP_K] [-t THREADS] [-v]
 *                    [--selector exact|page|lsh|hnsw] [--budget SLOTS]
 *   LIBRARY: path of libsparseattn.so.0; default $SPARSEATTN_LIB, else the
 *            build tree's library next to this executable (../src/), else the
 *            dynamic loader's search for "libsparseattn.so.0".
 *   --selector: how keys are chosen; default page (Quest-style page bounds, the
 *            fastest at long contexts), exact is the top-K oracle.
 *   --budget: a fixed-budget cache of SLOTS entries instead (run_budget below):
 *            the KEYS-token prompt (KEYS >= SLOTS) is compressed to SLOTS in one call, then
 *            STEPS decode steps (default 4096) each evict one slot by
 *            accumulated attention and refill it; memory is printed as it goes.
 *
 * The workload is generated here, deterministically, to look like a real
 * model's attention: keys cluster around a few "topic" directions per head,
 * carry a RoPE-like positional part that makes recent keys score higher, and a
 * few "needle" keys per head match each query strongly. So a few thousand keys
 * out of 128K hold nearly all the attention mass, as in a trained model's later
 * layers (tests/data holds a cut of a real one).
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sparseattn.h"

enum { H_KV = 8, H_Q = 32, D = 128, GROUP = H_Q / H_KV };
enum { TOPICS = 64, NEEDLES = 8, ROPE_PAIRS = 8 };

/* ------------------------------------------------------------ small helpers */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* float -> IEEE binary16, round to nearest even. */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t mag = x & 0x7fffffffu;
    if (mag >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0u));
    if (mag >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return (uint16_t)(sign | 0x7c00u);
    if (mag < 0x38800000u) { /* subnormal half (or zero) */
        float a;
        memcpy(&a, &mag, sizeof a);
        return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f)); /* a / 2^-24 */
    }
    uint32_t r = mag - 0x38000000u; /* rebias exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);  /* round to nearest even */
    return (uint16_t)(sign | (r >> 13));
}

/* splitmix64: small, deterministic, good enough for a workload generator. */
static uint64_t rng_state = 0x5a5a2024u;
static uint64_t rng_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_uniform(void) { return (float)(rng_u64() >> 40) * (1.0f / 16777216.0f); }
/* Approximately standard normal (Irwin-Hall of 4 uniforms, rescaled). */
static float rng_normal(void) {
    return (rng_uniform() + rng_uniform() + rng_uniform() + rng_uniform() - 2.0f) * 1.7320508f;
}

static void random_unit(float *v) {
    double n = 0;
    for (int d = 0; d < D; ++d) {
        v[d] = rng_normal();
        n += (double)v[d] * v[d];
    }
    for (int d = 0; d < D; ++d) v[d] = (float)(v[d] / sqrt(n));
}

static sa_tensor tensor(void *data, sa_dtype dtype, int rank, int64_t d0, int64_t d1, int64_t d2) {
    sa_tensor t;
    memset(&t, 0, sizeof t); /* zero strides: contiguous */
    t.data = data;
    t.dtype = dtype;
    t.device = SA_DEVICE_CPU;
    t.rank = rank;
    t.shape[0] = d0;
    t.shape[1] = d1;
    t.shape[2] = d2;
    return t;
}

/* --------------------------------------------------------------- workload */

/* Magnitudes, in units of the scaled logit q.k/sqrt(D). */
#define NEEDLE_KEY 10.0f /* needle key length along its direction */
#define RECENCY 8.0f     /* logit bonus of the newest keys, decaying with distance */
#define TOPIC 6.5f       /* logit bonus of keys on the query's topic */
#define KEY_NOISE 0.25f  /* per-dimension noise of keys */
#define QUERY_NOISE 0.5f /* per-dimension noise of queries */

typedef struct workload {
    int64_t n_total;                    /* rows of the host's cache */
    int32_t *topic;                     /* [n_total] topic of each token */
    float topic_dir[H_KV][TOPICS][D];   /* key cluster centres */
    float topic_val[H_KV][TOPICS][D];   /* value component of each topic */
    float value_mean[H_KV][D];
    float needle_dir[H_KV][NEEDLES][D];
    float needle_val[H_KV][NEEDLES][D];
    int64_t needle_pos[H_KV][NEEDLES];
    double rope_freq[ROPE_PAIRS];
} workload;

static void workload_init(workload *w, int64_t n_prefill, int64_t n_total) {
    w->n_total = n_total;
    w->topic = malloc((size_t)n_total * sizeof *w->topic);
    for (int h = 0; h < H_KV; ++h) {
        for (int c = 0; c < TOPICS; ++c) {
            random_unit(w->topic_dir[h][c]);
            for (int d = 0; d < D; ++d) w->topic_val[h][c][d] = rng_normal();
        }
        for (int d = 0; d < D; ++d) w->value_mean[h][d] = 0.5f * rng_normal();
        for (int i = 0; i < NEEDLES; ++i) {
            random_unit(w->needle_dir[h][i]);
            for (int d = 0; d < D; ++d) w->needle_val[h][i][d] = 2.0f * rng_normal();
            /* Anywhere in the prefill, away from the sinks and the window. */
            int64_t lo = 16, hi = n_prefill > 1100 ? n_prefill - 1000 : lo + 1;
            w->needle_pos[h][i] = lo + (int64_t)(rng_u64() % (uint64_t)(hi - lo));
        }
    }
    /* Topics come in runs of 64..511 tokens; decode steps continue the last one. */
    for (int64_t t = 0; t < n_total;) {
        int32_t c = (int32_t)(rng_u64() % TOPICS);
        int64_t len = 64 + (int64_t)(rng_u64() % 448);
        for (int64_t e = t + len; t < e && t < n_total; ++t) w->topic[t] = t < n_prefill ? c : w->topic[n_prefill - 1];
    }
    for (int f = 0; f < ROPE_PAIRS; ++f) w->rope_freq[f] = pow(1.0 / 512.0, f / (double)(ROPE_PAIRS - 1));
}

/* RoPE-like positional part: r(t).r(p) = mean_f cos(freq_f (p - t)), 1 at p = t. */
static void add_position(const workload *w, int64_t pos, float gain, float *v) {
    for (int f = 0; f < ROPE_PAIRS; ++f) {
        double a = w->rope_freq[f] * (double)pos;
        v[2 * f] += gain * (float)(cos(a) / sqrt(ROPE_PAIRS));
        v[2 * f + 1] += gain * (float)(sin(a) / sqrt(ROPE_PAIRS));
    }
}

/* Key and value rows of token t: [H_KV, D] each, f16. */
static void make_token(const workload *w, int64_t t, uint16_t *k, uint16_t *v) {
    float kv[D], vv[D];
    for (int h = 0; h < H_KV; ++h) {
        int c = w->topic[t];
        for (int d = 0; d < D; ++d) {
            kv[d] = TOPIC * w->topic_dir[h][c][d] + KEY_NOISE * rng_normal();
            vv[d] = w->value_mean[h][d] + w->topic_val[h][c][d] + 0.5f * rng_normal();
        }
        add_position(w, t, RECENCY, kv);
        for (int i = 0; i < NEEDLES; ++i) {
            if (w->needle_pos[h][i] != t) continue;
            for (int d = 0; d < D; ++d) {
                kv[d] += NEEDLE_KEY * w->needle_dir[h][i][d];
                vv[d] = w->needle_val[h][i][d];
            }
        }
        for (int d = 0; d < D; ++d) {
            k[h * D + d] = f32_to_f16(kv[d]);
            v[h * D + d] = f32_to_f16(vv[d]);
        }
    }
}

/* The query of decode step `step`, at position pos: [H_Q, D] f32. Each query
 * head looks for two of its KV head's needles (which ones drifts over the
 * steps), for its current topic and for recent tokens. */
static void make_query(const workload *w, int64_t pos, int step, float *q) {
    const float s = sqrtf((float)D);
    for (int hq = 0; hq < H_Q; ++hq) {
        int h = hq / GROUP, g = hq % GROUP;
        float *qv = q + (size_t)hq * D;
        int c = w->topic[pos];
        int n1 = (g + step / 8) % NEEDLES, n2 = (3 * g + 5 + step / 4) % NEEDLES;
        float b1 = 1.2f + 0.2f * (float)g, b2 = 1.0f + 0.1f * (float)((step + g) % 5);
        for (int d = 0; d < D; ++d)
            qv[d] = s * (w->topic_dir[h][c][d] + b1 * w->needle_dir[h][n1][d] +
                         b2 * w->needle_dir[h][n2][d]) +
                    QUERY_NOISE * rng_normal();
        add_position(w, pos, s, qv);
    }
}

/* ------------------------------------------------------------------- host */

static const sa_api *api;

#define CHECK(call)                                                                       \
    do {                                                                                  \
        sa_status st_ = (call);                                                           \
        if (st_ != SA_OK) {                                                               \
            fprintf(stderr, "demo: %s failed: %s: %s\n", #call, api->status_name(st_),    \
                    api->last_error());                                                   \
            goto out;                                                                     \
        }                                                                                 \
    } while (0)

static const char *default_library(char *buf, size_t len) {
    const char *env = getenv("SPARSEATTN_LIB");
    if (env && *env) return env;
    /* The build tree: <build>/examples/demo_dlopen next to <build>/src/libsparseattn.so.0. */
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n > 0) {
        buf[n] = '\0';
        char *slash = strrchr(buf, '/');
        const char *rel = "/../src/libsparseattn.so.0";
        if (slash && (size_t)(slash - buf) + strlen(rel) < len) {
            strcpy(slash, rel);
            if (access(buf, R_OK) == 0) return buf;
        }
    }
    return "libsparseattn.so.0";
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [LIBRARY] [-n KEYS] [-s STEPS] [-k TOP_K] [-t THREADS] [-v]\n"
            "          [--selector exact|page|lsh|hnsw] [--budget SLOTS]\n",
            argv0);
}

/* The selector kinds the demo can build without a weights file. */
static const struct {
    const char *name;
    sa_selector_kind kind;
} selectors[] = {{"exact", SA_SELECTOR_EXACT},
                 {"page", SA_SELECTOR_PAGE},
                 {"lsh", SA_SELECTOR_LSH},
                 {"hnsw", SA_SELECTOR_HNSW}};
static sa_selector_kind selector = SA_SELECTOR_PAGE;

static const char *selector_name(sa_selector_kind kind) {
    for (size_t i = 0; i < sizeof selectors / sizeof selectors[0]; ++i)
        if (selectors[i].kind == kind) return selectors[i].name;
    return "?";
}

/* An index of the chosen kind, with its default options, over f16 keys of the workload's shape. */
static sa_status create_index(sa_context *ctx, int64_t capacity, sa_index **ix) {
    sa_index_options iopt = api->index_options_default();
    iopt.kind = selector;
    iopt.num_kv_heads = H_KV;
    iopt.head_dim = D;
    iopt.dtype = SA_DTYPE_F16;
    iopt.capacity = capacity;
    return api->index_create(ctx, &iopt, ix);
}

/* ------------------------------------------------------- fixed-budget mode */

/* Bytes malloc has handed out and not taken back (library and host), or -1. */
static double malloc_in_use_mib(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 m = mallinfo2();
    return (double)(m.uordblks + m.hblkhd) / 1048576.0;
#else
    return -1;
#endif
}

static double rss_mib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = -1;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : (double)resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

/* Writes every page of a fresh allocation (a memset of zeros may become calloc and touch
 * nothing), so that it is resident from the start. */
static void touch_pages(void *p, size_t bytes) {
    volatile char *c = p;
    for (size_t o = 0; o < bytes; o += 4096) c[o] = 0;
}

/* Mean over query heads of |a - b| / |b| (per head, L2). */
static double relative_error(const float *a, const float *b) {
    double sum = 0;
    for (int hq = 0; hq < H_Q; ++hq) {
        double num = 0, den = 0;
        for (int e = 0; e < D; ++e) {
            double diff = (double)a[hq * D + e] - b[hq * D + e];
            num += diff * diff;
            den += (double)b[hq * D + e] * b[hq * D + e];
        }
        sum += sqrt(num / (den > 0 ? den : 1)) / H_Q;
    }
    return sum;
}

/* A host with a cache of `budget` slots that never grows. The prompt's tokens are scored by
 * the attention of its last `window` queries (sa_attend's slot_mass) and compressed to the
 * budget by one sa_cache_evict call (SnapKV). Each decode step then frees one slot by the
 * accumulated attention (H2O: sa_attend adds every step's probabilities to slot_mass), writes
 * the new token there, refills the index slot with sa_index_update, selects and attends.
 * Checked against dense attention over the retained slots (every step) and over the whole
 * history (at each report; the history is kept here for that comparison only). */
static int run_budget(sa_context *ctx, workload *w, int64_t n_prefill, int steps, int64_t budget,
                      int top_k, int window, int sinks, int verbose) {
    const size_t row = (size_t)H_KV * D;
    const int64_t n_total = n_prefill + steps, width = sinks + window + top_k;
    const int observe = window; /* prompt queries that score the prompt */
    const float decay = 0.99f;
    int rc = 1;
    sa_index *ix = NULL;
    /* The whole token stream (the workload's source, and the full-history reference). */
    uint16_t *hk = malloc((size_t)n_total * row * sizeof *hk);
    uint16_t *hv = malloc((size_t)n_total * row * sizeof *hv);
    /* The host's fixed-budget cache. */
    uint16_t *kc = malloc((size_t)budget * row * sizeof *kc);
    uint16_t *vc = malloc((size_t)budget * row * sizeof *vc);
    int64_t *pos = malloc((size_t)budget * sizeof *pos);
    float *mass = malloc((size_t)H_KV * (size_t)budget * sizeof *mass);
    float *prompt_mass = malloc((size_t)H_KV * (size_t)n_prefill * sizeof *prompt_mass);
    int64_t *prompt_pos = malloc((size_t)n_prefill * sizeof *prompt_pos);
    int32_t *freed = malloc((size_t)n_prefill * sizeof *freed);
    char *gone = calloc((size_t)n_prefill, 1);
    float *q = malloc((size_t)observe * H_Q * D * sizeof *q);
    float *prompt_out = malloc((size_t)observe * H_Q * D * sizeof *prompt_out);
    float *out = malloc((size_t)H_Q * D * sizeof *out);
    float *out_retained = malloc((size_t)H_Q * D * sizeof *out_retained);
    float *out_full = malloc((size_t)H_Q * D * sizeof *out_full);
    float lse_retained[H_Q], lse_full[H_Q];
    int32_t *idx = malloc((size_t)H_KV * (size_t)width * sizeof *idx);
    if (!hk || !hv || !kc || !vc || !pos || !mass || !prompt_mass || !prompt_pos || !freed || !gone ||
        !q || !prompt_out || !out || !out_retained || !out_full || !idx) {
        fprintf(stderr, "demo: out of memory\n");
        goto out;
    }
    touch_pages(hk, (size_t)n_total * row * sizeof *hk); /* now, so that RSS stays flat */
    touch_pages(hv, (size_t)n_total * row * sizeof *hv);
    for (int64_t t = 0; t < n_prefill; ++t) make_token(w, t, hk + t * row, hv + t * row);

    /* 1. Score the prompt by its last queries, compress it to the budget in one call. */
    double t0 = now_ms();
    for (int i = 0; i < observe; ++i) make_query(w, n_prefill - observe + i, 0, q + (size_t)i * H_Q * D);
    sa_tensor pq = tensor(q, SA_DTYPE_F32, 3, observe, H_Q, D);
    sa_tensor pk = tensor(hk, SA_DTYPE_F16, 3, n_prefill, H_KV, D);
    sa_tensor pv = tensor(hv, SA_DTYPE_F16, 3, n_prefill, H_KV, D);
    sa_tensor po = tensor(prompt_out, SA_DTYPE_F32, 3, observe, H_Q, D);
    sa_tensor pm = tensor(prompt_mass, SA_DTYPE_F32, 2, H_KV, n_prefill, 0);
    sa_attend_options aopt = api->attend_options_default();
    aopt.causal = 1;
    aopt.slot_mass = &pm;
    aopt.mass_decay = 0.0f; /* this call's mass only */
    CHECK(api->attend(ctx, &pq, &pk, &pv, NULL, &aopt, &po, NULL));
    for (int64_t t = 0; t < n_prefill; ++t) prompt_pos[t] = t;
    sa_tensor ppos = tensor(prompt_pos, SA_DTYPE_I64, 1, n_prefill, 0, 0);
    sa_tensor pfreed = tensor(freed, SA_DTYPE_I32, 1, n_prefill, 0, 0);
    sa_evict_options eopt = api->evict_options_default();
    eopt.budget = budget;
    eopt.incoming = 0;
    eopt.sinks = sinks;
    eopt.window = window;
    int64_t n_freed = 0;
    CHECK(api->cache_evict(ctx, &eopt, &pm, &ppos, &pfreed, &n_freed));
    /* Compact the survivors into the budget's slots, in position order, with their mass. */
    for (int64_t i = 0; i < n_freed; ++i) gone[freed[i]] = 1;
    int64_t kept = 0;
    for (int64_t t = 0; t < n_prefill; ++t) {
        if (gone[t]) continue;
        memcpy(kc + kept * row, hk + t * row, row * sizeof *kc);
        memcpy(vc + kept * row, hv + t * row, row * sizeof *vc);
        pos[kept] = t;
        for (int h = 0; h < H_KV; ++h) mass[h * budget + kept] = prompt_mass[h * n_prefill + t];
        ++kept;
    }
    /* The index holds the kept keys at their positions: append, then set the positions. */
    CHECK(create_index(ctx, budget, &ix));
    sa_tensor keys = tensor(kc, SA_DTYPE_F16, 3, budget, H_KV, D);
    CHECK(api->index_append(ix, &keys));
    {
        int32_t *all = (int32_t *)freed; /* reused: slot numbers 0 .. kept-1 */
        for (int64_t s = 0; s < kept; ++s) all[s] = (int32_t)s;
        sa_tensor kept_keys = tensor(kc, SA_DTYPE_F16, 3, kept, H_KV, D);
        CHECK(api->index_update(ix, all, kept, &kept_keys, pos));
    }
    double t1 = now_ms();
    printf("budget mode: a cache of %lld slots; %s selector, sinks %d, window %d, top_k %d; "
           "eviction by accumulated attention (slot_mass, decay %.2f)\n",
           (long long)budget, selector_name(selector), sinks, window, top_k, decay);
    printf("prompt: %lld tokens scored by its last %d queries and compressed to %lld slots in one "
           "sa_cache_evict call (%lld freed) in %.0f ms\n\n",
           (long long)n_prefill, observe, (long long)kept, (long long)n_freed, t1 - t0);

    /* 2. Decode. */
    sa_select_options sopt = api->select_options_default();
    int64_t qpos = 0;
    sopt.top_k = top_k;
    sopt.window = window;
    sopt.sinks = sinks;
    sopt.query_positions = &qpos;
    aopt.mass_decay = decay;
    aopt.query_positions = &qpos;
    aopt.key_positions = pos;
    sa_tensor mt = tensor(mass, SA_DTYPE_F32, 2, H_KV, budget, 0);
    sa_tensor pt = tensor(pos, SA_DTYPE_I64, 1, budget, 0, 0);
    sa_tensor ft = tensor(freed, SA_DTYPE_I32, 1, 1, 0, 0);
    sa_tensor qt = tensor(q, SA_DTYPE_F32, 3, 1, H_Q, D);
    sa_tensor it = tensor(idx, SA_DTYPE_I32, 3, 1, H_KV, width);
    sa_tensor kt = tensor(kc, SA_DTYPE_F16, 3, budget, H_KV, D);
    sa_tensor vt = tensor(vc, SA_DTYPE_F16, 3, budget, H_KV, D);
    sa_tensor ot = tensor(out, SA_DTYPE_F32, 3, 1, H_Q, D);
    sa_tensor ort = tensor(out_retained, SA_DTYPE_F32, 3, 1, H_Q, D);
    sa_tensor ofl = tensor(out_full, SA_DTYPE_F32, 3, 1, H_Q, D);
    sa_tensor lrt = tensor(lse_retained, SA_DTYPE_F32, 2, 1, H_Q, 0);
    sa_tensor lfl = tensor(lse_full, SA_DTYPE_F32, 2, 1, H_Q, 0);
    eopt.incoming = 1;
    const int every = steps >= 8 ? steps / 8 : 1;
    double err_sum = 0, err_max = 0, step_ms = 0;
    printf("   step  position  malloc MiB  RSS MiB  sparse vs dense(retained)  retained/full mass  "
           "retained vs full\n");
    for (int step = 0; step < steps; ++step) {
        qpos = n_prefill + step;
        make_token(w, qpos, hk + qpos * row, hv + qpos * row);
        make_query(w, qpos, step, q);
        double a = now_ms();
        CHECK(api->cache_evict(ctx, &eopt, &mt, &pt, &ft, &n_freed));
        int32_t slot = freed[0];
        memcpy(kc + (size_t)slot * row, hk + qpos * row, row * sizeof *kc);
        memcpy(vc + (size_t)slot * row, hv + qpos * row, row * sizeof *vc);
        pos[slot] = qpos;
        for (int h = 0; h < H_KV; ++h) mass[h * budget + slot] = 0.0f;
        sa_tensor key = tensor(kc + (size_t)slot * row, SA_DTYPE_F16, 3, 1, H_KV, D);
        CHECK(api->index_update(ix, &slot, 1, &key, &qpos));
        CHECK(api->select(ix, &qt, &sopt, &it));
        aopt.slot_mass = &mt;
        CHECK(api->attend(ctx, &qt, &kt, &vt, &it, &aopt, &ot, NULL));
        step_ms += now_ms() - a;

        /* Dense over the retained slots: what the selection should reproduce. */
        aopt.slot_mass = NULL;
        CHECK(api->attend(ctx, &qt, &kt, &vt, NULL, &aopt, &ort, &lrt));
        double err = relative_error(out, out_retained);
        err_sum += err;
        if (err > err_max) err_max = err;
        if ((step + 1) % every == 0 || verbose) {
            /* Dense over the whole history: what eviction gave up. */
            sa_attend_options full = api->attend_options_default();
            sa_tensor fk = tensor(hk, SA_DTYPE_F16, 3, qpos + 1, H_KV, D);
            sa_tensor fv = tensor(hv, SA_DTYPE_F16, 3, qpos + 1, H_KV, D);
            CHECK(api->attend(ctx, &qt, &fk, &fv, NULL, &full, &ofl, &lfl));
            double kept_mass = 0;
            for (int hq = 0; hq < H_Q; ++hq) kept_mass += exp((double)lse_retained[hq] - lse_full[hq]) / H_Q;
            printf("%7d %9lld %11.1f %8.1f %26.2e %19.4f %17.2e\n", step + 1, (long long)qpos,
                   malloc_in_use_mib(), rss_mib(), err, kept_mass, relative_error(out_retained, out_full));
        }
    }
    printf("\nsparse vs dense attention over the retained cache: mean %.2e, worst step %.2e\n",
           err_sum / steps, err_max);
    printf("time per decode step (evict + update + select + attend): %.3f ms\n", step_ms / steps);
    rc = 0;

out:
    api->index_destroy(&ix);
    free(idx);
    free(out_full);
    free(out_retained);
    free(out);
    free(prompt_out);
    free(q);
    free(gone);
    free(freed);
    free(prompt_pos);
    free(prompt_mass);
    free(mass);
    free(pos);
    free(vc);
    free(kc);
    free(hv);
    free(hk);
    return rc;
}

int main(int argc, char **argv) {
    int64_t n_prefill = 131072, budget = 0;
    int steps = -1, top_k = -1, threads = 0, verbose = 0;
    const int window = 64, sinks = 4;
    const char *lib_path = NULL;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (a[0] != '-' && !lib_path) {
            lib_path = a;
        } else if (!strcmp(a, "-v")) {
            verbose = 1;
        } else if (i + 1 < argc && !strcmp(a, "--selector")) {
            const char *name = argv[++i];
            size_t k = 0, n = sizeof selectors / sizeof selectors[0];
            while (k < n && strcmp(name, selectors[k].name)) ++k;
            if (k == n) {
                usage(argv[0]);
                return 2;
            }
            selector = selectors[k].kind;
        } else if (i + 1 < argc && !strcmp(a, "--budget")) {
            budget = strtol(argv[++i], NULL, 10);
            if (budget < 1) {
                usage(argv[0]);
                return 2;
            }
        } else if (i + 1 < argc && (!strcmp(a, "-n") || !strcmp(a, "-s") || !strcmp(a, "-k") ||
                                    !strcmp(a, "-t"))) {
            long v = strtol(argv[++i], NULL, 10);
            if (a[1] == 'n') n_prefill = v;
            if (a[1] == 's') steps = (int)v;
            if (a[1] == 'k') top_k = (int)v;
            if (a[1] == 't') threads = (int)v;
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (steps < 0) steps = budget ? 4096 : 32;
    if (top_k < 0) top_k = budget ? 256 : 2048;
    if (n_prefill < 256 || steps < 1 || top_k < 1 || threads < 0 ||
        (budget && (budget < sinks + window + 1 || budget > n_prefill))) {
        usage(argv[0]);
        return 2;
    }
    char exe_buf[4096];
    if (!lib_path) lib_path = default_library(exe_buf, sizeof exe_buf);

    /* Load the library and fetch its function table: the only symbol we resolve. */
    void *lib = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "demo: dlopen(%s): %s\n", lib_path, dlerror());
        return 1;
    }
    sa_get_api_fn get_api;
    void *sym = dlsym(lib, "sa_get_api");
    if (!sym) {
        fprintf(stderr, "demo: dlsym(sa_get_api): %s\n", dlerror());
        return 1;
    }
    memcpy(&get_api, &sym, sizeof get_api);
    api = get_api(SA_ABI_VERSION);
    if (!api || api->struct_size < sizeof(sa_api)) {
        fprintf(stderr, "demo: %s does not provide function table version %d\n", lib_path,
                SA_ABI_VERSION);
        return 1;
    }
    if ((api->version() >> 16) != SA_VERSION_MAJOR) {
        fprintf(stderr, "demo: library version %s, header %d.%d.%d: major differs\n",
                api->version_string(), SA_VERSION_MAJOR, SA_VERSION_MINOR, SA_VERSION_PATCH);
        return 1;
    }

    const int64_t n_total = n_prefill + steps;
    const int64_t width = sinks + window + top_k;
    const size_t row = (size_t)H_KV * D;
    int rc = 1;
    sa_context *ctx = NULL;
    sa_index *ix = NULL;
    workload *w = calloc(1, sizeof *w);
    const int64_t n_cache = budget ? 1 : n_total; /* budget mode keeps its own cache */
    uint16_t *kc = malloc((size_t)n_cache * row * sizeof *kc); /* the host's KV cache */
    uint16_t *vc = malloc((size_t)n_cache * row * sizeof *vc);
    float *q = malloc((size_t)H_Q * D * sizeof *q);
    float *out_dense = malloc((size_t)H_Q * D * sizeof *out_dense);
    float *out_sparse = malloc((size_t)H_Q * D * sizeof *out_sparse);
    float lse_dense[H_Q], lse_sparse[H_Q];
    int32_t *idx = malloc((size_t)H_KV * (size_t)width * sizeof *idx);
    if (!w || !kc || !vc || !q || !out_dense || !out_sparse || !idx) {
        fprintf(stderr, "demo: out of memory\n");
        goto out;
    }

    sa_context_options copt = api->context_options_default();
    copt.threads = threads;
    CHECK(api->context_create(&copt, &ctx));
    printf("sparseattn %s (%s), isa %s, %d thread(s)\n", api->version_string(), lib_path,
           api->isa_name(api->context_isa(ctx)), api->context_threads(ctx));

    if (budget) {
        workload_init(w, n_prefill, n_total);
        rc = run_budget(ctx, w, n_prefill, steps, budget, top_k, window, sinks, verbose);
        goto out;
    }

    CHECK(create_index(ctx, n_total, &ix));

    /* Prefill: the host's cache holds n_prefill tokens; the index gets their keys. */
    double t0 = now_ms();
    workload_init(w, n_prefill, n_total);
    for (int64_t t = 0; t < n_prefill; ++t) make_token(w, t, kc + t * row, vc + t * row);
    double t1 = now_ms();
    sa_tensor keys = tensor(kc, SA_DTYPE_F16, 3, n_prefill, H_KV, D);
    CHECK(api->index_append(ix, &keys));
    double t2 = now_ms();
    printf("workload: %lld prefill keys, H_q=%d H_kv=%d D=%d f16; generated in %.0f ms, "
           "indexed in %.1f ms\n",
           (long long)n_prefill, H_Q, H_KV, D, t1 - t0, t2 - t1);
    printf("decode: %d steps, %s selector, top_k=%d window=%d sinks=%d (%lld indices per KV head)\n\n",
           steps, selector_name(selector), top_k, window, sinks, (long long)width);

    sa_select_options sopt = api->select_options_default();
    sopt.top_k = top_k;
    sopt.window = window;
    sopt.sinks = sinks;
    sa_attend_options aopt = api->attend_options_default();

    sa_tensor qt = tensor(q, SA_DTYPE_F32, 3, 1, H_Q, D);
    sa_tensor it = tensor(idx, SA_DTYPE_I32, 3, 1, H_KV, width);
    sa_tensor od = tensor(out_dense, SA_DTYPE_F32, 3, 1, H_Q, D);
    sa_tensor os = tensor(out_sparse, SA_DTYPE_F32, 3, 1, H_Q, D);
    sa_tensor ld = tensor(lse_dense, SA_DTYPE_F32, 2, 1, H_Q, 0);
    sa_tensor ls = tensor(lse_sparse, SA_DTYPE_F32, 2, 1, H_Q, 0);

    double sum_select = 0, sum_sparse = 0, sum_dense = 0, sum_mass = 0;
    double min_mass = 1, max_err = 0, sum_err = 0;
    if (verbose) printf("step  position   mass    rel err  select ms  attend ms  dense ms\n");
    for (int step = -1; step < steps; ++step) { /* step -1: untimed warm-up */
        int64_t n_kv = n_prefill + (step < 0 ? 0 : step + 1);
        int64_t pos = n_kv - 1; /* the query's position: the newest token */
        if (step >= 0) {        /* the new token joins the cache and the index */
            make_token(w, pos, kc + pos * row, vc + pos * row);
            sa_tensor key = tensor(kc + pos * row, SA_DTYPE_F16, 3, 1, H_KV, D);
            CHECK(api->index_append(ix, &key));
        }
        make_query(w, pos, step < 0 ? 0 : step, q);
        sa_tensor kt = tensor(kc, SA_DTYPE_F16, 3, n_kv, H_KV, D);
        sa_tensor vt = tensor(vc, SA_DTYPE_F16, 3, n_kv, H_KV, D);

        double a = now_ms();
        CHECK(api->select(ix, &qt, &sopt, &it));
        double b = now_ms();
        CHECK(api->attend(ctx, &qt, &kt, &vt, &it, &aopt, &os, &ls));
        double c = now_ms();
        CHECK(api->attend(ctx, &qt, &kt, &vt, NULL, &aopt, &od, &ld));
        double d = now_ms();
        if (step < 0) continue;

        /* Mass captured: the selected keys' share of the softmax denominator. */
        double mass = 0, err = 0; /* this step's mean over heads */
        for (int hq = 0; hq < H_Q; ++hq) {
            double m = exp((double)lse_sparse[hq] - (double)lse_dense[hq]);
            mass += m / H_Q;
            if (m < min_mass) min_mass = m;
            double num = 0, den = 0;
            for (int e = 0; e < D; ++e) {
                double diff = (double)out_sparse[hq * D + e] - out_dense[hq * D + e];
                num += diff * diff;
                den += (double)out_dense[hq * D + e] * out_dense[hq * D + e];
            }
            double rel = sqrt(num / (den > 0 ? den : 1));
            err += rel / H_Q;
            if (rel > max_err) max_err = rel;
        }
        sum_select += b - a;
        sum_sparse += c - a;
        sum_dense += d - c;
        sum_mass += mass;
        sum_err += err;
        if (verbose)
            printf("%4d %9lld %6.4f %10.2e %10.3f %10.3f %9.3f\n", step, (long long)pos, mass, err,
                   b - a, c - b, d - c);
    }
    if (verbose) printf("\n");

    printf("attention mass captured by the selected keys: mean %.4f, worst head %.4f\n",
           sum_mass / steps, min_mass);
    printf("relative error of sparse vs dense output:    mean %.2e, worst head %.2e\n",
           sum_err / steps, max_err);
    printf("time per decode step (all %d heads): sparse %.3f ms (select %.3f + attend %.3f), "
           "dense %.3f ms\n",
           H_Q, sum_sparse / steps, sum_select / steps, (sum_sparse - sum_select) / steps,
           sum_dense / steps);
    printf("speedup of sparse over dense: %.1fx\n", sum_dense / sum_sparse);
    rc = 0;

out:
    api->index_destroy(&ix);
    api->context_destroy(&ctx);
    free(idx);
    free(out_sparse);
    free(out_dense);
    free(q);
    free(vc);
    free(kc);
    if (w) free(w->topic);
    free(w);
    dlclose(lib);
    return rc;
}
