//! Execution settings shared by calls (`sa_context`): threads, instruction
//! set, CUDA device, stream and plugin.
use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use crate::device::{CudaStream, Device};
use crate::error::{check, Error, Result, Status};
use crate::kinds::Isa;
use crate::sys;

/// Settings of a [`Context`]. `Default` is the header's `SA_CONTEXT_OPTIONS_INIT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextOptions {
    /// 0: OpenMP's default (at most 1024); 1: the calling thread only (no OpenMP region);
    /// 2..=1024: a team of up to n threads per call, or the calling thread alone when called
    /// from inside an OpenMP parallel region; more is refused ([`Status::InvalidArgument`]).
    pub threads: i32,
    /// Cap on the instruction set; [`Isa::Auto`] for the best.
    pub isa: Isa,
    /// Where the CUDA plugin is loaded from; `None`: `$SA_CUDA_PLUGIN`, else
    /// `libsparseattn_cuda.so` beside the library. Copied at creation.
    pub cuda_plugin_path: Option<PathBuf>,
    /// [`Device::Cuda`]: load the plugin now (creation fails with
    /// [`Status::BackendUnavailable`] if it cannot serve that device), and
    /// indexes created with this context keep their keys there.
    pub device: Device,
    /// Stream for device work when a call's options name none (index
    /// appends always); [`CudaStream::NONE`]: the legacy default stream.
    pub cuda_stream: CudaStream,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            threads: 0,
            isa: Isa::Auto,
            cuda_plugin_path: None,
            device: Device::Cpu,
            cuda_stream: CudaStream::NONE,
        }
    }
}

/// The C handle, destroyed when the last [`Context`] (or index holding
/// one) is dropped.
struct Handle {
    raw: NonNull<sys::sa_context>,
    api: &'static sys::Api,
}

// SAFETY: the library keeps no thread affinity for a context, and concurrent
// calls on it only read it (header: "Thread safety"). Destruction happens in
// Drop, when no other reference exists.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: the last owner; destroy frees it and NULLs p.
        unsafe { (self.api.context_destroy)(&mut p) };
    }
}

/// Execution settings shared by calls (`sa_context`).
///
/// A shared handle: `clone()` gives another reference to the same C context,
/// which is destroyed when the last clone is dropped. An [`crate::Index`]
/// holds one, so the header's rule "the context must outlive the index"
/// holds by construction, and an engine can own both in one struct.
///
/// `Send + Sync`: the header allows `sa_attend`, `sa_cache_evict` and
/// `sa_index_create` on one context from many threads at once; every method
/// takes `&self`.
#[derive(Clone)]
pub struct Context {
    handle: Arc<Handle>,
}

impl Context {
    /// A context with the default options.
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::default())
    }

    /// A context with `opts` (`sa_context_create`).
    pub fn with_options(opts: &ContextOptions) -> Result<Self> {
        let api = sys::api()?;
        let plugin = opts
            .cuda_plugin_path
            .as_deref()
            .map(path_to_c)
            .transpose()?;
        let (device, device_id) = opts.device.raw();
        let raw_opts = sys::sa_context_options {
            struct_size: std::mem::size_of::<sys::sa_context_options>(),
            threads: opts.threads,
            isa: opts.isa.raw(),
            cuda_plugin_path: plugin.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
            device,
            device_id,
            cuda_stream: opts.cuda_stream.as_raw(),
            // The plugin's own (cudaMallocAsync); hosts with an allocator use sys directly.
            cuda_allocator: sys::sa_cuda_allocator {
                alloc: None,
                free: None,
                user: ptr::null_mut(),
            },
        };
        let mut out: *mut sys::sa_context = ptr::null_mut();
        // SAFETY: valid options (the path outlives the call; the library
        // copies it) and out pointer; on success *out owns a context.
        check(api, unsafe { (api.context_create)(&raw_opts, &mut out) })?;
        let raw = NonNull::new(out)
            .ok_or_else(|| Error::new(Status::Internal, "sa_context_create returned NULL"))?;
        Ok(Context {
            handle: Arc::new(Handle { raw, api }),
        })
    }

    /// The instruction set the context's kernels use, after caps.
    pub fn isa(&self) -> Isa {
        // SAFETY: live handle.
        Isa::from_raw(unsafe { (self.api().context_isa)(self.as_ptr()) })
    }

    /// The number of threads the context uses (>= 1).
    pub fn threads(&self) -> i32 {
        // SAFETY: live handle.
        unsafe { (self.api().context_threads)(self.as_ptr()) }
    }

    /// The C handle, owned by `self` (and its clones).
    pub fn as_ptr(&self) -> *mut sys::sa_context {
        self.handle.raw.as_ptr()
    }

    /// True when both are the same C context.
    pub fn same(&self, other: &Context) -> bool {
        Arc::ptr_eq(&self.handle, &other.handle)
    }

    pub(crate) fn api(&self) -> &'static sys::Api {
        self.handle.api
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

/// A path as the C string the library takes.
pub(crate) fn path_to_c(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::new(
            Status::InvalidArgument,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}
