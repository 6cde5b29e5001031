// Scores of many queries against many keys in one GEMM (oneDNN), for prefill selection.
#pragma once

#include <cstdint>

namespace sa {

// C[i * ldc + j] = sum_d A[i * D + d] * B[j * D + d] for i < M, j < N (f32, row-major).
// Runs on the calling thread's OpenMP setting; throws sa::Error if oneDNN fails.
void matmul_abt(const float *A, int64_t M, const float *B, int64_t N, int64_t D, float *C, int64_t ldc);

}  // namespace sa
