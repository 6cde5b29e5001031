//! Safe Rust bindings to **sparseattn**: sparse attention over long KV caches,
//! behind a stable C ABI (`include/sparseattn.h`).
//!
//! An engine keeps, per layer, an [`Index`] over its cached keys, asks which
//! keys each query should attend to ([`Index::select`]), runs exact-softmax
//! attention over just those ([`Context::attend`]) and keeps its cache at a
//! fixed size by freeing the least useful slots ([`Context::evict`]).
//!
//! ```no_run
//! use sparseattn::{Context, Index, IndexOptions, SelectOptions, AttendOptions,
//!                  SelectorKind, DType, Tensor, TensorMut};
//! # fn main() -> sparseattn::Result<()> {
//! let (n_kv, h_q, h_kv, d) = (1024i64, 8i64, 2i64, 64i64);
//! let keys = vec![0.0f32; (n_kv * h_kv * d) as usize];
//! let values = keys.clone();
//! let query = vec![0.0f32; (h_q * d) as usize];
//!
//! let ctx = Context::new()?;
//! let mut index = Index::new(&ctx, &IndexOptions {
//!     kind: SelectorKind::Exact, num_kv_heads: h_kv as i32, head_dim: d as i32,
//!     dtype: DType::F32, ..Default::default()
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
//! Every fallible call returns [`Result`]; an [`Error`] carries the library's
//! status and the message of `sa_last_error()`. Slices are checked against the
//! shapes and strides they are described with before any C call, so no call
//! can read or write outside the memory it was given.
//!
//! Thread safety follows the header: a [`Context`] and an [`Index`] may be
//! shared between threads (`Sync`) for `select`, `attend` and `evict`;
//! [`Index::append`] and [`Index::update`] take `&mut self`.

pub mod sys;

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};
use std::path::PathBuf;
use std::ptr::{self, NonNull};

// ===================================================================== errors

/// A failure status of the library (every `sa_status` but `SA_OK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A required pointer argument is NULL.
    NullPointer,
    /// A value out of its documented domain.
    InvalidArgument,
    /// A tensor has a dtype the call does not take.
    DType,
    /// Rank, shape or strides do not match.
    Shape,
    /// An index or slot outside the cache.
    OutOfRange,
    /// A size computation overflows.
    Overflow,
    /// `struct_size` too small (or zero).
    StructSize,
    OutOfMemory,
    /// A valid request the library does not implement.
    Unsupported,
    /// E.g. a CUDA tensor and no usable plugin.
    BackendUnavailable,
    /// A malformed file (weights).
    Format,
    /// A bug in the library.
    Internal,
    /// A status this crate does not know (a newer library).
    Unknown(u32),
}

impl Status {
    /// The status for a raw code; `None` for `SA_OK`.
    pub fn from_raw(code: sys::sa_status) -> Option<Status> {
        Some(match code {
            sys::SA_OK => return None,
            sys::SA_ERR_NULL_POINTER => Status::NullPointer,
            sys::SA_ERR_INVALID_ARGUMENT => Status::InvalidArgument,
            sys::SA_ERR_DTYPE => Status::DType,
            sys::SA_ERR_SHAPE => Status::Shape,
            sys::SA_ERR_OUT_OF_RANGE => Status::OutOfRange,
            sys::SA_ERR_OVERFLOW => Status::Overflow,
            sys::SA_ERR_STRUCT_SIZE => Status::StructSize,
            sys::SA_ERR_OUT_OF_MEMORY => Status::OutOfMemory,
            sys::SA_ERR_UNSUPPORTED => Status::Unsupported,
            sys::SA_ERR_BACKEND_UNAVAILABLE => Status::BackendUnavailable,
            sys::SA_ERR_FORMAT => Status::Format,
            sys::SA_ERR_INTERNAL => Status::Internal,
            other => Status::Unknown(other),
        })
    }

    /// The raw `sa_status` value.
    pub fn code(self) -> sys::sa_status {
        match self {
            Status::NullPointer => sys::SA_ERR_NULL_POINTER,
            Status::InvalidArgument => sys::SA_ERR_INVALID_ARGUMENT,
            Status::DType => sys::SA_ERR_DTYPE,
            Status::Shape => sys::SA_ERR_SHAPE,
            Status::OutOfRange => sys::SA_ERR_OUT_OF_RANGE,
            Status::Overflow => sys::SA_ERR_OVERFLOW,
            Status::StructSize => sys::SA_ERR_STRUCT_SIZE,
            Status::OutOfMemory => sys::SA_ERR_OUT_OF_MEMORY,
            Status::Unsupported => sys::SA_ERR_UNSUPPORTED,
            Status::BackendUnavailable => sys::SA_ERR_BACKEND_UNAVAILABLE,
            Status::Format => sys::SA_ERR_FORMAT,
            Status::Internal => sys::SA_ERR_INTERNAL,
            Status::Unknown(code) => code,
        }
    }

