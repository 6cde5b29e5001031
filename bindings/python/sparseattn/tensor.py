"""Tensor descriptors (sa_tensor) over the caller's memory, without copies.

Anything exposing __cuda_array_interface__ (cupy, torch CUDA tensors, numba)
becomes a CUDA tensor; anything exposing __array_interface__ (numpy arrays and
look-alikes) a CPU one; other objects with __array__ (torch CPU tensors) are
viewed through numpy.asarray. The descriptor points at the object's memory, so
what the library writes lands in the caller's array.
"""
import ctypes

import numpy as np

from . import _abi, _cuda
from .enums import Device, DType, Status, coerce
from .errors import DTypeError, InvalidArgument, ShapeError

ITEMSIZE = {DType.F32: 4, DType.F16: 2, DType.BF16: 2, DType.I32: 4, DType.I64: 8}
# Array-interface (kind, itemsize) -> dtype, for little-endian or byte-order-free typestrs.
_TYPESTR = {("f", 4): DType.F32, ("f", 2): DType.F16, ("i", 4): DType.I32, ("i", 8): DType.I64}
# numpy dtypes for outputs the binding allocates; bf16 has no numpy dtype: its bits as uint16.
NUMPY_DTYPE = {DType.F32: np.float32, DType.F16: np.float16, DType.BF16: np.uint16,
               DType.I32: np.int32, DType.I64: np.int64}


class Tensor:
    """A view of an array as the library's sa_tensor descriptor.

    Tensor(obj, dtype=None, device_id=None) reads obj's __cuda_array_interface__
    or __array_interface__ (strides in bytes become strides in elements) and
    keeps a reference to obj, so the memory stays valid while the Tensor lives.

    dtype overrides the element type for an array whose itemsize matches:
    bfloat16 has no numpy dtype, so a uint16/int16 array holding bf16 bits is
    passed as Tensor(bits, dtype="bf16") (torch: t.view(torch.int16)). Arrays
    whose dtype is named "bfloat16" (ml_dtypes) are recognised without it.
    device_id overrides the CUDA device ordinal, otherwise asked of the CUDA
    driver for the data pointer (or read from obj.device).

    Every call accepts a Tensor wherever it takes an array.
    """

    __slots__ = ("obj", "struct", "dtype", "device", "device_id", "shape", "strides",
                 "data_ptr", "readonly", "_base")

    def __init__(self, obj, dtype=None, device_id=None, name="tensor"):
        self.obj = obj
        self._base = obj  # the object whose interface was read (may be a numpy view of obj)
        override = None if dtype is None else coerce(DType, dtype, f"{name}: dtype")
        iface, device = _interface(obj, name)
        if iface is None:
            if not hasattr(obj, "__array__"):
                raise InvalidArgument(
                    f"{name}: expected an array (__array_interface__, __cuda_array_interface__ "
                    f"or __array__), got {type(obj).__name__}", Status.ERR_INVALID_ARGUMENT)
            try:
                self._base = np.asarray(obj)
            except Exception as e:  # torch refuses bf16 here
                raise InvalidArgument(
                    f"{name}: {type(obj).__name__} cannot be viewed as an array ({e}); for bf16 "
                    f"pass a 16-bit integer view with dtype='bf16'",
                    Status.ERR_INVALID_ARGUMENT) from None
            iface, device = self._base.__array_interface__, Device.CPU
        if iface.get("mask") is not None:
            raise InvalidArgument(f"{name}: masked arrays are not supported",
                                  Status.ERR_INVALID_ARGUMENT)
        data = iface.get("data")
        if not isinstance(data, tuple):
            if device == Device.CUDA:
                raise InvalidArgument(f"{name}: __cuda_array_interface__ without a data pointer",
                                      Status.ERR_INVALID_ARGUMENT)
            # A buffer object (or None: obj's own buffer): numpy resolves it and the offset.
            self._base = np.asarray(obj)
            iface = self._base.__array_interface__
            data = iface["data"]
        self.data_ptr = int(data[0] or 0)
        self.readonly = bool(data[1])
        self.device = device
        self.shape = tuple(int(n) for n in iface["shape"])
        rank = len(self.shape)
        if not 1 <= rank <= _abi.MAX_RANK:
            raise ShapeError(f"{name}: rank {rank}; the library takes 1 to {_abi.MAX_RANK} "
                             f"dimensions (shape {self.shape})", Status.ERR_SHAPE)
        if any(n < 0 for n in self.shape):
            raise ShapeError(f"{name}: negative extent in shape {self.shape}", Status.ERR_SHAPE)
        itemsize, self.dtype = _element_type(obj, iface["typestr"], override, name)
        self.strides = _element_strides(iface.get("strides"), self.shape, itemsize, name)
        if device == Device.CUDA:
            self.device_id = _device_ordinal(obj, self.data_ptr, device_id)
        else:
            self.device_id = 0 if device_id is None else int(device_id)
        self.struct = _abi.SaTensor(
            ctypes.c_void_p(self.data_ptr or None), int(self.dtype), int(self.device),
            self.device_id, rank,
            (ctypes.c_int64 * 4)(*(self.shape + (0,) * (4 - rank))),
            (ctypes.c_int64 * 4)(*(self.strides + (0,) * (4 - rank))))

    @property
    def size(self):
        """Number of elements."""
        n = 1
        for e in self.shape:
            n *= e
        return n

    def pointer(self):
        """A ctypes pointer to the descriptor (valid while this Tensor lives)."""
        return ctypes.pointer(self.struct)

    def __repr__(self):
        return (f"Tensor(shape={self.shape}, dtype={self.dtype.name.lower()}, "
                f"device={self.device.name.lower()}:{self.device_id}, data=0x{self.data_ptr:x})")


