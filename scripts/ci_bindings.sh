#!/usr/bin/env bash
# Packaging and bindings checks, run by scripts/test.sh after the main build.
# Assumes build/ (or $SA_BUILD_DIR) is configured and built. Steps:
#   1. tools/abi_check.sh on the built library (exports, soname, header);
#   2. `meson install` into a temporary staging tree (DESTDIR);
#   3. the C consumers in examples/consumers/ built against the staged install,
#      one through pkg-config, one through the CMake package, and run;
#   4. the Rust binding's tests (cargo test --offline; the crate opens the staged
#      library at run time) and a crate that depends on it, run without
#      LD_LIBRARY_PATH; the Go binding's tests (go test), linked against it.
#   5. the Python binding's tests, demo and README snippet (bindings/python/ci.sh),
#      loading the staged library.
# Leaves nothing behind in the work tree.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${SA_BUILD_DIR:-build}

section() { printf '\n== bindings: %s\n' "$*"; }

lib=$build/src/libsparseattn.so
if [ ! -f "$lib" ]; then
  echo "ci_bindings: $lib not found; build first (meson setup $build && meson compile -C $build)" >&2
  exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sparseattn-bindings.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# ------------------------------------------------------------------ ABI
section "ABI check (tools/abi_check.sh $lib)"
tools/abi_check.sh "$lib" include/sparseattn.h

