"""Option structs built from keyword arguments.

Each builder starts from the library's sa_*_options_default() (so struct_size
and every default come from the library, never from constants copied here)
and sets only the fields the caller passed (None = the library's default).
Raw host pointers in the options (positions, segments) are checked for length
here, since C cannot check them; the arrays they point into are returned so
the caller keeps them alive for the call."""
import ctypes

import numpy as np

from . import _abi
from ._library import library
from .enums import DType, Isa, SelectorKind, Status, coerce
from .errors import InvalidArgument
from .tensor import as_tensor, c_pointer, host_array


_RANGES = {ctypes.c_int32: (-2**31, 2**31 - 1), ctypes.c_int64: (-2**63, 2**63 - 1),
           ctypes.c_uint64: (0, 2**64 - 1), ctypes.c_size_t: (0, 2**64 - 1)}


def set_int(struct, field, value, name=None):
    """struct.field = int(value), refusing values the C field cannot hold (ctypes
    would wrap them silently)."""
    ctype = dict(struct._fields_)[field]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{name or field}: an integer expected, got {value!r}",
                              Status.ERR_INVALID_ARGUMENT)
    lo, hi = _RANGES[ctype]
    if not lo <= int(value) <= hi:
        raise InvalidArgument(f"{name or field}: {value} does not fit the C field ({lo} .. {hi})",
                              Status.ERR_INVALID_ARGUMENT)
    setattr(struct, field, int(value))


def stream_handle(stream, name="cuda_stream"):
    """A cudaStream_t as a void pointer value: an int address, None (NULL), or a
    stream object of cupy (.ptr) or torch (.cuda_stream)."""
    if stream is None:
        return None
    for attr in ("cuda_stream", "ptr"):
        value = getattr(stream, attr, None)
        if isinstance(value, int):
            return value or None
    if isinstance(stream, int) and not isinstance(stream, bool):
        return stream or None
    raise InvalidArgument(f"{name}: expected an int address or a cupy/torch stream, got "
                          f"{type(stream).__name__}", Status.ERR_INVALID_ARGUMENT)


def _as_dict(struct):
    out = {}
    for field, _ in struct._fields_:
        value = getattr(struct, field)
        if isinstance(value, ctypes.Structure):
            value = _as_dict(value)
        elif isinstance(value, ctypes._Pointer):
            value = None if not value else ctypes.addressof(value.contents)
        elif isinstance(value, ctypes._CFuncPtr):
            value = ctypes.cast(value, ctypes.c_void_p).value
        elif isinstance(value, bytes):
            value = value.decode()
        out[field] = value
    return out


def defaults(which):
    """The library's defaults for one option struct, as a dict.

    which: "context", "index", "select", "attend" or "evict" (the
    sa_<which>_options_default() call)."""
    name = f"{which}_options_default"
    if name not in _abi.OPTION_STRUCTS:
        raise InvalidArgument(f"which: {which!r} is not one of context, index, select, attend, "
                              f"evict", Status.ERR_INVALID_ARGUMENT)
    return _as_dict(getattr(library().api, name)())


def context_options(threads=None, isa=None, cuda_plugin_path=None, device=None, device_id=None,
                    cuda_stream=None):
    from .enums import Device
    o = library().api.context_options_default()
    if threads is not None:
        set_int(o, "threads", threads)
    if isa is not None:
        o.isa = coerce(Isa, isa, "isa")
    if cuda_plugin_path is not None:
        o.cuda_plugin_path = str(cuda_plugin_path).encode()  # copied by sa_context_create
    if device is not None:
        o.device = coerce(Device, device, "device")
    if device_id is not None:
        set_int(o, "device_id", device_id)
    if cuda_stream is not None:
        o.cuda_stream = stream_handle(cuda_stream)
    return o


def cuda_allocator(pair):
    """An SaCudaAllocator calling pair = (alloc, free): alloc(bytes, device_id,
    stream) -> int device address (0: none), free(ptr, bytes, device_id,
    stream). Streams are int cudaStream_t values. The caller keeps the
    returned struct alive as long as the C context (its callbacks live in it)."""
    from ._abi import CUDA_ALLOC_FN, CUDA_FREE_FN, SaCudaAllocator
    try:
        alloc, free = pair
    except (TypeError, ValueError):
        raise TypeError("cuda_allocator: expected a pair (alloc, free) of callables") from None
    if not callable(alloc) or not callable(free):
        raise TypeError("cuda_allocator: expected a pair (alloc, free) of callables")

    def c_alloc(_user, nbytes, device_id, stream):
        return int(alloc(int(nbytes), int(device_id), int(stream or 0)) or 0) or None

    def c_free(_user, ptr, nbytes, device_id, stream):
        free(int(ptr or 0), int(nbytes), int(device_id), int(stream or 0))

    return SaCudaAllocator(CUDA_ALLOC_FN(c_alloc), CUDA_FREE_FN(c_free), None)


