//! Where work runs: the CPU or a CUDA device, and the CUDA stream it is
//! enqueued on.
use std::os::raw::c_void;

use crate::sys;

/// A device: the host CPU or the CUDA device of that ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device ordinal (`device_id`).
    Cuda(i32),
}

impl Device {
    /// The header's `(device, device_id)` pair.
    pub fn raw(self) -> (sys::sa_device_type, i32) {
        match self {
            Device::Cpu => (sys::SA_DEVICE_CPU, 0),
            Device::Cuda(id) => (sys::SA_DEVICE_CUDA, id),
        }
    }
}

/// A `cudaStream_t` the library enqueues device work on, or [`CudaStream::NONE`]
/// (NULL: in [`crate::ContextOptions`] the legacy default stream, in a call's
/// options the context's stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CudaStream(*mut c_void);

// SAFETY: a cudaStream_t is a handle CUDA accepts from any host thread.
unsafe impl Send for CudaStream {}
unsafe impl Sync for CudaStream {}

impl CudaStream {
    /// No stream named (NULL).
    pub const NONE: CudaStream = CudaStream(std::ptr::null_mut());

    /// A stream from the host's CUDA runtime.
    ///
    /// # Safety
    /// `stream` is NULL or a live `cudaStream_t` of the device the calls run
    /// on. It stays live while the library may enqueue on it: for a call's
    /// options, until that call's work has completed; in
    /// [`crate::ContextOptions`], as long as the context (or an index holding
    /// it) exists.
    pub unsafe fn from_raw(stream: *mut c_void) -> CudaStream {
        CudaStream(stream)
    }

    pub fn as_raw(self) -> *mut c_void {
        self.0
    }
}

impl Default for CudaStream {
    fn default() -> Self {
        CudaStream::NONE
    }
}
