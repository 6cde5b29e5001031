/*
 * sparseattn: sparse attention over long KV caches, behind a stable C ABI.
 *
 * An engine keeps, per layer, a selection index over its cached keys
 * (sa_index_*), asks which keys each query should attend to (sa_select), runs
 * exact-softmax attention over just those (sa_attend) and keeps its cache at a
 * fixed size by freeing the least useful slots (sa_cache_evict).
 *
 * Conventions (hold for every function below):
 * - Every fallible call returns sa_status; SA_OK is 0. On failure
 *   sa_last_error() returns a message for the calling thread naming the
 *   argument and the reason. Nothing aborts, exits or throws out of the library.
 * - Outputs are written only on success, except where a function says so.
 * - Handles are opaque. *_destroy takes the address of the handle, frees it and
 *   sets it to NULL; NULL (or a pointer to NULL) is accepted and ignored.
 * - Option structs start with `struct_size`; initialise them from the *_INIT
 *   macro (or the sa_*_options_default() functions) and then set fields. A
 *   struct_size smaller than the first version of the struct is refused with
 *   SA_ERR_STRUCT_SIZE; fields beyond a caller's struct_size take defaults.
 *   A NULL option pointer means the defaults, except where a required field
 *   has none (sa_index_options: num_kv_heads, head_dim; sa_evict_options:
 *   budget): there NULL is refused with SA_ERR_NULL_POINTER.
 * - Tensors are passed by descriptor (sa_tensor); the library never keeps the
 *   caller's K/V, and reads it only during the call. An index copies the keys
 *   appended to it unless it is created with borrow_keys (sa_index_options).
 * - Default layouts: queries [n_q, H_q, D], keys/values [n_kv, H_kv, D]
 *   (token-major), indices i32 [n_q, H_kv, width]. GQA: query head h uses KV
 *   head h / (H_q / H_kv).
 *
 * CUDA tensors (device = SA_DEVICE_CUDA, data in device memory) are served by
 * the CUDA plugin (see sa_context_options); the core never reads them. A call
 * takes all its tensors on one device. Device calls are asynchronous: they
 * enqueue work on a CUDA stream (cuda_stream in the options) and return;
 * outputs are ready when that stream's work completes. sa_attend and sa_select
 * take CUDA tensors; see each for what the device path supports. The plugin
 * keeps scratch memory per context and stream (a selection: its index's
 * context) and allocates only when a call needs more than that stream has had,
 * so calls may be captured into a CUDA graph once one call of each shape has
 * run on the stream (a capture that would have to allocate fails with
 * SA_ERR_UNSUPPORTED). sa_context_destroy frees that memory, after the work
 * queued on the device is done: a graph captured with a context must not be
 * launched after the context is destroyed. All of it, and every index's
 * storage, comes from the context's sa_cuda_allocator when the host gives one
 * (sa_context_options.cuda_allocator), else from cudaMallocAsync. The stream may be any stream, not
 * only the one the index appends on: a selection waits for the index's last
 * append through an event, which a captured selection turns into an external
 * event wait (each replay waits for the appends made before it; the graph keeps
 * the index size it was captured at).
 *
 * Memory kinds. Once the CUDA plugin is loaded (a CUDA tensor or context has
 * been used in the process), every tensor's data pointer is checked against
 * its descriptor through the CUDA driver (cudaPointerGetAttributes), and a
 * mismatch is refused with SA_ERR_INVALID_ARGUMENT and a message naming the
 * tensor, before anything reads it:
 * - SA_DEVICE_CPU takes host memory: pageable, page-locked (cudaMallocHost,
 *   cudaHostRegister) or managed (cudaMallocManaged; the caller keeps kernels
 *   writing it from running meanwhile). Device memory is refused.
 * - SA_DEVICE_CUDA takes memory of device_id (cudaMalloc, cudaMallocAsync,
 *   pools), managed memory, and page-locked host memory mapped at the same
 *   address (cudaMallocHost, or cudaHostRegister where the device can use host
 *   pointers; kernels then read it across the bus). Pageable host memory is
 *   refused, also where HMM or ATS would let kernels reach it, and so is
 *   another device's memory.
 * Only the first byte's memory is checked. Before the plugin is loaded nothing
 * can be checked: device memory described as CPU memory is then read by the
 * CPU, which fails as any bad pointer would.
 *
 * Thread safety: sa_context and sa_index may be shared between threads for
 * sa_select, sa_attend, sa_cache_evict and sa_index_clone (they only read
 * them; each call keeps its scratch memory to itself). sa_index_append,
 * sa_index_update, sa_index_update_heads, sa_index_truncate and *_destroy need
 * exclusive access. Any
 * host thread may call: from a std::thread-style
 * pool, or from inside the host's own OpenMP parallel region (as ggml and
 * llama.cpp run their CPU threads), with one context shared or one per thread.
 * A call on a context with threads > 1 opens its own OpenMP team, except when
 * made from inside an active OpenMP parallel region (omp_in_parallel()): it then
 * runs on the calling thread alone (no nested team, so no oversubscription),
 * and leaves that thread's OpenMP settings as they were. Results do not depend
 * on the thread count nor on the calling thread.
 */
#ifndef SPARSEATTN_H
#define SPARSEATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(SA_BUILDING_LIBRARY)
#    define SA_API __declspec(dllexport)
#  else
#    define SA_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define SA_API __attribute__((visibility("default")))
#else
#  define SA_API
#endif

/* ---------------------------------------------------------------- version */

#define SA_VERSION_MAJOR 0
#define SA_VERSION_MINOR 1
#define SA_VERSION_PATCH 0
/* (major << 16) | (minor << 8) | patch */
#define SA_VERSION ((SA_VERSION_MAJOR << 16) | (SA_VERSION_MINOR << 8) | SA_VERSION_PATCH)
/* Bumped when the function table (sa_api) gains entries; old entries never move.
 * 3: sa_index_update_heads; sa_evict_options.per_head and
 * sa_attend_options.head_key_positions (per-KV-head eviction). */
#define SA_ABI_VERSION 3

/* The library's version, encoded like SA_VERSION. Compare with the header's. */
SA_API uint32_t sa_version(void);
/* The library's version as "major.minor.patch". Static storage. */
SA_API const char *sa_version_string(void);

/* ----------------------------------------------------------------- status */

typedef enum sa_status {
    SA_OK = 0,
    SA_ERR_NULL_POINTER = 1,          /* a required pointer argument is NULL */
    SA_ERR_INVALID_ARGUMENT = 2,      /* a value out of its documented domain */
    SA_ERR_DTYPE = 3,                 /* a tensor has a dtype the call does not take */
    SA_ERR_SHAPE = 4,                 /* rank, shape or strides do not match */
    SA_ERR_OUT_OF_RANGE = 5,          /* an index or slot outside the cache */
    SA_ERR_OVERFLOW = 6,              /* a size computation overflows */
    SA_ERR_STRUCT_SIZE = 7,           /* struct_size too small (or zero) */
    SA_ERR_OUT_OF_MEMORY = 8,
    SA_ERR_UNSUPPORTED = 9,           /* valid request the library does not implement */
    SA_ERR_BACKEND_UNAVAILABLE = 10,  /* e.g. CUDA tensor and no usable plugin */
    SA_ERR_FORMAT = 11,               /* a malformed file (weights) */
    SA_ERR_INTERNAL = 12              /* a bug: please report the message */
} sa_status;

/* Message describing the last failure on the calling thread ("" if none).
 * Valid until the next sparseattn call on this thread. Never NULL. */
SA_API const char *sa_last_error(void);
/* Static name of a status code, e.g. "SA_ERR_SHAPE". Never NULL. */
SA_API const char *sa_status_name(sa_status status);

/* ---------------------------------------------------------------- tensors */

typedef enum sa_dtype {
    SA_DTYPE_F32 = 0,
    SA_DTYPE_F16 = 1,   /* IEEE binary16 */
    SA_DTYPE_BF16 = 2,  /* bfloat16 */
    SA_DTYPE_I32 = 3,
    SA_DTYPE_I64 = 4
} sa_dtype;

typedef enum sa_device_type {
    SA_DEVICE_CPU = 0,
    SA_DEVICE_CUDA = 1
} sa_device_type;

#define SA_MAX_RANK 4

/* A view of caller memory. shape[i] >= 0; strides in elements (not bytes),
 * each >= 0. If every stride is 0 the tensor is contiguous row-major. Entries
 * at i >= rank are ignored. */
