#!/usr/bin/env bash
# with_asan_library.sh ASAN_BUILD CMD...: runs CMD, a test binary of the release tree that
# reaches the library only through libsparseattn.so (suite shared-lib), against the
# AddressSanitizer + UBSan build of the library in ASAN_BUILD/src. scripts/test.sh passes it to
# `meson test --wrapper`, so those tests are compiled once and run under both libraries.
# LD_LIBRARY_PATH is searched before the binary's RUNPATH; the ASan runtime is preloaded because
# the binary was not linked with it, and it must come first. Test code stays uninstrumented,
# as in the sanitizer tree itself (meson.build, test_code_args); every heap block a test hands
# the library still has ASan's redzones.
set -euo pipefail
lib_dir=$(cd "$1/src" && pwd)
shift
lib=$lib_dir/libsparseattn.so.0
asan=$(ldd "$lib" | sed -n 's/^[[:space:]]*libasan\.so[^ ]* => \([^ ]*\) .*/\1/p')
if [ -z "$asan" ]; then
  echo "with_asan_library: $lib is not linked with the ASan runtime" >&2
  exit 1
fi
export LD_LIBRARY_PATH=$lib_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The binary must resolve the library to the instrumented copy, or this would test nothing new.
deps=$(ldd "$1")
if [[ $deps != *"$lib_dir/libsparseattn.so"* ]]; then
  echo "with_asan_library: $1 does not load $lib" >&2
  exit 1
fi
export LD_PRELOAD=$asan${LD_PRELOAD:+:$LD_PRELOAD}
exec "$@"
