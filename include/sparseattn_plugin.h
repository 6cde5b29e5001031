/*
 * sparseattn_plugin.h: the ABI between libsparseattn and an accelerator plugin
 * (libsparseattn_cuda.so). Hosts never include this; plugin authors do.
 *
 * The core never links an accelerator runtime. On the first call that needs a
 * device (a CUDA tensor, or a context created with device = SA_DEVICE_CUDA) it
 * dlopen()s the plugin, resolves one symbol, SA_PLUGIN_ENTRY_POINT, and calls
 * it with the ABI version it speaks and a table to fill. The plugin checks the
 * version, writes its own into the table, and fills the function pointers that
 * fit in the caller's struct_size. Entries are only ever appended; a change to
 * an existing entry or argument struct bumps SA_PLUGIN_ABI_VERSION, and the
 * core refuses a plugin that speaks another version.
 *
 * Division of labour: the core validates every argument (NULLs, ranks, shapes,
 * dtypes, devices, option domains) and resolves defaults, so the plugin gets
 * consistent requests. Tensor descriptors handed to the plugin always carry
 * explicit element strides (never the all-zero "contiguous" shorthand). Data
 * pointers are device memory the core never dereferences. The plugin may still
 * refuse a valid request it does not implement with SA_ERR_UNSUPPORTED.
 *
 * Errors: a plugin function returns an sa_status; on failure last_error()
 * returns the plugin's message for the calling thread, which the core copies.
 * Asynchrony: work is enqueued on the given stream (a cudaStream_t; NULL is the
 * legacy default stream) and may still run when the call returns.
 * Thread safety: attend and select may be called concurrently (on one index
 * too); index_append and index_destroy need exclusive access to the index.
 */
#ifndef SPARSEATTN_PLUGIN_H
#define SPARSEATTN_PLUGIN_H

#include "sparseattn.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define SA_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#  define SA_PLUGIN_EXPORT
#endif

/* Bumped on any incompatible change of the table or the argument structs. */
#define SA_PLUGIN_ABI_VERSION 1
/* The one symbol the core resolves. */
#define SA_PLUGIN_ENTRY_POINT "sa_plugin_init"
/* File name of the CUDA plugin, looked up beside libsparseattn.so. */
#define SA_CUDA_PLUGIN_FILE "libsparseattn_cuda.so"
/* Environment variable naming the CUDA plugin's path. */
#define SA_CUDA_PLUGIN_ENV "SA_CUDA_PLUGIN"

/* Selection state the plugin keeps on its device. */
typedef struct sa_plugin_index sa_plugin_index;

/* sa_attend on device tensors. Shapes as in sa_attend: q [n_q, H_q, D],
 * k and v [n_kv, H_kv, D] (same dtype), out [n_q, H_q, D], lse [n_q, H_q] F32
 * or NULL, indices I32 [n_q, H_kv or H_q, width] or NULL (dense). Index
 * entries are not range-checked by the core (it cannot read them): the plugin
 * must skip entries outside [0, n_kv) as it skips -1. */
typedef struct sa_plugin_attend_args {
    size_t struct_size;
    const sa_tensor *q;
    const sa_tensor *k;
    const sa_tensor *v;
    const sa_tensor *indices;
    sa_tensor *out;
    sa_tensor *lse;
    int32_t per_query_head; /* indices hold one list per query head */
    int32_t causal;         /* query i at position n_kv - n_q + i sees rows <= it */
    float scale;            /* > 0 */
    void *stream;
    /* Appended: the sa_context the call belongs to. The plugin keeps its
     * per-call buffers per (owner, stream) and frees them in release(owner);
     * NULL (or a shorter struct): buffers kept for the life of the process. */
    const void *owner;
    /* Appended, read by plugins whose table holds index_update (the core sends
     * a slot_mass only to those): sa_attend_options.slot_mass, F32 [H_kv, n_kv]
     * or [n_kv] on the device, or NULL; and its mass_decay in [0, 1]. The
     * plugin multiplies the buffer by mass_decay (0: clears it), then adds the
     * probability every key row received, as sa_attend documents. */
    sa_tensor *slot_mass;
    float mass_decay;
    /* Appended, read by plugins whose table holds evict_heads (the core sends
     * it only to those): sa_attend_options.head_key_positions, I64 [H_kv, n_kv]
     * contiguous in memory the device addresses (checked by the core, values
     * not: the plugin treats any negative entry as an empty row), or NULL.
     * Row r of KV head h holds position head_key_positions[h * n_kv + r]; an
     * empty row is never attended and gets no mass. causal: query i sits at
     * P - n_q + 1 + i, P the largest position of the whole array (found on
     * the device), and sees rows of positions <= its own. */
    const int64_t *head_key_positions;
} sa_plugin_attend_args;