typedef struct sa_tensor {
    void *data;
    sa_dtype dtype;
    sa_device_type device;
    int32_t device_id;
    int32_t rank;                    /* 1 .. SA_MAX_RANK */
    int64_t shape[SA_MAX_RANK];
    int64_t strides[SA_MAX_RANK];
} sa_tensor;

/* Token positions (key_positions, slot_positions, the positions of sa_index_update
 * and sa_cache_evict, and those an index gives appended keys) lie in
 * [0, SA_MAX_POSITION]; key and slot positions may also be -1 (an empty slot: never
 * attended, dense, gathered or paged, causal or not, and given no slot mass). Query
 * positions lie in [-SA_MAX_POSITION, SA_MAX_POSITION] (a negative one sees no key).
 * Others are refused with SA_ERR_INVALID_ARGUMENT (an append past the bound:
 * SA_ERR_OVERFLOW), so that p + 1 and p - window never overflow. */
#define SA_MAX_POSITION ((int64_t)1 << 62)

/* ------------------------------------------------------------ instruction sets */

typedef enum sa_isa {
    SA_ISA_SCALAR = 0,  /* plain C++ reference path */
    SA_ISA_NEON = 1,
    SA_ISA_AVX2 = 2,    /* AVX2 + FMA + F16C */
    SA_ISA_AVX512 = 3,  /* AVX-512 F/BW/DQ/VL */
    SA_ISA_AUTO = 100   /* the best the CPU supports */
} sa_isa;

/* Static name of an instruction set ("scalar", "neon", "avx2", "avx512", "auto"). */
SA_API const char *sa_isa_name(sa_isa isa);

/* ---------------------------------------------------------------- context */

/* Execution settings shared by calls: threads and instruction set.
 * The environment variable SA_ISA (scalar|neon|avx2|avx512) caps the
 * instruction set of every context created afterwards; used to test each path. */
typedef struct sa_context sa_context;

/* The host's device memory for the CUDA plugin (an engine's caching allocator:
 * PyTorch's, vLLM's, ggml's pool), set in sa_context_options.cuda_allocator.
 * The plugin allocates only when something grows (an index's storage, a
 * stream's buffers for a larger call than it has seen), never per call, and
 * gives everything back with its owner: an index's storage at
 * sa_index_destroy, a context's buffers at sa_context_destroy.
 *
 * alloc returns `bytes` (> 0) of memory on CUDA device `device_id`, aligned to
 * 256 bytes, that work enqueued on `stream` (a cudaStream_t; NULL is the
 * legacy default stream) may use from the moment alloc returns, or NULL when
 * it has none: the call that needed it fails with SA_ERR_OUT_OF_MEMORY.
 * free gives back what alloc returned, with the same bytes and device_id.
 * Its stream orders the release as cudaFreeAsync does: the memory may be
 * reused by work enqueued on `stream` after the free; the plugin has already
 * made that stream wait for the work it enqueued elsewhere that uses the
 * memory. At sa_index_destroy and sa_context_destroy the plugin first waits
 * for the device to finish its work, then frees with stream NULL: the memory
 * is idle, and the stream it was allocated on may already be destroyed.
 * A context's calls and its indexes may run on any host thread, so alloc and
 * free may be called concurrently from several threads. Neither may call
 * sparseattn. They are not called while a stream is being captured into a
 * CUDA graph (a call that would need memory then fails with
 * SA_ERR_UNSUPPORTED: run one call of each shape first). */
typedef struct sa_cuda_allocator {
    void *(*alloc)(void *user, size_t bytes, int32_t device_id, void *stream);
    void (*free)(void *user, void *ptr, size_t bytes, int32_t device_id, void *stream);
    void *user; /* passed to both */
} sa_cuda_allocator;

typedef struct sa_context_options {
    size_t struct_size;
    int32_t threads;  /* 0: OpenMP's default (omp_get_max_threads() at creation, at
                         most 1024); 1: the calling thread only, no OpenMP region is
                         entered; 2 .. 1024: an OpenMP team of up to that many threads
                         per call (no more than the call has tasks), or the calling
                         thread alone when called from inside an OpenMP parallel
                         region (see Thread safety above). Negative or above 1024:
                         SA_ERR_INVALID_ARGUMENT */
    sa_isa isa;       /* cap on the instruction set; SA_ISA_AUTO for the best */
    /* Appended (accelerators). The CUDA plugin is loaded on first need: a
     * CUDA tensor in a call, or a context created with device = SA_DEVICE_CUDA.
     * It is looked for at cuda_plugin_path when set, else at the path in the
     * environment variable SA_CUDA_PLUGIN when set, else as
     * libsparseattn_cuda.so beside libsparseattn.so. Each path is tried once
     * per process; a failure is reported as SA_ERR_BACKEND_UNAVAILABLE with the
     * loader's reason (file missing, symbol missing, ABI version, no CUDA
     * runtime, no device) and never affects work on CPU tensors. */
    const char *cuda_plugin_path; /* NULL: the environment, then beside the library;
                                     copied by sa_context_create */
    sa_device_type device; /* SA_DEVICE_CUDA: load the plugin now (creation fails
                              with SA_ERR_BACKEND_UNAVAILABLE if it cannot serve
                              device_id), and indexes created with this context
                              keep their keys on that device */
    int32_t device_id;     /* CUDA device ordinal for device = SA_DEVICE_CUDA */
    void *cuda_stream;     /* cudaStream_t for device work when a call's options
                              name none (index appends always); NULL: the legacy
                              default stream */
    /* Appended (device memory): where the CUDA plugin gets every byte of
     * device memory it uses for this context and the indexes created with it
     * (see sa_cuda_allocator). Both functions NULL: cudaMallocAsync and
     * cudaFreeAsync. One of them NULL without the other:
     * SA_ERR_INVALID_ARGUMENT. A CPU-only context may set it; it is used once
     * the context's work reaches a device. */
    sa_cuda_allocator cuda_allocator;
} sa_context_options;

#define SA_CONTEXT_OPTIONS_INIT                                                \
    { sizeof(sa_context_options), 0, SA_ISA_AUTO, NULL, SA_DEVICE_CPU, 0, NULL, \
      { NULL, NULL, NULL } }
SA_API sa_context_options sa_context_options_default(void);

/* Creates a context. opt may be NULL (defaults). On success *out owns it. */
SA_API sa_status sa_context_create(const sa_context_options *opt, sa_context **out);
SA_API void sa_context_destroy(sa_context **ctx);
/* The instruction set the context's kernels use, after caps. */
SA_API sa_isa sa_context_isa(const sa_context *ctx);
/* The number of threads the context uses (>= 1). */
SA_API int32_t sa_context_threads(const sa_context *ctx);

/* ------------------------------------------------------------------ index */

/* Selection state for one layer's cache, all KV heads: what its selector needs
 * (page bounds, hashes, graph links, projected keys) and the token position
 * each slot holds. Slots are numbered 0, 1, ... in append order; a slot is the
 * row of the host's K/V cache that holds the same token.
 * By default the index also keeps its own copy of the keys in the index dtype
 * (for exact scoring and rescoring). With borrow_keys (sa_index_options) it
 * keeps none where its selector does not need one and reads the host's K,
 * passed to each sa_select, instead: per token of 8 KV heads x 128 dims in
 * f16 (2 KiB of K), an exact index then adds 20 bytes (positions), a page
 * index 153 bytes at page_size 16 (bounds), against 2068 and 2201 bytes when
 * they keep a copy (bench/index_memory). On a CUDA device an exact index keeps
 * the keys (2 KiB a token in that example), or with borrow_keys nothing until
 * the first sa_index_update; either then keeps 8 bytes a slot (positions), 8
 * per slot and KV head once sa_index_update_heads is used. A page index keeps
 * only its bounds, the CPU page index's very codes (132 bytes a token at
 * page_size 16: per page and KV head 2 x head_dim int8 codes and an f32 scale
 * and magnitude, plus 16 KiB for the last page's exact min and max while it is
 * partial; once refilled, also the positions as an exact index, and each
 * page's smallest and largest position, 16 bytes a page, per KV head after
 * sa_index_update_heads). */
typedef struct sa_index sa_index;

typedef enum sa_selector_kind {
    SA_SELECTOR_EXACT = 0,    /* all scores, exact top-K (the oracle) */
    SA_SELECTOR_PAGE = 1,     /* Quest-style page bounds */
    SA_SELECTOR_LSH = 2,      /* multi-round SimHash with multi-probe */
    SA_SELECTOR_HNSW = 3,     /* hnswlib graph per KV head */
    SA_SELECTOR_LEARNED = 4,  /* learned low-dimensional projections */
    SA_SELECTOR_INDEXER = 5   /* DeepSeek-style lightning indexer */
} sa_selector_kind;

