//! Finds libsparseattn.so.0 at build time and bakes its absolute path into
//! the crate (`SPARSEATTN_BUILD_LIBRARY`), which opens it at run time
//! (src/loader.rs says why it is not linked). Nothing is linked, so there is
//! no rpath to set, here or in any crate that depends on this one.
//!
//! 1. `SPARSEATTN_LIB_DIR`: a directory holding the library, or a build or
//!    install tree containing it (`<dir>/src`, `<dir>/lib`, `<dir>/lib64`,
//!    `<dir>/lib/<multiarch>` are searched); a directory without it is an error.
//! 2. otherwise `pkg-config --libs-only-L sparseattn` (PKG_CONFIG,
//!    PKG_CONFIG_PATH, PKG_CONFIG_LIBDIR and PKG_CONFIG_SYSROOT_DIR are honoured).
//! 3. otherwise nothing is baked in: the run-time loader searches for the
//!    soname (a library in /usr/lib or registered with ldconfig is found).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The soname first (what the library was built to be opened as), then the
/// development symlink.
const LIB_FILES: [&str; 2] = ["libsparseattn.so.0", "libsparseattn.so"];

fn main() {
    for var in [
        "SPARSEATTN_LIB_DIR",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "PKG_CONFIG_SYSROOT_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let found = match env::var_os("SPARSEATTN_LIB_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            match find_in_tree(&dir) {
                Some(found) => Some(found),
                None => panic!(
                    "SPARSEATTN_LIB_DIR={} holds no {} (looked in it and in its src/, lib/, \
                     lib64/ and lib/<multiarch>/)",
                    dir.display(),
                    LIB_FILES[0]
                ),
            }
        }
        _ => pkg_config_dirs()
            .unwrap_or_default()
            .iter()
            .find_map(|dir| find_in(dir)),
    };

    match found {
        Some(file) => {
            // An absolute directory, but the file name as found: the soname
            // symlink follows in-place upgrades of the library.
            let dir = file.parent().unwrap_or(Path::new("."));
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            let file = dir.join(file.file_name().unwrap_or_default());
            println!(
                "cargo:rustc-env=SPARSEATTN_BUILD_LIBRARY={}",
                file.display()
            );
            // For build scripts of crates that depend on this one
            // (DEP_SPARSEATTN_LIB_DIR), e.g. to find sparseattn.h beside it.
            println!("cargo:lib_dir={}", dir.display());
            println!("cargo:rerun-if-changed={}", file.display());
        }
        None => {
            println!("cargo:rustc-env=SPARSEATTN_BUILD_LIBRARY=");
            println!(
                "cargo:warning=sparseattn: neither SPARSEATTN_LIB_DIR nor pkg-config found {}; \
                 at run time it is looked for by the dynamic loader (or $SPARSEATTN_LIB)",
                LIB_FILES[0]
            );
        }
    }
}

/// The library file in `dir`, if there is one.
fn find_in(dir: &Path) -> Option<PathBuf> {
    LIB_FILES.iter().map(|f| dir.join(f)).find(|p| p.exists())
}

/// The library file under `root`, a library directory or a build or install tree.
fn find_in_tree(root: &Path) -> Option<PathBuf> {
    let mut candidates = vec![
        root.to_path_buf(),
        root.join("src"),
        root.join("lib"),
        root.join("lib64"),
    ];
    if let Ok(entries) = std::fs::read_dir(root.join("lib")) {
        let mut multiarch: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.to_string_lossy().ends_with("-linux-gnu"))
            .collect();
        multiarch.sort();
        candidates.extend(multiarch);
    }
    candidates.iter().find_map(|d| find_in(d))
}

/// The -L directories pkg-config reports for sparseattn (none for a system
/// prefix); None when pkg-config or the package is missing.
fn pkg_config_dirs() -> Option<Vec<PathBuf>> {
    let program = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let output = match Command::new(&program)
        .args(["--libs-only-L", "sparseattn"])
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            println!(
                "cargo:warning=sparseattn: `{program} --libs-only-L sparseattn` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(err) => {
            println!("cargo:warning=sparseattn: could not run {program}: {err}");
            return None;
        }
    };
    Some(
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|flag| flag.strip_prefix("-L"))
            .map(PathBuf::from)
            .collect(),
    )
}
