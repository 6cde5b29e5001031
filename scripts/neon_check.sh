#!/usr/bin/env bash
# Runs the NEON kernels, which an x86 build never executes: builds tests/neon with the AArch64
# cross compiler and runs it under qemu-aarch64 (both installed with apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh g++-aarch64-linux-gnu qemu-user
mkdir -p build-neon
aarch64-linux-gnu-g++ -std=c++17 -O2 -static -DSA_HAVE_NEON_KERNELS -Iinclude -Isrc \
  tests/neon/neon_kernels_check.cpp src/attend/kernels_neon.cpp src/attend/kernels_scalar.cpp \
  -o build-neon/neon_kernels_check
qemu-aarch64 build-neon/neon_kernels_check
