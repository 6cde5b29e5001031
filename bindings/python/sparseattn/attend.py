"""Context.attend: exact softmax attention, dense or over selected slots (sa_attend)."""
import ctypes

from . import _options
from ._handles import checked
from ._library import library
from .enums import DType, coerce
from .tensor import Tensor, as_tensor, host_output, optional_tensor, tensor_pointer


def attend(self, q, k, v, indices=None, *, scale=None, causal=None, query_positions=None,
           key_positions=None, cuda_stream=None, slot_mass=None, mass_decay=None, out=None,
           lse=None, out_dtype=None):
    """Exact softmax attention with f32 accumulation (sa_attend).

    q: [n_q, H_q, D] f32 or the dtype of k/v. k, v: [n_kv, H_kv, D], both f32,
      f16 or bf16; H_q a multiple of H_kv (GQA: query head h uses KV head
      h // (H_q // H_kv)). Any strides.
    indices: None for dense attention over all n_kv keys; else i32
      [n_q, H_kv or H_q, width] of rows in [0, n_kv) or -1 (skipped), e.g. from
      Index.select.
    scale: 0/None = 1/sqrt(D). causal: a query at position p ignores keys at
      positions > p. query_positions (n_q values; default the last n_q
      positions) and key_positions (n_kv values, -1 = empty row; default row r
      holds position r).
    slot_mass: f32 [H_kv, n_kv] or [n_kv] accumulating each row's attention
      probability (after multiplying it by mass_decay, default 0.99), for
      cache_evict. cuda_stream: for CUDA tensors.
    out: [n_q, H_q, D] f32 or the dtype of q; allocated as out_dtype (default
      f32; bf16 comes back as a uint16 array of its bits) when None.
    lse: None, True (allocate) or an f32 [n_q, H_q] array for the log of
      each softmax denominator.

    Returns out, or (out, lse) when lse is given.
    """
    lib = library()
    qt = as_tensor(q, "q")
    kt = as_tensor(k, "k")
    vt = as_tensor(v, "v")
    it = optional_tensor(indices, "indices")
    # keep: the arrays opt points into, alive until this function returns.
    opt, keep = _options.attend_options(qt.shape[0], kt.shape[0], scale, causal, query_positions,
                                        key_positions, cuda_stream, slot_mass, mass_decay)
    out, lse, ot, lt = _outputs(qt, out, lse, out_dtype, "attend")
    with self._handle.lock.shared():
        lib.check(lib.api.attend(checked(self._handle, "context"), qt.pointer(), kt.pointer(),
                                 vt.pointer(), tensor_pointer(it), ctypes.byref(opt),
                                 ot.pointer(), tensor_pointer(lt)))
    return out if lse is None else (out, lse)


def _outputs(qt, out, lse, out_dtype, call):
    """(out, lse, their Tensors) for an attention call, allocating what was left out
    (out_dtype only applies then; a bf16 output is allocated as its uint16 bits)."""
    if out is None:
        dtype = DType.F32 if out_dtype is None else coerce(DType, out_dtype, "out_dtype")
        out = host_output(qt, qt.shape, dtype, call)
        ot = Tensor(out, dtype=dtype, name="out")
    else:
        ot = as_tensor(out, "out", writable=True)
    if lse is True:
        lse = host_output(qt, qt.shape[:2], DType.F32, call)
    elif lse is False:
        lse = None
    return out, lse, ot, optional_tensor(lse, "lse", True)