def _interface(obj, name):
    """(interface dict, Device) or (None, None) when obj exposes neither interface."""
    try:
        cai = obj.__cuda_array_interface__
    except AttributeError:
        cai = None
    except Exception as e:  # torch refuses bf16 here with a TypeError
        raise DTypeError(
            f"{name}: __cuda_array_interface__ failed ({e}); pass a 16-bit integer view with "
            f"dtype='bf16', e.g. Tensor(t.view(torch.int16), dtype='bf16')",
            Status.ERR_DTYPE) from None
    if cai is not None:
        return cai, Device.CUDA
    try:
        return obj.__array_interface__, Device.CPU
    except AttributeError:
        return None, None


def _element_type(obj, typestr, override, name):
    """(itemsize, DType) from an array-interface typestr and an optional override."""
    try:
        order, kind, itemsize = typestr[0], typestr[1], int(typestr[2:])
    except (IndexError, ValueError, TypeError):
        raise DTypeError(f"{name}: malformed typestr {typestr!r}", Status.ERR_DTYPE) from None
    if order == ">" and itemsize > 1:
        raise DTypeError(f"{name}: big-endian data ({typestr})", Status.ERR_DTYPE)
    if override is not None:
        if ITEMSIZE[override] != itemsize:
            raise DTypeError(f"{name}: dtype {override.name.lower()} needs "
                             f"{ITEMSIZE[override]}-byte elements, the array has {itemsize}-byte "
                             f"ones ({typestr})",
                             Status.ERR_DTYPE)
        return itemsize, override
    if kind == "V" and itemsize == 2 and str(getattr(obj, "dtype", "")) == "bfloat16":
        return itemsize, DType.BF16
    dtype = _TYPESTR.get((kind, itemsize))
    if dtype is None:
        raise DTypeError(f"{name}: element type {typestr} is not f32, f16, i32 or i64 (for bf16 "
                         f"pass a 2-byte integer array with dtype='bf16')", Status.ERR_DTYPE)
    return itemsize, dtype