    /// The library's name for the status, e.g. `"SA_ERR_SHAPE"`.
    pub fn name(self) -> &'static str {
        // SAFETY: sa_status_name returns a static string, never NULL.
        unsafe { static_str(sys::sa_status_name(self.code())) }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed call: the status and the message naming the argument and reason
/// (from `sa_last_error()`, or from this crate's own checks before the call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    pub fn status(&self) -> Status {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error of a failed C call; reads the calling thread's sa_last_error().
    fn last(code: sys::sa_status) -> Error {
        // SAFETY: sa_last_error never returns NULL; the string is valid until
        // the next library call on this thread, and is copied right away.
        let message = unsafe { CStr::from_ptr(sys::sa_last_error()) }
            .to_string_lossy()
            .into_owned();
        Error {
            status: Status::from_raw(code).unwrap_or(Status::Internal),
            message,
        }
    }

    /// An error found by this crate before calling C.
    fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

/// `Result<T, sparseattn::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn check(code: sys::sa_status) -> Result<()> {
    if code == sys::SA_OK {
        Ok(())
    } else {
        Err(Error::last(code))
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string with static storage.
unsafe fn static_str(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    CStr::from_ptr(p).to_str().unwrap_or("")
}

// ==================================================================== version

/// The library's version, `(major << 16) | (minor << 8) | patch`.
pub fn version() -> u32 {
    // SAFETY: no arguments, no preconditions.
    unsafe { sys::sa_version() }
}

/// The library's version as `"major.minor.patch"`.
pub fn version_string() -> &'static str {
    // SAFETY: static storage, never NULL.
    unsafe { static_str(sys::sa_version_string()) }
}

// ===================================================================== enums

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// IEEE binary16, stored as `u16` bits.
    F16,
    /// bfloat16, stored as `u16` bits.
    BF16,
    I32,
    I64,
}

impl DType {
    pub fn raw(self) -> sys::sa_dtype {
        match self {
            DType::F32 => sys::SA_DTYPE_F32,
            DType::F16 => sys::SA_DTYPE_F16,
            DType::BF16 => sys::SA_DTYPE_BF16,
            DType::I32 => sys::SA_DTYPE_I32,
            DType::I64 => sys::SA_DTYPE_I64,
        }
    }

    pub fn from_raw(raw: sys::sa_dtype) -> Option<DType> {
        Some(match raw {
            sys::SA_DTYPE_F32 => DType::F32,
            sys::SA_DTYPE_F16 => DType::F16,
            sys::SA_DTYPE_BF16 => DType::BF16,
            sys::SA_DTYPE_I32 => DType::I32,
            sys::SA_DTYPE_I64 => DType::I64,
            _ => return None,
        })
    }
}

/// Instruction set of the attention kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    Neon,
    Avx2,
    Avx512,
    /// The best the CPU supports.
    Auto,
    /// A value this crate does not know (a newer library).
    Other(u32),
}

impl Isa {
    pub fn raw(self) -> sys::sa_isa {
        match self {
            Isa::Scalar => sys::SA_ISA_SCALAR,
            Isa::Neon => sys::SA_ISA_NEON,
            Isa::Avx2 => sys::SA_ISA_AVX2,
            Isa::Avx512 => sys::SA_ISA_AVX512,
            Isa::Auto => sys::SA_ISA_AUTO,
            Isa::Other(v) => v,
        }
    }

    pub fn from_raw(raw: sys::sa_isa) -> Isa {
        match raw {
            sys::SA_ISA_SCALAR => Isa::Scalar,
            sys::SA_ISA_NEON => Isa::Neon,
            sys::SA_ISA_AVX2 => Isa::Avx2,
            sys::SA_ISA_AVX512 => Isa::Avx512,
            sys::SA_ISA_AUTO => Isa::Auto,
            other => Isa::Other(other),
        }
    }

