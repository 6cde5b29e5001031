"""The header's enums as IntEnums. Wherever a call takes one, a member, its
integer value or its lower-case name ("f16", "page", "avx2", "cuda") is accepted."""
import enum


class Status(enum.IntEnum):
    """sa_status: what a failed call returns."""
    OK = 0
    ERR_NULL_POINTER = 1
    ERR_INVALID_ARGUMENT = 2
    ERR_DTYPE = 3
    ERR_SHAPE = 4
    ERR_OUT_OF_RANGE = 5
    ERR_OVERFLOW = 6
    ERR_STRUCT_SIZE = 7
    ERR_OUT_OF_MEMORY = 8
    ERR_UNSUPPORTED = 9
    ERR_BACKEND_UNAVAILABLE = 10
    ERR_FORMAT = 11
    ERR_INTERNAL = 12


class DType(enum.IntEnum):
    """sa_dtype: element type of a tensor."""
    F32 = 0
    F16 = 1
    BF16 = 2
    I32 = 3
    I64 = 4


class Device(enum.IntEnum):
    """sa_device_type: where a tensor's memory lives."""
    CPU = 0
    CUDA = 1


class Isa(enum.IntEnum):
    """sa_isa: the instruction set a context's kernels use (or a cap on it)."""
    SCALAR = 0
    NEON = 1
    AVX2 = 2
    AVX512 = 3
    AUTO = 100


class SelectorKind(enum.IntEnum):
    """sa_selector_kind: how an index chooses keys."""
    EXACT = 0
    PAGE = 1
    LSH = 2
    HNSW = 3
    LEARNED = 4
    INDEXER = 5


def coerce(enum_type, value, what):
    """`value` as a member of `enum_type`: a member, an int or a name (any case).

    Raises InvalidArgument naming `what` for anything else."""
    from .errors import InvalidArgument
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        try:
            return enum_type[value.upper()]
        except KeyError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum_type(value)
        except ValueError:
            pass
    names = ", ".join(m.name.lower() for m in enum_type)
    raise InvalidArgument(f"{what}: {value!r} is not one of {names}",
                          status=Status.ERR_INVALID_ARGUMENT)