/* sa_attend_paged on device tensors (all on one device; the core checked
 * shapes, dtypes and memory kinds, not values it cannot read). k and v are
 * [num_pages, page_size, H_kv, D] (the core gives the rank-3 cells form as
 * pages of one row); physical slot s is row s % page_size of page
 * s / page_size. page_table I32 [B, max_pages] or NULL (one sequence, token t
 * in slot t); seq_lens I32/I64 [B] or NULL (each sequence holds its table's
 * capacity, or every slot without a table); query_starts I32/I64 [B + 1] or
 * NULL (query b is sequence b's only query); slot_positions I64 [slots] or
 * NULL. The plugin must never read outside these tensors whatever their
 * values: it clamps lengths to [0, the table's capacity] and query_starts to
 * [0, n_q], and skips pages outside [0, num_pages), index entries outside
 * [0, slots) and slots whose position is negative. indices I32
 * [n_q, H_kv or H_q, width] of physical slots, or NULL (dense: each
 * sequence's tokens through its page table). causal (dense only, unless
 * head_key_positions): query j of the n_b of sequence b, of length len_b, sees
 * tokens t <= len_b - n_b + j. */
typedef struct sa_plugin_attend_paged_args {
    size_t struct_size;
    const sa_tensor *q;
    const sa_tensor *k;
    const sa_tensor *v;
    const sa_tensor *page_table;
    const sa_tensor *seq_lens;
    const sa_tensor *query_starts;
    const sa_tensor *slot_positions;
    const sa_tensor *indices;
    sa_tensor *out;
    sa_tensor *lse;
    int64_t batch;          /* B */
    int32_t per_query_head;
    int32_t causal;
    float scale;            /* > 0 */
    void *stream;
    const void *owner;      /* as in sa_plugin_attend_args */
    /* Appended, sent only to plugins whose table holds index_update_heads:
     * sa_attend_options.head_key_positions, I64 [H_kv, slots] contiguous in
     * memory the device addresses (never with slot_positions), or NULL. Row s
     * of KV head h holds position head_key_positions[h * slots + s]; a negative
     * entry is an empty slot in that head, never attended. causal (dense and
     * sparse): query j of the n_b of sequence b sits at P_b - n_b + 1 + j, P_b
     * the largest position any head holds in the sequence's slots (tokens
     * t < len_b through its page table), and sees slots of positions <= its
     * own. */
    const int64_t *head_key_positions;
} sa_plugin_attend_paged_args;

/* An index on the plugin's device: slots hold keys [H_kv, D] in `dtype`;
 * slot s holds token position s until index_update gives slots other
 * positions; appends then continue from the next_position it was given. */
typedef struct sa_plugin_index_args {
    size_t struct_size;
    sa_selector_kind kind;
    int32_t num_kv_heads;
    int32_t head_dim;
    sa_dtype dtype;
    int64_t capacity;       /* hint, 0: none */
    int32_t page_size;      /* SA_SELECTOR_PAGE */
    int32_t refine;         /* SA_SELECTOR_PAGE */
    int32_t device_id;
    void *stream;           /* stream for appends */
    /* Appended: the index's sa_context. Its storage comes from the allocator
     * set for owner (set_allocator); NULL (or a shorter struct): the default. */
    const void *owner;
    /* Appended: sa_index_options.borrow_keys. Nonzero: an exact index keeps no
     * keys (appends and updates store positions only) and each selection reads
     * the host's keys from sa_plugin_select_args.keys. A plugin that predates
     * the field keeps its copy, which selects the same. */
    int32_t borrow_keys;
} sa_plugin_index_args;

/* sa_select on a device index: queries [n_q, H_q, D] and indices
 * I32 [n_q, H_kv, width] on the index's device; query i at position
 * first_query_position + i. Output as sa_select's: ascending, -1 padded. */
