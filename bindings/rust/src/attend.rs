//! Exact softmax attention over chosen keys: `sa_attend` over a contiguous
//! cache, `sa_attend_paged` over a batch's paged cache; optionally
//! accumulating the attention each key row received (`slot_mass`).
use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr;

use crate::context::Context;
use crate::device::CudaStream;
use crate::error::{check, Result};
use crate::kinds::DType;
use crate::paged::PagedKv;
use crate::sys;
use crate::tensor::{check_len, opt_ptr, Tensor, TensorMut};

/// An f32 buffer the attention adds each key row's softmax probability to
/// (H2O-style scores for [`Context::evict`]): `[H_kv, n_kv]` (per KV head,
/// summed over its query group) or `[n_kv]` (over all heads); over physical
/// slots for [`Context::attend_paged`]. CPU memory, any strides.
///
/// Not `Sync` (and not `Clone`): one call at a time may write it, which the
/// header requires of concurrent calls.
#[derive(Debug)]
pub struct SlotMass<'a> {
    raw: sys::sa_tensor,
    _data: PhantomData<&'a mut [f32]>,
    _one_writer: PhantomData<Cell<()>>,
}

impl<'a> SlotMass<'a> {
    /// A contiguous `[n_kv]` or `[H_kv, n_kv]` buffer.
    pub fn new(data: &'a mut [f32], shape: &[i64]) -> Result<Self> {
        Self::with_strides(data, shape, None)
    }

    /// A buffer with strides in elements (`None`: contiguous).
    pub fn with_strides(
        data: &'a mut [f32],
        shape: &[i64],
        strides: Option<&[i64]>,
    ) -> Result<Self> {
        let view = TensorMut::new(data, DType::F32, shape, strides)?;
        Ok(SlotMass {
            raw: view.raw,
            _data: PhantomData,
            _one_writer: PhantomData,
        })
    }

    pub fn shape(&self) -> &[i64] {
        &self.raw.shape[..self.raw.rank as usize]
    }
}

/// Settings of [`Context::attend`] and [`Context::attend_paged`]. `Default`
/// is the header's `SA_ATTEND_OPTIONS_INIT`.
#[derive(Debug)]
pub struct AttendOptions<'a> {
    /// 0: 1/sqrt(D).
    pub scale: f32,
    /// A query at position p ignores keys at positions > p.
    pub causal: bool,
    /// Position of each query (n_q values); None: the last n_q positions.
    pub query_positions: Option<&'a [i64]>,
    /// Token position held by each key row (n_kv values; -1: an empty row,
    /// never attended); None: row r holds position r. Paged: must be None
    /// (the cache's `slot_positions` replace it).
    pub key_positions: Option<&'a [i64]>,
    /// Stream for CUDA tensors; NONE: the context's stream.
    pub cuda_stream: CudaStream,
    /// None: off. Each call first multiplies the buffer by `mass_decay`,
    /// then adds the probability every key row received, summed over the
    /// call's queries. Written only on success.
    pub slot_mass: Option<SlotMass<'a>>,
    /// In [0, 1]; default 0.99 (a horizon of about 100 steps, the decay
    /// [`crate::EvictOptions::mass_decay`] assumes); 1: plain sum; 0: this
    /// call's mass only.
    pub mass_decay: f32,
}

impl Default for AttendOptions<'_> {
    fn default() -> Self {
        AttendOptions {
            scale: 0.0,
            causal: false,
            query_positions: None,
            key_positions: None,
            cuda_stream: CudaStream::NONE,
            slot_mass: None,
            mass_decay: 0.99,
        }
    }
}