    /// The library's name: "scalar", "neon", "avx2", "avx512" or "auto".
    pub fn name(self) -> &'static str {
        // SAFETY: static storage, never NULL.
        unsafe { static_str(sys::sa_isa_name(self.raw())) }
    }
}

/// How an [`Index`] chooses keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectorKind {
    /// All scores, exact top-K (the oracle).
    Exact,
    /// Quest-style page bounds.
    Page,
    /// Multi-round SimHash with multi-probe.
    Lsh,
    /// hnswlib graph per KV head.
    Hnsw,
    /// Learned low-dimensional projections.
    Learned,
    /// DeepSeek-style lightning indexer.
    Indexer,
}

impl SelectorKind {
    pub fn raw(self) -> sys::sa_selector_kind {
        match self {
            SelectorKind::Exact => sys::SA_SELECTOR_EXACT,
            SelectorKind::Page => sys::SA_SELECTOR_PAGE,
            SelectorKind::Lsh => sys::SA_SELECTOR_LSH,
            SelectorKind::Hnsw => sys::SA_SELECTOR_HNSW,
            SelectorKind::Learned => sys::SA_SELECTOR_LEARNED,
            SelectorKind::Indexer => sys::SA_SELECTOR_INDEXER,
        }
    }

    pub fn from_raw(raw: sys::sa_selector_kind) -> Option<SelectorKind> {
        Some(match raw {
            sys::SA_SELECTOR_EXACT => SelectorKind::Exact,
            sys::SA_SELECTOR_PAGE => SelectorKind::Page,
            sys::SA_SELECTOR_LSH => SelectorKind::Lsh,
            sys::SA_SELECTOR_HNSW => SelectorKind::Hnsw,
            sys::SA_SELECTOR_LEARNED => SelectorKind::Learned,
            sys::SA_SELECTOR_INDEXER => SelectorKind::Indexer,
            _ => return None,
        })
    }
}

// ==================================================================== tensors

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
    impl Sealed for i32 {}
    impl Sealed for i64 {}
}

/// Rust element types a tensor view may borrow: `f32`, `u16` (the bits of
/// f16 or bf16), `i32`, `i64`.
pub trait Element: sealed::Sealed + Copy {
    /// The dtypes whose elements this type holds.
    const DTYPES: &'static [DType];
}
impl Element for f32 {
    const DTYPES: &'static [DType] = &[DType::F32];
}
impl Element for u16 {
    const DTYPES: &'static [DType] = &[DType::F16, DType::BF16];
}
impl Element for i32 {
    const DTYPES: &'static [DType] = &[DType::I32];
}
impl Element for i64 {
    const DTYPES: &'static [DType] = &[DType::I64];
}

/// Builds a CPU descriptor for `len` elements at `data`, after checking that
/// the shape and strides stay inside them.
fn describe<T: Element>(
    data: *mut T,
    len: usize,
    dtype: DType,
    shape: &[i64],
    strides: Option<&[i64]>,
) -> Result<sys::sa_tensor> {
    if !T::DTYPES.contains(&dtype) {
        return Err(Error::new(
            Status::DType,
            format!(
                "a slice of {} cannot hold {dtype:?} elements",
                std::any::type_name::<T>()
            ),
        ));
    }
    let rank = shape.len();
    if rank == 0 || rank > sys::SA_MAX_RANK {
        return Err(Error::new(
            Status::Shape,
            format!("tensor rank {rank} is not in 1..={}", sys::SA_MAX_RANK),
        ));
    }
    if let Some(&bad) = shape.iter().find(|&&s| s < 0) {
        return Err(Error::new(
            Status::Shape,
            format!("tensor shape {shape:?} has a negative extent {bad}"),
        ));
    }
    let overflow = || Error::new(Status::Overflow, format!("tensor shape {shape:?} overflows"));
    let mut raw_strides = [0i64; sys::SA_MAX_RANK];
    let needed: i64 = match strides {
        Some(strides) => {
            if strides.len() != rank {
                return Err(Error::new(
                    Status::Shape,
                    format!("{} strides given for a tensor of rank {rank}", strides.len()),
                ));
            }
            if let Some(&bad) = strides.iter().find(|&&s| s < 0) {
                return Err(Error::new(
                    Status::Shape,
                    format!("tensor strides {strides:?} have a negative stride {bad}"),
                ));
            }
            raw_strides[..rank].copy_from_slice(strides);
            if strides.iter().all(|&s| s == 0) {
                contiguous_len(shape).ok_or_else(overflow)?
            } else if shape.contains(&0) {
                0
            } else {
                // One past the furthest element: 1 + sum((extent - 1) * stride).
                let mut last = 0i64;
                for (&extent, &stride) in shape.iter().zip(strides) {
                    last = (extent - 1)
                        .checked_mul(stride)
                        .and_then(|x| last.checked_add(x))
                        .ok_or_else(overflow)?;
                }
                last.checked_add(1).ok_or_else(overflow)?
            }
        }
        None => contiguous_len(shape).ok_or_else(overflow)?,
    };
    if needed as u128 > len as u128 {
        return Err(Error::new(
            Status::Shape,
            format!(
                "tensor shape {shape:?}{} needs {needed} elements, the slice has {len}",
                strides.map(|s| format!(" strides {s:?}")).unwrap_or_default()
            ),
        ));
    }
    let mut raw_shape = [0i64; sys::SA_MAX_RANK];
    raw_shape[..rank].copy_from_slice(shape);
    Ok(sys::sa_tensor {
        data: data as *mut c_void,
        dtype: dtype.raw(),
        device: sys::SA_DEVICE_CPU,
        device_id: 0,
        rank: rank as i32,
        shape: raw_shape,
        strides: raw_strides,
    })
}

