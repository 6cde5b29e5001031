"""Finding and loading libsparseattn, once per process.

The binding resolves one symbol, sa_get_api, and calls everything through the
function table it returns (as examples/demo_dlopen.c does): the table is the
ABI's own versioning mechanism (it is NULL when the library is older than the
ABI this binding mirrors, and struct_size says which entries exist), and every
entry's prototype is declared once in _abi.API_FIELDS instead of as argtypes
on each of the library's symbols.
"""
import ctypes
import ctypes.util
import os
import threading

from . import _abi
from .enums import Status
from .errors import BackendUnavailable, error_for

LIBRARY_NAMES = ("libsparseattn.so.0", "libsparseattn.so")

_lock = threading.Lock()
_loaded = None


class Library:
    """The loaded shared library and its function table."""

    def __init__(self, path):
        self.path = path
        try:
            self.cdll = ctypes.CDLL(path)
        except OSError as e:
            raise BackendUnavailable(f"cannot load {path}: {e}",
                                     Status.ERR_BACKEND_UNAVAILABLE) from None
        try:
            get_api = self.cdll.sa_get_api
        except AttributeError:
            raise BackendUnavailable(f"{path} has no sa_get_api: not libsparseattn",
                                     Status.ERR_BACKEND_UNAVAILABLE) from None
        get_api.restype = ctypes.POINTER(_abi.SaApi)
        get_api.argtypes = [ctypes.c_uint32]
        table = get_api(_abi.ABI_VERSION)
        if not table:
            raise BackendUnavailable(
                f"{path} is older than ABI version {_abi.ABI_VERSION} (sa_get_api returned NULL)",
                Status.ERR_BACKEND_UNAVAILABLE)
        self.api = table.contents
        if self.api.struct_size < ctypes.sizeof(_abi.SaApi):
            raise BackendUnavailable(
                f"{path}: function table of {self.api.struct_size} bytes, "
                f"the binding needs {ctypes.sizeof(_abi.SaApi)}", Status.ERR_BACKEND_UNAVAILABLE)
        self.version = int(self.api.version())
        major = self.version >> 16
        if major != _abi.VERSION_MAJOR:
            raise BackendUnavailable(
                f"{path} is version {self.api.version_string().decode()}, the binding is for "
                f"major version {_abi.VERSION_MAJOR}", Status.ERR_BACKEND_UNAVAILABLE)
        # An option struct the library knows as smaller than ours would ignore fields the
        # binding sets (an older library): refuse it rather than drop them silently.
        for name, struct in _abi.OPTION_STRUCTS.items():
            size = getattr(self.api, name)().struct_size
            if size < ctypes.sizeof(struct):
                raise BackendUnavailable(
                    f"{path}: {name}() reports struct_size {size}, the binding's struct has "
                    f"{ctypes.sizeof(struct)} bytes (library older than the header mirrored)",
                    Status.ERR_BACKEND_UNAVAILABLE)

    def check(self, status):
        """Raises the typed exception for a non-OK status, with sa_last_error()'s message.

        Must run on the thread that made the failing call, before any other call."""
        if status != Status.OK:
            message = self.api.last_error().decode("utf-8", "replace")
            if not message:
                message = self.api.status_name(status).decode()
            raise error_for(status, message)


def _candidates():
    env = os.environ.get("SPARSEATTN_LIB")
    if env:
        # An explicit choice: no fallback that could load another build silently.
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    found = [os.path.join(here, n) for n in LIBRARY_NAMES if os.path.exists(os.path.join(here, n))]
    found.append(LIBRARY_NAMES[0])
    system = ctypes.util.find_library("sparseattn")
    if system:
        found.append(system)
    return found


def library():
    """The process's Library, loaded on first use.

    Order: $SPARSEATTN_LIB (a file path), a library next to this package, the
    dynamic loader's search for libsparseattn.so.0, ctypes.util.find_library."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            failures = []
            for path in _candidates():
                try:
                    _loaded = Library(path)
                    break
                except BackendUnavailable as e:
                    failures.append(e.message)
            else:
                raise BackendUnavailable(
                    "libsparseattn not found (set SPARSEATTN_LIB to its path): "
                    + "; ".join(failures), Status.ERR_BACKEND_UNAVAILABLE)
    return _loaded


def load(path):
    """Loads the library from `path` now, instead of the default search (before any
    other call; a different library already loaded is refused)."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = Library(path)
        elif os.path.realpath(_loaded.path) != os.path.realpath(path):
            from .errors import InvalidArgument
            raise InvalidArgument(f"{_loaded.path} is already loaded; cannot switch to {path}",
                                  Status.ERR_INVALID_ARGUMENT)
    return _loaded
