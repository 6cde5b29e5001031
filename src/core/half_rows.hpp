// Many 16-bit floats to f32 at once (prefill selection converts every key of a head for its
// GEMM): the F16C instruction where the CPU has it, else the scalar conversions of half.hpp.
// Both are exact, so the results are the same bits (a signalling NaN may come back quieted).
#pragma once

#include <cstdint>

namespace sa {

// out[i] = f16_to_f32(in[i]) for i < n. f16c: the caller knows the CPU has F16C (the context's
// kernels are AVX2 or AVX-512 ones).
void f16_to_f32_n(const uint16_t *in, int64_t n, float *out, bool f16c);

}  // namespace sa
