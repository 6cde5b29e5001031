#!/usr/bin/env bash
# Runs every test: the release build's suites; the minimal configuration (no oneDNN, no
# hnswlib: scripts/minimal_check.sh); the suites again under AddressSanitizer +
# UndefinedBehaviorSanitizer; the kernel checker on the NEON kernels under qemu-aarch64
# (scripts/neon_check.sh); then the bindings' tests (scripts/ci_bindings.sh). Installs the
# dependencies first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/install-deps.sh

# setup_and_build DIR [meson setup options...]: configures DIR once, then builds it.
setup_and_build() {
  local dir=$1
  shift
  [ -f "$dir/build.ninja" ] || meson setup "$dir" "$@"
  meson compile -C "$dir"
}

echo "== release build: build/"
setup_and_build build --buildtype=release
meson test -C build --print-errorlogs
echo "== README code is code the tests build (tools/readme_snippets.py)"
python3 tools/readme_snippets.py README.md

echo "== minimal configuration: build-min/ (scripts/minimal_check.sh)"
bash scripts/minimal_check.sh

echo "== sanitizer build: build-asan/"
setup_and_build build-asan -Dbuildtype=debugoptimized \
  -Db_sanitize=address,undefined -Db_lundef=false \
  -Dbench=disabled -Dcuda=disabled
ASAN_OPTIONS=halt_on_error=1:print_stacktrace=1:detect_leaks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
LSAN_OPTIONS=suppressions=$root/scripts/lsan.supp:print_suppressions=0 \
  meson test -C build-asan --print-errorlogs --timeout-multiplier 4

echo "== NEON kernels under qemu-aarch64 (the kernel checker): scripts/neon_check.sh"
bash scripts/neon_check.sh

if [ -x scripts/ci_bindings.sh ]; then
  echo "== bindings: scripts/ci_bindings.sh"
  scripts/ci_bindings.sh
fi
echo "== all tests passed"
