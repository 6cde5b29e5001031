"""Typed exceptions: one class per sa_status, all under SparseAttnError.

Failures reported by the library carry its status and sa_last_error() message;
arguments the binding refuses before calling C raise the class of the status
the library would use, with a message naming the Python argument. Each class
also derives from the closest built-in exception (ValueError, TypeError,
MemoryError, ...) so generic handlers keep working."""
from .enums import Status


class SparseAttnError(Exception):
    """A failed sparseattn call.

    Attributes:
        status: the Status code (an IntEnum mirroring sa_status).
        message: the library's message (sa_last_error) or the binding's.
    """
    default_status = Status.ERR_INTERNAL

    def __init__(self, message, status=None):
        self.status = Status(self.default_status if status is None else status)
        self.message = str(message)
        super().__init__(f"{self.status_name}: {self.message}")

    @property
    def status_name(self):
        """The header's name of the status, e.g. "SA_ERR_SHAPE"."""
        return "SA_" + self.status.name

    def __reduce__(self):
        return (type(self), (self.message, self.status))


class NullPointer(SparseAttnError, ValueError):
    """SA_ERR_NULL_POINTER: a required argument is missing."""
    default_status = Status.ERR_NULL_POINTER


class InvalidArgument(SparseAttnError, ValueError):
    """SA_ERR_INVALID_ARGUMENT: a value outside its documented domain."""
    default_status = Status.ERR_INVALID_ARGUMENT


class DTypeError(SparseAttnError, TypeError):
    """SA_ERR_DTYPE: a tensor has a dtype the call does not take."""
    default_status = Status.ERR_DTYPE


class ShapeError(SparseAttnError, ValueError):
    """SA_ERR_SHAPE: rank, shape or strides do not match."""
    default_status = Status.ERR_SHAPE


class OutOfRange(SparseAttnError, IndexError):
    """SA_ERR_OUT_OF_RANGE: an index or slot outside the cache."""
    default_status = Status.ERR_OUT_OF_RANGE


class SizeOverflow(SparseAttnError, OverflowError):
    """SA_ERR_OVERFLOW: a size computation overflows."""
    default_status = Status.ERR_OVERFLOW


class StructSizeError(SparseAttnError):
    """SA_ERR_STRUCT_SIZE: an option struct's struct_size is too small."""
    default_status = Status.ERR_STRUCT_SIZE


class OutOfMemory(SparseAttnError, MemoryError):
    """SA_ERR_OUT_OF_MEMORY."""
    default_status = Status.ERR_OUT_OF_MEMORY


class Unsupported(SparseAttnError):
    """SA_ERR_UNSUPPORTED: a valid request the library does not implement."""
    default_status = Status.ERR_UNSUPPORTED


class BackendUnavailable(SparseAttnError):
    """SA_ERR_BACKEND_UNAVAILABLE: e.g. a CUDA tensor and no usable plugin."""
    default_status = Status.ERR_BACKEND_UNAVAILABLE


class FormatError(SparseAttnError, ValueError):
    """SA_ERR_FORMAT: a malformed weights file."""
    default_status = Status.ERR_FORMAT


class InternalError(SparseAttnError):
    """SA_ERR_INTERNAL: a bug in the library; please report the message."""
    default_status = Status.ERR_INTERNAL


BY_STATUS = {cls.default_status: cls for cls in (
    NullPointer, InvalidArgument, DTypeError, ShapeError, OutOfRange, SizeOverflow,
    StructSizeError, OutOfMemory, Unsupported, BackendUnavailable, FormatError,
    InternalError)}


def error_for(status, message):
    """The exception instance for a non-OK status (an unknown code -> InternalError)."""
    try:
        status = Status(status)
    except ValueError:
        return InternalError(f"unknown status {status}: {message}")
    return BY_STATUS.get(status, InternalError)(message, status)
