"""Index: the selection state over one layer's cached keys (sa_index)."""
import ctypes

import numpy as np

from . import _options
from ._handles import HandleOwner, IndexHandle, checked
from ._library import library
from .enums import DType, SelectorKind, Status
from .errors import InvalidArgument, ShapeError
from .tensor import as_tensor, c_pointer, host_array, host_output


class Index(HandleOwner):
    """A selection index over a KV cache's keys (sa_index).

    Index(context, num_kv_heads, head_dim, kind=None, dtype=None, *,
          capacity=None, borrow_keys=None, page_size=None, refine=None,
          lsh_rounds=None, lsh_bits=None, lsh_probes=None, lsh_seed=None,
          hnsw_m=None, ef_construction=None, ef_search=None,
          weights_path=None, layer=None, rescore=None)

    kind: SelectorKind or "exact", "page", "lsh", "hnsw", "learned", "indexer".
    dtype: what the index stores its keys as ("f32", "f16", "bf16").
    Every option left None takes sa_index_options_default()'s value (exact
    selector, f16, page_size 16, refine on, 8 LSH rounds, HNSW m 8, ...);
    include/sparseattn.h documents each. The learned and indexer kinds read
    their weights from the safetensors file weights_path (tensors of layer).

    borrow_keys=True: the index keeps no copy of the keys where its selector
    needs none, and every select() must then be passed the cache's keys
    (keys=, [n_slots, H_kv, D]). The library reads them during that call only;
    the caller keeps the cache alive and holding what was appended/updated.

    The Index keeps its Context alive. Close it with close() or a with block.
    select and clone may run from several threads at once; append, update,
    truncate and close wait for them (and they for those).
    """

    def __init__(self, context, num_kv_heads, head_dim, kind=None, dtype=None, *,
                 borrow_keys=None, weights_path=None, **options):
        lib = library()
        opt = _options.index_options(num_kv_heads, head_dim, kind, dtype, borrow_keys,
                                     weights_path, **options)
        ctx = context._handle
        ptr = ctypes.c_void_p()
        with ctx.lock.shared():
            lib.check(lib.api.index_create(checked(ctx, "context"), ctypes.byref(opt),
                                           ctypes.byref(ptr)))
            self._handle = IndexHandle(ptr, ctx)
        self.context = context
        self.kind = SelectorKind(opt.kind)
        self.num_kv_heads = int(opt.num_kv_heads)
        self.head_dim = int(opt.head_dim)
        self.dtype = DType(opt.dtype)
        self.borrow_keys = bool(opt.borrow_keys)

    @classmethod
    def _wrap(cls, source, ptr):
        ix = cls.__new__(cls)
        ix._handle = IndexHandle(ptr, source._handle.context)
        for attr in ("context", "kind", "num_kv_heads", "head_dim", "dtype", "borrow_keys"):
            setattr(ix, attr, getattr(source, attr))
        return ix

    # ------------------------------------------------------------ lifetime
    def close(self):
        """Destroys the index (sa_index_destroy). Closing twice is fine."""
        self._handle.close()

    def __repr__(self):
        state = "closed" if self.closed else f"size={len(self)}"
        return (f"Index(kind={self.kind.name.lower()}, num_kv_heads={self.num_kv_heads}, "
                f"head_dim={self.head_dim}, dtype={self.dtype.name.lower()}, {state})")

    # ------------------------------------------------------------- changes
    def append(self, keys):
        """Appends keys [n, H_kv, D] (f32/f16/bf16, any strides) as the next n slots
        (sa_index_append); slot s gets the position after the largest held."""
        lib = library()
        k = as_tensor(keys, "keys")
        with self._handle.lock.exclusive():
            lib.check(lib.api.index_append(checked(self._handle, "index"), k.pointer()))

    def update(self, slots, keys, positions=None):
        """Refills existing slots (sa_index_update) with keys [n, H_kv, D] and the
        token positions they now hold (n values; None: the next positions in order).
        slots: n distinct slot numbers < len(self)."""
        lib = library()
        s = host_array(slots, np.int32, "slots")
        k = as_tensor(keys, "keys")
        if k.shape[0] != s.size:
            raise ShapeError(f"keys: {k.shape[0]} rows for {s.size} slots", Status.ERR_SHAPE)
        p = None if positions is None else host_array(positions, np.int64, "positions", s.size)
        with self._handle.lock.exclusive():
            lib.check(lib.api.index_update(
                checked(self._handle, "index"), c_pointer(s, ctypes.c_int32), s.size, k.pointer(),
                None if p is None else c_pointer(p, ctypes.c_int64)))

    def truncate(self, position):
        """Drops every slot holding a token position >= position (sa_index_truncate;
        rejected draft tokens: they must be the last slots)."""
        lib = library()
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise InvalidArgument(f"position: an integer expected, got {position!r}",
                                  Status.ERR_INVALID_ARGUMENT)
        with self._handle.lock.exclusive():
            lib.check(lib.api.index_truncate(checked(self._handle, "index"), int(position)))

    def clone(self):
        """A deep copy that selects exactly like this index (sa_index_clone), on the same
        context; the two change independently afterwards."""
        lib = library()
        ptr = ctypes.c_void_p()
        with self._handle.lock.shared():
            lib.check(lib.api.index_clone(checked(self._handle, "index"), ctypes.byref(ptr)))
            return Index._wrap(self, ptr)

    def size(self):
        """Number of slots (sa_index_size)."""
        lib = library()
        n = ctypes.c_int64()
        with self._handle.lock.shared():
            lib.check(lib.api.index_size(checked(self._handle, "index"), ctypes.byref(n)))
        return int(n.value)

    __len__ = size

    # -------------------------------------------------------------- select
    def select(self, queries, *, top_k=None, window=None, sinks=None, per_query_head=None,
               mass_target=None, scale=None, query_positions=None, query_segments=None,
               key_segments=None, cuda_stream=None, keys=None, out=None):
        """Chooses the slots each query attends to (sa_select).

        queries: [n_q, H_q, D] f32/f16/bf16, H_q a multiple of num_kv_heads.
        top_k, window, sinks (library defaults 64, 64, 4): per list, the top_k
          best-scoring visible slots beyond the window's (p - window, p] and the
          sinks' [0, sinks) positions, which are always kept.
        per_query_head: one list per query head instead of per KV head.
        mass_target: in (0, 1], stop adding scored slots at that estimated
          attention mass (top_k stays the cap); scale: softmax scale for it.
        query_positions: n_q positions (default: the last n_q positions).
        query_segments (n_q) and key_segments (len(self)): packed sequences.
        cuda_stream: for an index on a CUDA device. keys: the cache's keys
          [n_slots, H_kv, D] for an index created with borrow_keys.
        out: i32 [n_q, H, width] with H = H_kv (H_q with per_query_head) and
          width >= sinks + window + top_k; allocated (host memory) when None.

        Returns out: each row the chosen slots ascending, then -1 padding.
        """
        lib = library()
        q = as_tensor(queries, "queries")
        n_q = q.shape[0]
        with self._handle.lock.shared():
            ptr = checked(self._handle, "index")
            n_slots = self.size() if key_segments is not None else None
            # keep: the arrays opt points into, alive until this method returns.
            opt, keep, width = _options.select_options(
                n_q, n_slots, top_k, window, sinks, per_query_head, mass_target, scale,
                query_positions, query_segments, key_segments, cuda_stream, keys)
            if out is None:
                heads = q.shape[1] if opt.per_query_head and len(q.shape) > 1 else self.num_kv_heads
                out = host_output(q, (n_q, heads, width), DType.I32, "select")
            idx = as_tensor(out, "out", writable=True)
            lib.check(lib.api.select(ptr, q.pointer(), ctypes.byref(opt), idx.pointer()))
        return out