/* Page (Quest) selector: per page of page_size consecutive slots and KV head, the
 * elementwise min and max of the keys (kept as int8 codes, widened so that the
 * bound stays an upper bound); pages are ranked by the bound
 * sum_d max(q_d min_d, q_d max_d) (per KV head: the group's heads combined).
 * With refine, in a call of 8 or more queries (a prompt's prefill), a query that
 * sees at most twice its candidate keys (2 x (top_k + 2048)) is scored exactly
 * instead, by the exact selector's path: below that, bounding the pages and
 * rescoring half of the keys or more cost more than scoring them all by GEMM
 * (bench_select select/{exact,page}/prefill256_k128 and _k2048), so a 4096-token
 * prompt at top_k 128 is selected as the exact selector selects it. One query a
 * call (decode) bounds pages; refine = 0 always takes whole pages. */
typedef struct sa_page_options {
    int32_t page_size;     /* slots per page, >= 1 (default 16) */
    int32_t refine;        /* nonzero (default): the best pages, holding top_k + 2048
                              keys, are rescored exactly and the top_k kept; 0: whole
                              pages in bound order fill top_k (exact scores only to
                              estimate a mass target) */
} sa_page_options;

/* LSH selector: SimHash over centred keys with hyperplanes drawn like the keys;
 * candidates from every table (own bucket + probes) are rescored exactly. In a
 * call of 8 or more queries (a prompt's prefill), where exact scoring runs as one
 * GEMM per block of queries, a query that sees at most 32 x top_k keys is scored
 * exactly instead: at 4096 keys and top_k 128 hashing and probing a list cost
 * about twice scoring every key it sees, and its candidates were half of those
 * (bench_select select/lsh/prefill4k_k128). One query a call (decode) hashes. */
typedef struct sa_lsh_options {
    int32_t rounds;        /* hash tables, 1 to 64 (default 8) */
    int32_t bits;          /* bits per table, 0 to 24; 0 (default): adapted to the
                              index size, about 32 keys a bucket */
    int32_t probes;        /* extra buckets probed per table, 0 to 64 (default 2); with
                              bits = 0, more while buckets hold fewer than ~32 keys, and a
                              list per query head reads as many keys as its group's list */
    uint64_t seed;         /* fixed seed: deterministic tables */
} sa_lsh_options;

/* One hnswlib graph per KV head over the keys centred on their mean (recomputed
 * whenever the keys have doubled) and mapped onto the unit sphere (MIPS to L2:
 * the graph is built on a true metric, so keys appended one at a time stay
 * reachable), f16. A list (a KV head's group of query heads, or one query head)
 * searches its graph once, with the sum of its query heads at unit length, for
 * max(ef_search, top_k) keys it may choose (window, sinks and keys it may not
 * see are passed over), starting from the graph's entry point and from the 64
 * newest keys the query sees (keys drift with position; from the entry point
 * alone a late query's search stayed among old keys); those are rescored
 * exactly per query head. A query that sees at most twice that many keys (12
 * times when top_k > ef_search) is scored exactly instead, by the exact
 * selector's path (cheaper there), and so is a list whose search finds fewer
 * than min(top_k, selectable) keys: lists are always full. In a call of 8 or
 * more queries (a prompt's prefill), where exact scoring runs as one GEMM per
 * block of queries, a query is scored exactly up to 32 times that many keys
 * (8192 at the defaults and top_k <= 256): at 4096 keys a list's search cost
 * about 7 times its exact scoring (bench_select select/hnsw/prefill4k_k128), so
 * a prefill over fewer keys selects as the exact selector does. One query a
 * call (decode) searches the graph as described.
 * Measured with the defaults on tinylm, keys appended one at a time (decode
 * order), K = 128, window 64, layers 1/3/5/7, attention mass short of exact
 * top-K's: 4096 tokens 0.14/0.56/0.96/0.16% (bench/hnsw_tuning quality, late
 * queries); 8192 tokens (tools/tinylm_qkv.py; quality_report --order decode
 * --queries 256) 0.50/1.05/1.25/0.18%, against 5.37/4.98/5.22/1.31% for the
 * inner-product graph at M 8 without seeds. Selection time per decode token
 * against exact (bench/decode_select_speed, H_kv 8, one thread, 16-core Xeon,
 * load 1-2): K = 128: 0.25x / 0.12x / 0.03x at 8K / 32K / 128K keys;
 * K = 2048: the exact path at 8K, 0.66x at 32K, 0.13x at 128K.
 * Out-of-range values fail sa_index_create with SA_ERR_INVALID_ARGUMENT. */
typedef struct sa_hnsw_options {
    int32_t m;             /* graph degree, 2 .. 512 (default 12) */
    int32_t ef_construction; /* build beam, 1 .. 65536 (default 48) */
    int32_t ef_search;     /* search beam, 1 .. 65536 (default 256) */
} sa_hnsw_options;

/* Weights of the learned and indexer selectors: a safetensors file (F32, F16 or
 * BF16 tensors, row-major), read and checked during sa_index_create; the index
 * keeps what it needs. Tensor names carry the layer L = opt->learned.layer. In the
 * shapes below D = head_dim, H_kv = num_kv_heads, H_q the query heads.
 *
 * SA_SELECTOR_LEARNED: keys and queries are projected into a search space of
 * d_search dimensions; keys when appended or updated (stored in the index dtype),
 * queries when selecting. Selection then works like the exact selector in that
 * space: the score of slot s for query head h is scale * (Wq_h q_h) . (Wk k_s)
 * (scale of sa_select, default 1/sqrt(D)), turned into softmax probabilities, so
 * projections fitted to preserve q . k keep mass_target meaningful.
 *   layers.{L}.q_proj  [Pq, d_search, D]  Pq = 1 (shared), H_kv (one per KV head,
 *                      used by its query group) or H_q (one per query head); or
 *                      [d_search, D] for one shared matrix
 *   layers.{L}.k_proj  [Pk, d_search, D]  Pk = 1 or H_kv; or [d_search, D]
 *
 * SA_SELECTOR_INDEXER (lightning indexer): from the query heads of token t,
 * concatenated into x_t = [q_0; ...; q_{H_q-1}] (H_q * D values), n_heads indexer
 * queries u_{t,j} = Q_j x_t (d_index values each) and head weights
 * w_{t,j} = w_j . x_t + b_j (b_j = 0 without the optional head_bias tensor);
 * from the KV heads of slot s, concatenated into y_s (H_kv * D values), one indexer
 * key z_s = Kp y_s, projected when appended. score(t, s) = sum_j w_{t,j} * max(0,
 * u_{t,j} . z_s). With learned.rescore r > 0 (the default, 12) the r * top_k best
 * slots by that score (window and sinks apart; equal scores: the more recent
 * position first) are rescored exactly, per output list (each KV head's group, or
 * each query head with per_query_head), and each list keeps its best top_k (with
 * window and sinks); the index then keeps the native keys too, as the learned
 * selector does. With rescore 0 (one stage) the top_k best slots by indexer score
 * form one list per query, written to every row of that query; one list for all
 * heads cannot reach per-head top-K (tinylm-qkv, 4K keys, K = 128: the best single
 * list is 3.2% short of exact per-query-head mass on layer 3). Measured (tinylm-qkv,
 * 4K keys, layers 1-7, queries 3840..4095, K = 128 and 256, window 64, sinks 4,
 * weights from tools/learned_fit on tokens < 3072; worst shortfall of attention mass
 * against exact top-K, lists per KV head / per query head): rescore 12 (37% of the
 * keys at K = 128) 0.4% / 0.4% at d_index 16; rescore 6 (19%) 1.8% / 2.1% at d_index
 * 16; rescore 3 (9%) 4.1% / 5.0% at d_index 16, 1.4% / 1.9% at d_index 64; one stage
 * 11% / 12% at d_index 16, 6.1% / 6.8% at d_index 64. The 3% holds where the rescored
 * share is about 20% or more at d_index 16 and 10% or more at d_index 64; longer
 * contexts need a larger rescore or d_index. Scales belong in the
 * weights; sa_select's scale is not used, and mass_target is refused
 * (SA_ERR_UNSUPPORTED: indexer scores are not masses).
 *   layers.{L}.indexer.q_proj        [n_heads, d_index, H_q * D]
 *   layers.{L}.indexer.head_weights  [n_heads, H_q * D]
 *   layers.{L}.indexer.k_proj        [d_index, H_kv * D]
 *   layers.{L}.indexer.head_bias     [n_heads]  (optional; constant head weights
 *                                    need zero head_weights and this bias)
 *
 * sa_index_create fails with SA_ERR_NULL_POINTER for a NULL weights_path,
 * SA_ERR_INVALID_ARGUMENT for a negative layer or a path that cannot be opened,
 * SA_ERR_FORMAT for a malformed file (truncated, bad header, overlapping or
 * out-of-range data, other dtypes, non-finite values) or a missing layer or tensor,
 * and SA_ERR_SHAPE for tensors whose shapes disagree with the index or each other.
 * sa_select fails with SA_ERR_SHAPE when the query heads do not fit the weights. */
