"""sparseattn: sparse attention over long KV caches, over the C library's ABI.

Pure Python (ctypes) over libsparseattn.so.0. Arrays pass without copies:
numpy arrays and anything exposing __array_interface__ (CPU) or
__cuda_array_interface__ (CUDA: cupy, torch), described to the library by
pointer, dtype, shape and strides. bfloat16 arrays are passed as their uint16
bits with Tensor(bits, dtype="bf16") (or sparseattn.bf16(bits)).

    import sparseattn as sa
    with sa.Context() as ctx, sa.Index(ctx, num_kv_heads=8, head_dim=128) as ix:
        ix.append(keys)                                  # [n, 8, 128]
        idx = ix.select(q, top_k=256)                    # i32 [1, 8, 4 + 64 + 256]
        out = ctx.attend(q, keys, values, idx)           # f32 [1, 32, 128]

The library is found at $SPARSEATTN_LIB, next to this package, then through
the dynamic loader. Failures raise SparseAttnError subclasses carrying the
library's status and message.
"""
from . import _abi
from ._library import library
from ._library import load as _load
from ._options import defaults
from .batch import select_batch
from .context import Context
from .enums import Device, DType, Isa, SelectorKind, Status, coerce
from .errors import (BackendUnavailable, DTypeError, FormatError, InternalError, InvalidArgument,
                     NullPointer, OutOfMemory, OutOfRange, ShapeError, SizeOverflow,
                     SparseAttnError, StructSizeError, Unsupported)
from .index import Index
from .paged import PagedKV
from .tensor import Tensor, bf16

ABI_VERSION = _abi.ABI_VERSION


def version():
    """The library's version, (major << 16) | (minor << 8) | patch (sa_version)."""
    return int(library().api.version())


def version_string():
    """The library's version as "major.minor.patch" (sa_version_string)."""
    return library().api.version_string().decode()


def version_info():
    """The library's version as a (major, minor, patch) tuple."""
    v = version()
    return (v >> 16, (v >> 8) & 0xFF, v & 0xFF)


def status_name(status):
    """The header's name of a status code, e.g. "SA_ERR_SHAPE" (sa_status_name)."""
    return library().api.status_name(int(status)).decode()


def isa_name(isa):
    """The name of an instruction set, e.g. "avx2" (sa_isa_name)."""
    return library().api.isa_name(int(coerce(Isa, isa, "isa"))).decode()


def last_error():
    """sa_last_error(): the message of the last failure on this thread ("" if none).
    The binding's exceptions already carry it; this is the raw call."""
    return library().api.last_error().decode("utf-8", "replace")


def load_library(path):
    """Loads libsparseattn from `path` (instead of $SPARSEATTN_LIB and the default
    search); call it before anything else."""
    return _load(path).path


def library_path():
    """The path (or loader name) the library was loaded from."""
    return library().path


__all__ = [
    "ABI_VERSION", "BackendUnavailable", "Context", "DType", "DTypeError", "Device",
    "FormatError", "Index", "InternalError", "InvalidArgument", "Isa", "NullPointer",
    "OutOfMemory", "OutOfRange", "PagedKV", "SelectorKind", "ShapeError", "SizeOverflow",
    "SparseAttnError", "Status", "StructSizeError", "Tensor", "Unsupported", "bf16", "defaults",
    "isa_name", "last_error", "library_path", "load_library", "select_batch", "status_name",
    "version",    "version_info", "version_string",
]
