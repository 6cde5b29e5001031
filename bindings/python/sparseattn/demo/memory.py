"""The memory figures of the fixed-budget mode: bytes malloc holds, resident set."""
import ctypes
import os


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


try:
    _mallinfo2 = ctypes.CDLL(None).mallinfo2  # glibc >= 2.33
    _mallinfo2.restype = _Mallinfo2
except AttributeError:
    _mallinfo2 = None


def malloc_in_use_mib():
    """Bytes malloc has handed out and not taken back (library and host), or -1."""
    if _mallinfo2 is None:
        return -1.0
    m = _mallinfo2()
    return (m.uordblks + m.hblkhd) / 1048576.0


def rss_mib():
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return -1.0
    return resident * os.sysconf("SC_PAGESIZE") / 1048576.0
