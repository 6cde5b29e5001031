//! Opens libsparseattn at run time (`dlopen`) and hands out its function table.
//!
//! Why not link it: the rpath a build script sets with `cargo:rustc-link-arg`
//! reaches only that package's own tests and examples, never the binaries of
//! the crates that depend on it, which then fail to start without
//! LD_LIBRARY_PATH. Opening the library by the absolute path build.rs found
//! asks nothing of a dependent (no rpath, no build script, no environment);
//! the one symbol resolved by name, `sa_get_api`, returns the header's
//! function table, which only ever grows (`SA_ABI_VERSION`).
//!
//! The library tried, first that opens wins:
//! 1. `$SPARSEATTN_LIB` at run time when set (a path to the library file;
//!    nothing else is tried then);
//! 2. the file build.rs found (SPARSEATTN_LIB_DIR or pkg-config), by absolute path;
//! 3. `libsparseattn.so.0`, through the dynamic loader's own search
//!    (LD_LIBRARY_PATH, the ld.so cache, /lib and /usr/lib).
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::OnceLock;

use crate::error::{Error, Result, Status};
use crate::sys;

// glibc's libdl, part of libc since 2.34 and linked by std before that.
extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *mut c_char;
}
// Resolve every symbol now, so a broken library fails here and not mid-call;
// RTLD_LOCAL (0) keeps its symbols out of the global namespace.
const RTLD_NOW: c_int = 2;

/// The environment variable naming the library file to open at run time.
pub const LIBRARY_ENV: &str = "SPARSEATTN_LIB";
/// The soname, opened through the loader's search path as the last resort.
pub const SONAME: &str = "libsparseattn.so.0";

struct Library {
    api: sys::Api,
    path: String,
}

static LIBRARY: OnceLock<std::result::Result<Library, String>> = OnceLock::new();

/// The library file build.rs found and baked in, if it found one.
pub fn build_library_path() -> Option<&'static str> {
    option_env!("SPARSEATTN_BUILD_LIBRARY").filter(|p| !p.is_empty())
}

fn library() -> Result<&'static Library> {
    LIBRARY
        .get_or_init(open_library)
        .as_ref()
        .map_err(|message| Error::new(Status::BackendUnavailable, message.clone()))
}

/// The opened library's function table, every entry present. The first call
/// opens the library; a failure (no library, or one older than
/// [`sys::SA_ABI_VERSION`]) is [`Status::BackendUnavailable`], and every
/// later call returns the same error.
pub fn api() -> Result<&'static sys::Api> {
    library().map(|lib| &lib.api)
}

/// The path the library was opened by (a soname when the loader searched).
pub fn library_path() -> Result<&'static str> {
    library().map(|lib| lib.path.as_str())
}

fn candidates() -> Vec<String> {
    match std::env::var(LIBRARY_ENV) {
        Ok(path) if !path.is_empty() => vec![path],
        _ => build_library_path()
            .map(str::to_owned)
            .into_iter()
            .chain([SONAME.to_owned()])
            .collect(),
    }
}

fn open_library() -> std::result::Result<Library, String> {
    let mut failures = Vec::new();
    for path in candidates() {
        match open_one(&path) {
            Ok(Some(api)) => return Ok(Library { api, path }),
            Ok(None) => failures.push(format!("{path}: {}", last_dl_error())),
            Err(message) => return Err(message),
        }
    }
    Err(format!(
        "cannot open libsparseattn ({}); install it in a standard prefix, build with \
         SPARSEATTN_LIB_DIR or pkg-config finding it, or set {LIBRARY_ENV}=<path to {SONAME}> \
         or LD_LIBRARY_PATH at run time",
        failures.join("; ")
    ))
}

/// Ok(None): dlopen failed (see dlerror). Err: it opened, but is not a usable
/// sparseattn; no other candidate is tried then, to never mix two libraries.
fn open_one(path: &str) -> std::result::Result<Option<sys::Api>, String> {
    let c_path = CString::new(path).map_err(|_| format!("{path:?}: a NUL byte in the path"))?;
    // SAFETY: a NUL-terminated path; the handle is never closed, so the table
    // and the strings it returns stay valid for the whole process.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW) };
    if handle.is_null() {
        return Ok(None);
    }
    // SAFETY: a live handle and a NUL-terminated symbol name.
    let symbol = unsafe { dlsym(handle, b"sa_get_api\0".as_ptr().cast()) };
    if symbol.is_null() {
        return Err(format!("{path} has no sa_get_api: {}", last_dl_error()));
    }
    // SAFETY: sa_get_api has the type sa_get_api_fn (include/sparseattn.h).
    let get_api: sys::sa_get_api_fn = unsafe { std::mem::transmute(symbol) };
    // SAFETY: the table is static in the library, never freed (handle kept).
    let table = unsafe { get_api(sys::SA_ABI_VERSION).as_ref() }.ok_or_else(|| {
        format!(
            "{path} is older than this crate: sa_get_api({}) returned NULL",
            sys::SA_ABI_VERSION
        )
    })?;
    if table.abi_version < sys::SA_ABI_VERSION
        || table.struct_size < std::mem::size_of::<sys::sa_api>()
    {
        return Err(format!(
            "{path}: function table of abi_version {} and {} bytes, this crate needs {} and {}",
            table.abi_version,
            table.struct_size,
            sys::SA_ABI_VERSION,
            std::mem::size_of::<sys::sa_api>()
        ));
    }
    sys::Api::from_table(table)
        .map(Some)
        .map_err(|entry| format!("{path}: the function table's entry {entry} is NULL"))
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a string valid until the next dl* call
    // on this thread; it is copied right away.
    let message = unsafe { dlerror() };
    if message.is_null() {
        return "unknown dlopen failure".to_owned();
    }
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}
