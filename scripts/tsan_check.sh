#!/usr/bin/env bash
# ThreadSanitizer over the library's threads (slow tier): builds build-tsan/ with clang 14
# (-fsanitize=thread) against LLVM's OpenMP runtime (libomp), whose Archer tool tells TSan about
# OpenMP's barriers, tasks and locks (without it TSan reports OpenMP's own synchronisation as
# races). Runs, with 2+ threads, and fails on any report:
#   - the host-thread tests (tests/host_threads_test.cpp: a std::thread pool, the host's own
#     OpenMP region, shared and per-thread handles);
#   - the rest of the unit binary (OMP_NUM_THREADS=2: contexts that take the default run 2
#     threads, and attend and paged tests run 1 and 2 explicitly: the library's OpenMP paths);
#   - the mini engine (batched calls from inside the host's OpenMP region) and a bounded run of the
#     API fuzzer (two-thread contexts, every selector kind).
# oneDNN is left out (-Donednn=disabled): Debian's libdnnl links GNU libgomp, and two OpenMP
# runtimes in one process are not what a user runs. Arguments go to meson test's gtest run of
# the unit binary, e.g. --gtest_filter='HostCalls*'.
# Packages (scripts/install-deps.sh): clang-14, libclang-rt-14-dev (the TSan runtime),
# libomp-14-dev (libomp and libarcher.so), llvm-14 (llvm-symbolizer for the reports' stacks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh clang-14 libclang-rt-14-dev libomp-14-dev llvm-14

llvm=/usr/lib/llvm-14
archer=$llvm/lib/libarcher.so
[ -f "$archer" ] || { echo "tsan_check: $archer not found (libomp-14-dev)" >&2; exit 1; }

b=build-tsan
if [ ! -f $b/build.ninja ]; then
  # b_lundef=false: clang links the TSan runtime into executables only (its shared runtime,
  # -shared-libsan, crashes at start in clang 14), so the library links with undefined __tsan_*.
  CC=clang-14 CXX=clang++-14 meson setup $b --buildtype=debugoptimized \
    -Db_sanitize=thread -Db_lundef=false \
    -Donednn=disabled -Dbench=disabled -Dcuda=disabled -Dfuzz=disabled
fi
meson compile -C $b src/sparseattn tests/sparseattn_tests examples/mini_engine \
  tests/fuzz/api_fuzz_run

# The OpenMP runtime the binaries load must be LLVM's (Archer is an OMPT tool: libgomp has none).
if ! ldd $b/tests/sparseattn_tests | grep -q 'libomp\.so'; then
  echo "tsan_check: $b/tests/sparseattn_tests does not load libomp:" >&2
  ldd $b/tests/sparseattn_tests >&2
  exit 1
fi

log=$b/tsan-logs
rm -rf "$log" && mkdir -p "$log"
# halt_on_error: the first report fails the run; log_path: reports land in files too, so a
# report from a child that exits 0 still fails the check below.
# ignore_noninstrumented_modules: libomp itself is not instrumented (Archer asks for it);
# scripts/tsan.supp says why its one entry is there.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 ignore_noninstrumented_modules=1 suppressions=$PWD/scripts/tsan.supp log_path=$PWD/$log/tsan"
export OMP_TOOL_LIBRARIES=$archer ARCHER_OPTIONS=verbose=1
export PATH=$llvm/bin:$PATH  # llvm-symbolizer
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive

run() {
  echo "== tsan: $*"
  local out
  out=$("$@" 2>&1) || {
    echo "$out" | tail -40
    cat "$log"/tsan* 2> /dev/null || true  # the reports (log_path)
    echo "tsan_check: failed: $*" >&2
    exit 1
  }
  echo "$out" | tail -3
  # Archer prints this when it attaches; without it OpenMP synchronisation is invisible to TSan.
  echo "$out" | grep -q 'Archer detected OpenMP application' \
    || { echo "tsan_check: Archer did not attach (OMP_TOOL_LIBRARIES=$archer)" >&2; exit 1; }
}

run $b/tests/sparseattn_tests --gtest_filter='HostCalls*:HostThreads*' "$@"
run $b/tests/sparseattn_tests --gtest_filter='-HostCalls*:HostThreads*' "$@"
run $b/examples/mini_engine -s 40
run $b/tests/fuzz/api_fuzz_run --iterations 300 --seed 1

if compgen -G "$log/tsan*" > /dev/null; then
  echo "tsan_check: ThreadSanitizer reports:" >&2
  cat "$log"/tsan* >&2
  exit 1
fi
echo "== tsan: no reports"
