//! Selection state for one layer's cache (`sa_index`) and its settings:
//! create, append, update, truncate, clone.
use std::fmt;
use std::path::PathBuf;
use std::ptr::{self, NonNull};

use crate::context::{path_to_c, Context};
use crate::error::{check, Error, Result, Status};
use crate::kinds::{DType, SelectorKind};
use crate::sys;
use crate::tensor::{opt_ptr, Tensor};

/// Quest-style page selector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageOptions {
    /// Slots per page, >= 1.
    pub page_size: i32,
    /// true: the best pages' keys are rescored exactly and the top_k kept;
    /// false: whole pages in bound order fill top_k.
    pub refine: bool,
}

/// SimHash selector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LshOptions {
    /// Hash tables, 1 to 64.
    pub rounds: i32,
    /// Bits per table, 0 to 24; 0: adapted to the index size.
    pub bits: i32,
    /// Extra buckets probed per table, 0 to 64.
    pub probes: i32,
    /// Fixed seed: deterministic tables.
    pub seed: u64,
}

/// HNSW selector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswOptions {
    /// Graph degree, 2 to 512.
    pub m: i32,
    /// Build beam, 1 to 65536.
    pub ef_construction: i32,
    /// Search beam, 1 to 65536.
    pub ef_search: i32,
}

/// Weights of the learned and indexer selectors (see the header for the
/// tensors a safetensors file must hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedOptions {
    /// safetensors file, read during [`Index::new`].
    pub weights_path: Option<PathBuf>,
    /// The layer whose tensors to use (>= 0).
    pub layer: i32,
    /// Learned kind: the best `rescore * top_k` slots of each list in the
    /// search space are rescored with the native keys; 0: one stage.
    pub rescore: i64,
}

/// Settings of an [`Index`]. `Default` is the header's `SA_INDEX_OPTIONS_INIT`
/// (kind Exact, f16 storage; heads and head_dim 0: set those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOptions {
    pub kind: SelectorKind,
    /// H_kv >= 1.
    pub num_kv_heads: i32,
    /// D >= 1.
    pub head_dim: i32,
    /// Storage of the index's keys (with `borrow_keys`: of what it keeps):
    /// F32, F16 or BF16.
    pub dtype: DType,
    /// Expected number of slots (a hint; 0: none).
    pub capacity: i64,
    pub page: PageOptions,
    pub lsh: LshOptions,
    pub hnsw: HnswOptions,
    pub learned: LearnedOptions,
    /// Keep no copy of the keys where the selector does not need one; every
    /// select then takes the host's K in [`crate::SelectOptions::keys`].
    pub borrow_keys: bool,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            kind: SelectorKind::Exact,
            num_kv_heads: 0,
            head_dim: 0,
            dtype: DType::F16,
            capacity: 0,
            page: PageOptions {
                page_size: 16,
                refine: true,
            },
            lsh: LshOptions {
                rounds: 8,
                bits: 0,
                probes: 2,
                seed: 0x5eed_5eed,
            },
            hnsw: HnswOptions {
                m: 12,
                ef_construction: 48,
                ef_search: 256,
            },
            learned: LearnedOptions {
                weights_path: None,
                layer: 0,
                rescore: 12,
            },
            borrow_keys: false,
        }
    }
}

/// Selection state for one layer's cache, all KV heads (`sa_index`).
/// Destroyed on drop.
///
/// Holds a clone of its [`Context`], so it needs no lifetime: an engine may
/// keep `Context` and `Vec<Index>` side by side, or indexes alone.
///
/// `Sync`: [`Index::select`] and [`Index::try_clone`] take `&self` and may
/// run on many threads at once; the calls that change the index take
/// `&mut self`.
pub struct Index {
    raw: NonNull<sys::sa_index>,
    ctx: Context,
}

// SAFETY: the header allows concurrent sa_select and sa_index_clone on one
// index (they only read it); append, update, truncate and destroy take
// &mut self or self.
unsafe impl Send for Index {}
unsafe impl Sync for Index {}

