//! Raw FFI declarations for `include/sparseattn.h`, one item per C declaration.
//!
//! Structs are `#[repr(C)]` with the header's field order and types. C enums are
//! declared as their underlying integer type (`unsigned int`: none of them has a
//! negative value) plus one constant per enumerator, the way bindgen does:
//! a Rust `enum` must never hold a value that is not one of its variants, and
//! a newer library may return a value this crate does not know yet.
//!
//! The library is not linked: [`crate::sys::api`] opens it at run time and
//! returns its function table (`sa_get_api`), every entry checked non-NULL.
//! Calling through it is `unsafe`; the parent module is the safe API.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_uint, c_void};

pub use crate::loader::api;

// ------------------------------------------------------------------ version

pub const SA_VERSION_MAJOR: u32 = 0;
pub const SA_VERSION_MINOR: u32 = 1;
pub const SA_VERSION_PATCH: u32 = 0;
/// `(major << 16) | (minor << 8) | patch`, the header this crate was written against.
pub const SA_VERSION: u32 = (SA_VERSION_MAJOR << 16) | (SA_VERSION_MINOR << 8) | SA_VERSION_PATCH;
/// The function table version this crate asks `sa_get_api` for (it uses the
/// abi_version 2 entries: truncate, clone, paged attention, batched selection).
pub const SA_ABI_VERSION: u32 = 2;

// ------------------------------------------------------------------- status

pub type sa_status = c_uint;
pub const SA_OK: sa_status = 0;
pub const SA_ERR_NULL_POINTER: sa_status = 1;
pub const SA_ERR_INVALID_ARGUMENT: sa_status = 2;
pub const SA_ERR_DTYPE: sa_status = 3;
pub const SA_ERR_SHAPE: sa_status = 4;
pub const SA_ERR_OUT_OF_RANGE: sa_status = 5;
pub const SA_ERR_OVERFLOW: sa_status = 6;
pub const SA_ERR_STRUCT_SIZE: sa_status = 7;
pub const SA_ERR_OUT_OF_MEMORY: sa_status = 8;
pub const SA_ERR_UNSUPPORTED: sa_status = 9;
pub const SA_ERR_BACKEND_UNAVAILABLE: sa_status = 10;
pub const SA_ERR_FORMAT: sa_status = 11;
pub const SA_ERR_INTERNAL: sa_status = 12;

// ------------------------------------------------------------------ tensors

pub type sa_dtype = c_uint;
pub const SA_DTYPE_F32: sa_dtype = 0;
pub const SA_DTYPE_F16: sa_dtype = 1;
pub const SA_DTYPE_BF16: sa_dtype = 2;
pub const SA_DTYPE_I32: sa_dtype = 3;
pub const SA_DTYPE_I64: sa_dtype = 4;

pub type sa_device_type = c_uint;
pub const SA_DEVICE_CPU: sa_device_type = 0;
pub const SA_DEVICE_CUDA: sa_device_type = 1;

pub const SA_MAX_RANK: usize = 4;

/// A view of caller memory: shape and strides in elements; all strides 0 means
/// contiguous row-major. Entries at `i >= rank` are ignored.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_tensor {
    pub data: *mut c_void,
    pub dtype: sa_dtype,
    pub device: sa_device_type,
    pub device_id: i32,
    pub rank: i32,
    pub shape: [i64; SA_MAX_RANK],
    pub strides: [i64; SA_MAX_RANK],
}

// --------------------------------------------------------- instruction sets

pub type sa_isa = c_uint;
pub const SA_ISA_SCALAR: sa_isa = 0;
pub const SA_ISA_NEON: sa_isa = 1;
pub const SA_ISA_AVX2: sa_isa = 2;
pub const SA_ISA_AVX512: sa_isa = 3;
pub const SA_ISA_AUTO: sa_isa = 100;

// ------------------------------------------------------------------ context

/// Opaque context handle.
#[repr(C)]
pub struct sa_context {
    _opaque: [u8; 0],
    _not_send_sync: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}

