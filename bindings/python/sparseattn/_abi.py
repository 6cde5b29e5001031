"""ctypes mirrors of the structs and enums in include/sparseattn.h.

Field order, types and names follow the header exactly; the binding checks at
load time that each option struct's size equals the struct_size the library's
sa_*_options_default() reports, so a header change that is not mirrored here
is caught before any call.
"""
import ctypes
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_float, c_int,
                    c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p)

# The header's version this binding mirrors.
VERSION_MAJOR = 0
ABI_VERSION = 3
MAX_RANK = 4

# C enums are ints in the ABI.
c_enum = c_int


class SaTensor(Structure):
    _fields_ = [
        ("data", c_void_p),
        ("dtype", c_enum),
        ("device", c_enum),
        ("device_id", c_int32),
        ("rank", c_int32),
        ("shape", c_int64 * MAX_RANK),
        ("strides", c_int64 * MAX_RANK),
    ]


# sa_cuda_allocator: alloc(user, bytes, device_id, stream) -> ptr and
# free(user, ptr, bytes, device_id, stream).
CUDA_ALLOC_FN = CFUNCTYPE(c_void_p, c_void_p, c_size_t, c_int32, c_void_p)
CUDA_FREE_FN = CFUNCTYPE(None, c_void_p, c_void_p, c_size_t, c_int32, c_void_p)


class SaCudaAllocator(Structure):
    _fields_ = [("alloc", CUDA_ALLOC_FN), ("free", CUDA_FREE_FN), ("user", c_void_p)]


class SaContextOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("threads", c_int32),
        ("isa", c_enum),
        ("cuda_plugin_path", c_char_p),
        ("device", c_enum),
        ("device_id", c_int32),
        ("cuda_stream", c_void_p),
        ("cuda_allocator", SaCudaAllocator),
    ]


class SaPageOptions(Structure):
    _fields_ = [("page_size", c_int32), ("refine", c_int32)]


class SaLshOptions(Structure):
    _fields_ = [("rounds", c_int32), ("bits", c_int32), ("probes", c_int32),
                ("seed", c_uint64)]


class SaHnswOptions(Structure):
    _fields_ = [("m", c_int32), ("ef_construction", c_int32), ("ef_search", c_int32)]


class SaLearnedOptions(Structure):
    _fields_ = [("weights_path", c_char_p), ("layer", c_int32), ("rescore", c_int64)]


class SaIndexOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("kind", c_enum),
        ("num_kv_heads", c_int32),
        ("head_dim", c_int32),
        ("dtype", c_enum),
        ("capacity", c_int64),
        ("page", SaPageOptions),
        ("lsh", SaLshOptions),
        ("hnsw", SaHnswOptions),
        ("learned", SaLearnedOptions),
        ("borrow_keys", c_int32),
    ]


class SaSelectOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("top_k", c_int32),
        ("window", c_int32),
        ("sinks", c_int32),
        ("per_query_head", c_int32),
        ("mass_target", c_float),
        ("scale", c_float),
        ("query_positions", POINTER(c_int64)),
        ("query_segments", POINTER(c_int32)),
        ("key_segments", POINTER(c_int32)),
        ("cuda_stream", c_void_p),
        ("keys", POINTER(SaTensor)),
    ]


class SaAttendOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("scale", c_float),
        ("causal", c_int32),
        ("query_positions", POINTER(c_int64)),
        ("key_positions", POINTER(c_int64)),
        ("cuda_stream", c_void_p),
        ("slot_mass", POINTER(SaTensor)),
        ("mass_decay", c_float),
        # Appended (abi_version 3): per-KV-head positions; NULL here. The struct must match
        # the library's, or the by-value default would be overrun.
        ("head_key_positions", POINTER(c_int64)),
    ]


class SaPagedKV(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("k", SaTensor),
        ("v", SaTensor),
        ("page_table", SaTensor),
        ("seq_lens", SaTensor),
        ("slot_positions", SaTensor),
    ]


class SaEvictOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("budget", c_int64),
        ("incoming", c_int64),
        ("sinks", c_int32),
        ("window", c_int32),
        # Appended (the struct grew from 32 to 48 bytes): how scores rank slots.
        ("score_mean", c_int32),
        ("mass_decay", c_float),
        ("head_max", c_int32),
        ("recent_share", c_float),
        # Appended (abi_version 3): per-KV-head eviction; 0 here.
        ("per_head", c_int32),
        # Appended: SnapKV-style pooling of the ranked scores over positions.
        ("score_pool", c_int64),
    ]


# Opaque handles travel as void pointers.
ctx_p = c_void_p
index_p = c_void_p
status_t = c_enum
T = POINTER(SaTensor)

# The sa_api function table, in the header's order (entries are only appended).
# CFUNCTYPE (not PYFUNCTYPE): ctypes releases the GIL around every call, so
# Python threads can run selections and attention in parallel.
API_FIELDS = [
    ("struct_size", c_size_t),
    ("abi_version", c_uint32),
    ("version", CFUNCTYPE(c_uint32)),
    ("version_string", CFUNCTYPE(c_char_p)),
    ("last_error", CFUNCTYPE(c_char_p)),
    ("status_name", CFUNCTYPE(c_char_p, status_t)),
    ("isa_name", CFUNCTYPE(c_char_p, c_enum)),
    ("context_options_default", CFUNCTYPE(SaContextOptions)),
    ("context_create", CFUNCTYPE(status_t, POINTER(SaContextOptions), POINTER(ctx_p))),
    ("context_destroy", CFUNCTYPE(None, POINTER(ctx_p))),
    ("context_isa", CFUNCTYPE(c_enum, ctx_p)),
    ("context_threads", CFUNCTYPE(c_int32, ctx_p)),
    ("index_options_default", CFUNCTYPE(SaIndexOptions)),
    ("index_create", CFUNCTYPE(status_t, ctx_p, POINTER(SaIndexOptions), POINTER(index_p))),
    ("index_destroy", CFUNCTYPE(None, POINTER(index_p))),
    ("index_append", CFUNCTYPE(status_t, index_p, T)),
    ("index_update", CFUNCTYPE(status_t, index_p, POINTER(c_int32), c_int64, T,
                               POINTER(c_int64))),
    ("index_size", CFUNCTYPE(status_t, index_p, POINTER(c_int64))),
    ("select_options_default", CFUNCTYPE(SaSelectOptions)),
    ("select", CFUNCTYPE(status_t, index_p, T, POINTER(SaSelectOptions), T)),
    ("attend_options_default", CFUNCTYPE(SaAttendOptions)),
    ("attend", CFUNCTYPE(status_t, ctx_p, T, T, T, T, POINTER(SaAttendOptions), T, T)),
    ("evict_options_default", CFUNCTYPE(SaEvictOptions)),
    ("cache_evict", CFUNCTYPE(status_t, ctx_p, POINTER(SaEvictOptions), T, T, T,
                              POINTER(c_int64))),
    # abi_version 2
    ("index_truncate", CFUNCTYPE(status_t, index_p, c_int64)),
    ("index_clone", CFUNCTYPE(status_t, index_p, POINTER(index_p))),
    ("attend_paged", CFUNCTYPE(status_t, ctx_p, T, T, POINTER(SaPagedKV), T,
                               POINTER(SaAttendOptions), T, T)),
    ("select_batch", CFUNCTYPE(status_t, POINTER(index_p), c_int64, T, T,
                               POINTER(SaSelectOptions), POINTER(SaPagedKV), T)),
    # abi_version 3
    ("index_update_heads", CFUNCTYPE(status_t, index_p, POINTER(c_int32), c_int64, T,
                                     POINTER(c_int64))),
]


class SaApi(Structure):
    _fields_ = API_FIELDS


# Each option struct and the default function that reports its library size.
OPTION_STRUCTS = {
    "context_options_default": SaContextOptions,
    "index_options_default": SaIndexOptions,
    "select_options_default": SaSelectOptions,
    "attend_options_default": SaAttendOptions,
    "evict_options_default": SaEvictOptions,
}

sizeof = ctypes.sizeof