impl Index {
    /// An empty index (`sa_index_create`).
    pub fn new(ctx: &Context, opts: &IndexOptions) -> Result<Self> {
        let path = opts
            .learned
            .weights_path
            .as_deref()
            .map(path_to_c)
            .transpose()?;
        let raw_opts = sys::sa_index_options {
            struct_size: std::mem::size_of::<sys::sa_index_options>(),
            kind: opts.kind.raw(),
            num_kv_heads: opts.num_kv_heads,
            head_dim: opts.head_dim,
            dtype: opts.dtype.raw(),
            capacity: opts.capacity,
            page: sys::sa_page_options {
                page_size: opts.page.page_size,
                refine: opts.page.refine as i32,
            },
            lsh: sys::sa_lsh_options {
                rounds: opts.lsh.rounds,
                bits: opts.lsh.bits,
                probes: opts.lsh.probes,
                seed: opts.lsh.seed,
            },
            hnsw: sys::sa_hnsw_options {
                m: opts.hnsw.m,
                ef_construction: opts.hnsw.ef_construction,
                ef_search: opts.hnsw.ef_search,
            },
            learned: sys::sa_learned_options {
                weights_path: path.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
                layer: opts.learned.layer,
                rescore: opts.learned.rescore,
            },
            borrow_keys: opts.borrow_keys as i32,
        };
        let api = ctx.api();
        let mut out: *mut sys::sa_index = ptr::null_mut();
        // SAFETY: live context, valid options (the path outlives the call).
        check(api, unsafe {
            (api.index_create)(ctx.as_ptr(), &raw_opts, &mut out)
        })?;
        Self::adopt(out, ctx.clone(), "sa_index_create")
    }

    fn adopt(out: *mut sys::sa_index, ctx: Context, call: &str) -> Result<Self> {
        let raw = NonNull::new(out)
            .ok_or_else(|| Error::new(Status::Internal, format!("{call} returned NULL")))?;
        Ok(Index { raw, ctx })
    }

    /// Appends keys `[n, H_kv, D]` (F32/F16/BF16, any strides) as the next n
    /// slots, at the positions after the largest held.
    pub fn append(&mut self, keys: &Tensor<'_>) -> Result<()> {
        let api = self.ctx.api();
        // SAFETY: exclusive access (&mut self); the descriptor covers borrowed memory.
        check(api, unsafe { (api.index_append)(self.as_ptr(), &keys.raw) })
    }

    /// Refills existing `slots` with `keys` `[slots.len(), H_kv, D]` and the
    /// token positions they now hold (`None`: the next positions in order).
    pub fn update(
        &mut self,
        slots: &[i32],
        keys: &Tensor<'_>,
        positions: Option<&[i64]>,
    ) -> Result<()> {
        if let Some(p) = positions {
            if p.len() != slots.len() {
                return Err(Error::new(
                    Status::Shape,
                    format!(
                        "positions: {} values given for {} slots",
                        p.len(),
                        slots.len()
                    ),
                ));
            }
        }
        let api = self.ctx.api();
        // SAFETY: exclusive access; slots/positions hold slots.len() values.
        check(api, unsafe {
            (api.index_update)(
                self.as_ptr(),
                slots.as_ptr(),
                slots.len() as i64,
                &keys.raw,
                opt_ptr(positions),
            )
        })
    }

    /// Drops every slot holding a token position >= `position` (rejected
    /// draft tokens); they must be the last slots. Not yet for indexes that
    /// borrow their keys nor device indexes ([`Status::Unsupported`]).
    pub fn truncate(&mut self, position: i64) -> Result<()> {
        let api = self.ctx.api();
        // SAFETY: exclusive access (&mut self).
        check(api, unsafe {
            (api.index_truncate)(self.as_ptr(), position)
        })
    }

    /// A deep copy that selects exactly like `self` and changes
    /// independently of it (`sa_index_clone`); it shares `self`'s context.
    /// Not yet for indexes that borrow their keys nor device indexes.
    pub fn try_clone(&self) -> Result<Index> {
        let api = self.ctx.api();
        let mut out: *mut sys::sa_index = ptr::null_mut();
        // SAFETY: cloning only reads the index (allowed concurrently with select).
        check(api, unsafe { (api.index_clone)(self.as_ptr(), &mut out) })?;
        Self::adopt(out, self.ctx.clone(), "sa_index_clone")
    }

    /// Number of slots (appended so far).
    pub fn len(&self) -> usize {
        let api = self.ctx.api();
        let mut n: i64 = 0;
        // SAFETY: live handle and valid out pointer; sa_index_size fails only
        // for NULL arguments, which these are not.
        let status = unsafe { (api.index_size)(self.as_ptr(), &mut n) };
        debug_assert_eq!(status, sys::SA_OK, "sa_index_size on a live index");
        n.max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The context the index was created with.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The C handle, still owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::sa_index {
        self.raw.as_ptr()
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle; the context is dropped after it (field
        // drop order follows this body).
        unsafe { (self.ctx.api().index_destroy)(&mut p) };
    }
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index").field("len", &self.len()).finish()
    }
}
