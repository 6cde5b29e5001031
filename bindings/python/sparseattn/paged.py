"""PagedKV (sa_paged_kv) and Context.attend_paged: a batch of sequences over a paged cache."""
import ctypes

from . import _abi, _options
from ._handles import checked
from ._library import library
from .attend import _outputs
from .enums import Status
from .errors import InvalidArgument
from .tensor import absent, as_tensor, optional_tensor, tensor_pointer


class PagedKV:
    """The KV cache of a batch of sequences in pages (sa_paged_kv), as vLLM, SGLang
    and FlashInfer hold it. Nothing is copied: it describes the caller's arrays.

    PagedKV(k, v, page_table=None, seq_lens=None, slot_positions=None)

    k, v: [num_pages, page_size, H_kv, D] f32/f16/bf16, any strides; or
      [n, H_kv, D], pages of one row (llama.cpp's cells).
    page_table: i32 [B, max_pages], each sequence's pages in token order.
    seq_lens: i32 or i64 [B], the tokens each sequence holds.
    slot_positions: optional i64 [num_pages * page_size], the position each
      physical slot holds (-1 = empty, never attended).
    Token t of sequence b is in page page_table[b][t // page_size] at offset
    t % page_size; physical slot = page * page_size + offset. Without
    page_table and seq_lens, k and v of rank 3 hold one sequence, row t =
    token t.

    The arrays are referenced by this object and read during each call that
    takes it.
    """

    def __init__(self, k, v, page_table=None, seq_lens=None, slot_positions=None):
        self.k = as_tensor(k, "kv.k")
        self.v = as_tensor(v, "kv.v")
        self.page_table = optional_tensor(page_table, "kv.page_table")
        self.seq_lens = optional_tensor(seq_lens, "kv.seq_lens")
        self.slot_positions = optional_tensor(slot_positions, "kv.slot_positions")

    @property
    def page_size(self):
        """Rows per page (1 for a rank-3 cache)."""
        return self.k.shape[1] if len(self.k.shape) == 4 else 1

    @property
    def num_slots(self):
        """Physical slots: num_pages * page_size."""
        return self.k.shape[0] * self.page_size

    def struct(self):
        """The sa_paged_kv descriptor (absent tensors at rank 0, as SA_PAGED_KV_INIT)."""
        s = _abi.SaPagedKV()
        s.struct_size = ctypes.sizeof(_abi.SaPagedKV)
        s.k = self.k.struct
        s.v = self.v.struct
        for name in ("page_table", "seq_lens", "slot_positions"):
            t = getattr(self, name)
            setattr(s, name, absent() if t is None else t.struct)
        return s

    def __repr__(self):
        return (f"PagedKV(k={self.k.shape}, page_size={self.page_size}, "
                f"sequences={None if self.seq_lens is None else self.seq_lens.shape[0]})")


def attend_paged(self, q, kv, indices=None, query_starts=None, *, scale=None, causal=None,
                 query_positions=None, cuda_stream=None, slot_mass=None, mass_decay=None,
                 out=None, lse=None, out_dtype=None):
    """Exact softmax attention for a batch of sequences over a paged cache, in one
    call (sa_attend_paged).

    q: [n_q, H_q, D] (f32 or the dtype of kv.k); the queries of sequence b are
      rows query_starts[b] .. query_starts[b+1]-1.
    kv: a PagedKV.
    indices: None for dense attention over each sequence's tokens; else i32
      [n_q, H_kv or H_q, width] of physical slots (-1 skipped), e.g. from
      select_batch(..., kv=kv).
    query_starts: i32/i64 [B + 1], non-decreasing from 0 to n_q; None: one
      query per sequence.
    scale, causal, query_positions, cuda_stream, mass_decay: as for attend
      (default positions: sequence b's queries are its last tokens; with
      kv.slot_positions and causal, query_positions is required).
    slot_mass: f32 [H_kv, num_slots] or [num_slots], over physical slots.
    out, lse, out_dtype: as for attend. Returns out, or (out, lse).
    """
    lib = library()
    if not isinstance(kv, PagedKV):
        raise InvalidArgument(f"kv: a PagedKV expected, got {type(kv).__name__}",
                              Status.ERR_INVALID_ARGUMENT)
    qt = as_tensor(q, "q")
    st = optional_tensor(query_starts, "query_starts")
    it = optional_tensor(indices, "indices")
    # keep: the arrays opt points into, alive until this function returns.
    opt, keep = _options.attend_options(qt.shape[0], None, scale, causal, query_positions, None,
                                        cuda_stream, slot_mass, mass_decay)
    out, lse, ot, lt = _outputs(qt, out, lse, out_dtype, "attend_paged")
    kvs = kv.struct()
    with self._handle.lock.shared():
        lib.check(lib.api.attend_paged(checked(self._handle, "context"), qt.pointer(),
                                       tensor_pointer(st), ctypes.byref(kvs), tensor_pointer(it),
                                       ctypes.byref(opt), ot.pointer(), tensor_pointer(lt)))
    return out if lse is None else (out, lse)