fn contiguous_len(shape: &[i64]) -> Option<i64> {
    shape.iter().try_fold(1i64, |acc, &s| acc.checked_mul(s))
}

/// A read-only view of a slice as a tensor: dtype, shape and optional strides
/// (in elements; `None` or all zeros: contiguous row-major). Built only when
/// the slice covers every element the shape and strides address.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    raw: sys::sa_tensor,
    _data: PhantomData<&'a [u8]>,
}

// SAFETY: a Tensor is a shared borrow of plain data; the raw pointer inside
// is only read through by the library during a call.
unsafe impl Send for Tensor<'_> {}
unsafe impl Sync for Tensor<'_> {}

impl<'a> Tensor<'a> {
    /// A view of `data` with any dtype the element type can hold (`u16` for
    /// F16 and BF16), shape and optional strides.
    pub fn new<T: Element>(
        data: &'a [T],
        dtype: DType,
        shape: &[i64],
        strides: Option<&[i64]>,
    ) -> Result<Self> {
        let raw = describe(data.as_ptr() as *mut T, data.len(), dtype, shape, strides)?;
        Ok(Tensor {
            raw,
            _data: PhantomData,
        })
    }

    /// Contiguous f32 tensor.
    pub fn f32(data: &'a [f32], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::F32, shape, None)
    }

    /// Contiguous f16 tensor (IEEE binary16 bits).
    pub fn f16(data: &'a [u16], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::F16, shape, None)
    }

    /// Contiguous bf16 tensor (bfloat16 bits).
    pub fn bf16(data: &'a [u16], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::BF16, shape, None)
    }

    /// Contiguous i32 tensor.
    pub fn i32(data: &'a [i32], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::I32, shape, None)
    }

    /// Contiguous i64 tensor.
    pub fn i64(data: &'a [i64], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::I64, shape, None)
    }

    pub fn dtype(&self) -> DType {
        DType::from_raw(self.raw.dtype).expect("dtype set by this crate")
    }

    pub fn shape(&self) -> &[i64] {
        &self.raw.shape[..self.raw.rank as usize]
    }

    /// The C descriptor (valid while `'a` lasts).
    pub fn as_raw(&self) -> &sys::sa_tensor {
        &self.raw
    }
}

/// A writable view of a slice as a tensor, for outputs. Same rules as [`Tensor`].
#[derive(Debug)]
pub struct TensorMut<'a> {
    raw: sys::sa_tensor,
    _data: PhantomData<&'a mut [u8]>,
}

// SAFETY: an exclusive borrow of plain data.
unsafe impl Send for TensorMut<'_> {}
unsafe impl Sync for TensorMut<'_> {}

impl<'a> TensorMut<'a> {
    pub fn new<T: Element>(
        data: &'a mut [T],
        dtype: DType,
        shape: &[i64],
        strides: Option<&[i64]>,
    ) -> Result<Self> {
        let raw = describe(data.as_mut_ptr(), data.len(), dtype, shape, strides)?;
        Ok(TensorMut {
            raw,
            _data: PhantomData,
        })
    }

    pub fn f32(data: &'a mut [f32], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::F32, shape, None)
    }