# -------------------------------------------------------------- install
section "install into a staging tree (DESTDIR)"
stage=$tmp/stage
DESTDIR=$stage meson install -C "$build" --no-rebuild --quiet
# The configured prefix, libdir and includedir, e.g. /usr/local,
# lib/x86_64-linux-gnu, include.
read -r prefix libdir includedir < <(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
print(o["prefix"], o["libdir"], o["includedir"])')
abs_dir() { case $1 in /*) echo "$stage$1" ;; *) echo "$stage$prefix/$1" ;; esac; }
inst_prefix=$stage$prefix
inst_lib=$(abs_dir "$libdir")
inst_inc=$(abs_dir "$includedir")
for f in "$inst_lib/libsparseattn.so" "$inst_lib/libsparseattn.so.0" "$inst_inc/sparseattn.h" \
         "$inst_lib/pkgconfig/sparseattn.pc" \
         "$inst_lib/cmake/sparseattn/sparseattnConfig.cmake" \
         "$inst_lib/cmake/sparseattn/sparseattnConfigVersion.cmake"; do
  [ -e "$f" ] || { echo "ci_bindings: not installed: ${f#"$stage"}" >&2; exit 1; }
  echo "installed: ${f#"$stage"}"
done
tools/abi_check.sh "$inst_lib/libsparseattn.so" "$inst_inc/sparseattn.h" > /dev/null
echo "ok:   the installed library and header pass the ABI check too"

# The .pc file names the configured prefix; PKG_CONFIG_SYSROOT_DIR maps its
# -I/-L paths into the staging tree (pkg-config --define-prefix cannot: it
# assumes <prefix>/lib/pkgconfig, not a multiarch libdir).
export PKG_CONFIG_PATH=$inst_lib/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$stage

# ------------------------------------------------------------ consumers
section "C consumer through pkg-config (examples/consumers/pkgconfig)"
echo "pkg-config --cflags --libs sparseattn: $(pkg-config --cflags --libs sparseattn)"
cp -r examples/consumers "$tmp/consumers"  # both consumers share consumer.c
if command -v make > /dev/null; then
  make -s -C "$tmp/consumers/pkgconfig"
else
  # No make (cmake only recommends it): the Makefile's rule as one line.
  # shellcheck disable=SC2046
  ${CC:-cc} -std=c99 -Wall -Wextra -Werror -O2 $(pkg-config --cflags sparseattn) \
    -o "$tmp/consumers/pkgconfig/consumer" "$tmp/consumers/consumer.c" \
    $(pkg-config --libs sparseattn) -Wl,-rpath,"$inst_lib"
fi
"$tmp/consumers/pkgconfig/consumer"
ldd "$tmp/consumers/pkgconfig/consumer" | grep -F "$stage" > /dev/null \
  || { echo "ci_bindings: the pkg-config consumer did not load the staged library" >&2; exit 1; }

section "C consumer through the CMake package (examples/consumers/cmake)"
cmake -G Ninja -S examples/consumers/cmake -B "$tmp/cmake-consumer" -DCMAKE_PREFIX_PATH="$inst_prefix" \
  -DCMAKE_BUILD_TYPE=Release > "$tmp/cmake-configure.log" \
  || { cat "$tmp/cmake-configure.log"; exit 1; }
cmake --build "$tmp/cmake-consumer" > "$tmp/cmake-build.log" || { cat "$tmp/cmake-build.log"; exit 1; }
"$tmp/cmake-consumer/consumer"
ldd "$tmp/cmake-consumer/consumer" | grep -F "$stage" > /dev/null \
  || { echo "ci_bindings: the CMake consumer did not load the staged library" >&2; exit 1; }

# ----------------------------------------------------------------- Rust
section "Rust binding (bindings/rust: cargo test --offline)"
if ! command -v cargo > /dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo > /dev/null || { echo "ci_bindings: cargo not found" >&2; exit 1; }
export CARGO_TARGET_DIR=$tmp/cargo-target
# The crate is not linked to the library: build.rs bakes in the path it finds
# and the crate dlopens it (src/loader.rs). Nothing here sets LD_LIBRARY_PATH
# or an rpath; the dependent below refuses to run with LD_LIBRARY_PATH set.
(cd bindings/rust && env -u LD_LIBRARY_PATH SPARSEATTN_LIB_DIR="$inst_lib" cargo test --offline)
echo "-- the README snippet (bindings/rust/examples/readme.rs)"
(cd bindings/rust && env -u LD_LIBRARY_PATH SPARSEATTN_LIB_DIR="$inst_lib" \
  cargo run --offline --quiet --example readme)
echo "-- the same crate located through pkg-config (no SPARSEATTN_LIB_DIR)"
(cd bindings/rust && env -u LD_LIBRARY_PATH -u SPARSEATTN_LIB_DIR \
  cargo test --offline --test real_calls -- --quiet)

section "Rust: a dependent crate's binary runs without LD_LIBRARY_PATH (bindings/rust/tests/dependent)"
# Built as an engine would build it (sparseattn = { path = ... }, no build
# script of its own); --expect-dir checks which file it mapped.
dependent=$CARGO_TARGET_DIR/debug/sparseattn-dependent
build_dependent() { (cd bindings/rust/tests/dependent && env -u LD_LIBRARY_PATH "$@" cargo build --offline --quiet); }
echo "-- built with SPARSEATTN_LIB_DIR"
build_dependent SPARSEATTN_LIB_DIR="$inst_lib"
env -u LD_LIBRARY_PATH "$dependent" --expect-dir "$inst_lib"
echo "-- built with pkg-config (no SPARSEATTN_LIB_DIR)"
build_dependent -u SPARSEATTN_LIB_DIR
env -u LD_LIBRARY_PATH "$dependent" --expect-dir "$inst_lib"
echo "-- the library moved after the build: \$SPARSEATTN_LIB names it at run time"
cp -a "$inst_lib" "$tmp/lib-moved-later"
build_dependent SPARSEATTN_LIB_DIR="$tmp/lib-moved-later"
rm -rf "$tmp/lib-moved-later"
env -u LD_LIBRARY_PATH SPARSEATTN_LIB="$inst_lib/libsparseattn.so.0" "$dependent" --expect-dir "$inst_lib"

# ------------------------------------------------------------------- Go
section "Go binding (bindings/go: go vet, go test)"
if ! command -v go > /dev/null; then
  bash scripts/install-deps.sh golang-go
fi
go version
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off
# Go needs a cache directory; without HOME it has none.
if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ]; then
  export GOCACHE=$tmp/go-cache GOPATH=$tmp/go-path
fi
# Thorough checks of cgo pointer passing: before Go 1.21 a run-time setting,
# GODEBUG=cgocheck=2; from Go 1.21 a build-time experiment,
# GOEXPERIMENT=cgocheck2 (the runtime then refuses GODEBUG=cgocheck=2).
# "devel" toolchains are new ones. Passed to every go command and program run.
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9][0-9]*\).*/\1/p')
if [ -n "$go_minor" ] && [ "$go_minor" -lt 21 ]; then
  cgocheck=GODEBUG=cgocheck=2
else
  cgocheck=GOEXPERIMENT=cgocheck2
fi
echo "cgo pointer checks: $cgocheck"
go_flags=(CGO_CFLAGS="-I$inst_inc" CGO_LDFLAGS="-L$inst_lib -Wl,-rpath,$inst_lib")
(cd bindings/go &&
  env "${go_flags[@]}" "$cgocheck" go vet ./... &&
  env "${go_flags[@]}" "$cgocheck" go test -count=1 -v ./...)

echo "-- the README's Go snippet is the body of sparseAttention in example_readme_test.go (run above)"
diff <(awk '/^The snippet is the body of `sparseAttention`/ { f = 1 } f && /^```go$/ { g = 1; next }
            g && /^```$/ { exit } g' bindings/README.md) \
     <(awk '/^func sparseAttention\(/ { f = 1; next } f && /^}$/ { exit } f { sub(/^\t/, ""); print }' \
         bindings/go/example_readme_test.go) \
  || { echo "ci_bindings: bindings/README.md's Go snippet differs from example_readme_test.go" >&2; exit 1; }

echo "-- the same package with flags from pkg-config (-tags sparseattn_pkgconfig)"
# Go's build cache does not key on PKG_CONFIG_PATH / PKG_CONFIG_SYSROOT_DIR,
# so the rpath in CGO_LDFLAGS (unique to this staging tree) also keeps a
# cached build from an earlier, deleted staging tree out.
(cd bindings/go &&
  env -u CGO_CFLAGS CGO_LDFLAGS="-Wl,-rpath,$inst_lib" "$cgocheck" \
    go test -count=1 -tags sparseattn_pkgconfig ./...)

section "Go: a module outside the repository (replace directive, bindings/README.md)"
# The module path sparseattn.dev/sparseattn is not served anywhere: a user's
# module reaches bindings/go through a replace directive. These are the
# README's commands, run as a user runs them (no GOFLAGS), in a module of its
# own under $tmp, building bindings/go/testdata/consumer/main.go.
consumer=$tmp/go-consumer
mkdir "$consumer"
cp bindings/go/testdata/consumer/main.go "$consumer/"
(cd "$consumer" &&
  env -u GOFLAGS go mod init example.com/sparseattn-consumer &&
  env -u GOFLAGS go mod edit -replace sparseattn.dev/sparseattn="$root/bindings/go" &&
  env -u GOFLAGS go get sparseattn.dev/sparseattn &&
  grep -F "sparseattn.dev/sparseattn => $root/bindings/go" go.mod &&
  env -u GOFLAGS "${go_flags[@]}" "$cgocheck" go build -o consumer . &&
  env "$cgocheck" ./consumer)
ldd "$consumer/consumer" | grep -F "$stage" > /dev/null \
  || { echo "ci_bindings: the Go consumer did not load the staged library" >&2; exit 1; }

# --------------------------------------------------------------- Python
section "Python binding (bindings/python/ci.sh: unittest, demo, README snippet)"
# Debian's python3 with python3-numpy (a python3 earlier on PATH, e.g. pyenv's, may lack it).
python=python3
$python -c 'import numpy' 2> /dev/null || bash scripts/install-deps.sh python3-numpy
$python -c 'import numpy' 2> /dev/null || python=/usr/bin/python3
# With the C demo built, the Python demo must print the same figures.
c_demo=$build/examples/demo_dlopen
[ -x "$c_demo" ] || c_demo=
PYTHON=$python bindings/python/ci.sh "$inst_lib/libsparseattn.so.0" "$c_demo"

section "all passed"
