/*
 * C side of the Go binding. cgo forbids Go code from storing a Go pointer in
 * C memory and from passing C a pointer to Go memory that itself holds a Go
 * pointer. So Go never builds an sa_tensor, sa_paged_kv or options struct that
 * points at Go memory: it passes descriptors whose Go pointers are NULL, plus
 * each Go data pointer as a separate argument, and these functions assemble
 * the real structs on the C stack for the duration of one call. Nothing is
 * retained. Pointers to memory outside Go (CUDA allocations, CUDA streams)
 * may sit in the descriptors: they are not Go pointers.
 *
 * A NULL data argument keeps the descriptor's own pointer (NULL for an empty
 * Go slice, or an address from ExternalTensor). A NULL descriptor is an
 * absent optional tensor.
 *
 * sa_last_error() is thread-local and a goroutine may move to another thread
 * between two cgo calls, so on failure each function copies the message into
 * *msg (malloc'd, freed by Go) before returning.
 */
#ifndef SPARSEATTN_GO_SHIM_H
#define SPARSEATTN_GO_SHIM_H

#include <stdint.h>
#include <stdlib.h>
#include <sparseattn.h>

/* An address Go holds as uintptr (device memory, a cudaStream_t) as the
 * void * the C structs take, without an unsafe.Pointer conversion in Go. */
static inline void *sago_address(uintptr_t a) { return (void *)a; }

sa_status sago_context_create(const sa_context_options *opt, const char *cuda_plugin_path,
                              sa_context **out, char **msg);

sa_status sago_index_create(sa_context *ctx, const sa_index_options *opt,
                            const char *weights_path, sa_index **out, char **msg);
sa_status sago_index_append(sa_index *ix, const sa_tensor *keys, void *keys_data, char **msg);
sa_status sago_index_update(sa_index *ix, const int32_t *slots, int64_t n,
                            const sa_tensor *keys, void *keys_data,
                            const int64_t *positions, char **msg);
sa_status sago_index_size(const sa_index *ix, int64_t *n, char **msg);
sa_status sago_index_truncate(sa_index *ix, int64_t position, char **msg);
sa_status sago_index_clone(const sa_index *ix, sa_index **out, char **msg);

/* The Go pointers of sa_select_options travel beside it: query_positions,
 * query_segments, key_segments and keys (NULL descriptor: none). */
sa_status sago_select(sa_index *ix, const sa_tensor *queries, void *queries_data,
                      const sa_select_options *opt, const int64_t *query_positions,
                      const int32_t *query_segments, const int32_t *key_segments,
                      const sa_tensor *keys, void *keys_data,
                      const sa_tensor *indices, void *indices_data, char **msg);

/* indexes: the C handles, in Go memory that holds no Go pointer. kv: NULL for
 * none; else its five tensors' Go data follow it (k, v, page_table, seq_lens,
 * slot_positions). */
sa_status sago_select_batch(sa_index *const *indexes, int64_t n_seqs,
                            const sa_tensor *queries, void *queries_data,
                            const sa_tensor *query_starts, void *query_starts_data,
                            const sa_select_options *opt, const int64_t *query_positions,
                            const int32_t *query_segments, const int32_t *key_segments,
                            const sa_tensor *keys, void *keys_data,
                            const sa_paged_kv *kv, void *k_data, void *v_data,
                            void *page_table_data, void *seq_lens_data,
                            void *slot_positions_data,
                            const sa_tensor *indices, void *indices_data, char **msg);

/* indices / lse / slot_mass: NULL descriptor for none. The Go pointers of
 * sa_attend_options (query_positions, key_positions, slot_mass) travel beside
 * it. */
sa_status sago_attend(sa_context *ctx,
                      const sa_tensor *q, void *q_data,
                      const sa_tensor *k, void *k_data,
                      const sa_tensor *v, void *v_data,
                      const sa_tensor *indices, void *indices_data,
                      const sa_attend_options *opt,
                      const int64_t *query_positions, const int64_t *key_positions,
                      const sa_tensor *slot_mass, void *slot_mass_data,
                      const sa_tensor *out, void *out_data,
                      const sa_tensor *lse, void *lse_data, char **msg);

sa_status sago_attend_paged(sa_context *ctx,
                            const sa_tensor *q, void *q_data,
                            const sa_tensor *query_starts, void *query_starts_data,
                            const sa_paged_kv *kv, void *k_data, void *v_data,
                            void *page_table_data, void *seq_lens_data,
                            void *slot_positions_data,
                            const sa_tensor *indices, void *indices_data,
                            const sa_attend_options *opt,
                            const int64_t *query_positions, const int64_t *key_positions,
                            const sa_tensor *slot_mass, void *slot_mass_data,
                            const sa_tensor *out, void *out_data,
                            const sa_tensor *lse, void *lse_data, char **msg);

sa_status sago_cache_evict(sa_context *ctx, const sa_evict_options *opt,
                           const sa_tensor *scores, void *scores_data,
                           const sa_tensor *positions, void *positions_data,
                           const sa_tensor *freed, void *freed_data,
                           int64_t *n_freed, char **msg);

#endif
