// How far a SIMD kernel may drift from the scalar one. Both compute in f32 with every value
// rounded to nearest, so each bound is the worst-case rounding error of one kernel, doubled
// (each of the two may err the other way), in units of u = 2^-24 (half an ulp of 1):
// - a dot product of length D, summed in any order with or without FMA, is off by at most
//   gamma(D) * sum |q_d k_d| (Higham, Accuracy and Stability, 3.1); SIMD lanes, partial sums
//   and the transposing reduction only reorder it. 16-bit rows widen to f32 exactly.
// - exp2 of an f32 argument: xsimd 8.1's is within 2.2 u relative (1.6 ulp, measured over
//   [-126, 10]) and glibc's within 1.0 u, so each call gets kExp2Err = 4 u. Its argument
//   x - shift is itself rounded, which moves the exponent by u |x - shift| and the result by
//   ln(2) u |x - shift| relative.
// - a running sum of n terms, rescaled or not, loses gamma(2n) relative (two roundings a term).
// The bounds are rigorous rather than typical, so they never flake; a kernel that skips,
// repeats or misplaces a row or a column misses by far more (max_err_ulp in the report shows
// how close real errors come).
#pragma once

#include <cmath>
#include <cstdint>

namespace checkasm {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24: unit roundoff of f32
constexpr double kExp2Err = 4.0;         // per exp2 call, relative, in units of kU
constexpr double kLn2 = 0.6931471805599453;

// gamma(n) / u = n / (1 - n u): the rounding error of n operations, in units of u.
inline double gamma_ulps(int64_t n) { return double(n) / (1.0 - double(n) * kU); }

}  // namespace checkasm