    pub fn f16(data: &'a mut [u16], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::F16, shape, None)
    }

    pub fn bf16(data: &'a mut [u16], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::BF16, shape, None)
    }

    pub fn i32(data: &'a mut [i32], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::I32, shape, None)
    }

    pub fn i64(data: &'a mut [i64], shape: &[i64]) -> Result<Self> {
        Self::new(data, DType::I64, shape, None)
    }

    pub fn dtype(&self) -> DType {
        DType::from_raw(self.raw.dtype).expect("dtype set by this crate")
    }

    pub fn shape(&self) -> &[i64] {
        &self.raw.shape[..self.raw.rank as usize]
    }

    /// A read-only view of the same memory (e.g. `select`'s indices fed to `attend`).
    pub fn as_tensor(&self) -> Tensor<'_> {
        Tensor {
            raw: self.raw,
            _data: PhantomData,
        }
    }

    pub fn as_raw(&self) -> &sys::sa_tensor {
        &self.raw
    }
}

fn check_len(what: &str, have: usize, need: i64) -> Result<()> {
    if (have as u128) < need.max(0) as u128 {
        return Err(Error::new(
            Status::Shape,
            format!("{what}: {have} values given, {need} needed"),
        ));
    }
    Ok(())
}

fn opt_ptr<T>(s: Option<&[T]>) -> *const T {
    s.map_or(ptr::null(), |s| s.as_ptr())
}

// ==================================================================== context

/// Execution settings: threads and instruction-set cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextOptions {
    /// 0: OpenMP's default (at most 1024); 1: the calling thread only (no OpenMP region);
    /// 2..=1024: a team of up to n threads per call, or the calling thread alone when called
    /// from inside an OpenMP parallel region; more is refused ([`Status::InvalidArgument`]).
    pub threads: i32,
    /// Cap on the instruction set; [`Isa::Auto`] for the best.
    pub isa: Isa,
}

impl Default for ContextOptions {
    /// The library's defaults (`sa_context_options_default()`).
    fn default() -> Self {
        // SAFETY: returns a struct by value, no preconditions.
        let raw = unsafe { sys::sa_context_options_default() };
        ContextOptions {
            threads: raw.threads,
            isa: Isa::from_raw(raw.isa),
        }
    }
}

impl ContextOptions {
    fn to_raw(self) -> sys::sa_context_options {
        // SAFETY: as above.
        let mut raw = unsafe { sys::sa_context_options_default() };
        raw.struct_size = std::mem::size_of::<sys::sa_context_options>();
        raw.threads = self.threads;
        raw.isa = self.isa.raw();
        raw
    }
}

/// Execution settings shared by calls (`sa_context`). Destroyed on drop.
///
/// `Sync`: the header allows `sa_attend` and `sa_cache_evict` on one context
/// from many threads at once; every method takes `&self`.
pub struct Context {
    raw: NonNull<sys::sa_context>,
}