/// The host's device memory for the CUDA plugin (see sparseattn.h).
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_cuda_allocator {
    pub alloc: Option<unsafe extern "C" fn(*mut c_void, usize, i32, *mut c_void) -> *mut c_void>,
    pub free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize, i32, *mut c_void)>,
    pub user: *mut c_void,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_context_options {
    pub struct_size: usize,
    pub threads: i32,
    pub isa: sa_isa,
    pub cuda_plugin_path: *const c_char,
    pub device: sa_device_type,
    pub device_id: i32,
    pub cuda_stream: *mut c_void,
    pub cuda_allocator: sa_cuda_allocator,
}

// -------------------------------------------------------------------- index

/// Opaque index handle.
#[repr(C)]
pub struct sa_index {
    _opaque: [u8; 0],
    _not_send_sync: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
}

pub type sa_selector_kind = c_uint;
pub const SA_SELECTOR_EXACT: sa_selector_kind = 0;
pub const SA_SELECTOR_PAGE: sa_selector_kind = 1;
pub const SA_SELECTOR_LSH: sa_selector_kind = 2;
pub const SA_SELECTOR_HNSW: sa_selector_kind = 3;
pub const SA_SELECTOR_LEARNED: sa_selector_kind = 4;
pub const SA_SELECTOR_INDEXER: sa_selector_kind = 5;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_page_options {
    pub page_size: i32,
    pub refine: i32,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_lsh_options {
    pub rounds: i32,
    pub bits: i32,
    pub probes: i32,
    pub seed: u64,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_hnsw_options {
    pub m: i32,
    pub ef_construction: i32,
    pub ef_search: i32,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_learned_options {
    pub weights_path: *const c_char,
    pub layer: i32,
    pub rescore: i64,
}

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_index_options {
    pub struct_size: usize,
    pub kind: sa_selector_kind,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub dtype: sa_dtype,
    pub capacity: i64,
    pub page: sa_page_options,
    pub lsh: sa_lsh_options,
    pub hnsw: sa_hnsw_options,
    pub learned: sa_learned_options,
    pub borrow_keys: i32,
}

// ------------------------------------------------------------------- select

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_select_options {
    pub struct_size: usize,
    pub top_k: i32,
    pub window: i32,
    pub sinks: i32,
    pub per_query_head: i32,
    pub mass_target: f32,
    pub scale: f32,
    pub query_positions: *const i64,
    pub query_segments: *const i32,
    pub key_segments: *const i32,
    pub cuda_stream: *mut c_void,
    pub keys: *const sa_tensor,
}

// ------------------------------------------------------------------- attend

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_attend_options {
    pub struct_size: usize,
    pub scale: f32,
    pub causal: i32,
    pub query_positions: *const i64,
    pub key_positions: *const i64,
    pub cuda_stream: *mut c_void,
    pub slot_mass: *mut sa_tensor,
    pub mass_decay: f32,
    /// Appended (abi_version 3): per-KV-head positions [H_kv, n_kv]; null here
    /// (the crate does not expose per-head eviction yet).
    pub head_key_positions: *const i64,
}

// -------------------------------------------------------------------- evict

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_evict_options {
    pub struct_size: usize,
    pub budget: i64,
    pub incoming: i64,
    pub sinks: i32,
    pub window: i32,
    /// Appended (the struct grew from 32 to 48 bytes).
    pub score_mean: i32,
    pub mass_decay: f32,
    pub head_max: i32,
    pub recent_share: f32,
    /// Appended (abi_version 3): per-KV-head eviction; 0 here.
    pub per_head: i32,
    /// Appended: pooling of the ranked scores over positions.
    pub score_pool: i64,
}

// ------------------------------------------------- paged caches, batches

/// A batch's paged KV cache (see the header). Optional tensors are absent
/// when their rank is 0.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_paged_kv {
    pub struct_size: usize,
    pub k: sa_tensor,
    pub v: sa_tensor,
    pub page_table: sa_tensor,
    pub seq_lens: sa_tensor,
    pub slot_positions: sa_tensor,
}

/// `SA_TENSOR_ABSENT`: rank 0, an absent optional tensor.
pub const SA_TENSOR_ABSENT: sa_tensor = sa_tensor {
    data: std::ptr::null_mut(),
    dtype: SA_DTYPE_F32,
    device: SA_DEVICE_CPU,
    device_id: 0,
    rank: 0,
    shape: [0; SA_MAX_RANK],
    strides: [0; SA_MAX_RANK],
};

// ------------------------------------------------------- function table

// One list of the table's entries, in the header's order, gives both the C
// struct (nullable entries, as C declares them) and `Api`, the same entries
// checked non-NULL once when the library is opened, so no call site unwraps.
macro_rules! function_table {
    ($($(#[$doc:meta])* $name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// `sa_api`: every public function, as `sa_get_api` returns it.
        /// Entries are only appended; `struct_size` tells how many exist.
        #[repr(C)]
        #[derive(Debug, Copy, Clone)]
        pub struct sa_api {
            pub struct_size: usize,
            pub abi_version: u32,
            $($(#[$doc])* pub $name: Option<unsafe extern "C" fn($($arg),*) $(-> $ret)?>,)*
        }

        /// The function table of the opened library with every entry
        /// present (see [`api`]).
        #[derive(Debug, Copy, Clone)]
        pub struct Api {
            $($(#[$doc])* pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Api {
            /// The entries of `table`, or the name of the first NULL one.
            pub(crate) fn from_table(table: &sa_api) -> Result<Api, &'static str> {
                Ok(Api { $($name: table.$name.ok_or(stringify!($name))?,)* })
            }
        }
    };
}

function_table! {
    version: fn() -> u32;
    version_string: fn() -> *const c_char;
    last_error: fn() -> *const c_char;
    status_name: fn(sa_status) -> *const c_char;
    isa_name: fn(sa_isa) -> *const c_char;
    context_options_default: fn() -> sa_context_options;
    context_create: fn(*const sa_context_options, *mut *mut sa_context) -> sa_status;
    context_destroy: fn(*mut *mut sa_context);
    context_isa: fn(*const sa_context) -> sa_isa;
    context_threads: fn(*const sa_context) -> i32;
    index_options_default: fn() -> sa_index_options;
    index_create: fn(*mut sa_context, *const sa_index_options, *mut *mut sa_index) -> sa_status;
    index_destroy: fn(*mut *mut sa_index);
    index_append: fn(*mut sa_index, *const sa_tensor) -> sa_status;
    index_update: fn(*mut sa_index, *const i32, i64, *const sa_tensor, *const i64) -> sa_status;
    index_size: fn(*const sa_index, *mut i64) -> sa_status;
    select_options_default: fn() -> sa_select_options;
    select: fn(*mut sa_index, *const sa_tensor, *const sa_select_options, *mut sa_tensor)
        -> sa_status;
    attend_options_default: fn() -> sa_attend_options;
    attend: fn(
        *mut sa_context,
        *const sa_tensor,
        *const sa_tensor,
        *const sa_tensor,
        *const sa_tensor,
        *const sa_attend_options,
        *mut sa_tensor,
        *mut sa_tensor
    ) -> sa_status;
    evict_options_default: fn() -> sa_evict_options;
    cache_evict: fn(
        *mut sa_context,
        *const sa_evict_options,
        *const sa_tensor,
        *const sa_tensor,
        *mut sa_tensor,
        *mut i64
    ) -> sa_status;
    /// abi_version 2.
    index_truncate: fn(*mut sa_index, i64) -> sa_status;
    index_clone: fn(*const sa_index, *mut *mut sa_index) -> sa_status;
    attend_paged: fn(
        *mut sa_context,
        *const sa_tensor,
        *const sa_tensor,
        *const sa_paged_kv,
        *const sa_tensor,
        *const sa_attend_options,
        *mut sa_tensor,
        *mut sa_tensor
    ) -> sa_status;
    select_batch: fn(
        *const *mut sa_index,
        i64,
        *const sa_tensor,
        *const sa_tensor,
        *const sa_select_options,
        *const sa_paged_kv,
        *mut sa_tensor
    ) -> sa_status;
}

/// `sa_get_api`, the one symbol the loader resolves by name.
pub type sa_get_api_fn = unsafe extern "C" fn(abi_version: u32) -> *const sa_api;
