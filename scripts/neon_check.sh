#!/usr/bin/env bash
# Runs the NEON kernels, which an x86 build never executes: builds the kernel checker
# (tests/checkasm) with the AArch64 cross compiler and only the kernel sources it needs, and
# runs it under qemu-aarch64 (both installed with apt when missing). Arguments go to the
# checker, e.g. --seed N or --filter attend_rows.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh g++-aarch64-linux-gnu qemu-user
mkdir -p build-neon
aarch64-linux-gnu-g++ -std=c++17 -O2 -static -DSA_HAVE_NEON_KERNELS -Iinclude -Isrc \
  tests/checkasm/*.cpp \
  src/kernels/kernels_neon.cpp src/kernels/kernels_scalar.cpp src/kernels/kernel_table.cpp \
  -o build-neon/checkasm
qemu-aarch64 build-neon/checkasm "$@"