typedef struct sa_learned_options {
    const char *weights_path; /* safetensors file; read during sa_index_create */
    int32_t layer;            /* the layer whose tensors to use (>= 0) */
    /* SA_SELECTOR_LEARNED, two-stage selection: the best rescore * top_k slots of
     * each list in the search space (window and sinks apart) are rescored with the
     * native keys, exactly as the exact selector scores them, and the best top_k of
     * those are chosen; the index then keeps the native keys too (in its dtype).
     * The softmax of that rescoring, and so mass_target, covers the rescored slots,
     * window and sinks. 0: one stage (the search space alone, no native keys kept).
     * 0 <= rescore <= 65536, else SA_ERR_INVALID_ARGUMENT; default 12. What it
     * keeps depends on the share of the keys rescored, rescore * top_k / keys
     * (tinylm-qkv, 4K keys, layers 1-7, rescore 12 / 6 / 3, projections fitted
     * on the first 3/4 of the tokens; mass loss at K = 128 against exact top-K,
     * mean over layers / worst layer): share 40% (12 * 128 of 4K keys): within 2%
     * at d_search 16, 32 and 64 (worst 1.4%); share 20% (as 12 * 128 of 8K):
     * d_search 16 2.4% / 7.0%, 32 1.8% / 5.8%, 64 0.4% / 1.0%; share 10% (16K):
     * 16 5.0%, 32 3.7%, 64 1.3%. Longer contexts need a larger rescore or
     * d_search. SA_SELECTOR_INDEXER rescores the best rescore * top_k by indexer
     * score the same way (see above; 0: one stage). Other kinds ignore it.
     * 64-bit so the struct grows: hosts built before this field was added pass
     * a smaller struct_size and get the default. */
    int64_t rescore;
} sa_learned_options;

typedef struct sa_index_options {
    size_t struct_size;
    sa_selector_kind kind;
    int32_t num_kv_heads;  /* H_kv >= 1 */
    int32_t head_dim;      /* D >= 1 */
    sa_dtype dtype;        /* storage of the index's keys (with borrow_keys: of
                              what it keeps): F32, F16 or BF16 */
    int64_t capacity;      /* expected number of slots (a hint; 0: none). A
                              device index allocates storage for this many slots
                              (at least 4096) at its first append and doubles it
                              when appends pass it; each doubling waits for the
                              device when the index was selected on other
                              streams than its context's (see sa_select), and
                              moves the storage: CUDA graphs that captured a
                              selection on the index must not be launched
                              after it (a capacity that covers the cache keeps
                              them valid) */
    sa_page_options page;
    sa_lsh_options lsh;
    sa_hnsw_options hnsw;
    sa_learned_options learned;
    /* Appended. Nonzero: the index keeps no copy of the keys where its selector
     * does not need one, and sa_select reads the host's keys instead, passed in
     * sa_select_options.keys (required then). Every kind keeps each slot's
     * position and the slots in position order (20 bytes a slot); besides:
     *   EXACT    nothing; scores the host's K.
     *   PAGE     page bounds (centre, radius) as int8 codes and a scale per
     *            page (true upper bounds); refine and mass targets rescore
     *            with the host's K. Bounds of pages whose
     *            slots were appended or updated are computed from the host's K
     *            by the next sa_select.
     *   LSH      hashes, buckets, key mean and hyperplanes; rescores with the
     *            host's K. The tables rebuilt when the index has grown by 5/4 are
     *            rebuilt by the next sa_select, from the host's K (the same
     *            tables an owning index builds, unless sa_index_update refilled,
     *            between that append and the sa_select, slots the append's
     *            rebuild covers: then they are built from the refilled keys).
     *   HNSW     the graph, which stores its own (centred, f16) vectors: hnswlib
     *            needs them to insert and search. The flag drops the second
     *            copy the index keeps for rescoring, which reads the host's K.
     *   LEARNED  projected keys; with rescore > 0 the second stage reads the
     *            host's K instead of a native copy.
     *   INDEXER  projected indexer keys; with rescore > 0 the second stage
     *            reads the host's K instead of a native copy (with rescore 0
     *            the host's keys are validated but not read).
     * Appended and updated keys are still passed to sa_index_append and
     * sa_index_update (hashes, bounds, projections are made from them). The
     * index dtype sets what the index keeps (bounds, projections) and the
     * precision keys are hashed and bounded at; exact scores use the host's K
     * in its dtype, so results equal an owning index's when the two dtypes
     * agree. On a CUDA device: an EXACT index keeps no keys (appends and
     * updates store positions only, once updated) and scores the host's K in
     * sa_select_options.keys, which must then be on the index's device, F16
     * or BF16 (F32: SA_ERR_UNSUPPORTED), head dimension contiguous, data and
     * row / head strides on 16-byte boundaries (else SA_ERR_UNSUPPORTED); it
     * selects exactly what an owning device index does when the dtypes agree.
     * A PAGE index keeps its bounds either way (they widen under refills) and
     * does not read opt->keys, which is still required and checked. Device
     * EXACT indexes created with borrow_keys are refused by sa_select_batch
     * (SA_ERR_UNSUPPORTED). Default 0: the index keeps its own copy. */
    int32_t borrow_keys;
} sa_index_options;

#define SA_INDEX_OPTIONS_INIT                                                  \
    { sizeof(sa_index_options), SA_SELECTOR_EXACT, 0, 0, SA_DTYPE_F16, 0,      \
      { 16, 1 }, { 8, 0, 2, 0x5eed5eedULL }, { 12, 48, 256 }, { NULL, 0, 12 }, \
      0 }
SA_API sa_index_options sa_index_options_default(void);

/* Creates an empty index. ctx must outlive the index (its threads and
 * instruction set are used by sa_select; a device index's memory comes from
 * ctx's cuda_allocator). A kind this build does not know returns
 * SA_ERR_UNSUPPORTED. sa_index_destroy of a device index waits for the
 * device's work, then frees its storage. */
SA_API sa_status sa_index_create(sa_context *ctx, const sa_index_options *opt, sa_index **out);
SA_API void sa_index_destroy(sa_index **ix);

/* Appends keys [n, H_kv, D] (F32/F16/BF16, any strides) as the next n slots.
 * Slot s gets the token position one past the largest position held so far
 * (so without eviction, slot == position). Exclusive access. */
SA_API sa_status sa_index_append(sa_index *ix, const sa_tensor *keys);

/* Refills n existing slots (e.g. freed by sa_cache_evict) with keys [n, H_kv, D]
 * and the token positions they now hold (positions: n values >= 0, or NULL to
 * give each the next position in order). Slots must be distinct and < size.
 * Afterwards the index's largest position (default query positions, the next
 * append) is the largest a slot holds: it goes down when the slot that held it
 * gets a smaller one. A slot sa_cache_evict freed (-1 in the host's positions)
 * keeps its old key and position here until the host refills it; sa_attend
 * skips it through key_positions. Exclusive access.
 * Device indexes (see sa_select): keys are CUDA tensors on the index's device;
 * slots and positions stay host arrays (checked like the CPU's). Exact and
 * page indexes. A device page index keeps no keys, so a refill widens the
 * bounds of the slot's page to the new key (per KV head, the page's coded
 * bound decoded, widened elementwise to the key and coded again; the partial
 * last page widens its exact min and max): they stay upper bounds of the keys
 * the page holds but never tighten, so a page refilled many times is ranked by
 * every key it has held (the CPU recomputes a page's bounds from the keys it
 * holds now; after appends alone both hold the same codes). The refill is
 * enqueued on the index's stream, like appends; slots and positions may be
 * reused when the call returns.
 *
 * A refused argument leaves the index as it was. When sa_index_append,
 * sa_index_update or sa_index_truncate fails while changing the index
 * (SA_ERR_OUT_OF_MEMORY, SA_ERR_INTERNAL), part of the change may have been
 * made: from then on sa_index_append, sa_index_update, sa_index_truncate,
 * sa_index_clone and sa_select on that index fail with SA_ERR_INVALID_ARGUMENT
 * and a message naming the first failure; destroy it and build it again. */
