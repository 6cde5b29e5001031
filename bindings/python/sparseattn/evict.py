"""Context.cache_evict: which cache slots to free to stay within a budget (sa_cache_evict)."""
import ctypes

from . import _options
from ._handles import checked
from ._library import library
from .enums import DType
from .tensor import as_tensor, host_output


def cache_evict(self, scores, positions, budget, *, incoming=None, sinks=None, window=None,
                out=None):
    """Chooses slots to free so that occupied + incoming <= budget (sa_cache_evict).

    scores: f32 [n_slots] or [H, n_slots] (summed over H): higher = more useful,
      e.g. attend's slot_mass. positions: i64 [n_slots], each slot's token
      position (-1 = empty).
    budget: slots the cache may hold after the incoming tokens (>= sinks +
      window + incoming). incoming (default 1), sinks (4), window (64): library
      defaults from sa_evict_options_default(); 0 incoming compresses a prompt.
    out: i32 [cap] to receive the slots; allocated with cap = n_slots when None.

    Returns the freed slots, out[:n_freed]: first the empty slots the incoming
    tokens can use (ascending), then occupied slots to evict, lowest score
    first. Sinks and window positions are never freed.
    """
    lib = library()
    opt = _options.evict_options(budget, incoming, sinks, window)
    st = as_tensor(scores, "scores")
    pt = as_tensor(positions, "positions")
    if out is None:
        out = host_output(pt, (pt.shape[0],), DType.I32, "cache_evict")
    ft = as_tensor(out, "out", writable=True)
    n = ctypes.c_int64(0)
    with self._handle.lock.shared():
        lib.check(lib.api.cache_evict(checked(self._handle, "context"), ctypes.byref(opt),
                                      st.pointer(), pt.pointer(), ft.pointer(), ctypes.byref(n)))
    return out[:n.value]