typedef struct sa_plugin_select_args {
    size_t struct_size;
    const sa_tensor *queries;
    sa_tensor *indices;
    int32_t top_k;
    int32_t window;
    int32_t sinks;
    float scale;            /* > 0 */
    int64_t first_query_position;
    void *stream;
    const void *owner;      /* appended: as in sa_plugin_attend_args */
    /* Appended (sa_select_batch over a paged cache), sent only to plugins whose
     * table holds attend_paged: the sequence's page table row (I32, element
     * stride page_table_stride, at least ceil(index size / page_size)
     * entries, checked by the core) or NULL. Given, each chosen slot j is
     * written as the physical slot page_table[j / page_size] * page_size +
     * j % page_size, or -1 where that page is outside [0, num_pages). */
    const int32_t *page_table;
    int64_t page_table_stride;
    int64_t page_size;
    int64_t num_pages;
    /* Appended, read by select_keys only (the core calls select with them
     * NULL and 0). keys: for an index created with borrow_keys, the host's K
     * [n_slots >= index size, H_kv, D] on the index's device (shape, dtype
     * F32/F16/BF16 and memory kind checked by the core; the plugin refuses
     * what its kernels do not read), NULL for other indexes.
     * per_query_head: one list per query head, indices I32 [n_q, H_q, width]
     * (exact indexes only: the core refuses it for page indexes). */
    const sa_tensor *keys;
    int32_t per_query_head;
} sa_plugin_select_args;

/* sa_select_batch on device indexes (sa_plugin_api.select_batch): indexes
 * [n_seqs] of the plugin, on one device; sequence b's query queries[b]
 * ([n_seqs, H_q, D]) at the host value query_positions[b], its output row
 * indices[b] (I32 [n_seqs, H_kv, width]), both on that device. The other
 * fields as in sa_plugin_select_args; page_table (or NULL) is row b at
 * page_table + b * page_table_row_stride. The plugin sets served = 1 when it
 * queued the whole batch, or leaves it 0, having queued nothing, for requests
 * it does not batch: the core then selects sequence by sequence. */
typedef struct sa_plugin_select_batch_args {
    size_t struct_size;
    sa_plugin_index *const *indexes;
    int64_t n_seqs;
    const int64_t *query_positions;
    const sa_tensor *queries;
    sa_tensor *indices;
    int32_t top_k;
    int32_t window;
    int32_t sinks;
    float scale;            /* > 0 */
    void *stream;
    const void *owner;
    const int32_t *page_table;
    int64_t page_table_row_stride;
    int64_t page_table_stride;
    int64_t page_size;
    int64_t num_pages;
    int32_t served;         /* out */
} sa_plugin_select_batch_args;

/* sa_index_update on a device index: refills n slots with keys [n, H_kv, D]
 * (on the index's device) at token positions. slots and positions are host
 * arrays the core checked (slots distinct and < the index's size, positions
 * in [0, SA_MAX_POSITION]); next_position is the position the next appended
 * key takes (the index's largest position + 1 after the update). The work
 * is enqueued on the index's stream; the host arrays may be reused on return. */
typedef struct sa_plugin_update_args {
    size_t struct_size;
    const int32_t *slots;
    int64_t n;
    const sa_tensor *keys;
    const int64_t *positions;
    int64_t next_position;
} sa_plugin_update_args;

/* What a pointer addresses (sa_plugin_api.memory_info). */
typedef enum sa_plugin_memory_kind {
    SA_PLUGIN_MEMORY_PAGEABLE = 0, /* host memory unknown to the driver (malloc, stack) */
    SA_PLUGIN_MEMORY_HOST = 1,     /* page-locked host memory (cudaMallocHost, cudaHostRegister) */
    SA_PLUGIN_MEMORY_DEVICE = 2,   /* device memory (cudaMalloc, cudaMallocAsync, ...) */
    SA_PLUGIN_MEMORY_MANAGED = 3   /* managed memory (cudaMallocManaged) */
} sa_plugin_memory_kind;

typedef struct sa_plugin_memory_info {
    size_t struct_size;            /* set by the core */
    int32_t kind;                  /* an sa_plugin_memory_kind */
    int32_t device_id;             /* DEVICE: the device holding it; else -1 */
    int32_t device_addressable;    /* HOST: kernels may use ptr itself (mapped at the same
                                      address); DEVICE, MANAGED: 1; PAGEABLE: 0, even
                                      where HMM or ATS would let kernels reach it */
} sa_plugin_memory_info;

