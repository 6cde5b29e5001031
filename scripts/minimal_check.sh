#!/usr/bin/env bash
# The minimal configuration: the library built with OpenMP and xsimd only (-Donednn=disabled
# -Dhnswlib=disabled) in build-min/. Checks that it needs nothing beyond the C and C++ runtimes
# and OpenMP, then runs the C ABI tests, the portable GEMM's test and the examples against it
# (HNSW refused with SA_ERR_UNSUPPORTED, prefill selection through the portable GEMM).
set -euo pipefail
cd "$(dirname "$0")/.."

# -O1: this tree checks what the library needs and its fallback paths, not its speed (at -O3
# its compile was 115 s of CPU, a tenth of CI's).
[ -f build-min/build.ninja ] || meson setup build-min -Doptimization=1 -Ddebug=false \
  -Donednn=disabled -Dhnswlib=disabled -Dbench=disabled -Dcuda=disabled -Dfuzz=disabled
# Only what the checks below run: the unit suite is the other builds' to run.
meson compile -C build-min src/sparseattn tests/c_api_test tests/score_matmul_test \
  examples/minimal examples/demo_dlopen examples/mini_engine

lib=build-min/src/libsparseattn.so
allowed='libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1 libgomp.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1'
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "minimal library needs: $(echo $needed)"
for so in $needed; do
  case " $allowed " in
    *" $so "*) ;;
    *) echo "minimal_check: $lib needs $so; the minimal build must need only: $allowed" >&2; exit 1 ;;
  esac
done

meson test -C build-min --no-rebuild --print-errorlogs c-api score-matmul minimal demo_dlopen \
  demo_dlopen_budget mini_engine
