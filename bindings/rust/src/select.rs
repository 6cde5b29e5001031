//! Choosing the keys each query attends to: `sa_select` for one index and
//! `sa_select_batch` for a batch of sequences.
use std::ptr;

use crate::device::CudaStream;
use crate::error::{check, Error, Result, Status};
use crate::index::Index;
use crate::paged::PagedKv;
use crate::sys;
use crate::tensor::{check_len, opt_ptr, Tensor, TensorMut};

/// Settings of [`Index::select`] and [`Index::select_batch`]. `Default` is
/// the header's `SA_SELECT_OPTIONS_INIT`.
#[derive(Debug, Clone, Copy)]
pub struct SelectOptions<'a> {
    /// Keys chosen by score, beyond window and sinks (>= 1).
    pub top_k: i32,
    /// Keys at positions (p - window, p] always kept.
    pub window: i32,
    /// Keys at positions [0, sinks) always kept.
    pub sinks: i32,
    /// false: one list per KV head; true: one list per query head.
    pub per_query_head: bool,
    /// 0: off; in (0, 1]: stop once the estimated attention mass reaches it.
    pub mass_target: f32,
    /// Softmax scale for the mass estimate; 0: 1/sqrt(D).
    pub scale: f32,
    /// Position of each query (n_q values); None: the last n_q positions.
    pub query_positions: Option<&'a [i64]>,
    /// Segment of each query (n_q values); set both segment fields or neither.
    pub query_segments: Option<&'a [i32]>,
    /// Segment of each slot (the index's size).
    pub key_segments: Option<&'a [i32]>,
    /// Stream for an index on a CUDA device; NONE: the context's stream.
    pub cuda_stream: CudaStream,
    /// The host's K `[n_slots, H_kv, D]` (row s = slot s, any strides) for
    /// an index created with `borrow_keys`; required there, ignored by others.
    pub keys: Option<Tensor<'a>>,
}

impl Default for SelectOptions<'_> {
    fn default() -> Self {
        SelectOptions {
            top_k: 64,
            window: 64,
            sinks: 4,
            per_query_head: false,
            mass_target: 0.0,
            scale: 0.0,
            query_positions: None,
            query_segments: None,
            key_segments: None,
            cuda_stream: CudaStream::NONE,
            keys: None,
        }
    }
}

impl SelectOptions<'_> {
    /// The C struct; its `keys` points into `self`.
    fn as_c(&self) -> sys::sa_select_options {
        sys::sa_select_options {
            struct_size: std::mem::size_of::<sys::sa_select_options>(),
            top_k: self.top_k,
            window: self.window,
            sinks: self.sinks,
            per_query_head: self.per_query_head as i32,
            mass_target: self.mass_target,
            scale: self.scale,
            query_positions: opt_ptr(self.query_positions),
            query_segments: opt_ptr(self.query_segments),
            key_segments: opt_ptr(self.key_segments),
            cuda_stream: self.cuda_stream.as_raw(),
            keys: self.keys.as_ref().map_or(ptr::null(), |t| &t.raw),
        }
    }

    /// The per-query slices must cover every query the library will read.
    fn check_query_lists(&self, n_q: i64) -> Result<()> {
        if let Some(p) = self.query_positions {
            check_len(
                "SelectOptions::query_positions (one per query)",
                p.len(),
                n_q,
            )?;
        }
        if let Some(s) = self.query_segments {
            check_len(
                "SelectOptions::query_segments (one per query)",
                s.len(),
                n_q,
            )?;
        }
        Ok(())
    }
}

impl Index {
    /// Chooses, for each query and KV head (or query head), the slots to
    /// attend (`sa_select`). `queries` `[n_q, H_q, D]`; `indices` i32
    /// `[n_q, H, width]` with `H = H_kv` (or `H_q` with `per_query_head`) and
    /// `width >= sinks + window + top_k`; written ascending, then -1 padding.
    pub fn select(
        &self,
        queries: &Tensor<'_>,
        opts: &SelectOptions<'_>,
        indices: &mut TensorMut<'_>,
    ) -> Result<()> {
        opts.check_query_lists(queries.shape()[0])?;
        if let Some(s) = opts.key_segments {
            check_len(
                "SelectOptions::key_segments (one per slot of the index)",
                s.len(),
                self.len() as i64,
            )?;
        }
        let raw_opts = opts.as_c();
        let api = self.context().api();
        // SAFETY: shared access is allowed for sa_select; descriptors and
        // option slices were checked against the memory they borrow.
        check(api, unsafe {
            (api.select)(self.as_ptr(), &queries.raw, &raw_opts, &mut indices.raw)
        })
    }

    /// [`Index::select`] for a batch of sequences in one call
    /// (`sa_select_batch`): `indexes[b]` holds sequence b's keys, the queries
    /// of sequence b are rows `query_starts[b] .. query_starts[b+1]` of
    /// `queries` (`None`: one query per sequence). With `kv`, entries are
    /// physical slots of its page table, ready for
    /// [`crate::Context::attend_paged`] (borrowing indexes then read their
    /// keys from `kv.k`); without, slots of each index. Segments are refused.
    pub fn select_batch(
        indexes: &[&Index],
        queries: &Tensor<'_>,
        query_starts: Option<&Tensor<'_>>,
        opts: &SelectOptions<'_>,
        kv: Option<&PagedKv<'_>>,
        indices: &mut TensorMut<'_>,
    ) -> Result<()> {
        opts.check_query_lists(queries.shape()[0])?;
        if opts.key_segments.is_some() {
            // No length to check it against (one index per sequence), and the
            // library takes no segments in a batch: refused like query_segments.
            return Err(Error::new(
                Status::InvalidArgument,
                "SelectOptions::key_segments: a batch keeps its sequences apart already \
                 (leave segments None)",
            ));
        }
        let handles: Vec<*mut sys::sa_index> = indexes.iter().map(|ix| ix.as_ptr()).collect();
        let raw_opts = opts.as_c();
        let raw_kv = kv.map(PagedKv::to_raw);
        let api = sys::api()?;
        // SAFETY: every handle is live for the call (borrowed) and only read;
        // descriptors and option slices cover the memory they borrow.
        check(api, unsafe {
            (api.select_batch)(
                handles.as_ptr(),
                handles.len() as i64,
                &queries.raw,
                query_starts.map_or(ptr::null(), |t| &t.raw),
                &raw_opts,
                raw_kv.as_ref().map_or(ptr::null(), |k| k),
                &mut indices.raw,
            )
        })
    }
}