SA_API sa_status sa_index_update(sa_index *ix, const int32_t *slots, int64_t n,
                                 const sa_tensor *keys, const int64_t *positions);

/* Per-KV-head eviction (sa_evict_options.per_head): refills slots per KV head,
 * so that slot s of head h may hold another token than slot s of head h'.
 * slots: H_kv * n values, slots[h * n + i] the slot of head h that key row i
 * (keys [n, H_kv, D], head h's part) goes into; positions: H_kv * n values
 * (required, >= 0), the position it now holds. Within one head the slots must be
 * distinct and < size. From then on the index keeps positions per KV head:
 * sa_select lists for KV head h (each of its query heads with per_query_head)
 * are chosen among head h's slots by head h's positions (causal limit, sinks,
 * window), so the same slot number in two heads' lists may name two tokens,
 * as the host's K/V rows do. sa_index_update (one position for every head),
 * sa_index_append, sa_index_clone and sa_index_truncate keep working (truncate
 * drops a run of last slots only if it is the same run in every head).
 * Which selectors can: SA_SELECTOR_EXACT and SA_SELECTOR_PAGE (bounds are per
 * KV head already; page position ranges become per head), with or without
 * borrow_keys. LSH, HNSW, learned and indexer keep state that one position per
 * slot describes (buckets and graphs shared by a slot's heads, projections of
 * all heads' keys) and refuse with SA_ERR_UNSUPPORTED. Device indexes (exact
 * and page) keep a position per KV head and slot on the device from the first
 * call on (that call moves the index's positions: selections captured in a
 * CUDA graph before it must be captured again), and page bounds widened per
 * head as sa_index_update describes; a plugin older than this entry refuses
 * with SA_ERR_UNSUPPORTED.
 * Other errors as sa_index_update.
 * Default query positions count back from the largest position any head holds.
 * Exclusive access. */
SA_API sa_status sa_index_update_heads(sa_index *ix, const int32_t *slots, int64_t n,
                                       const sa_tensor *keys, const int64_t *positions);

/* Number of slots (appended so far). */
SA_API sa_status sa_index_size(const sa_index *ix, int64_t *n_slots);

/* Drops every slot that holds a token position >= position (speculative
 * decoding: the host rejects draft tokens). Those slots must be the index's
 * last ones, as they are when the drafts were appended; otherwise, and for
 * position < 0, SA_ERR_INVALID_ARGUMENT and the index is unchanged. When no
 * slot holds such a position nothing changes (SA_OK).
 * Afterwards the index selects exactly like one built by the same calls
 * without the dropped slots (the append that brought the first of them
 * appending only the slots before it), and the next append continues after
 * the largest position kept. State derived from many keys is made again as
 * those calls would have left it: the bounds of a page left partial; LSH's
 * centring, hyperplanes and adapted bit count of its last rebuild before the
 * cut (when a rebuild ran past the cut, the kept keys are hashed again); HNSW
 * graphs, which cannot lose a key, are built again by replaying the kept
 * slots' appends (a cost like making those appends again). Two exceptions to
 * "exactly": keys projected when appended (learned, indexer) keep the
 * projections their appends computed, which a matrix product over more keys
 * may round differently in the last bit; and after sa_index_update, the
 * rebuilt HNSW graphs (and LSH tables, when a rebuild ran past the cut) come
 * from the slots' current keys as if those had been appended: updates are not
 * replayed. Exclusive access. Device indexes: SA_ERR_UNSUPPORTED for now. */
/* Not yet for indexes created with borrow_keys, nor on a CUDA device: both
 * sa_index_truncate and sa_index_clone return SA_ERR_UNSUPPORTED there. */
SA_API sa_status sa_index_truncate(sa_index *ix, int64_t position);

/* A new index with the same options, context, slots, positions and selector
 * state as ix (beam search, forking a sequence that shares a prefix): a deep
 * copy that selects exactly like ix, and the two change independently
 * afterwards (the same calls on either give the same selections). The copy
 * uses ix's context, which must outlive it too. ix is only read: cloning is
 * safe concurrently with sa_select on ix. On success *out owns the copy; on
 * failure *out is not written (SA_ERR_OUT_OF_MEMORY leaves ix as it was).
 * An index an earlier failure left unusable is refused (see sa_index_update);
 * device indexes return SA_ERR_UNSUPPORTED for now. */
SA_API sa_status sa_index_clone(const sa_index *ix, sa_index **out);

/* ----------------------------------------------------------------- select */

typedef struct sa_select_options {
    size_t struct_size;
    int32_t top_k;         /* keys chosen by score, beyond window and sinks (>= 1) */
    int32_t window;        /* keys at positions (p - window, p] always kept */
    int32_t sinks;         /* keys at positions [0, sinks) always kept */
    int32_t per_query_head;/* 0: one list per KV head, scored by the group's summed
                              attention probability; 1: one list per query head */
    float mass_target;     /* 0: off. In (0, 1]: stop adding scored keys once the
                              estimated attention mass (window and sinks included)
                              reaches it; top_k stays the cap. Approximate
                              selectors normalise the estimate over the keys
                              they scored (candidates, window, sinks) */
    float scale;           /* softmax scale for the mass estimate; 0: 1/sqrt(D) */
    /* Position p of each query (n_q values), or NULL: the queries are the last
     * n_q tokens, at positions max_pos - n_q + 1 .. max_pos, where max_pos is
     * the largest position in the index. A query sees keys at positions <= p. */
    const int64_t *query_positions;
    /* Packed sequences: segment of each query (n_q) and of each slot (size of
     * the index). A query sees only keys of its own segment. Both or neither. */
    const int32_t *query_segments;
    const int32_t *key_segments;
    /* Appended: cudaStream_t for an index on a CUDA device; NULL: the
     * context's cuda_stream. */
    void *cuda_stream;
    /* Appended. For an index created with borrow_keys: the host's K
     * [n_slots, H_kv, D], F32/F16/BF16, on the index's device (the CPU, or
     * the CUDA device: see borrow_keys for what that reads), any strides,
     * row s = slot s, with n_slots >= the index's size (SA_ERR_NULL_POINTER
     * when NULL, SA_ERR_SHAPE when shorter or of other heads or head_dim).
     * Its rows must hold the keys appended and updated into those slots (the
     * host's cache), read during the call only (on a device: by the work the
     * call enqueues). On the CPU a head dimension that is not contiguous
     * (strides[2] != 1) is packed into a copy for the call. Ignored for other
     * indexes. */
    const sa_tensor *keys;
} sa_select_options;

#define SA_SELECT_OPTIONS_INIT                                                 \
    { sizeof(sa_select_options), 64, 64, 4, 0, 0.0f, 0.0f, NULL, NULL, NULL, NULL, NULL }
SA_API sa_select_options sa_select_options_default(void);

/* Chooses, for each query and KV head (or query head), the slots to attend.
 * queries: [n_q, H_q, D] F32/F16/BF16, H_q a multiple of the index's H_kv.
 * indices: I32 [n_q, H, width] with H = H_kv (or H_q when per_query_head) and
 *   width >= sinks + window + top_k. Written with the chosen slots ascending,
 *   then -1 padding. Only slots visible to the query (causal, segment) appear.
 *   The sink and window slots are always in the list, the scored ones fill
 *   what remains (at most top_k). With positions repeated (sa_index_update)
 *   sinks and window may hold more slots than sinks + window; when they
 *   exceed width, the window's are kept first (most recent position first),
 *   then the sinks' (position 0 first), equal positions by lower slot, and
 *   no scored slot.
 * Safe to call concurrently on one index.
 * Device indexes (created with a context whose device is SA_DEVICE_CUDA, or
 * whose first append had CUDA keys) keep their keys, and page bounds, on the
 * device; queries and indices must then be CUDA tensors on that device.
 * They support the exact and page selectors (page with refine = 0), top_k,
 * window, sinks and default query positions, and per_query_head for exact
 * indexes; mass_target, query_positions, segments and per_query_head on a
 * page index return SA_ERR_UNSUPPORTED. After
 * sa_index_update the device keeps each slot's position (per KV head after
 * sa_index_update_heads: each KV head's list among that head's slots, by that
 * head's positions) and applies the visibility, sink and window rules to them
 * as the CPU does; with repeated positions that overflow width, the lowest
 * slots are kept (the CPU keeps the window's first). A page index then ranks
 * the pages whose position range (per KV head) meets the query's scored
 * positions [sinks, p - window], as the CPU's usable pages, and takes the
 * candidate slots of the best top_k / page_size of them (the CPU fills top_k
 * keys exactly). Kept positions cost a pass over every slot's position per
 * KV head (H200, 128K keys, 8 KV heads, top_k 2048: page select 38 us before
 * any refill, 60 us with one position set, 69 us per KV head;
 * bench/cuda/cuda_bench heads). */
