#!/usr/bin/env bash
# Runs every test: the release build's suites (the whole default tier); the minimal configuration
# (no oneDNN, no hnswlib: scripts/minimal_check.sh); the suites again under AddressSanitizer +
# UndefinedBehaviorSanitizer; the kernel checker on the NEON kernels under qemu-aarch64
# (scripts/neon_check.sh); the bindings' tests (scripts/ci_bindings.sh). Installs the
# dependencies first. The NEON check and the bindings run in the background beside the builds
# (their output is printed when they end), so two cores stay busy; a table of each stage's wall
# and CPU time (user + sys) closes the run. The slow tier is not run here: see README.md, "Tests".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# Everything the stages install, at once: two apt-get runs in parallel would fight over the lock.
bash scripts/install-deps.sh g++-aarch64-linux-gnu qemu-user golang-go

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sparseattn-test.XXXXXX")
# On failure the background stages are stopped (their subshells; what those started runs out).
trap 'jobs -p | xargs -r kill 2> /dev/null; rm -rf "$tmp"' EXIT

# ----------------------------------------------------------------- stage times
# times_s FILE: user + sys seconds on the second line of `times` output (the children's).
times_s() {
  sed -n 2p "$1" | awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); n += p[1] * 60 + p[2] } printf "%.0f", n }'
}
table=()
stage_name= stage_wall=0 stage_cpu=0
stage() {  # stage NAME: ends the current stage (if any), starts NAME
  if [ -n "$stage_name" ]; then
    table+=("$(printf '%-44s %6d %7d' "$stage_name" $((SECONDS - stage_wall)) "$stage_cpu")")
  fi
  stage_name=${1:-} stage_wall=$SECONDS stage_cpu=0
  [ -z "$stage_name" ] || echo "== $stage_name"
}
# t CMD...: runs CMD in a subshell that records its CPU time, added to the current stage's (the
# shell's own `times` would also count background stages that ended meanwhile).
t() {
  ( "$@"; times > "$tmp/t.times" )
  stage_cpu=$((stage_cpu + $(times_s "$tmp/t.times")))
}
# bg NAME LOG CMD...: runs CMD in the background; LOG gets its output, then its own CPU time.
bg() {
  local name=$1 log=$2
  shift 2
  ( set +e; start=$SECONDS; "$@"; rc=$?; times > "$log.times"
    echo "$rc $((SECONDS - start))" > "$log.rc" ) > "$log" 2>&1 &
  echo "== $name: started in the background (pid $!)"
}
# join NAME LOG PID: waits for a background stage, prints its output, fails if it failed.
join() {
  local name=$1 log=$2 pid=$3 rc wall
  wait "$pid" || true
  echo "== $name (background): output"
  cat "$log"
  read -r rc wall < "$log.rc"
  table+=("$(printf '%-44s %6d %7d' "$name (background)" "$wall" "$(times_s "$log.times")")")
  if [ "$rc" != 0 ]; then
    echo "test.sh: $name failed (exit $rc)" >&2
    exit "$rc"
  fi
}

# ----------------------------------------------------------------- stages
# Independent of every build here: cross-compiles only the kernel checker and the kernels.
bg "NEON kernels under qemu-aarch64 (scripts/neon_check.sh --quick)" "$tmp/neon.log" bash scripts/neon_check.sh --quick
neon_pid=$!

stage "release build: build/"
# -Dgpu_machine_code=false: where nvcc is installed the CUDA plugin is compiled to PTX only (no GPU
# here runs it; machine code for two architectures doubled its 50 s of CPU).
[ -f build/build.ninja ] || t meson setup build --buildtype=release -Dgpu_machine_code=false
t meson compile -C build  # everything, benchmarks and tools included: they must keep building
stage "release: meson test (the default tier)"
t meson test -C build --print-errorlogs
stage "README code is code the tests build"
t python3 tools/readme_snippets.py README.md
stage

# Needs only build/, which nothing below writes.
bindings_pid=
if [ -x scripts/ci_bindings.sh ]; then
  bg "bindings (scripts/ci_bindings.sh)" "$tmp/bindings.log" scripts/ci_bindings.sh
  bindings_pid=$!
fi

stage "minimal configuration: build-min/"
t bash scripts/minimal_check.sh

# Only what the tests run is built (meson test builds its prerequisites): not tools/ nor bench/.
# Suite heavy (the quality gate, the fitting tool's refusal) is the release tree's alone: code
# other tests run, on inputs that instrumentation made take 5 of the stage's minutes.
stage "sanitizers: build-asan/ (build + meson test)"
# -Og -g1 (line tables: enough for ASan's stack traces): the same tests, but with UBSan's checks
# the optimiser's passes dominate the compile: -O2 -g cost 2.4x the CPU of -O1
# (src/select/lsh_selector.cpp: 37 s vs 15 s), and -O1 2.2x that of -Og
# (src/select/page_selector.cpp: 10.1 s vs 4.8 s; this stage's build 227 s -> 98 s of CPU, its
# tests 166 s at both levels).
[ -f build-asan/build.ninja ] || t meson setup build-asan -Doptimization=g -Ddebug=false \
  -Dc_args=-g1 -Dcpp_args=-g1 -Db_sanitize=address,undefined -Db_lundef=false \
  -Dbench=disabled -Dcuda=disabled -Dfuzz=disabled
t meson compile -C build-asan src/sparseattn
export ASAN_OPTIONS=halt_on_error=1:print_stacktrace=1:detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export LSAN_OPTIONS=suppressions=$root/scripts/lsan.supp:print_suppressions=0
# Built here: the tests linked from the library's objects, the examples, the C tests, the tools.
t meson test -C build-asan --print-errorlogs --timeout-multiplier 4 --no-suite heavy --no-suite shared-lib
# Suite shared-lib: build/'s own test binaries (test code is uninstrumented in both trees)
# against build-asan's library, which scripts/with_asan_library.sh puts in their place.
t meson test -C build --no-rebuild --print-errorlogs --timeout-multiplier 4 --suite shared-lib \
  --no-suite heavy --logbase asan --wrapper "$root/scripts/with_asan_library.sh $root/build-asan"
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
stage

join "NEON kernels under qemu-aarch64" "$tmp/neon.log" "$neon_pid"
[ -z "$bindings_pid" ] || join "bindings" "$tmp/bindings.log" "$bindings_pid"

echo "== stage times (s; CPU = user + sys; background stages overlap the others)"
printf '%-44s %6s %7s\n' stage wall cpu
printf '%s\n' "${table[@]}"
times > "$tmp/times"
printf '%-44s %6d %7d\n' total "$SECONDS" "$(times_s "$tmp/times")"
echo "== all tests passed"