impl AttendOptions<'_> {
    /// The C struct, once the position lists cover `n_q` queries and `n_kv`
    /// key rows (None: left to the library); its `slot_mass` points into `self`.
    fn to_raw(&self, n_q: i64, n_kv: Option<i64>) -> Result<sys::sa_attend_options> {
        if let Some(p) = self.query_positions {
            check_len(
                "AttendOptions::query_positions (one per query)",
                p.len(),
                n_q,
            )?;
        }
        if let (Some(p), Some(n_kv)) = (self.key_positions, n_kv) {
            check_len(
                "AttendOptions::key_positions (one per key row)",
                p.len(),
                n_kv,
            )?;
        }
        Ok(sys::sa_attend_options {
            struct_size: std::mem::size_of::<sys::sa_attend_options>(),
            scale: self.scale,
            causal: self.causal as i32,
            query_positions: opt_ptr(self.query_positions),
            key_positions: opt_ptr(self.key_positions),
            cuda_stream: self.cuda_stream.as_raw(),
            // The library writes the buffer, never the descriptor; the
            // buffer is borrowed exclusively by the SlotMass.
            slot_mass: self.slot_mass.as_ref().map_or(ptr::null_mut(), |m| {
                &m.raw as *const sys::sa_tensor as *mut sys::sa_tensor
            }),
            mass_decay: self.mass_decay,
            head_key_positions: ptr::null(),
        })
    }
}

impl Context {
    /// Exact softmax attention (`sa_attend`), f32 accumulation.
    ///
    /// `q` `[n_q, H_q, D]`; `k`, `v` `[n_kv, H_kv, D]`; `indices` `None` for
    /// dense attention, else i32 `[n_q, H_kv or H_q, width]` with entries in
    /// `[0, n_kv)` or -1; `out` `[n_q, H_q, D]`; `lse` optional f32 `[n_q, H_q]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        q: &Tensor<'_>,
        k: &Tensor<'_>,
        v: &Tensor<'_>,
        indices: Option<&Tensor<'_>>,
        opts: &AttendOptions<'_>,
        out: &mut TensorMut<'_>,
        lse: Option<&mut TensorMut<'_>>,
    ) -> Result<()> {
        let raw_opts = opts.to_raw(q.shape()[0], Some(k.shape()[0]))?;
        let api = self.api();
        // SAFETY: every descriptor covers memory borrowed for this call
        // (checked at construction); option slices were checked above.
        check(api, unsafe {
            (api.attend)(
                self.as_ptr(),
                &q.raw,
                &k.raw,
                &v.raw,
                indices.map_or(ptr::null(), |t| &t.raw),
                &raw_opts,
                &mut out.raw,
                lse.map_or(ptr::null_mut(), |t| &mut t.raw),
            )
        })
    }

    /// Exact softmax attention for a batch of sequences over a paged cache
    /// (`sa_attend_paged`). The queries of sequence b are rows
    /// `query_starts[b] .. query_starts[b+1]` of `q` (I32 or I64 `[B + 1]`;
    /// `None`: one query per sequence); `indices` `None` for dense attention
    /// over each sequence's tokens, else i32 physical slots (-1 skipped),
    /// e.g. from [`crate::Index::select_batch`]. CPU tensors only for now.
    #[allow(clippy::too_many_arguments)]
    pub fn attend_paged(
        &self,
        q: &Tensor<'_>,
        query_starts: Option<&Tensor<'_>>,
        kv: &PagedKv<'_>,
        indices: Option<&Tensor<'_>>,
        opts: &AttendOptions<'_>,
        out: &mut TensorMut<'_>,
        lse: Option<&mut TensorMut<'_>>,
    ) -> Result<()> {
        let raw_opts = opts.to_raw(q.shape()[0], None)?;
        let raw_kv = kv.to_raw();
        let api = self.api();
        // SAFETY: as for attend; the library refuses a non-NULL key_positions
        // here before reading it, and page tables outside the cache.
        check(api, unsafe {
            (api.attend_paged)(
                self.as_ptr(),
                &q.raw,
                query_starts.map_or(ptr::null(), |t| &t.raw),
                &raw_kv,
                indices.map_or(ptr::null(), |t| &t.raw),
                &raw_opts,
                &mut out.raw,
                lse.map_or(ptr::null_mut(), |t| &mut t.raw),
            )
        })
    }
}
