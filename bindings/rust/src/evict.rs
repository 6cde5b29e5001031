//! Keeping a cache at a fixed budget: which slots to free (`sa_cache_evict`).
use crate::context::Context;
use crate::error::{check, Error, Result, Status};
use crate::sys;
use crate::tensor::{Tensor, TensorMut};

/// Settings of [`Context::evict`]. `Default` is the header's
/// `SA_EVICT_OPTIONS_INIT`, whose budget 0 the library refuses: set it.
/// The defaults keep seven eighths of the budget for the most recent tokens and rank
/// the rest by decayed attention mass per step seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvictOptions {
    /// Slots the cache may hold after the incoming tokens
    /// (>= sinks + window + incoming).
    pub budget: i64,
    /// Tokens about to be inserted (0: compress a prompt to `budget`).
    pub incoming: i64,
    /// Positions [0, sinks) are never freed.
    pub sinks: i32,
    /// Positions (max_pos - window, max_pos] are never freed.
    pub window: i32,
    /// true (default): scores are a [`crate::SlotMass`] buffer, ranked per
    /// step seen (divided by sum_{i < age} mass_decay^i, age = max_pos -
    /// position + 1); false: as given (a host's own scores, the plain H2O sum).
    pub score_mean: bool,
    /// The decay the scores were accumulated with
    /// ([`crate::AttendOptions::mass_decay`]), in [0, 1]; default 0.99.
    pub mass_decay: f32,
    /// true: `[H, n_slots]` scores rank a slot by its best row (KV head);
    /// false (default): by their sum.
    pub head_max: bool,
    /// In [0, 1]: the most recent floor(recent_share * (budget - incoming -
    /// sinks)) positions are protected too, when more than `window`
    /// (default 0.875; 0: `window` alone; 1: StreamingLLM).
    pub recent_share: f32,
    /// >= 0: a slot ranks by the best ranked score among the occupied slots
    /// within `score_pool` positions of its own (SnapKV's pooling); 0: its
    /// own score (default 0).
    pub score_pool: i64,
}

impl Default for EvictOptions {
    fn default() -> Self {
        EvictOptions {
            budget: 0,
            incoming: 1,
            sinks: 4,
            window: 64,
            score_mean: true,
            mass_decay: 0.99,
            head_max: false,
            recent_share: 0.875,
            score_pool: 0,
        }
    }
}

impl Context {
    /// Chooses cache slots to free so that occupied + incoming <= budget
    /// (`sa_cache_evict`). `scores`: f32 `[n_slots]` or `[H, n_slots]`
    /// (higher = more useful, e.g. a [`crate::SlotMass`] buffer);
    /// `positions`: i64 `[n_slots]` (-1: empty slot). Writes to the front of
    /// `freed` first the empty slots the incoming tokens can use, then the
    /// occupied slots to evict, lowest score first; returns their count.
    /// A `mass_decay` or `recent_share` outside [0, 1] (or NaN) is refused
    /// with [`Status::InvalidArgument`].
    pub fn evict(
        &self,
        opts: &EvictOptions,
        scores: &Tensor<'_>,
        positions: &Tensor<'_>,
        freed: &mut [i32],
    ) -> Result<usize> {
        let raw_opts = sys::sa_evict_options {
            struct_size: std::mem::size_of::<sys::sa_evict_options>(),
            budget: opts.budget,
            incoming: opts.incoming,
            sinks: opts.sinks,
            window: opts.window,
            score_mean: opts.score_mean as i32,
            mass_decay: opts.mass_decay,
            head_max: opts.head_max as i32,
            recent_share: opts.recent_share,
            per_head: 0,
            score_pool: opts.score_pool,
        };
        let cap = freed.len() as i64;
        let mut freed_t = TensorMut::i32(freed, &[cap])?;
        let mut n: i64 = 0;
        let api = self.api();
        // SAFETY: descriptors cover borrowed memory; n is a valid out pointer.
        check(api, unsafe {
            (api.cache_evict)(
                self.as_ptr(),
                &raw_opts,
                &scores.raw,
                &positions.raw,
                &mut freed_t.raw,
                &mut n,
            )
        })?;
        if n < 0 || n > cap {
            return Err(Error::new(
                Status::Internal,
                format!("sa_cache_evict reported {n} freed slots for a capacity of {cap}"),
            ));
        }
        Ok(n as usize)
    }
}
