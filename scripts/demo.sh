#!/usr/bin/env bash
# Installs the dependencies, builds sparseattn in build/ (release) and runs the
# demo: a C host that dlopens the library and compares sparse with dense decode
# attention over a 128K-token synthetic KV cache (page selector). Arguments go to the demo
# (the first, if given, is the library path; see examples/demo_dlopen.c).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release
meson compile -C build
exec build/examples/demo_dlopen "$@"