# Keyword -> (sub-struct or None, field) for sa_index_options.
INDEX_FIELDS = {
    "capacity": (None, "capacity"),
    "page_size": ("page", "page_size"),
    "refine": ("page", "refine"),
    "lsh_rounds": ("lsh", "rounds"),
    "lsh_bits": ("lsh", "bits"),
    "lsh_probes": ("lsh", "probes"),
    "lsh_seed": ("lsh", "seed"),
    "hnsw_m": ("hnsw", "m"),
    "ef_construction": ("hnsw", "ef_construction"),
    "ef_search": ("hnsw", "ef_search"),
    "layer": ("learned", "layer"),
    "rescore": ("learned", "rescore"),
}


def index_options(num_kv_heads, head_dim, kind=None, dtype=None, borrow_keys=None,
                  weights_path=None, **fields):
    o = library().api.index_options_default()
    set_int(o, "num_kv_heads", num_kv_heads)
    set_int(o, "head_dim", head_dim)
    if kind is not None:
        o.kind = coerce(SelectorKind, kind, "kind")
    if dtype is not None:
        o.dtype = coerce(DType, dtype, "dtype")
    if borrow_keys is not None:
        o.borrow_keys = 1 if borrow_keys else 0
    if weights_path is not None:
        o.learned.weights_path = str(weights_path).encode()  # read during sa_index_create
    for key, value in fields.items():
        if key not in INDEX_FIELDS:
            raise TypeError(f"unexpected index option {key!r}")
        if value is None:
            continue
        sub, field = INDEX_FIELDS[key]
        target = o if sub is None else getattr(o, sub)
        set_int(target, field, value, key)
    return o


def select_options(n_q, n_slots, top_k=None, window=None, sinks=None, per_query_head=None,
                   mass_target=None, scale=None, query_positions=None, query_segments=None,
                   key_segments=None, cuda_stream=None, keys=None):
    """(sa_select_options, objects to keep alive, output width sinks+window+top_k)."""
    o = library().api.select_options_default()
    keep = []
    for field, value in (("top_k", top_k), ("window", window), ("sinks", sinks)):
        if value is not None:
            set_int(o, field, value)
    if per_query_head is not None:
        o.per_query_head = 1 if per_query_head else 0
    if mass_target is not None:
        o.mass_target = float(mass_target)
    if scale is not None:
        o.scale = float(scale)
    if query_positions is not None:
        a = host_array(query_positions, np.int64, "query_positions", n_q)
        keep.append(a)
        o.query_positions = c_pointer(a, ctypes.c_int64)
    if (query_segments is None) != (key_segments is None):
        raise InvalidArgument("query_segments and key_segments: pass both or neither",
                              Status.ERR_INVALID_ARGUMENT)
    if query_segments is not None:
        qs = host_array(query_segments, np.int32, "query_segments", n_q)
        ks = host_array(key_segments, np.int32, "key_segments", n_slots)
        keep += [qs, ks]
        o.query_segments = c_pointer(qs, ctypes.c_int32)
        o.key_segments = c_pointer(ks, ctypes.c_int32)
    if cuda_stream is not None:
        o.cuda_stream = stream_handle(cuda_stream)
    if keys is not None:
        t = as_tensor(keys, "keys")
        keep.append(t)
        o.keys = t.pointer()
    # The widest list sa_select may write; a bad value is the library's to refuse.
    width = max(int(o.sinks), 0) + max(int(o.window), 0) + max(int(o.top_k), 0)
    return o, keep, width


def attend_options(n_q, n_kv, scale=None, causal=None, query_positions=None, key_positions=None,
                   cuda_stream=None, slot_mass=None, mass_decay=None):
    """(sa_attend_options, objects to keep alive). n_kv None: key_positions not allowed
    (paged attention, where slot_positions replaces it; C refuses it there)."""
    o = library().api.attend_options_default()
    keep = []
    if scale is not None:
        o.scale = float(scale)
    if causal is not None:
        o.causal = 1 if causal else 0
    if query_positions is not None:
        a = host_array(query_positions, np.int64, "query_positions", n_q)
        keep.append(a)
        o.query_positions = c_pointer(a, ctypes.c_int64)
    if key_positions is not None:
        a = host_array(key_positions, np.int64, "key_positions", n_kv)
        keep.append(a)
        o.key_positions = c_pointer(a, ctypes.c_int64)
    if cuda_stream is not None:
        o.cuda_stream = stream_handle(cuda_stream)
    if slot_mass is not None:
        t = as_tensor(slot_mass, "slot_mass", writable=True)
        keep.append(t)
        o.slot_mass = t.pointer()
    if mass_decay is not None:
        o.mass_decay = float(mass_decay)
    return o, keep


def evict_options(budget, incoming=None, sinks=None, window=None, score_mean=None,
                  mass_decay=None, head_max=None, recent_share=None, score_pool=None):
    o = library().api.evict_options_default()
    set_int(o, "budget", budget)
    for field, value in (("incoming", incoming), ("sinks", sinks), ("window", window),
                         ("score_pool", score_pool)):
        if value is not None:
            set_int(o, field, value)
    for field, value in (("score_mean", score_mean), ("head_max", head_max)):
        if value is not None:
            setattr(o, field, 1 if value else 0)
    for field, value in (("mass_decay", mass_decay), ("recent_share", recent_share)):
        if value is not None:
            setattr(o, field, float(value))  # [0, 1]: the library refuses others
    return o
