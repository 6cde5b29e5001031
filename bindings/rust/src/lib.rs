//! Safe Rust bindings to **sparseattn**: sparse attention over long KV caches,
//! behind a stable C ABI (`include/sparseattn.h`).
//!
//! An engine keeps, per layer, an [`Index`] over its cached keys, asks which
//! keys each query should attend to ([`Index::select`], or
//! [`Index::select_batch`] for a batch), runs exact-softmax attention over
//! just those ([`Context::attend`], [`Context::attend_paged`] for a paged
//! cache) and keeps its cache at a fixed size by freeing the least useful
//! slots ([`Context::evict`], scored by [`AttendOptions::slot_mass`]).
//!
//! ```no_run
//! use sparseattn::{Context, Index, IndexOptions, SelectOptions, AttendOptions,
//!                  DType, Tensor, TensorMut};
//! # fn main() -> sparseattn::Result<()> {
//! let (n_kv, h_q, h_kv, d) = (1024i64, 8i64, 2i64, 64i64);
//! let keys = vec![0.0f32; (n_kv * h_kv * d) as usize];
//! let values = keys.clone();
//! let query = vec![0.0f32; (h_q * d) as usize];
//!
//! let ctx = Context::new()?;
//! let mut index = Index::new(&ctx, &IndexOptions {
//!     num_kv_heads: h_kv as i32, head_dim: d as i32, dtype: DType::F32, ..Default::default()
//! })?;
//! index.append(&Tensor::f32(&keys, &[n_kv, h_kv, d])?)?;
//!
//! let sel = SelectOptions { top_k: 32, window: 16, sinks: 4, ..Default::default() };
//! let width = (sel.top_k + sel.window + sel.sinks) as i64;
//! let mut idx = vec![0i32; (h_kv * width) as usize];
//! let q = Tensor::f32(&query, &[1, h_q, d])?;
//! index.select(&q, &sel, &mut TensorMut::i32(&mut idx, &[1, h_kv, width])?)?;
//!
//! let mut out = vec![0.0f32; (h_q * d) as usize];
//! ctx.attend(&q, &Tensor::f32(&keys, &[n_kv, h_kv, d])?, &Tensor::f32(&values, &[n_kv, h_kv, d])?,
//!            Some(&Tensor::i32(&idx, &[1, h_kv, width])?), &AttendOptions::default(),
//!            &mut TensorMut::f32(&mut out, &[1, h_q, d])?, None)?;
//! # Ok(()) }
//! ```
//!
//! The library is opened at run time, not linked (see [`library_path`]), so
//! programs that depend on this crate start without LD_LIBRARY_PATH or an
//! rpath of their own.
//!
//! Every fallible call returns [`Result`]; an [`Error`] carries the library's
//! status and the message of `sa_last_error()`. Host slices are checked
//! against the shapes and strides they are described with before any C call,
//! so no call can read or write outside the memory it was given.
//!
//! Ownership: [`Context`] is a shared handle (`Clone`), and each [`Index`]
//! holds a clone, so neither has a lifetime and an engine can keep both in
//! one struct. Thread safety follows the header: both are `Send + Sync`;
//! `select`, `select_batch`, `try_clone`, `attend` and `evict` take `&self`,
//! while `append`, `update` and `truncate` take `&mut self`.

mod attend;
mod context;
mod device;
mod error;
mod evict;
mod index;
mod kinds;
mod loader;
mod paged;
mod select;
pub mod sys;
mod tensor;

use std::ffi::CStr;
use std::os::raw::c_char;

pub use attend::{AttendOptions, SlotMass};
pub use context::{Context, ContextOptions};
pub use device::{CudaStream, Device};
pub use error::{Error, Result, Status};
pub use evict::EvictOptions;
pub use index::{HnswOptions, Index, IndexOptions, LearnedOptions, LshOptions, PageOptions};
pub use kinds::{DType, Isa, SelectorKind};
pub use loader::{build_library_path, library_path, LIBRARY_ENV, SONAME};
pub use paged::PagedKv;
pub use select::SelectOptions;
pub use tensor::{Element, Tensor, TensorMut};

/// The library's version, `(major << 16) | (minor << 8) | patch`.
pub fn version() -> Result<u32> {
    let api = sys::api()?;
    // SAFETY: no arguments, no preconditions.
    Ok(unsafe { (api.version)() })
}

/// The library's version as `"major.minor.patch"`.
pub fn version_string() -> Result<&'static str> {
    let api = sys::api()?;
    // SAFETY: static storage, never NULL.
    Ok(unsafe { static_str((api.version_string)()) })
}

/// # Safety
/// `p` is NULL or a NUL-terminated string with static storage.
pub(crate) unsafe fn static_str(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    CStr::from_ptr(p).to_str().unwrap_or("")
}