def _element_strides(strides, shape, itemsize, name):
    """Byte strides -> element strides, in the library's convention (all zero = contiguous).

    A dimension of extent <= 1 is never stepped over, so its stride is set to the
    contiguous one: the descriptor then never has all-zero strides by accident."""
    rank = len(shape)
    if strides is None:
        return (0,) * rank
    if len(strides) != rank:
        raise ShapeError(f"{name}: {len(strides)} strides for rank {rank}", Status.ERR_SHAPE)
    out = []
    for i, (extent, stride) in enumerate(zip(shape, strides)):
        if extent <= 1:
            contiguous = 1
            for e in shape[i + 1:]:
                contiguous *= max(e, 1)
            out.append(contiguous)
            continue
        if stride < 0:
            raise ShapeError(f"{name}: negative stride in dimension {i} (strides {tuple(strides)} "
                             f"bytes); the library takes strides >= 0", Status.ERR_SHAPE)
        if stride % itemsize:
            raise ShapeError(f"{name}: stride {stride} bytes in dimension {i} is not a multiple "
                             f"of the {itemsize}-byte element", Status.ERR_SHAPE)
        out.append(stride // itemsize)
    if all(s == 0 for s in out) and any(e > 1 for e in shape):
        raise ShapeError(f"{name}: every stride is 0 (a broadcast array), which the library "
                         f"reads as contiguous; pass a materialised copy", Status.ERR_SHAPE)
    return tuple(out)


def _device_ordinal(obj, address, override):
    if override is not None:
        return int(override)
    ordinal = _cuda.pointer_device(address)
    if ordinal is not None:
        return ordinal
    device = getattr(obj, "device", None)
    for attr in ("id", "index"):  # cupy: device.id; torch: device.index
        value = getattr(device, attr, None)
        if isinstance(value, int):
            return value
    return 0


def as_tensor(x, name, writable=False):
    """x as a Tensor (x itself when it is one). Outputs (writable) must be writable
    arrays whose elements do not overlap."""
    t = x if isinstance(x, Tensor) else Tensor(x, name=name)
    if writable:
        if isinstance(t._base, np.ndarray) and t._base is not t.obj and t._base.flags.owndata:
            # numpy.asarray had to copy: results written there would never reach obj.
            raise InvalidArgument(f"{name}: {type(t.obj).__name__} cannot be viewed without a "
                                  f"copy, so it cannot receive an output",
                                  Status.ERR_INVALID_ARGUMENT)
        if t.readonly:
            raise InvalidArgument(f"{name}: read-only array given as an output",
                                  Status.ERR_INVALID_ARGUMENT)
        if any(s == 0 and e > 1 for s, e in zip(t.strides, t.shape)) and any(t.strides):
            raise InvalidArgument(f"{name}: an output with a zero stride would write one element "
                                  f"several times", Status.ERR_INVALID_ARGUMENT)
    return t


def optional_tensor(x, name, writable=False):
    """A Tensor, or None for None."""
    return None if x is None else as_tensor(x, name, writable)


def tensor_pointer(t):
    """ctypes pointer to t's descriptor, or None (NULL) for None."""
    return None if t is None else t.pointer()


def absent():
    """SA_TENSOR_ABSENT: an optional tensor left out (rank 0)."""
    return _abi.SaTensor()


def bf16(x, device_id=None):
    """A 2-byte integer (or float16-typed) array's bits as a bfloat16 Tensor."""
    return Tensor(x, dtype=DType.BF16, device_id=device_id, name="bf16")


def host_array(x, dtype, name, length=None, min_value=None):
    """Host metadata passed to C as a raw pointer (positions, segments, slots):
    x as a contiguous numpy array of `dtype` (a copy only when x is not one
    already), checked to hold integers, `length` values and values that fit."""
    a = np.asarray(x)
    if a.ndim != 1:
        a = a.reshape(-1) if a.ndim > 1 else a.reshape(1)
    if a.size and a.dtype.kind not in "iu":
        raise DTypeError(f"{name}: integers expected, got {a.dtype}", Status.ERR_DTYPE)
    if length is not None and a.size != length:
        raise ShapeError(f"{name}: {a.size} values, expected {length}", Status.ERR_SHAPE)
    info = np.iinfo(dtype)
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < info.min or hi > info.max:
            raise InvalidArgument(f"{name}: values outside {np.dtype(dtype).name}",
                                  Status.ERR_INVALID_ARGUMENT)
        if min_value is not None and lo < min_value:
            raise InvalidArgument(f"{name}: value {lo} < {min_value}", Status.ERR_INVALID_ARGUMENT)
    return np.ascontiguousarray(a, dtype=dtype)


def c_pointer(a, ctype):
    """A ctypes pointer to a numpy array's first element (the caller keeps `a` alive)."""
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def new_array(shape, dtype):
    """A zeroed host array for an output the caller did not pass."""
    from .errors import OutOfMemory
    try:
        return np.zeros(shape, dtype=NUMPY_DTYPE[dtype])
    except MemoryError:
        raise OutOfMemory(f"cannot allocate an output of shape {tuple(shape)}",
                          Status.ERR_OUT_OF_MEMORY) from None
    except ValueError as e:  # a negative dimension from a malformed input shape
        raise ShapeError(f"cannot allocate an output of shape {tuple(shape)}: {e}",
                         Status.ERR_SHAPE) from None


def host_output(like, shape, dtype, call):
    """A new host array for an output left out; CUDA inputs need the caller's out=."""
    from .errors import Unsupported
    if like.device != Device.CPU:
        raise Unsupported(f"{call}: pass out= for CUDA inputs (the binding allocates host "
                          f"arrays only)", Status.ERR_UNSUPPORTED)
    return new_array(shape, dtype)
