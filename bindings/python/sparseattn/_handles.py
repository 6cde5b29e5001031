"""Owners of the library's raw handles.

They are kept apart from the public Context and Index so that they never sit
in a reference cycle: an index handle holds its context handle, nothing holds
an index handle but its Index, so even when user objects form a cycle the
garbage collector frees an index before the context it needs (the header:
the context must outlive its indexes)."""
import ctypes
import threading

from ._library import library
from ._rwlock import RWLock
from .enums import Status
from .errors import InvalidArgument


class ContextHandle:
    """Owns an sa_context. close() ends its use through the Context; the C
    context itself is destroyed once no open index needs it any more."""
    __slots__ = ("ptr", "lock", "closed", "open_indexes", "count_lock", "_destroy", "keep")

    def __init__(self, ptr):
        self.ptr = ptr
        self.keep = None  # what the C context calls back into (cuda_allocator)
        self.lock = RWLock()
        self.closed = False
        self.open_indexes = 0
        self.count_lock = threading.Lock()
        self._destroy = library().api.context_destroy  # no global lookups at shutdown

    def close(self):
        with self.lock.exclusive():  # waits for calls in flight on other threads
            with self.count_lock:
                self.closed = True
                if self.open_indexes == 0:
                    self._release()

    def index_opened(self):
        with self.count_lock:
            self.open_indexes += 1

    def index_closed(self):
        with self.count_lock:
            self.open_indexes -= 1
            if self.closed and self.open_indexes == 0:
                self._release()

    def _release(self):
        if self.ptr.value:
            self._destroy(ctypes.byref(self.ptr))
            self.ptr.value = None

    def __del__(self):
        # Unreachable: no index handle holds this one any more.
        self._release()


class IndexHandle:
    """Owns an sa_index and a reference to its context's handle."""
    __slots__ = ("ptr", "lock", "context", "_destroy")

    def __init__(self, ptr, context):
        self.ptr = ptr
        self.lock = RWLock()
        self.context = context
        context.index_opened()
        self._destroy = library().api.index_destroy

    @property
    def closed(self):
        return not self.ptr.value

    def close(self):
        with self.lock.exclusive():
            self._release()

    def _release(self):
        if self.ptr.value:
            self._destroy(ctypes.byref(self.ptr))
            self.ptr.value = None
            self.context.index_closed()

    def __del__(self):
        self._release()


class HandleOwner:
    """What Context and Index share over their handle (self._handle): closed and
    the with-block protocol. Each defines close() with its own effect."""
    __slots__ = ()

    @property
    def closed(self):
        return self._handle.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def checked(handle, what):
    """handle's raw pointer, or InvalidArgument when it was closed."""
    if handle.closed or not handle.ptr.value:
        raise InvalidArgument(f"the {what} is closed", Status.ERR_INVALID_ARGUMENT)
    return handle.ptr
