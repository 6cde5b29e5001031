#include "select/mass_filter.hpp"

#include <algorithm>
#include <functional>

#include "select/order_key.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define SA_MASS_AVX512 1
#endif

namespace sa {
namespace {

// One head count per loop, so that the compiler vectorises over j (products in head order).
template <int H>
void group_mass_n(const float *const *rows, const float *inv, int64_t n, float norm, float *mass) {
  for (int64_t j = 0; j < n; ++j) {
    float acc = 0.f;
    for (int g = 0; g < H; ++g) acc += rows[g][j] * inv[g];
    mass[j] = acc * norm;
  }
}

#if defined(SA_MASS_AVX512)
// 16 masses a step, each as group_mass_n adds it: products in head order from 0, no fused
// multiply-add (contraction off: the bits of the scalar loop). The reaching slots are
// compressed in a register and stored whole (a store per push_back was half the pass's time).
__attribute__((target("avx512f"), optimize("fp-contract=off")))
int64_t mass_reaching_avx512(const float *const *r, const float *w, int64_t active, int64_t n, float norm, float *mass,
                             float pivot, int32_t *slots) {
  const __m512 p = _mm512_set1_ps(pivot), scale = _mm512_set1_ps(norm);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __mmask16 nan = 0;
  int64_t j = 0, count = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t a = 0; a < active; ++a) acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(r[a] + j), _mm512_set1_ps(w[a])));
    const __m512 m = _mm512_mul_ps(acc, scale);
    _mm512_storeu_ps(mass + j, m);
    nan |= _mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q);
    const __mmask16 reach = _mm512_cmp_ps_mask(m, p, _CMP_GE_OQ);
    _mm512_storeu_si512(slots + count, _mm512_maskz_compress_epi32(reach, idx));
    count += __builtin_popcount(unsigned(reach));
    idx = _mm512_add_epi32(idx, step);
  }
  bool tail_nan = false;
  for (; j < n; ++j) {
    float acc = 0.f;
    for (int64_t a = 0; a < active; ++a) acc += r[a][j] * w[a];
    mass[j] = acc * norm;
    tail_nan |= mass[j] != mass[j];
    slots[count] = int32_t(j);
    count += mass[j] >= pivot;
  }
  return nan || tail_nan ? -1 : count;
}
#endif

}  // namespace

int64_t group_mass_reaching(const float *const *rows, const float *inv, int64_t heads, int64_t n, float norm,
                            float *mass, float pivot, int32_t *slots, bool avx512) {
#if defined(SA_MASS_AVX512)
  constexpr int64_t kMaxHeads = 16;
  if (avx512 && heads <= kMaxHeads) {
    const float *r[kMaxHeads];
    float w[kMaxHeads];
    int64_t active = 0;
    for (int64_t g = 0; g < heads; ++g)
      if (inv[g] != 0.f) {
        r[active] = rows[g];
        w[active++] = inv[g];
      }
    return mass_reaching_avx512(r, w, active, n, norm, mass, pivot, slots);
  }
#endif
  (void)avx512;
  group_mass(rows, inv, heads, n, norm, mass);
  return collect_reaching(mass, n, pivot, slots);
}

void group_mass(const float *const *rows, const float *inv, int64_t heads, int64_t n, float norm, float *mass) {
  // The heads a softmax reached (inv 0: every score -inf, a row add_softmax_mass skips).
  constexpr int64_t kMaxHeads = 8;
  const float *r[kMaxHeads];
  float w[kMaxHeads];
  int64_t active = 0;
  for (int64_t g = 0; g < heads; ++g) active += inv[g] != 0.f;
  if (active <= kMaxHeads) {
    active = 0;
    for (int64_t g = 0; g < heads; ++g)
      if (inv[g] != 0.f) {
        r[active] = rows[g];
        w[active++] = inv[g];
      }
    switch (active) {
      case 1: return group_mass_n<1>(r, w, n, norm, mass);
      case 2: return group_mass_n<2>(r, w, n, norm, mass);
      case 4: return group_mass_n<4>(r, w, n, norm, mass);
      case 8: return group_mass_n<8>(r, w, n, norm, mass);
      default: break;
    }
  }
  for (int64_t j = 0; j < n; ++j) mass[j] = 0.f;
  for (int64_t g = 0; g < heads; ++g)
    if (inv[g] != 0.f)
      for (int64_t j = 0; j < n; ++j) mass[j] += rows[g][j] * inv[g];
  for (int64_t j = 0; j < n; ++j) mass[j] *= norm;
}