// SAFETY: the library keeps no thread affinity for a context, and concurrent
// sa_attend / sa_cache_evict / sa_index_create on it only read it (header:
// "Thread safety"). Destruction happens in Drop, which has exclusive access.
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl Context {
    /// A context with the library's default options.
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::default())
    }

    pub fn with_options(opts: &ContextOptions) -> Result<Self> {
        let raw_opts = opts.to_raw();
        let mut out: *mut sys::sa_context = ptr::null_mut();
        // SAFETY: valid options and out pointer; on success *out owns a context.
        check(unsafe { sys::sa_context_create(&raw_opts, &mut out) })?;
        let raw = NonNull::new(out)
            .ok_or_else(|| Error::new(Status::Internal, "sa_context_create returned NULL"))?;
        Ok(Context { raw })
    }

    /// The instruction set the context's kernels use, after caps.
    pub fn isa(&self) -> Isa {
        // SAFETY: live handle.
        Isa::from_raw(unsafe { sys::sa_context_isa(self.raw.as_ptr()) })
    }

    /// The number of threads the context uses (>= 1).
    pub fn threads(&self) -> i32 {
        // SAFETY: live handle.
        unsafe { sys::sa_context_threads(self.raw.as_ptr()) }
    }

    /// The C handle, still owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::sa_context {
        self.raw.as_ptr()
    }

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
        if let Some(p) = opts.query_positions {
            check_len("AttendOptions::query_positions (one per query)", p.len(), q.shape()[0])?;
        }
        if let Some(p) = opts.key_positions {
            check_len("AttendOptions::key_positions (one per key row)", p.len(), k.shape()[0])?;
        }
        let raw_opts = opts.to_raw();
        let indices_ptr = indices.map_or(ptr::null(), |t| &t.raw as *const sys::sa_tensor);
        let lse_ptr = lse.map_or(ptr::null_mut(), |t| &mut t.raw as *mut sys::sa_tensor);
        // SAFETY: every descriptor covers memory borrowed for this call
        // (checked at construction); option slices were checked above.
        check(unsafe {
            sys::sa_attend(
                self.raw.as_ptr(),
                &q.raw,
                &k.raw,
                &v.raw,
                indices_ptr,
                &raw_opts,
                &mut out.raw,
                lse_ptr,
            )
        })
    }

    /// Chooses cache slots to free so that occupied + incoming <= budget
    /// (`sa_cache_evict`). `scores`: f32 `[n_slots]` or `[H, n_slots]`;
    /// `positions`: i64 `[n_slots]` (-1: empty slot). The slots to free are
    /// written to the front of `freed`, lowest score first; returns their count.
    pub fn evict(
        &self,
        opts: &EvictOptions,
        scores: &Tensor<'_>,
        positions: &Tensor<'_>,
        freed: &mut [i32],
    ) -> Result<usize> {
        let raw_opts = opts.to_raw();
        let cap = freed.len() as i64;
        let mut freed_t = TensorMut::i32(freed, &[cap])?;
        let mut n: i64 = 0;
        // SAFETY: descriptors cover borrowed memory; n is a valid out pointer.
        check(unsafe {
            sys::sa_cache_evict(
                self.raw.as_ptr(),
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

impl Drop for Context {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle; destroy frees it and NULLs p.
        unsafe { sys::sa_context_destroy(&mut p) };
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("isa", &self.isa())
            .field("threads", &self.threads())
            .finish()
    }
}

// ====================================================================== index

/// Quest-style page selector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageOptions {
    /// Tokens per page.
    pub page_size: i32,
    /// Rescore the candidate pages' keys exactly.
    pub refine: bool,
}

/// SimHash selector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LshOptions {
    pub rounds: i32,
    /// Bits per table; 0: adapted to N.
    pub bits: i32,
    pub probes: i32,
    pub seed: u64,
}

/// HNSW selector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswOptions {
    pub m: i32,
    pub ef_construction: i32,
    pub ef_search: i32,
}

/// Learned selector settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LearnedOptions {
    /// safetensors file, read during [`Index::new`].
    pub weights_path: Option<PathBuf>,
    pub layer: i32,
    /// Learned kind: rescore * top_k candidates per list rescored with the
    /// native keys (0: one stage). The library's default is 12.
    pub rescore: i64,
}

/// Settings of an [`Index`]. `Default` is the library's
/// `sa_index_options_default()` (kind Exact, f16 storage, heads and head_dim 0:
/// set those).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexOptions {
    pub kind: SelectorKind,
    /// H_kv >= 1.
    pub num_kv_heads: i32,
    /// D >= 1.
    pub head_dim: i32,
    /// Storage of the index's keys: F32, F16 or BF16.
    pub dtype: DType,
    /// Expected number of slots (a hint; 0: none).
    pub capacity: i64,
    pub page: PageOptions,
    pub lsh: LshOptions,
    pub hnsw: HnswOptions,
    pub learned: LearnedOptions,
}

impl Default for IndexOptions {
    fn default() -> Self {
        // SAFETY: returns a struct by value, no preconditions.
        let raw = unsafe { sys::sa_index_options_default() };
        let weights_path = if raw.learned.weights_path.is_null() {
            None
        } else {
            // SAFETY: a non-NULL default path is a static C string.
            let s = unsafe { CStr::from_ptr(raw.learned.weights_path) };
            Some(PathBuf::from(s.to_string_lossy().into_owned()))
        };
        IndexOptions {
            kind: SelectorKind::from_raw(raw.kind)
                .expect("sa_index_options_default returned an unknown selector kind"),
            num_kv_heads: raw.num_kv_heads,
            head_dim: raw.head_dim,
            dtype: DType::from_raw(raw.dtype)
                .expect("sa_index_options_default returned an unknown dtype"),
            capacity: raw.capacity,
            page: PageOptions {
                page_size: raw.page.page_size,
                refine: raw.page.refine != 0,
            },
            lsh: LshOptions {
                rounds: raw.lsh.rounds,
                bits: raw.lsh.bits,
                probes: raw.lsh.probes,
                seed: raw.lsh.seed,
            },
            hnsw: HnswOptions {
                m: raw.hnsw.m,
                ef_construction: raw.hnsw.ef_construction,
                ef_search: raw.hnsw.ef_search,
            },
            learned: LearnedOptions {
                weights_path,
                layer: raw.learned.layer,
                rescore: raw.learned.rescore,
            },
        }
    }
}

