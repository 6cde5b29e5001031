/*
 * C side of the Go binding. cgo forbids Go code from storing a Go pointer in
 * C memory and from passing C a pointer to Go memory that itself holds a Go
 * pointer. So Go never builds an sa_tensor (or an options struct) that points
 * at Go memory: it passes a descriptor whose pointers are NULL, plus each data
 * pointer as a separate argument, and these functions assemble the real
 * structs on the C stack for the duration of one call. Nothing is retained.
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

sa_status sago_context_create(const sa_context_options *opt, sa_context **out, char **msg);

sa_status sago_index_create(sa_context *ctx, const sa_index_options *opt,
                            const char *weights_path, sa_index **out, char **msg);
sa_status sago_index_append(sa_index *ix, const sa_tensor *keys, void *keys_data, char **msg);
sa_status sago_index_update(sa_index *ix, const int32_t *slots, int64_t n,
                            const sa_tensor *keys, void *keys_data,
                            const int64_t *positions, char **msg);
sa_status sago_index_size(const sa_index *ix, int64_t *n, char **msg);

sa_status sago_select(sa_index *ix, const sa_tensor *queries, void *queries_data,
                      const sa_select_options *opt, const int64_t *query_positions,
                      const int32_t *query_segments, const int32_t *key_segments,
                      const sa_tensor *indices, void *indices_data, char **msg);

/* indices / lse: NULL descriptor for none. */
sa_status sago_attend(sa_context *ctx,
                      const sa_tensor *q, void *q_data,
                      const sa_tensor *k, void *k_data,
                      const sa_tensor *v, void *v_data,
                      const sa_tensor *indices, void *indices_data,
                      const sa_attend_options *opt,
                      const int64_t *query_positions, const int64_t *key_positions,
                      const sa_tensor *out, void *out_data,
                      const sa_tensor *lse, void *lse_data, char **msg);

sa_status sago_cache_evict(sa_context *ctx, const sa_evict_options *opt,
                           const sa_tensor *scores, void *scores_data,
                           const sa_tensor *positions, void *positions_data,
                           const sa_tensor *freed, void *freed_data,
                           int64_t *n_freed, char **msg);

#endif
