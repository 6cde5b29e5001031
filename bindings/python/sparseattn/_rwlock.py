"""A readers-writer lock: the header lets select, attend, evict and clone share
a handle between threads, while append, update, truncate and destroy need it
alone. ctypes releases the GIL during calls, so Python threads really do run
concurrently in the library; this lock gives them the header's rules."""
import contextlib
import threading


class RWLock:
    __slots__ = ("_cond", "_readers", "_writer")

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def shared(self):
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self):
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
