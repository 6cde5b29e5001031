// Scores of many queries against many keys in one GEMM, for prefill selection: oneDNN's matmul
// when the build has oneDNN (meson option `onednn`), else a portable blocked loop.
#pragma once

#include <cstdint>

namespace sa {

// C[i * ldc + j] = sum_d A[i * D + d] * B[j * D + d] for i < M, j < N (f32, row-major).
// oneDNN runs on the calling thread's OpenMP setting; the portable loop on the calling thread.
// Throws sa::Error if oneDNN fails.
void matmul_abt(const float *A, int64_t M, const float *B, int64_t N, int64_t D, float *C, int64_t ldc);

// The portable loop alone (what matmul_abt is without oneDNN), tested in every build.
void matmul_abt_portable(const float *A, int64_t M, const float *B, int64_t N, int64_t D, float *C,
                         int64_t ldc);

}  // namespace sa
