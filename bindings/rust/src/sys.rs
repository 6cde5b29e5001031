//! Raw FFI declarations for `include/sparseattn.h`, one item per C declaration.
//!
//! Structs are `#[repr(C)]` with the header's field order and types. C enums are
//! declared as their underlying integer type (`unsigned int`: none of them has a
//! negative value) plus one constant per enumerator, the way bindgen does:
//! a Rust `enum` must never hold a value that is not one of its variants, and
//! a newer library may return a value this crate does not know yet.
//!
//! Every function here is `unsafe`; the parent module is the safe API.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_uint, c_void};

// ------------------------------------------------------------------ version

pub const SA_VERSION_MAJOR: u32 = 0;
pub const SA_VERSION_MINOR: u32 = 1;
pub const SA_VERSION_PATCH: u32 = 0;
/// `(major << 16) | (minor << 8) | patch`, the header this crate was written against.
pub const SA_VERSION: u32 = (SA_VERSION_MAJOR << 16) | (SA_VERSION_MINOR << 8) | SA_VERSION_PATCH;
pub const SA_ABI_VERSION: u32 = 1;

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
}

// ------------------------------------------------------- function table

/// Every public function, for hosts that `dlopen` the library. Entries are only
/// appended; `struct_size` tells how many a given library has.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sa_api {
    pub struct_size: usize,
    pub abi_version: u32,
    pub version: Option<unsafe extern "C" fn() -> u32>,
    pub version_string: Option<unsafe extern "C" fn() -> *const c_char>,
    pub last_error: Option<unsafe extern "C" fn() -> *const c_char>,
    pub status_name: Option<unsafe extern "C" fn(sa_status) -> *const c_char>,
    pub isa_name: Option<unsafe extern "C" fn(sa_isa) -> *const c_char>,
    pub context_options_default: Option<unsafe extern "C" fn() -> sa_context_options>,
    pub context_create:
        Option<unsafe extern "C" fn(*const sa_context_options, *mut *mut sa_context) -> sa_status>,
    pub context_destroy: Option<unsafe extern "C" fn(*mut *mut sa_context)>,
    pub context_isa: Option<unsafe extern "C" fn(*const sa_context) -> sa_isa>,
    pub context_threads: Option<unsafe extern "C" fn(*const sa_context) -> i32>,
    pub index_options_default: Option<unsafe extern "C" fn() -> sa_index_options>,
    pub index_create: Option<
        unsafe extern "C" fn(*mut sa_context, *const sa_index_options, *mut *mut sa_index) -> sa_status,
    >,
    pub index_destroy: Option<unsafe extern "C" fn(*mut *mut sa_index)>,
    pub index_append: Option<unsafe extern "C" fn(*mut sa_index, *const sa_tensor) -> sa_status>,
    pub index_update: Option<
        unsafe extern "C" fn(*mut sa_index, *const i32, i64, *const sa_tensor, *const i64) -> sa_status,
    >,
    pub index_size: Option<unsafe extern "C" fn(*const sa_index, *mut i64) -> sa_status>,
    pub select_options_default: Option<unsafe extern "C" fn() -> sa_select_options>,
    pub select: Option<
        unsafe extern "C" fn(
            *mut sa_index,
            *const sa_tensor,
            *const sa_select_options,
            *mut sa_tensor,
        ) -> sa_status,
    >,
    pub attend_options_default: Option<unsafe extern "C" fn() -> sa_attend_options>,
    pub attend: Option<
        unsafe extern "C" fn(
            *mut sa_context,
            *const sa_tensor,
            *const sa_tensor,
            *const sa_tensor,
            *const sa_tensor,
            *const sa_attend_options,
            *mut sa_tensor,
            *mut sa_tensor,
        ) -> sa_status,
    >,
    pub evict_options_default: Option<unsafe extern "C" fn() -> sa_evict_options>,
    pub cache_evict: Option<
        unsafe extern "C" fn(
            *mut sa_context,
            *const sa_evict_options,
            *const sa_tensor,
            *const sa_tensor,
            *mut sa_tensor,
            *mut i64,
        ) -> sa_status,
    >,
}

pub type sa_get_api_fn = Option<unsafe extern "C" fn(abi_version: u32) -> *const sa_api>;

// ---------------------------------------------------------------- functions

// Linked by build.rs (cargo:rustc-link-lib=dylib=sparseattn).
extern "C" {
    pub fn sa_version() -> u32;
    pub fn sa_version_string() -> *const c_char;

    pub fn sa_last_error() -> *const c_char;
    pub fn sa_status_name(status: sa_status) -> *const c_char;

    pub fn sa_isa_name(isa: sa_isa) -> *const c_char;

    pub fn sa_context_options_default() -> sa_context_options;
    pub fn sa_context_create(opt: *const sa_context_options, out: *mut *mut sa_context) -> sa_status;
    pub fn sa_context_destroy(ctx: *mut *mut sa_context);
    pub fn sa_context_isa(ctx: *const sa_context) -> sa_isa;
    pub fn sa_context_threads(ctx: *const sa_context) -> i32;

    pub fn sa_index_options_default() -> sa_index_options;
    pub fn sa_index_create(
        ctx: *mut sa_context,
        opt: *const sa_index_options,
        out: *mut *mut sa_index,
    ) -> sa_status;
    pub fn sa_index_destroy(ix: *mut *mut sa_index);
    pub fn sa_index_append(ix: *mut sa_index, keys: *const sa_tensor) -> sa_status;
    pub fn sa_index_update(
        ix: *mut sa_index,
        slots: *const i32,
        n: i64,
        keys: *const sa_tensor,
        positions: *const i64,
    ) -> sa_status;
    pub fn sa_index_size(ix: *const sa_index, n_slots: *mut i64) -> sa_status;

    pub fn sa_select_options_default() -> sa_select_options;
    pub fn sa_select(
        ix: *mut sa_index,
        queries: *const sa_tensor,
        opt: *const sa_select_options,
        indices: *mut sa_tensor,
    ) -> sa_status;

    pub fn sa_attend_options_default() -> sa_attend_options;
    #[allow(clippy::too_many_arguments)]
    pub fn sa_attend(
        ctx: *mut sa_context,
        q: *const sa_tensor,
        k: *const sa_tensor,
        v: *const sa_tensor,
        indices: *const sa_tensor,
        opt: *const sa_attend_options,
        out: *mut sa_tensor,
        lse: *mut sa_tensor,
    ) -> sa_status;

    pub fn sa_evict_options_default() -> sa_evict_options;
    pub fn sa_cache_evict(
        ctx: *mut sa_context,
        opt: *const sa_evict_options,
        scores: *const sa_tensor,
        positions: *const sa_tensor,
        freed: *mut sa_tensor,
        n_freed: *mut i64,
    ) -> sa_status;

    pub fn sa_get_api(abi_version: u32) -> *const sa_api;
}
