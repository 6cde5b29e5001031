// The two passes exact selection makes over one list's scored prefix in a prefill, after each
// query head's softmax: the list's masses (its heads' probabilities summed), and the slots whose
// mass reaches a pivot. A prefill's queries each rank thousands of keys for a few hundred; a
// pivot taken from the previous query's k-th best mass leaves a short list to rank exactly, in
// one vectorised compare pass instead of a histogram pass and a compare-and-push pass.
#pragma once

#include <cstdint>
#include <vector>

#include "select/selection_merge.hpp"

namespace sa {

// mass[j] = norm * (rows[0][j] * inv[0] + rows[1][j] * inv[1] + ...) for j < n, the products
// added in head order starting from 0 and heads with inv[g] == 0 left out: the bits of a zeroed
// mass, add_softmax_mass of each head in turn (candidate_rescore.hpp), then a scaling by norm.
void group_mass(const float *const *rows, const float *inv, int64_t heads, int64_t n, float norm, float *mass);

// Writes to slots every j < n with mass[j] >= pivot, ascending, and returns their number, or
// -1 (slots unspecified) when a mass is NaN: ranks_before does not order NaN, so the caller
// takes the path that handles it. slots has room for n + kReachingSlack entries (whole vectors
// are stored past the last one).
constexpr int64_t kReachingSlack = 16;
int64_t collect_reaching(const float *mass, int64_t n, float pivot, int32_t *slots);

// group_mass, then collect_reaching over its masses, in one pass (every mass is written, NaN or
// not); with avx512 (the context's kernels are AVX-512 ones: the CPU has it and no cap forbids
// it) 16 masses a step, else the two functions in turn. The same bits and slots either way.
int64_t group_mass_reaching(const float *const *rows, const float *inv, int64_t heads, int64_t n, float norm,
                            float *mass, float pivot, int32_t *slots, bool avx512);

}  // namespace sa

namespace sa {

// std::nth_element(c.begin(), c.begin() + k, c.end(), ranks_before) for 0 <= k < c.size()
// (no NaN score): c[k] is the candidate a sort would put there, those before it rank before
// it. Branch-free partitions: the comparisons of a few hundred candidates around the k-th
// mispredict half the time in a comparison select.
void nth_best(std::vector<Candidate> &c, size_t k);

// The candidate nth_best would put at c[k], c left as it is (distinct slots, no NaN score):
// each candidate as one integer (score order key, then the slot's complement), so that a
// comparison is one instruction. keys: the caller's scratch.
Candidate kth_best(const std::vector<Candidate> &c, size_t k, std::vector<uint64_t> &keys);

}  // namespace sa