/// Selection state for one layer's cache, all KV heads (`sa_index`).
/// Borrows its [`Context`], which must outlive it; destroyed on drop.
///
/// `Sync`: [`Index::select`] takes `&self` and may run on many threads at
/// once; [`Index::append`] and [`Index::update`] take `&mut self`.
pub struct Index<'ctx> {
    raw: NonNull<sys::sa_index>,
    _ctx: PhantomData<&'ctx Context>,
}

// SAFETY: the header allows concurrent sa_select on one index (it only reads
// it); the calls that need exclusive access (append, update, destroy) take
// &mut self or self.
unsafe impl Send for Index<'_> {}
unsafe impl Sync for Index<'_> {}

impl<'ctx> Index<'ctx> {
    /// An empty index (`sa_index_create`).
    pub fn new(ctx: &'ctx Context, opts: &IndexOptions) -> Result<Self> {
        let path: Option<CString> = match &opts.learned.weights_path {
            None => None,
            Some(p) => {
                use std::os::unix::ffi::OsStrExt;
                Some(CString::new(p.as_os_str().as_bytes()).map_err(|_| {
                    Error::new(
                        Status::InvalidArgument,
                        "IndexOptions::learned.weights_path contains a NUL byte",
                    )
                })?)
            }
        };
        // SAFETY: returns a struct by value.
        let mut raw = unsafe { sys::sa_index_options_default() };
        raw.struct_size = std::mem::size_of::<sys::sa_index_options>();
        raw.kind = opts.kind.raw();
        raw.num_kv_heads = opts.num_kv_heads;
        raw.head_dim = opts.head_dim;
        raw.dtype = opts.dtype.raw();
        raw.capacity = opts.capacity;
        raw.page = sys::sa_page_options {
            page_size: opts.page.page_size,
            refine: opts.page.refine as i32,
        };
        raw.lsh = sys::sa_lsh_options {
            rounds: opts.lsh.rounds,
            bits: opts.lsh.bits,
            probes: opts.lsh.probes,
            seed: opts.lsh.seed,
        };
        raw.hnsw = sys::sa_hnsw_options {
            m: opts.hnsw.m,
            ef_construction: opts.hnsw.ef_construction,
            ef_search: opts.hnsw.ef_search,
        };
        raw.learned = sys::sa_learned_options {
            weights_path: path.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
            layer: opts.learned.layer,
            rescore: opts.learned.rescore,
        };
        let mut out: *mut sys::sa_index = ptr::null_mut();
        // SAFETY: live context, valid options (the path outlives the call).
        check(unsafe { sys::sa_index_create(ctx.as_ptr(), &raw, &mut out) })?;
        let raw = NonNull::new(out)
            .ok_or_else(|| Error::new(Status::Internal, "sa_index_create returned NULL"))?;
        Ok(Index {
            raw,
            _ctx: PhantomData,
        })
    }

    /// Appends keys `[n, H_kv, D]` (F32/F16/BF16, any strides) as the next n slots.
    pub fn append(&mut self, keys: &Tensor<'_>) -> Result<()> {
        // SAFETY: exclusive access (&mut self); the descriptor covers borrowed memory.
        check(unsafe { sys::sa_index_append(self.raw.as_ptr(), &keys.raw) })
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
        // SAFETY: exclusive access; slots/positions hold slots.len() values.
        check(unsafe {
            sys::sa_index_update(
                self.raw.as_ptr(),
                slots.as_ptr(),
                slots.len() as i64,
                &keys.raw,
                opt_ptr(positions),
            )
        })
    }

