"""Context.cache_evict: which cache slots to free to stay within a budget (sa_cache_evict)."""
import ctypes

from . import _options
from ._handles import checked
from ._library import library
from .enums import DType
from .tensor import as_tensor, host_output


def cache_evict(self, scores, positions, budget, *, incoming=None, sinks=None, window=None,
                score_mean=None, mass_decay=None, head_max=None, recent_share=None, score_pool=None,
                out=None):
    """Chooses slots to free so that occupied + incoming <= budget (sa_cache_evict).

    scores: f32 [n_slots] or [H, n_slots] (summed over H): higher = more useful,
      e.g. attend's slot_mass. positions: i64 [n_slots], each slot's token
      position (-1 = empty).
    budget: slots the cache may hold after the incoming tokens (>= sinks +
      window + incoming). incoming (default 1), sinks (4), window (64): library
      defaults from sa_evict_options_default(); 0 incoming compresses a prompt.
    How scores rank slots (None = the library's default):
      score_mean (default True): scores are attend's slot_mass, ranked per step
        seen (divided by sum_{i < age} mass_decay**i, age = max_pos - position
        + 1); False: as given (a host's own scores, the plain H2O sum).
      mass_decay (default 0.99, attend's default): the decay slot_mass was
        accumulated with, in [0, 1].
      head_max (default False): [H, n_slots] scores rank a slot by its best
        row (KV head) instead of the sum.
      recent_share (default 0.875), in [0, 1]: the most recent
        floor(recent_share * (budget - incoming - sinks)) positions are
        protected too when more than window (0: window alone; 1: StreamingLLM).
      score_pool (default 0), >= 0: a slot ranks by the best ranked score
        among the occupied slots within score_pool positions of its own
        (SnapKV's pooling); 0: its own score.
      Out-of-range or NaN mass_decay / recent_share, a negative score_pool
        raise InvalidArgument.
    out: i32 [cap] to receive the slots; allocated with cap = n_slots when None.

    Returns the freed slots, out[:n_freed]: first the empty slots the incoming
    tokens can use (ascending), then occupied slots to evict, lowest score
    first. Sinks and protected recent positions are never freed.
    """
    lib = library()
    opt = _options.evict_options(budget, incoming, sinks, window, score_mean, mass_decay,
                                 head_max, recent_share, score_pool)
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
