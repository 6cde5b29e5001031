// Prefill scoring without a GEMM library call per block: one head's keys packed once per call
// into panels of 16 keys ([D][16]: key j's value d at panel j / 16, row d, lane j % 16), and a
// register-tiled AVX-512 loop that scores a few query rows against a prefix of the panels. The
// blocks of queries can then be small (a few hundred KB of scores: the softmax passes read them
// from L2), with no per-call packing or primitive lookup.
#pragma once

#include <cstdint>

namespace sa {

constexpr int64_t kPanelKeys = 16;

// Floats of the packed keys of n keys of dimension D (n rounded up to whole panels).
inline int64_t panel_floats(int64_t n, int64_t D) { return (n + kPanelKeys - 1) / kPanelKeys * kPanelKeys * D; }

// Packs count <= 16 keys (row-major f32 rows of D values) as one panel, zero past count.
void pack_panel(const float *rows, int64_t count, int64_t D, float *panel);

// True where score_panels is the AVX-512 loop (x86-64 GCC builds; the caller also checks that
// the context may use AVX-512: its kernels are AVX-512 ones); elsewhere it is a scalar loop of
// the same chain, for tests.
bool score_panels_built();

// C[i * ldc + j] for i < M and j < N rounded up to a multiple of 16 (ldc at least that; columns
// past the last key get the padding's scores): fma(A[i][D-1], B[j][D-1], ...
// fma(A[i][0], B[j][0], 0)), one fused multiply-add per d in ascending order -- the chain that
// oneDNN's f32 matmul computes for matmul_abt's shapes (score_panels_test checks the bits).
// A: M row-major rows of D; panels: pack_panel's panels of the keys.
struct RowMaxima;
void score_panels(const float *A, int64_t M, const float *panels, int64_t N, int64_t D, float *C, int64_t ldc,
                  const RowMaxima *maxima = nullptr);

// With score_panels: each row's largest score among its first limit[i] columns, taken from the
// registers as the tiles are stored (a pass over the stored rows read them back from memory).
// Only where no score can be NaN or infinite: D * max |A| * key_bound below FLT_MAX / 2 (every
// partial sum of a chain is then finite); else every row is flagged unknown.
struct RowMaxima {
  float key_bound;       // panel_bound of the panels
  const int64_t *limit;  // M column counts, each at most N
  float *lanes;          // scratch: 16 x M floats
  float *max;            // M maxima (-inf where limit[i] is 0); unspecified where unknown[i]
  uint8_t *unknown;      // M flags: the row's inputs are not bounded (NaN, infinite or huge)
};

// The largest |x| of the floats, +inf when one is NaN or infinite.
float panel_bound(const float *x, int64_t n);

}  // namespace sa
