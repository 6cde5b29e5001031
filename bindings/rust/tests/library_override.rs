//! $SPARSEATTN_LIB names the library to open, and nothing else is tried then:
//! a wrong path is a clear error from every call, never a crash. (Its own
//! test binary: the library is opened once per process.)
use sparseattn::{Context, Status};

#[test]
fn a_missing_library_is_an_error_naming_what_was_tried() {
    let missing = "/nonexistent/sparseattn-test/libsparseattn.so.0";
    // Set before the first call of this process, which opens the library.
    std::env::set_var(sparseattn::LIBRARY_ENV, missing);
    let err = Context::new().unwrap_err();
    assert_eq!(err.status(), Status::BackendUnavailable, "{err}");
    assert!(err.message().contains(missing), "names the path: {err}");
    assert!(
        err.message().contains("SPARSEATTN_LIB"),
        "says how to fix it: {err}"
    );
    // The baked-in library exists, yet was not tried: the override is exclusive.
    assert!(sparseattn::build_library_path().is_some());
    assert_eq!(sparseattn::version().unwrap_err(), err);
    assert_eq!(sparseattn::library_path().unwrap_err(), err);
    assert_eq!(
        err.to_string().split(':').next(),
        Some("SA_ERR_BACKEND_UNAVAILABLE")
    );
}
