// NEON kernels (AArch64, where NEON is baseline).
#include <arm_neon.h>

#include <xsimd/xsimd.hpp>

#include "kernels/kernels.hpp"

#define SA_KERNEL_NS neon
namespace sa {
namespace neon {
namespace {
using arch = xsimd::neon64;
using Batch = xsimd::batch<float, arch>;
inline Batch load_f32(const float *p) { return Batch::load_unaligned(p); }
inline Batch load_f32(const F16 *p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t *>(p))));
}
inline Batch load_f32(const BF16 *p) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t *>(p)), 16));
}
using Codes = int16x8_t;
using CodeAcc = int32x4_t;
constexpr int kCodeRows = 4;
constexpr int kCodeLanes = 8;
inline CodeAcc code_acc_zero() { return vdupq_n_s32(0); }
inline Codes load_codes(const int8_t *p) { return vmovl_s8(vld1_s8(p)); }
inline CodeAcc madd_add(CodeAcc a, Codes k, const int16_t *q) {
  const int16x8_t x = vld1q_s16(q);
  return vmlal_high_s16(vmlal_s16(a, vget_low_s16(k), vget_low_s16(x)), k, x);
}
inline int32_t hsum(CodeAcc a) { return vaddvq_s32(a); }
inline void hsum8(const CodeAcc *a, int32_t *out) {
  for (int i = 0; i < 8; ++i) out[i] = vaddvq_s32(a[i]);
}
// Lane j = sum of rows[j]; spelled out with stores (not exercised by CI, so kept obvious).
inline Batch transpose_sum(const Batch *rows) {
  alignas(16) float t[4], out[4];
  for (int j = 0; j < 4; ++j) {
    rows[j].store_aligned(t);
    out[j] = t[0] + t[1] + t[2] + t[3];
  }
  return Batch::load_aligned(out);
}
}  // namespace
}  // namespace neon
}  // namespace sa
#include "kernels/kernels_simd.hpp"

namespace sa {
extern const KernelTable kernels_neon = neon::table(SA_ISA_NEON);
}