int64_t collect_reaching(const float *mass, int64_t n, float pivot, int32_t *slots) {
  int64_t j = 0, count = 0;
  bool nan = false;
#if defined(__SSE2__)
  // 16 compares to a bit mask, then one write per set bit (few: the pivot keeps a few hundred).
  const __m128 p = _mm_set1_ps(pivot);
  int unord = 0;
  for (; j + 16 <= n; j += 16) {
    unsigned bits = 0;
    for (int k = 0; k < 4; ++k) {
      const __m128 x = _mm_loadu_ps(mass + j + 4 * k);
      bits |= unsigned(_mm_movemask_ps(_mm_cmpge_ps(x, p))) << (4 * k);
      unord |= _mm_movemask_ps(_mm_cmpunord_ps(x, x));
    }
    for (; bits; bits &= bits - 1) slots[count++] = int32_t(j + __builtin_ctz(bits));
  }
  nan = unord != 0;
#endif
  for (; j < n; ++j) {
    nan |= mass[j] != mass[j];
    slots[count] = int32_t(j);
    count += mass[j] >= pivot;
  }
  return nan ? -1 : count;
}

}  // namespace sa

namespace sa {

void nth_best(std::vector<Candidate> &c, size_t k) {
  size_t lo = 0, hi = c.size();  // c[k] lies in [lo, hi)
  for (int round = 0; hi - lo > 16; ++round) {
    if (round == 64) break;  // adversarial pivots: the library's select below
    // Median of three as the pivot, moved to hi - 1.
    const size_t mid = lo + (hi - lo) / 2;
    Candidate &a = c[lo], &b = c[mid], &z = c[hi - 1];
    if (ranks_before(b, a)) std::swap(a, b);
    if (ranks_before(z, b)) std::swap(b, z);
    if (ranks_before(b, a)) std::swap(a, b);
    std::swap(b, z);  // the median at hi - 1
    const Candidate p = c[hi - 1];
    size_t i = lo;
    for (size_t j = lo; j + 1 < hi; ++j) {  // [lo, i): rank before p; [i, j): do not
      const Candidate x = c[j];
      const bool before = (x.score > p.score) | ((x.score == p.score) & (x.slot < p.slot));
      c[j] = c[i];
      c[i] = x;
      i += before;
    }
    std::swap(c[i], c[hi - 1]);  // p at its sorted place
    if (i == k) return;
    if (k < i) hi = i;
    else lo = i + 1;
  }
  std::nth_element(c.begin() + long(lo), c.begin() + long(k), c.begin() + long(hi), ranks_before);
}

Candidate kth_best(const std::vector<Candidate> &c, size_t k, std::vector<uint64_t> &keys) {
  // Larger key: ranks before (higher score; equal scores, lower slot).
  keys.resize(c.size());
  for (size_t j = 0; j < c.size(); ++j) keys[j] = uint64_t(order_key(c[j].score)) << 32 | uint32_t(~uint32_t(c[j].slot));
  size_t lo = 0, hi = keys.size();  // the k-th largest lies in [lo, hi)
  bool found = false;
  for (int round = 0; !found && hi - lo > 16 && round < 64; ++round) {
    const size_t mid = lo + (hi - lo) / 2;
    uint64_t &a = keys[lo], &b = keys[mid], &z = keys[hi - 1];
    if (b > a) std::swap(a, b);
    if (z > b) std::swap(b, z);
    if (b > a) std::swap(a, b);
    std::swap(b, z);  // the median of three at hi - 1
    const uint64_t p = keys[hi - 1];
    size_t i = lo;
    for (size_t j = lo; j + 1 < hi; ++j) {  // [lo, i): above p
      const uint64_t x = keys[j];
      keys[j] = keys[i];
      keys[i] = x;
      i += x > p;
    }
    std::swap(keys[i], keys[hi - 1]);
    found = i == k;
    if (k < i) hi = i;
    else lo = i + 1;
  }
  if (!found)  // a short range left (or adversarial pivots): the library's select
    std::nth_element(keys.begin() + long(lo), keys.begin() + long(k), keys.begin() + long(hi), std::greater<uint64_t>());
  const uint64_t key = keys[k];
  return {key_float(uint32_t(key >> 32)), int32_t(~uint32_t(key))};
}

}  // namespace sa
