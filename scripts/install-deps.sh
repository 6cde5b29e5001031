#!/usr/bin/env bash
# Installs the Debian packages sparseattn needs to build, test and benchmark.
# Idempotent: when every package is already installed it does nothing (no network).
# Extra package names may be passed as arguments: scripts/test.sh adds the NEON check's and the
# Go binding's (g++-aarch64-linux-gnu qemu-user golang-go), scripts/tsan_check.sh clang-14
# libclang-rt-14-dev libomp-14-dev llvm-14 (Debian 12 names).
set -euo pipefail

packages=(
  meson ninja-build pkg-config
  cmake               # Meson finds oneDNN through its CMake package
  libdnnl-dev
  ocl-icd-opencl-dev  # oneDNN's CMake package requires OpenCL (a Recommends, not a Depends)
  libxsimd-dev libhnswlib-dev
  libgtest-dev libbenchmark-dev
  python3-numpy       # the Python binding (bindings/python) and its tests
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and not root, no sudo" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