/* sa_cache_evict's single-set policy (one set of slots, not per_head) on
 * device tensors of one device, all checked by the core for shape and memory
 * kind: scores F32 [rows, n] (element strides), positions I64 [n], freed I32
 * [freed_cap]; window already widened by recent_share. The plugin chooses
 * as the CPU policy does, slot for slot and in the same order, and writes
 * freed (enqueued on stream) only when it refuses nothing; it returns once
 * n_freed is known. A refusal is SA_OK with `refused` set and the values the
 * core's message needs; nothing is written then. */
typedef enum sa_plugin_evict_refusal {
    SA_PLUGIN_EVICT_OK = 0,
    SA_PLUGIN_EVICT_POSITION = 1,      /* positions[slot] = value is out of range */
    SA_PLUGIN_EVICT_NAN = 2,           /* scores of slot are NaN */
    SA_PLUGIN_EVICT_NAN_SUMMED = 3,    /* their sum over rows is (+inf and -inf) */
    SA_PLUGIN_EVICT_BUDGET = 4,        /* too few evictable slots; value: protected slots */
    SA_PLUGIN_EVICT_FREED_SHORT = 5    /* freed_cap < value, the slots to write */
} sa_plugin_evict_refusal;

typedef struct sa_plugin_evict_args {
    size_t struct_size;
    const float *scores;
    int64_t rows, row_stride, col_stride;
    const int64_t *positions;
    int64_t pos_stride, n;
    int64_t budget, incoming;
    int32_t sinks, window;
    int32_t mean, row_max;     /* booleans, as EvictRequest */
    double decay;
    int32_t *freed;
    int64_t freed_stride, freed_cap;
    int32_t device_id;
    void *stream;
    const void *owner;         /* as in sa_plugin_attend_args */
    /* Out. */
    int32_t refused;           /* an sa_plugin_evict_refusal */
    int64_t refused_slot, refused_value;
    int64_t n_freed;
    /* Appended, read by evict_heads only (per-KV-head eviction): `heads`
     * independent requests, head h's scores at scores + h * head_score_stride
     * (rows = 1), positions at positions + h * head_pos_stride, freed row at
     * freed + h * head_freed_stride (freed_cap entries each); its count goes to
     * the host array n_freed_heads[h]. Nothing is written unless every head
     * passes; a refusal names the first failing head in refused_head (heads in
     * order, each head's checks in the single-set order). */
    int64_t heads;
    int64_t head_score_stride, head_pos_stride, head_freed_stride;
    int64_t *n_freed_heads;
    int64_t refused_head;      /* out */
} sa_plugin_evict_args;

