"""select_batch: sa_select for a batch of sequences, each with its own Index, in one call."""
import contextlib
import ctypes

from . import _options
from ._handles import checked
from ._library import library
from .enums import DType, Status
from .errors import InvalidArgument
from .index import Index
from .paged import PagedKV
from .tensor import as_tensor, host_output, optional_tensor, tensor_pointer


def select_batch(indexes, queries, query_starts=None, kv=None, *, top_k=None, window=None,
                 sinks=None, per_query_head=None, mass_target=None, scale=None,
                 query_positions=None, cuda_stream=None, keys=None, out=None):
    """Selection for B sequences in one call (sa_select_batch).

    indexes: B Index objects; indexes[b] holds sequence b's keys (slot j = its
      j-th cached token). They may differ in kind and size, not in KV heads and
      head_dim.
    queries: [n_q, H_q, D]; query_starts: i32/i64 [B + 1] (None: one query per
      sequence), as for Context.attend_paged.
    kv: None: entries are slots of each index; a PagedKV: entries are physical
      slots of its page table, ready for attend_paged (each index then holds at
      most seq_lens[b] slots, and borrowing indexes read their keys from kv).
    top_k, window, sinks, per_query_head, mass_target, scale, cuda_stream,
      keys: as for Index.select; query_positions: n_q values over all
      sequences (default: the last positions of each index). Segments are not
      taken by the batched call.
    out: i32 [n_q, H, width], allocated when None. Returns out.
    """
    lib = library()
    indexes = list(indexes)
    if not indexes or not all(isinstance(ix, Index) for ix in indexes):
        raise InvalidArgument("indexes: a non-empty sequence of Index objects expected",
                              Status.ERR_INVALID_ARGUMENT)
    if kv is not None and not isinstance(kv, PagedKV):
        raise InvalidArgument(f"kv: a PagedKV or None expected, got {type(kv).__name__}",
                              Status.ERR_INVALID_ARGUMENT)
    q = as_tensor(queries, "queries")
    st = optional_tensor(query_starts, "query_starts")
    n_q = q.shape[0]
    # keep: the arrays opt points into, alive until this function returns.
    opt, keep, width = _options.select_options(
        n_q, None, top_k, window, sinks, per_query_head, mass_target, scale, query_positions,
        None, None, cuda_stream, keys)
    if out is None:
        heads = q.shape[1] if opt.per_query_head and len(q.shape) > 1 else indexes[0].num_kv_heads
        out = host_output(q, (n_q, heads, width), DType.I32, "select_batch")
    idx = as_tensor(out, "out", writable=True)
    kvs = None if kv is None else kv.struct()
    with contextlib.ExitStack() as held:
        # Shared locks on every distinct index: they are only read, and none may be
        # changed or closed during the call.
        for handle in {id(ix._handle): ix._handle for ix in indexes}.values():
            held.enter_context(handle.lock.shared())
        ptrs = (ctypes.c_void_p * len(indexes))(
            *(checked(ix._handle, f"index {b}").value for b, ix in enumerate(indexes)))
        lib.check(lib.api.select_batch(ptrs, len(indexes), q.pointer(), tensor_pointer(st),
                                       ctypes.byref(opt),
                                       None if kvs is None else ctypes.byref(kvs), idx.pointer()))
    return out
