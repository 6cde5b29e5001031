// The kernel table: one entry set per instruction set, chosen once per context.
// Kernels know nothing of the C ABI; the caller has validated every pointer and range.
#pragma once

#include <cstdint>

#include "sparseattn.h"

namespace sa {

// Element types of 16-bit K/V rows, so kernels can overload on the format.
struct F16 { uint16_t bits; };
struct BF16 { uint16_t bits; };
// inline: an explicit specialization is a variable of its own, defined in every file that
// includes this; clang (the TSan and libFuzzer builds) gives each a strong symbol otherwise.
template <class T> inline constexpr sa_dtype kDtypeOf = SA_DTYPE_F32;
template <> inline constexpr sa_dtype kDtypeOf<F16> = SA_DTYPE_F16;
template <> inline constexpr sa_dtype kDtypeOf<BF16> = SA_DTYPE_BF16;

// Most query heads one kernel call handles; larger GQA groups are split by the caller.
constexpr int kMaxGroup = 16;

// The keys one attention task reads for one KV head: a range of rows or a gathered list.
struct RowSet {
  const void *k = nullptr;       // row 0 of this KV head
  const void *v = nullptr;
  int64_t k_stride = 0;          // elements between consecutive rows (dim stride is 1)
  int64_t v_stride = 0;
  const int32_t *rows = nullptr; // gathered rows, -1 = skip; nullptr: rows begin .. begin+n-1
  int64_t begin = 0;
  int64_t n = 0;
  const int64_t *key_pos = nullptr;  // token position of each row; nullptr: position == row
  int64_t pos_limit = INT64_MAX;     // rows at positions > pos_limit are skipped (causal)
  // When set, attend_rows also stores the base-2 score of head h for every visible entry e
  // (e < n: the entry's place in the list or range) at scores[h * scores_ld + e], the value
  // its softmax used; skipped entries keep what the buffer held (slot mass reuses them).
  float *scores = nullptr;
  int64_t scores_ld = 0;
};

// Online-softmax state of `g` query heads, base 2: m = running max of the scores, l = sum of
// 2^(score - m), acc = sum of 2^(score - m) * v_row. Start from m = -inf, l = 0, acc = 0.
struct SoftmaxState {
  float *m;    // [g]
  float *l;    // [g]
  float *acc;  // [g][D]
};

// The kernels that read K/V rows, for one element type of those rows.
struct RowKernels {
  // q: [g][D] f32, already multiplied by scale * log2(e). g <= kMaxGroup. Folds the rows of rs
  // into st.
  void (*attend_rows)(const float *q, int g, int D, const RowSet &rs, SoftmaxState st);
  // scores[h * ld + j] = q_h . row_j for h < g, j < n; rows contiguous [n][D].
  void (*score_rows)(const float *q, int g, int D, const void *rows, int64_t n, float *scores, int64_t ld);
  // The attention probability of each key once the softmax is known: for every visible entry
  // e < rs.n (entry = position in the list or range), mass[e] += sum over h < g of
  // 2^(q_h . row_e - lse2[h]), heads added in order; lse2 is the base-2 log of the softmax
  // denominator of the same scaled scores (heads with lse2 = -inf add nothing). Skipped
  // entries (-1, causal) leave mass untouched.
  void (*mass_rows)(const float *q, int g, int D, const RowSet &rs, const float *lse2, float *mass);
};

// One instruction set's kernels: an entry set per K/V element type (pick it once with of()),
// and the dtype-free reductions used to turn base-2 scores into attention probabilities.
struct KernelTable {
  sa_isa isa;
  RowKernels f32, f16, bf16;
  float (*max_of)(const float *x, int64_t n);                     // -inf when n == 0
  float (*exp2_sum)(const float *x, int64_t n, float shift);      // sum 2^(x - shift)
  void (*exp2_accumulate)(const float *x, int64_t n, float shift, float *acc);  // acc += 2^(x - shift)
  // scores[h * ld + j] = scale[j] * (q_h . row_j) for h < g, j < n: int16 query codes q [g][D]
  // against rows contiguous [n][D] of int8 codes, one scale per row (compact page bounds,
  // select/page_bounds.hpp). The dot product is exact integer arithmetic: the caller keeps
  // sum_d |q_h,d| * 128 below 2^31.
  void (*score_rows_i8)(const int16_t *q, int g, int D, const int8_t *rows, const float *scale, int64_t n,
                        float *scores, int64_t ld);
  // x[i] = 2^(x[i] - shift) in place; returns their sum. One exp2 per entry where exp2_sum then
  // exp2_accumulate take two (a softmax's probabilities are then the stored terms over the sum).
  float (*exp2_store_sum)(float *x, int64_t n, float shift);

  // The entries for rows of `dtype` (F32, F16 or BF16; the caller has validated it).
  const RowKernels &of(sa_dtype dtype) const {
    return dtype == SA_DTYPE_F16 ? f16 : dtype == SA_DTYPE_BF16 ? bf16 : f32;
  }
};

// The table for the best instruction set that is <= cap and that the CPU supports.
const KernelTable &kernel_table(sa_isa cap);
// The best instruction set of this CPU (ignoring SA_ISA).
sa_isa cpu_best_isa();
// Whether kernels_avx512_vnni runs here (AVX-512 and VNNI; kernel_table's pick for AVX-512).
bool cpu_has_avx512_vnni();

extern const KernelTable kernels_scalar;
#if defined(SA_HAVE_X86_KERNELS)
extern const KernelTable kernels_avx2;
extern const KernelTable kernels_avx512;
extern const KernelTable kernels_avx512_vnni;  // the same, built with VNNI (isa SA_ISA_AVX512)
#endif
#if defined(SA_HAVE_NEON_KERNELS)
extern const KernelTable kernels_neon;
#endif

}  // namespace sa
