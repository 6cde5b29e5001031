/* A stand-in accelerator plugin for the loader tests: it speaks the plugin ABI but runs
 * nothing. It records what the core hands it (never touching tensor data, which the tests
 * fill with made-up device addresses) in exported counters the tests read back with dlsym.
 * Built several times with different defines to produce each way a plugin can be wrong:
 *   FAKE_ABI_VERSION     the version it speaks (default: the current one)
 *   FAKE_NO_ENTRY        no sa_plugin_init symbol at all
 *   FAKE_NO_ATTEND       a table with the attend entry missing
 *   FAKE_DEVICES         the number of devices it reports (default 2)
 *   FAKE_NO_RUNTIME      device_count fails as if the CUDA runtime were missing
 *   FAKE_MEMORY_INFO     a memory_info entry: addresses in [0x1000, 0x100000) are memory of
 *                        device 0, [0x100000, 0x200000) of device 1, the rest pageable host memory
 *   FAKE_ALLOCATOR       set_allocator and release entries that record what they are given */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparseattn_plugin.h"

#ifndef FAKE_ABI_VERSION
#define FAKE_ABI_VERSION SA_PLUGIN_ABI_VERSION
#endif
#ifndef FAKE_DEVICES
#define FAKE_DEVICES 2
#endif

#define FAKE_EXPORT __attribute__((visibility("default")))

/* What the tests read back. */
FAKE_EXPORT int fake_init_calls;
FAKE_EXPORT int fake_attend_calls;
FAKE_EXPORT sa_plugin_attend_args fake_last_attend;
FAKE_EXPORT sa_tensor fake_last_q, fake_last_indices;
FAKE_EXPORT int fake_index_creates, fake_index_destroys, fake_appends, fake_selects;
FAKE_EXPORT long long fake_appended_rows;
FAKE_EXPORT sa_plugin_index_args fake_last_index_args;
FAKE_EXPORT sa_plugin_select_args fake_last_select;

static char fake_error[256];

static const char *fake_last_error(void) { return fake_error; }

static sa_status fake_device_count(int32_t *count) {
#ifdef FAKE_NO_RUNTIME
    (void)count;
    snprintf(fake_error, sizeof fake_error, "libcudart.so.13: cannot open shared object file (fake)");
    return SA_ERR_BACKEND_UNAVAILABLE;
#else
    *count = FAKE_DEVICES;
    return SA_OK;
#endif
}

static sa_status fake_device_name(int32_t device_id, char *buf, size_t cap) {
    snprintf(buf, cap, "fake device %d", (int)device_id);
    return SA_OK;
}

static sa_status fake_attend(const sa_plugin_attend_args *a) {
    ++fake_attend_calls;
    fake_last_attend = *a;
    fake_last_q = *a->q;
    if (a->indices) fake_last_indices = *a->indices;
    if (a->q->shape[2] == 3) { /* the tests' way of asking for a refusal */
        snprintf(fake_error, sizeof fake_error, "head dimension 3 is not supported (fake)");
        return SA_ERR_UNSUPPORTED;
    }
    return SA_OK;
}

struct sa_plugin_index {
    int heads;
};

static sa_status fake_index_create(const sa_plugin_index_args *a, sa_plugin_index **out) {
    sa_plugin_index *ix = (sa_plugin_index *)malloc(sizeof *ix);
    if (!ix) return SA_ERR_OUT_OF_MEMORY;
    ix->heads = a->num_kv_heads;
    fake_last_index_args = *a;
    ++fake_index_creates;
    *out = ix;
    return SA_OK;
}

static void fake_index_destroy(sa_plugin_index *ix) {
    ++fake_index_destroys;
    free(ix);
}

static sa_status fake_index_append(sa_plugin_index *ix, const sa_tensor *keys) {
    (void)ix;
    ++fake_appends;
    fake_appended_rows += keys->shape[0];
    return SA_OK;
}

static sa_status fake_select(sa_plugin_index *ix, const sa_plugin_select_args *a) {
    (void)ix;
    ++fake_selects;
    fake_last_select = *a;
    return SA_OK;
}

static sa_status fake_stream_synchronize(void *stream) {
    (void)stream;
    return SA_OK;
}

#ifdef FAKE_MEMORY_INFO
FAKE_EXPORT int fake_memory_queries;

static sa_status fake_memory_info(const void *ptr, sa_plugin_memory_info *out) {
    const unsigned long long a = (unsigned long long)(size_t)ptr;
    ++fake_memory_queries;
    out->kind = SA_PLUGIN_MEMORY_PAGEABLE;
    out->device_id = -1;
    out->device_addressable = 0;
    if (a >= 0x1000 && a < 0x200000) {
        out->kind = SA_PLUGIN_MEMORY_DEVICE;
        out->device_id = a < 0x100000 ? 0 : 1;
        out->device_addressable = 1;
    }
    return SA_OK;
}
#endif

#ifdef FAKE_ALLOCATOR
FAKE_EXPORT int fake_allocator_sets, fake_releases;
FAKE_EXPORT const void *fake_allocator_owner, *fake_released_owner;
FAKE_EXPORT sa_cuda_allocator fake_allocator;

static sa_status fake_set_allocator(const void *owner, const sa_cuda_allocator *allocator) {
    ++fake_allocator_sets;
    fake_allocator_owner = owner;
    fake_allocator = *allocator;
    return SA_OK;
}

static void fake_release(const void *owner) {
    ++fake_releases;
    fake_released_owner = owner;
}
#endif

#ifndef FAKE_NO_ENTRY
FAKE_EXPORT sa_status sa_plugin_init(uint32_t abi_version, sa_plugin_api *out) {
    sa_plugin_api t;
    size_t n;
    ++fake_init_calls;
    if (!out || out->struct_size < offsetof(sa_plugin_api, name)) return SA_ERR_STRUCT_SIZE;
    out->abi_version = FAKE_ABI_VERSION;
    if (abi_version != FAKE_ABI_VERSION) return SA_ERR_UNSUPPORTED;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    t.abi_version = FAKE_ABI_VERSION;
    t.name = "fake";
    t.last_error = fake_last_error;
    t.device_count = fake_device_count;
    t.device_name = fake_device_name;
#ifndef FAKE_NO_ATTEND
    t.attend = fake_attend;
#endif
    t.index_create = fake_index_create;
    t.index_destroy = fake_index_destroy;
    t.index_append = fake_index_append;
    t.select = fake_select;
    t.stream_synchronize = fake_stream_synchronize;
#ifdef FAKE_MEMORY_INFO
    t.memory_info = fake_memory_info;
#endif
#ifdef FAKE_ALLOCATOR
    t.release = fake_release;
    t.set_allocator = fake_set_allocator;
#endif
    n = out->struct_size < sizeof t ? out->struct_size : sizeof t;
    t.struct_size = n;
    memcpy(out, &t, n);
    return SA_OK;
}
#endif
