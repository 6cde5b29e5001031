//! Finds libsparseattn.so and tells rustc how to link it.
//!
//! 1. `SPARSEATTN_LIB_DIR`: a directory holding libsparseattn.so, or a build or
//!    install tree containing it (`<dir>/src`, `<dir>/lib`, `<dir>/lib64`,
//!    `<dir>/lib/<multiarch>` are searched).
//! 2. otherwise `pkg-config --libs-only-L sparseattn` (the pkg-config program;
//!    PKG_CONFIG, PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR are honoured).
//! 3. otherwise the linker's default search path.
//!
//! The directory found is also put on the rpath of the crate's tests, examples
//! and binaries, so `cargo test` runs without LD_LIBRARY_PATH.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const LIB_FILE: &str = "libsparseattn.so";

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

    let dirs = match env::var_os("SPARSEATTN_LIB_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            match find_in_tree(&dir) {
                Some(found) => vec![found],
                None => panic!(
                    "SPARSEATTN_LIB_DIR={} holds no {LIB_FILE} (looked in it and in its src/, \
                     lib/, lib64/ and lib/<multiarch>/)",
                    dir.display()
                ),
            }
        }
        _ => pkg_config_dirs().unwrap_or_else(|| {
            println!(
                "cargo:warning=sparseattn: neither SPARSEATTN_LIB_DIR nor pkg-config found \
                 {LIB_FILE}; relying on the linker's default search path"
            );
            Vec::new()
        }),
    };

    for dir in &dirs {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        // For crates that depend on this one (DEP_SPARSEATTN_LIB_DIR).
        println!("cargo:lib_dir={}", dir.display());
        println!("cargo:rerun-if-changed={}", dir.join(LIB_FILE).display());
    }
    println!("cargo:rustc-link-lib=dylib=sparseattn");
}

/// The directory under `root` that holds libsparseattn.so, if any.
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
    candidates.into_iter().find(|d| d.join(LIB_FILE).exists())
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