SA_API sa_status sa_select(sa_index *ix, const sa_tensor *queries,
                           const sa_select_options *opt, sa_tensor *indices);

/* ----------------------------------------------------------------- attend */

typedef struct sa_attend_options {
    size_t struct_size;
    float scale;          /* 0: 1/sqrt(D) */
    int32_t causal;       /* nonzero: a query at position p ignores keys at positions > p */
    /* Position of each query (n_q values) for causal; NULL: the queries are the
     * last n_q positions of the keys (p = n_kv - n_q + i, or relative to the
     * largest key position when key_positions is given). */
    const int64_t *query_positions;
    /* Token position held by each key row (n_kv values), for causal after
     * eviction reordered the cache; NULL: row r holds position r. Position -1
     * (how sa_cache_evict marks an empty slot) is an empty row, never attended,
     * causal or not. */
    const int64_t *key_positions;
    /* Appended: cudaStream_t for CUDA tensors; NULL: the context's
     * cuda_stream. */
    void *cuda_stream;
    /* Accumulated attention per key row (H2O-style scores for sa_cache_evict),
     * or NULL (default): off. F32, either [H_kv, n_kv] (per KV head, summed
     * over the head's query group) or [n_kv] (summed over all heads), any
     * strides, CPU (a CUDA tensor with CUDA tensors). Each call first
     * multiplies the whole buffer by mass_decay, then adds the softmax
     * probability every key row received, summed over the call's queries (a
     * row listed twice in one index list adds twice). The sums do not depend
     * on the thread count. Written only on success. */
    sa_tensor *slot_mass;
    /* In [0, 1]; default 0.99 (a horizon of about 100 steps), 1: plain sum, 0: this
     * call's mass only. With the plain sum old tokens keep what they gathered over
     * thousands of steps while a new one has at most `window` steps before it may be
     * evicted, so a fixed-budget cache fills with stale tokens (the default was 1
     * before; sa_evict_options.mass_decay must name the value used). */
    float mass_decay;
    /* Appended (abi_version 3). Per-KV-head eviction (sa_evict_options.per_head):
     * the token position row r of KV head h holds, at head_key_positions[h * n_kv
     * + r] (H_kv x n_kv values, contiguous), -1 for an empty row; NULL (default):
     * key_positions (or row r = position r) for every head. Replaces
     * key_positions (both set: SA_ERR_INVALID_ARGUMENT). Default query positions
     * count back from the largest position any head holds. slot_mass must then
     * be [H_kv, n_kv] (a row summed over heads would mix tokens: SA_ERR_SHAPE).
     * With sa_attend_paged the rows are physical slots (n_kv = num_pages *
     * page_size), see there.
     * The positions live where the tensors do. CPU tensors: a host array, every
     * value checked (-1 or 0 .. SA_MAX_POSITION). CUDA tensors (sa_attend): the
     * H_kv x n_kv values in memory the tensors' device reads (device, managed,
     * or mapped page-locked memory; host memory the device cannot read is
     * refused with SA_ERR_INVALID_ARGUMENT, and so is device memory with CPU
     * tensors), read by the kernels when they run, so a host keeps the array
     * on the device beside its cache, updates it there (e.g. from a device
     * sa_cache_evict's freed slots) and a captured CUDA graph sees the current
     * values. The device does not check them: a negative entry is an empty
     * row; causal queries count back from the largest entry (found on the
     * device; query_positions stays NULL). Dense and gathered, slot_mass
     * accumulated per KV head on the device, nothing allocated once a shape
     * has run. sa_attend_paged with CUDA tensors: see there. */
    const int64_t *head_key_positions;
} sa_attend_options;

#define SA_ATTEND_OPTIONS_INIT { sizeof(sa_attend_options), 0.0f, 0, NULL, NULL, NULL, NULL, 0.99f, NULL }
SA_API sa_attend_options sa_attend_options_default(void);

/* Exact softmax attention, f32 accumulation.
 * q: [n_q, H_q, D] F32, or the dtype of k/v.   k, v: [n_kv, H_kv, D], both
 *   F32, F16 or BF16 (the same dtype), H_q a multiple of H_kv.
 * indices: NULL for dense attention over all n_kv keys; otherwise I32
 *   [n_q, H_kv, width] (a list per KV head, shared by its query group) or
 *   [n_q, H_q, width] (a list per query head); entries in [0, n_kv) or -1
 *   (skipped). Duplicates count twice.
 * out: [n_q, H_q, D] F32 or the dtype of q.
 * lse: optional F32 [n_q, H_q]: natural log of the softmax denominator of
 *   the scaled scores. A query with no visible key gets out = 0, lse = -inf.
 * opt may be NULL (defaults). Any strides. Safe to call concurrently, as long
 * as concurrent calls do not share an opt->slot_mass buffer.
 * CUDA tensors (all on one device): K/V F16 or BF16, the head dimension
 * contiguous with 16-byte aligned rows and D in {64, 128, 256}; causal only
 * with the default positions (query_positions and key_positions NULL);
 * opt->slot_mass a CUDA tensor on that device (decayed and added to on the
 * call's stream; with index lists the additions are atomic, so the sums may
 * differ in the last bits from run to run, and from the CPU's result);
 * key_positions holding an empty slot (-1) are refused (leave it out of indices).
 * Index entries outside [0, n_kv) are skipped like -1 (the core cannot read
 * them to refuse them). Other requests: SA_ERR_UNSUPPORTED. */
SA_API sa_status sa_attend(sa_context *ctx, const sa_tensor *q, const sa_tensor *k,
                           const sa_tensor *v, const sa_tensor *indices,
                           const sa_attend_options *opt, sa_tensor *out, sa_tensor *lse);

/* ------------------------------------------------- paged caches, batches */

/* The KV cache of a batch of B sequences as vLLM, SGLang and FlashInfer hold
 * it: pages of page_size token rows, and per sequence the list of its pages in
 * token order. Token t of sequence b lives in page page_table[b][t / page_size]
 * at offset t % page_size. A physical slot names one row of the cache:
 * slot = page * page_size + offset (FlashMLA's convention); sparse index
 * entries into a paged cache are physical slots, -1 = skip. Pages may be in
 * any order and shared by several sequences (prefix sharing). k and v of rank
 * 3, [n, H_kv, D], are n pages of one row each: llama.cpp's cells, a
 * sequence's page list being its cells in token order; with page_table and
 * seq_lens absent they hold one sequence of n tokens, row t = token t.
 *
 * The library reads these tensors only during a call. Optional tensors are
 * absent when their rank is 0 (as SA_PAGED_KV_INIT leaves them). */
typedef struct sa_paged_kv {
    size_t struct_size;
    sa_tensor k;              /* [num_pages, page_size, H_kv, D] F32/F16/BF16,
                                 any strides (or [n, H_kv, D], see above) */
    sa_tensor v;              /* the shape and dtype of k, any strides */
    sa_tensor page_table;     /* I32 [B, max_pages]: pages of each sequence, in
                                 token order; entries past a sequence's length
                                 are not read */
    sa_tensor seq_lens;       /* I32 or I64 [B]: tokens held by each sequence,
                                 0 <= len <= max_pages * page_size */
    sa_tensor slot_positions; /* optional I64 [num_pages * page_size]: the token
                                 position each physical slot holds (-1: empty,
                                 never attended), as llama.cpp's cells carry
                                 one; absent: token t of a sequence is at
                                 position t */
} sa_paged_kv;

