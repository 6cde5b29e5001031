//! Failure statuses and the error every fallible call returns.
use std::ffi::CStr;
use std::fmt;

use crate::sys;

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
    /// E.g. a CUDA tensor and no usable plugin; also: the library itself
    /// could not be opened (see [`crate::library_path`]).
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

    /// The header's name for the status, e.g. `"SA_ERR_SHAPE"` (what
    /// `sa_status_name` returns; known without opening the library, since
    /// a failure to open it is reported with a status too).
    pub fn name(self) -> &'static str {
        match self {
            Status::NullPointer => "SA_ERR_NULL_POINTER",
            Status::InvalidArgument => "SA_ERR_INVALID_ARGUMENT",
            Status::DType => "SA_ERR_DTYPE",
            Status::Shape => "SA_ERR_SHAPE",
            Status::OutOfRange => "SA_ERR_OUT_OF_RANGE",
            Status::Overflow => "SA_ERR_OVERFLOW",
            Status::StructSize => "SA_ERR_STRUCT_SIZE",
            Status::OutOfMemory => "SA_ERR_OUT_OF_MEMORY",
            Status::Unsupported => "SA_ERR_UNSUPPORTED",
            Status::BackendUnavailable => "SA_ERR_BACKEND_UNAVAILABLE",
            Status::Format => "SA_ERR_FORMAT",
            Status::Internal => "SA_ERR_INTERNAL",
            Status::Unknown(code) => match crate::sys::api() {
                // SAFETY: sa_status_name returns a static string, never NULL.
                Ok(api) => unsafe { crate::static_str((api.status_name)(code)) },
                Err(_) => "SA_ERR_UNKNOWN",
            },
        }
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

    /// An error found by this crate before calling C.
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Error {
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

/// Ok for `SA_OK`; otherwise the status with the calling thread's
/// `sa_last_error()` message, read right after the failed call.
pub(crate) fn check(api: &sys::Api, code: sys::sa_status) -> Result<()> {
    if code == sys::SA_OK {
        return Ok(());
    }
    // SAFETY: sa_last_error never returns NULL; the string is valid until the
    // next library call on this thread, and is copied right away.
    let message = unsafe { CStr::from_ptr((api.last_error)()) }
        .to_string_lossy()
        .into_owned();
    Err(Error {
        status: Status::from_raw(code).unwrap_or(Status::Internal),
        message,
    })
}