    /// Number of slots appended so far.
    pub fn len(&self) -> usize {
        let mut n: i64 = 0;
        // SAFETY: live handle and valid out pointer.
        let status = unsafe { sys::sa_index_size(self.raw.as_ptr(), &mut n) };
        assert_eq!(status, sys::SA_OK, "sa_index_size failed on a live index");
        n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

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
        let n_q = queries.shape()[0];
        if let Some(p) = opts.query_positions {
            check_len("SelectOptions::query_positions (one per query)", p.len(), n_q)?;
        }
        if let Some(s) = opts.query_segments {
            check_len("SelectOptions::query_segments (one per query)", s.len(), n_q)?;
        }
        if let Some(s) = opts.key_segments {
            check_len(
                "SelectOptions::key_segments (one per slot of the index)",
                s.len(),
                self.len() as i64,
            )?;
        }
        let raw_opts = opts.to_raw();
        // SAFETY: shared access is allowed for sa_select; descriptors and
        // option slices were checked against the memory they borrow.
        check(unsafe {
            sys::sa_select(self.raw.as_ptr(), &queries.raw, &raw_opts, &mut indices.raw)
        })
    }

    /// The C handle, still owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::sa_index {
        self.raw.as_ptr()
    }
}

impl Drop for Index<'_> {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle; the context outlives it ('ctx).
        unsafe { sys::sa_index_destroy(&mut p) };
    }
}

impl fmt::Debug for Index<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index").field("len", &self.len()).finish()
    }
}

// ===================================================================== select

/// Settings of [`Index::select`]. `Default` is `sa_select_options_default()`.
#[derive(Debug, Clone, Copy, PartialEq)]
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
}

impl Default for SelectOptions<'_> {
    fn default() -> Self {
        // SAFETY: returns a struct by value.
        let raw = unsafe { sys::sa_select_options_default() };
        SelectOptions {
            top_k: raw.top_k,
            window: raw.window,
            sinks: raw.sinks,
            per_query_head: raw.per_query_head != 0,
            mass_target: raw.mass_target,
            scale: raw.scale,
            query_positions: None,
            query_segments: None,
            key_segments: None,
        }
    }
}

impl SelectOptions<'_> {
    fn to_raw(self) -> sys::sa_select_options {
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
            cuda_stream: std::ptr::null_mut(),
            keys: std::ptr::null(),
        }
    }
}

// ===================================================================== attend

/// Settings of [`Context::attend`]. `Default` is `sa_attend_options_default()`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttendOptions<'a> {
    /// 0: 1/sqrt(D).
    pub scale: f32,
    /// A query at position p ignores keys at positions > p.
    pub causal: bool,
    /// Position of each query (n_q values); None: the last n_q positions.
    pub query_positions: Option<&'a [i64]>,
    /// Token position held by each key row (n_kv values); None: row r holds r.
    pub key_positions: Option<&'a [i64]>,
}

impl Default for AttendOptions<'_> {
    fn default() -> Self {
        // SAFETY: returns a struct by value.
        let raw = unsafe { sys::sa_attend_options_default() };
        AttendOptions {
            scale: raw.scale,
            causal: raw.causal != 0,
            query_positions: None,
            key_positions: None,
        }
    }
}

impl AttendOptions<'_> {
    fn to_raw(self) -> sys::sa_attend_options {
        sys::sa_attend_options {
            struct_size: std::mem::size_of::<sys::sa_attend_options>(),
            scale: self.scale,
            causal: self.causal as i32,
            query_positions: opt_ptr(self.query_positions),
            key_positions: opt_ptr(self.key_positions),
            cuda_stream: std::ptr::null_mut(),
            slot_mass: std::ptr::null_mut(),
            mass_decay: 1.0,
        }
    }
}

// ====================================================================== evict

/// Settings of [`Context::evict`]. `Default` is `sa_evict_options_default()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictOptions {
    /// Slots the cache may hold after the incoming tokens.
    pub budget: i64,
    /// Tokens about to be inserted.
    pub incoming: i64,
    /// Positions [0, sinks) are never freed.
    pub sinks: i32,
    /// Positions (max_pos - window, max_pos] are never freed.
    pub window: i32,
}

impl Default for EvictOptions {
    fn default() -> Self {
        // SAFETY: returns a struct by value.
        let raw = unsafe { sys::sa_evict_options_default() };
        EvictOptions {
            budget: raw.budget,
            incoming: raw.incoming,
            sinks: raw.sinks,
            window: raw.window,
        }
    }
}

impl EvictOptions {
    fn to_raw(self) -> sys::sa_evict_options {
        sys::sa_evict_options {
            struct_size: std::mem::size_of::<sys::sa_evict_options>(),
            budget: self.budget,
            incoming: self.incoming,
            sinks: self.sinks,
            window: self.window,
        }
    }
}