typedef struct sa_plugin_api {
    size_t struct_size;     /* set by the core: how many entries it can take */
    uint32_t abi_version;   /* set by the plugin: the version it speaks */
    const char *name;       /* e.g. "cuda" */
    /* The plugin's message for the calling thread's last failure. Never NULL. */
    const char *(*last_error)(void);
    /* Number of usable devices; SA_ERR_BACKEND_UNAVAILABLE with a message when
     * the runtime or driver is missing. */
    sa_status (*device_count)(int32_t *count);
    /* The device's name into buf (cap bytes, NUL-terminated). */
    sa_status (*device_name)(int32_t device_id, char *buf, size_t cap);
    sa_status (*attend)(const sa_plugin_attend_args *args);
    sa_status (*index_create)(const sa_plugin_index_args *args, sa_plugin_index **out);
    void (*index_destroy)(sa_plugin_index *ix);
    /* keys: [n, H_kv, D] F32/F16/BF16 on the index's device, the next n slots. */
    sa_status (*index_append)(sa_plugin_index *ix, const sa_tensor *keys);
    sa_status (*select)(sa_plugin_index *ix, const sa_plugin_select_args *args);
    /* Waits for the work enqueued on stream. */
    sa_status (*stream_synchronize)(void *stream);
    /* Appended (pointer checks); optional: a plugin whose table stops before
     * it, or leaves it NULL, is still loaded, and the core then skips the
     * checks below. What memory ptr points into, as the driver sees it. The
     * core asks before it hands a CUDA tensor to the plugin and, once a
     * plugin is loaded, before it reads a CPU tensor. */
    sa_status (*memory_info)(const void *ptr, sa_plugin_memory_info *out);
    /* Appended; optional like memory_info. Frees what the plugin keeps for
     * owner (the buffers of calls made with it), after the work queued on
     * the device is done. The core calls it from sa_context_destroy. */
    void (*release)(const void *owner);
    /* Appended (eviction on the device); optional: without it the core refuses
     * sa_index_update on device indexes and slot_mass with device tensors.
     * Refills slots of a device index (sa_plugin_update_args). */
    sa_status (*index_update)(sa_plugin_index *ix, const sa_plugin_update_args *args);
    /* Appended; optional: without it the core refuses sa_cache_evict on device
     * tensors. Copies `bytes` from src to dst (each host or device memory)
     * after the work queued on stream, and returns once the copy is done. */
    sa_status (*copy)(void *dst, const void *src, size_t bytes, void *stream);
    /* Appended; optional: without it the core copies device scores and
     * positions to the host and runs the CPU policy there. */
    sa_status (*evict)(sa_plugin_evict_args *args);
    /* Appended (host-controlled memory); optional: without it the core refuses
     * contexts that set cuda_allocator once they need this plugin. Every
     * device allocation the plugin makes for owner (the buffers of calls made
     * with it, the storage of indexes created with it) comes from allocator,
     * as sa_cuda_allocator documents, from now until release(owner). The core
     * calls it once per context, before the context's first call reaches the
     * plugin; allocator is copied. */
    sa_status (*set_allocator)(const void *owner, const sa_cuda_allocator *allocator);
    /* Appended; optional: without it the core refuses sa_attend_paged on
     * device tensors. One launch (and its split merge) for the whole batch. */
    sa_status (*attend_paged)(const sa_plugin_attend_paged_args *args);
    /* Appended; optional: without it the core runs sa_select_batch on device
     * indexes as one selection per sequence. */
    sa_status (*select_batch)(sa_plugin_select_batch_args *args);
    /* Appended (per-KV-head eviction); optional: without it the core copies
     * per-head scores and positions to the host and chooses there, and refuses
     * sa_attend_options.head_key_positions with CUDA tensors. Its presence also
     * says the plugin reads sa_plugin_attend_args.head_key_positions. The
     * single-set policy per head (sa_plugin_evict_args, heads >= 1). */
    sa_status (*evict_heads)(sa_plugin_evict_args *args);
    /* Appended (per-KV-head eviction on device indexes); optional: without it
     * the core refuses sa_index_update_heads on device indexes. Refills slots
     * per KV head (sa_plugin_update_args read per head): key row i of head h
     * (keys [n, H_kv, D]) goes into slot slots[h * n + i] of head h, at
     * position positions[h * n + i] (H_kv * n values each, checked by the
     * core: distinct within a head, < the index's size, positions in
     * [0, SA_MAX_POSITION]). From then on the index keeps a position per
     * (KV head, slot), index_update writes one position into every head, and
     * select chooses each head's list by its own positions. Enqueued on the
     * index's stream; the host arrays may be reused on return. */
    sa_status (*index_update_heads)(sa_plugin_index *ix, const sa_plugin_update_args *args);
    /* Appended (borrowed keys, per-query-head lists); optional: without it the
     * core creates device indexes with borrow_keys 0 (they keep a copy of the
     * keys, which selects the same) and refuses per_query_head on device
     * indexes. select, reading sa_plugin_select_args.keys and per_query_head. */
    sa_status (*select_keys)(sa_plugin_index *ix, const sa_plugin_select_args *args);
} sa_plugin_api;

/* The entry point. abi_version: the version the core speaks. out->struct_size
 * is set by the core; the plugin writes out->abi_version whenever
 * out->struct_size covers it, then, if it speaks abi_version, the entries that
 * fit and returns SA_OK; otherwise returns SA_ERR_UNSUPPORTED. */
typedef sa_status (*sa_plugin_init_fn)(uint32_t abi_version, sa_plugin_api *out);
SA_PLUGIN_EXPORT sa_status sa_plugin_init(uint32_t abi_version, sa_plugin_api *out);

#ifdef __cplusplus
}
#endif

#endif /* SPARSEATTN_PLUGIN_H */