/* A zero sa_tensor: rank 0, an absent optional tensor. */
#define SA_TENSOR_ABSENT { NULL, SA_DTYPE_F32, SA_DEVICE_CPU, 0, 0, { 0, 0, 0, 0 }, { 0, 0, 0, 0 } }
#define SA_PAGED_KV_INIT                                                       \
    { sizeof(sa_paged_kv), SA_TENSOR_ABSENT, SA_TENSOR_ABSENT, SA_TENSOR_ABSENT, \
      SA_TENSOR_ABSENT, SA_TENSOR_ABSENT }

/* Exact softmax attention for a batch of sequences over a paged cache, in one
 * call (a decode step of B sequences is one call per layer).
 * q: [n_q, H_q, D] (F32 or the dtype of k); the queries of sequence b are rows
 *   query_starts[b] .. query_starts[b+1]-1. query_starts: I32 or I64 [B + 1],
 *   non-decreasing from 0 to n_q; NULL: one query per sequence (n_q == B).
 * indices: NULL for dense attention over each sequence's tokens; else I32
 *   [n_q, H_kv or H_q, width] of physical slots (-1 skipped), e.g. written by
 *   sa_select_batch; entries outside [-1, num_pages * page_size) are refused.
 * opt: as for sa_attend. Default query positions: the queries of sequence b are
 *   its last n_b tokens (positions len_b - n_b + i). With slot_positions and
 *   causal, opt->query_positions is required (positions no longer count
 *   tokens). Causal masks dense keys by position and sparse entries by their
 *   slot's position when slot_positions is given; without it, sparse entries
 *   are taken as given (the selection already applied the causal limit).
 *   opt->key_positions must be NULL (slot_positions replaces it).
 *   Per-KV-head eviction: opt->head_key_positions, I64 [H_kv, num_pages *
 *   page_size] contiguous, the position physical slot s holds in KV head h at
 *   [h * num_pages * page_size + s] (-1: empty in that head, never attended);
 *   it replaces kv->slot_positions (both given: SA_ERR_INVALID_ARGUMENT).
 *   Causal then masks dense and sparse keys by each head's positions, and
 *   default query positions count back from the largest position any head
 *   holds in the sequence's slots (as sa_attend does over its rows).
 *   opt->slot_mass is over physical slots: F32 [H_kv, num_pages * page_size]
 *   or [num_pages * page_size] ([H_kv, ...] with head_key_positions).
 * out: [n_q, H_q, D]; lse: optional F32 [n_q, H_q]. A sequence of length 0
 * gets out = 0, lse = -inf. Bad page tables (a page outside [0, num_pages), a
 * length beyond the table or negative) are refused with SA_ERR_OUT_OF_RANGE or
 * SA_ERR_SHAPE; nothing is written.
 * CUDA tensors (every tensor given, kv's included, on one device): one kernel
 * launch for the whole batch (with its split merge), K/V as for sa_attend (F16
 * or BF16, D in {64, 128, 256}, a contiguous head dimension, 16-byte aligned
 * rows; pages may be padded: any page stride that keeps rows aligned). The core
 * cannot read device memory, so values it would refuse on the CPU are handled
 * on the device instead, never read through and never reported: a page outside
 * [0, num_pages) is skipped (its tokens attend as if absent), a length is
 * clamped to [0, max_pages * page_size], query_starts to [0, n_q], index
 * entries outside [0, num_pages * page_size) are skipped like -1, and with
 * slot_positions a slot at a negative position is skipped. Checking such
 * tables is the host's job: nothing is read back, so a call can be captured in
 * a CUDA graph once its shape has run (lengths and tables may change between
 * replays). opt->head_key_positions: I64 [H_kv, num_pages * page_size] in
 * memory of the device, read by the kernels (values unchecked: a negative
 * entry is an empty slot of that head), masking dense and sparse entries when
 * causal, each sequence's default query positions counted back from the
 * largest position any head holds in its slots (found on the device).
 * SA_ERR_UNSUPPORTED: opt->slot_mass; causal with opt->query_positions or
 * kv->slot_positions (causal takes the default positions). */
SA_API sa_status sa_attend_paged(sa_context *ctx, const sa_tensor *q, const sa_tensor *query_starts,
                                 const sa_paged_kv *kv, const sa_tensor *indices,
                                 const sa_attend_options *opt, sa_tensor *out, sa_tensor *lse);

/* sa_select for a batch of B sequences in one call: indexes[b] holds sequence
 * b's keys (slot j = its j-th cached token), queries and query_starts as for
 * sa_attend_paged, opt as for sa_select with query_positions (n_q values, all
 * sequences) or the default per sequence (the last n_b positions of
 * indexes[b]); segments are refused. indices: I32 [n_q, H, width] as for
 * sa_select. kv: NULL, entries are slots of each index; else entries are the
 * physical slots of kv's page table (slot j of sequence b ->
 * page_table[b][j / page_size] * page_size + j % page_size), ready for
 * sa_attend_paged; each index must then hold at most seq_lens[b] slots, and
 * indexes created with borrow_keys read their keys from kv->k (any strides: a
 * head dimension that is not contiguous is packed into a copy for the call). The
 * indexes may differ in kind and size but not in KV heads and head_dim. Safe
 * to call concurrently with other selections on the same indexes.
 * Device indexes (all on one device, queries, indices and kv's tensors there
 * too): one query per sequence (query_starts NULL, else SA_ERR_UNSUPPORTED)
 * and what sa_select serves on the device, written through the page table
 * on the device. Page indexes of one context (same page size, dtype, heads)
 * are selected in three launches per 64 sequences for the whole batch; other
 * batches (exact indexes, mixed kinds or contexts) as one selection per
 * sequence, with the same result. An index may hold at most max_pages * page_size
 * slots (SA_ERR_SHAPE); the table's entries cannot be read by the core: a page
 * outside [0, num_pages) gives -1 entries (never read). */
SA_API sa_status sa_select_batch(sa_index *const *indexes, int64_t n_seqs, const sa_tensor *queries,
                                 const sa_tensor *query_starts, const sa_select_options *opt,
                                 const sa_paged_kv *kv, sa_tensor *indices);

/* ------------------------------------------------------------------ evict */

typedef struct sa_evict_options {
    size_t struct_size;
    int64_t budget;       /* slots the cache may hold after the incoming tokens;
                             required (no default): >= sinks + window + incoming */
    int64_t incoming;     /* tokens about to be inserted (default 1) */
    int32_t sinks;        /* positions [0, sinks) are never freed (default 4) */
    int32_t window;       /* positions (max_pos - window, max_pos] are never freed,
                             max_pos the largest position held (default 64) */
    /* Appended (hosts built before pass a smaller struct_size and get the
     * defaults). How scores rank slots; see "Policy" below. */
    int32_t score_mean;   /* nonzero (default): scores are sa_attend's slot_mass,
                             ranked per step seen: divided by sum_{i < age}
                             mass_decay^i, age = max_pos - position + 1 (the
                             queries that have seen the slot); 0: as given (a
                             host's own scores, the plain H2O sum) */
    float mass_decay;     /* the decay slot_mass was accumulated with (the
                             sa_attend_options.mass_decay of the host's calls), in
                             [0, 1]; default 0.99, sa_attend's default */
    int32_t head_max;     /* nonzero: [H, n_slots] scores rank a slot by its best
                             row (KV head); 0 (default): by their sum */
    float recent_share;   /* in [0, 1]: the most recent floor(recent_share *
                             (budget - incoming - sinks)) positions are protected
                             too, when more than window (default 0.875; 0:
                             window alone; 1: StreamingLLM; see "Policy"
                             below) */
    /* Appended (abi_version 3). Nonzero: per-KV-head eviction, each KV head
     * keeps its own tokens (see "Per KV head" below); 0 (default): one set of
     * tokens for all heads. */
    int32_t per_head;
    /* Appended (struct_size). > 0: a slot is ranked by the best ranked score
     * among the occupied slots whose positions lie within score_pool of its
     * own (SnapKV's pooling: a token that gets attention keeps its neighbours);
     * 0: by its own score. Default 0. 64 bits wide so that it starts past the
     * 56 bytes of the struct before it: hosts built before pass struct_size 56,
     * whose last 4 bytes are padding, and get the default. */
    int64_t score_pool;
} sa_evict_options;

/* Policy (the defaults): seven eighths of the budget keep the most recent tokens, the
 * last eighth the tokens with the most attention per step seen, decayed with 0.99
 * (slot_mass of sa_attend's default mass_decay). On a small trained model
 * (tools/tinylm_eval, T = 4096, layers 1-7 through the cache, sinks 4, window 64;
 * tuned on sequences 10-12, nine held out) it is, against StreamingLLM
 * (recent_share = 1), -1.37 / -0.58 / -0.13 points at budgets 256 / 512 / 1024 (mean
 * of the nine held-out sequences), ahead on 9 / 8 / 4 of them, and ahead of the
 * default before (recent_share 0.5: -0.94 / -0.21 / +0.47, ahead on 7 / 5 / 3) at
 * every budget, on 6 / 6 / 5 of the nine. At 1024 it still trails StreamingLLM on
 * five of the nine (by up to 1.0%; it gains up to 2.3% on the others). The plain H2O
 * sum (score_mean = 0, mass_decay 1, the first default) was 2-4x worse than
 * StreamingLLM. Nothing tried beats StreamingLLM on most held-out sequences at 1024: pooling (score_pool), decays 0.99-1, TOVA
 * (mass_decay 0), the decayed peak of one step's attention instead of the sum, and
 * per-KV-head eviction (per_head, below: TOVA and these defaults per head were worse
 * than one set on 10-12), so one set of tokens stays the default: it needs no per-head
 * positions from the host. README, "A fixed-budget cache", has the table.
 * What eviction can reach there: evicting, each step, the token that all later
 * queries attend least under dense attention (clairvoyant, tinylm_eval's
 * future policy) gives +9.23% / +2.57% / +0.21%, so no eviction policy comes
 * within +5% / +1.5% of dense at 256 / 512 of 4096 tokens. Host scores of any
 * other policy (Expected Attention, say) go in with score_mean = 0. */
#define SA_EVICT_OPTIONS_INIT { sizeof(sa_evict_options), 0, 1, 4, 64, 1, 0.99f, 0, 0.875f, 0, 0 }
SA_API sa_evict_options sa_evict_options_default(void);

/* Chooses cache slots to free so that occupied + incoming <= budget, for one
 * new token per step (incoming = 1) or to compress a long prompt in one call
 * (SnapKV-style: incoming = 0, budget = the slots to keep).
 * scores: F32 [n_slots] or [H, n_slots] (summed over H in order): higher = more
 *   useful, e.g. sa_attend's slot_mass or a host's own indexer scores; +-inf
 *   allowed, NaN refused.
 * positions: I64 [n_slots], the token position each slot holds (>= 0); -1
 *   marks an empty slot.
 * freed: I32 [cap]; receives first the empty slots the incoming tokens can
 *   use (ascending slot, at most `incoming` of them), then the occupied slots
 *   to evict (max(0, occupied + incoming - budget) of them), lowest score
 *   first; equal scores: the older position first, then the lower slot. Never
 *   a sink or a window position. *n_freed is the count; nothing is written
 *   past it. The result does not depend on the context's threads.
 * scores, positions and freed may each be CPU or CUDA tensors (of one device).
 *   All three on the device: the plugin runs the same policy there (same slots,
 *   same order), after the work queued on the context's stream. Otherwise the
 *   CUDA ones are copied to the host through the plugin (the call waits for the
 *   stream's work) and the policy runs on the CPU. Either way freed is written
 *   before the call returns (*n_freed is host memory).
 * Fails with SA_ERR_INVALID_ARGUMENT when budget < sinks + window + incoming
 * (a full cache could not free a slot), when the protected slots still exceed
 * the budget (repeated positions), for a NaN score or a position < -1;
 * SA_ERR_SHAPE when scores and positions disagree on n_slots or freed is too
 * small; SA_ERR_NULL_POINTER for NULL opt.
 * Host recipe: write incoming token t into freed[t] for t < incoming, and
 * mark every later entry empty (position -1, mass 0): those were evicted.
 * When a slot is empty, freed[0] is an empty slot and freed[1] (if the cache
 * is full) the evicted one, so after a prompt compression (incoming = 0,
 * budget B, n_slots > B) each step (incoming = 1) returns two slots: the new
 * token takes the empty one and the evicted one becomes the next step's empty
 * slot; the cache stays at B tokens. Without empty slots a step returns one
 * slot, the evicted one, which the new token takes.
 *
 * Per KV head (opt->per_head nonzero): slot s of KV head h may hold another
 * token than slot s of head h' (the host writes row s of K/V per head), and
 * each head keeps the tokens its own slot_mass ranks best.
 *   scores: F32 [H_kv, n_slots], row h = head h's scores (sa_attend's slot_mass
 *     [H_kv, n_kv] with opt->head_key_positions);
 *   positions: I64 [H_kv, n_slots], row h = the positions head h's slots hold;
 *   freed: I32 [H_kv, cap], row h = head h's freed slots, as above;
 *   n_freed: H_kv values, n_freed[h] the count of row h.
 * Every head is chosen alone, exactly as the single-set call would choose
 * with that head's scores row and positions row (its own window and recent
 * share, from the largest position it holds); head_max is not used. A head's
 * failure fails the call and nothing is written. Each head's row of freed is
 * applied as in the recipe: the incoming token t goes into slot freed[h][t]
 * of head h (K/V row freed[h][t], head h), and the index learns it through
 * sa_index_update_heads. CUDA tensors as in the single-set call: all
 * three on the device, the plugin chooses every head there (the same slots
 * in the same order as the CPU, the heads' sorts between two waits for the
 * stream, nothing written unless every head passes); otherwise the CUDA
 * ones are copied to the host and the CPU chooses (also with score_pool,
 * which the device does not pool). */
SA_API sa_status sa_cache_evict(sa_context *ctx, const sa_evict_options *opt,
                                const sa_tensor *scores, const sa_tensor *positions,
                                sa_tensor *freed, int64_t *n_freed);

/* ---------------------------------------------------- function table (dlopen) */

/* Every public function, for hosts that dlopen the library and resolve one
 * symbol. Entries are only ever appended; struct_size tells how many exist. */
typedef struct sa_api {
    size_t struct_size;
    uint32_t abi_version;
    uint32_t (*version)(void);
    const char *(*version_string)(void);
    const char *(*last_error)(void);
    const char *(*status_name)(sa_status);
    const char *(*isa_name)(sa_isa);
    sa_context_options (*context_options_default)(void);
    sa_status (*context_create)(const sa_context_options *, sa_context **);
    void (*context_destroy)(sa_context **);
    sa_isa (*context_isa)(const sa_context *);
    int32_t (*context_threads)(const sa_context *);
    sa_index_options (*index_options_default)(void);
    sa_status (*index_create)(sa_context *, const sa_index_options *, sa_index **);
    void (*index_destroy)(sa_index **);
    sa_status (*index_append)(sa_index *, const sa_tensor *);
    sa_status (*index_update)(sa_index *, const int32_t *, int64_t, const sa_tensor *,
                              const int64_t *);
    sa_status (*index_size)(const sa_index *, int64_t *);
    sa_select_options (*select_options_default)(void);
    sa_status (*select)(sa_index *, const sa_tensor *, const sa_select_options *, sa_tensor *);
    sa_attend_options (*attend_options_default)(void);
    sa_status (*attend)(sa_context *, const sa_tensor *, const sa_tensor *, const sa_tensor *,
                        const sa_tensor *, const sa_attend_options *, sa_tensor *, sa_tensor *);
    sa_evict_options (*evict_options_default)(void);
    sa_status (*cache_evict)(sa_context *, const sa_evict_options *, const sa_tensor *,
                             const sa_tensor *, sa_tensor *, int64_t *);
    /* abi_version 2 */
    sa_status (*index_truncate)(sa_index *, int64_t);
    sa_status (*index_clone)(const sa_index *, sa_index **);
    sa_status (*attend_paged)(sa_context *, const sa_tensor *, const sa_tensor *, const sa_paged_kv *,
                              const sa_tensor *, const sa_attend_options *, sa_tensor *, sa_tensor *);
    sa_status (*select_batch)(sa_index *const *, int64_t, const sa_tensor *, const sa_tensor *,
                              const sa_select_options *, const sa_paged_kv *, sa_tensor *);
    /* abi_version 3 */
    sa_status (*index_update_heads)(sa_index *, const int32_t *, int64_t, const sa_tensor *,
                                    const int64_t *);
} sa_api;

/* The function table, or NULL when the library is older than abi_version
 * (pass SA_ABI_VERSION). The table is static; never free it. */
SA_API const sa_api *sa_get_api(uint32_t abi_version);
typedef const sa_api *(*sa_get_api_fn)(uint32_t abi_version);

#ifdef __cplusplus
}
#endif

#endif /* SPARSEATTN_H */
