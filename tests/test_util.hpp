// Shared helpers for the sparseattn unit tests: deterministic random numbers, f16/bf16
// encoders written independently of the library, tensors surrounded by canary bytes, RAII
// handles and tolerance checks. Everything here is test-side code; nothing calls into src/.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "sparseattn.h"

namespace sat {

// ------------------------------------------------------------------ status checks

// Prints the status name and the library's message when a call fails.
#define ASSERT_SA_OK(expr)                                                              \
  do {                                                                                 \
    sa_status sat_status_ = (expr);                                                    \
    ASSERT_EQ(sat_status_, SA_OK) << #expr << " -> " << sa_status_name(sat_status_)    \
                                  << ": " << sa_last_error();                          \
  } while (0)

#define EXPECT_SA_OK(expr)                                                              \
  do {                                                                                 \
    sa_status sat_status_ = (expr);                                                    \
    EXPECT_EQ(sat_status_, SA_OK) << #expr << " -> " << sa_status_name(sat_status_)    \
                                  << ": " << sa_last_error();                          \
  } while (0)

// A failed call must return exactly `want` and leave a message naming the problem.
#define EXPECT_SA_ERR(want, expr)                                                       \
  do {                                                                                 \
    sa_status sat_status_ = (expr);                                                    \
    EXPECT_EQ(sat_status_, (want)) << #expr << " -> " << sa_status_name(sat_status_)   \
                                   << " (wanted " << sa_status_name(want)              \
                                   << "): " << sa_last_error();                        \
    if (sat_status_ != SA_OK) {                                                        \
      EXPECT_STRNE(sa_last_error(), "") << #expr;                                      \
    }                                                                                  \
  } while (0)

// ------------------------------------------------------------------ random numbers

// mt19937_64 is specified bit for bit by the standard; the transforms below are ours, so
// the same seed gives the same tensors on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double uniform() { return double(gen_() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  int64_t below(int64_t n) { return int64_t(gen_() % uint64_t(n)); }

 private:
  std::mt19937_64 gen_;
};

// ------------------------------------------------------------------ 16-bit floats

// Decoders and round-to-nearest-even encoders built on frexp/ldexp, deliberately unlike
// the library's bit manipulation.
inline double f16_to_double(uint16_t h) {
  int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  double v;
  if (exp == 0x1f) v = man ? std::numeric_limits<double>::quiet_NaN() : INFINITY;
  else if (exp == 0) v = std::ldexp(double(man), -24);
  else v = std::ldexp(double(1024 + man), exp - 25);
  return sign ? -v : v;
}

inline double bf16_to_double(uint16_t b) {
  int sign = (b >> 15) & 1, exp = (b >> 7) & 0xff, man = b & 0x7f;
  double v;
  if (exp == 0xff) v = man ? std::numeric_limits<double>::quiet_NaN() : INFINITY;
  else if (exp == 0) v = std::ldexp(double(man), -133);
  else v = std::ldexp(double(128 + man), exp - 134);
  return sign ? -v : v;
}

// Generic binary encoder: `man_bits` explicit mantissa bits, exponent bias `bias`,
// `exp_max` the all-ones exponent field.
inline uint16_t encode_small_float(double x, int man_bits, int bias, int exp_max) {
  uint16_t sign = std::signbit(x) ? uint16_t(1u << 15) : 0;
  uint16_t inf = uint16_t(sign | (exp_max << man_bits));
  if (std::isnan(x)) return uint16_t(inf | (1 << (man_bits - 1)));
  double a = std::fabs(x);
  if (std::isinf(a)) return inf;
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  int unbiased = e - 1;
  int min_normal = 1 - bias;
  if (a == 0.0 || unbiased < min_normal) {
    // Subnormal: integer multiples of 2^(min_normal - man_bits).
    double m = std::nearbyint(std::ldexp(a, man_bits - min_normal));
    return uint16_t(sign | uint16_t(m));  // m == 2^man_bits rolls into the smallest normal
  }
  double m = std::nearbyint(std::ldexp(a, man_bits - unbiased));  // in [2^mb, 2^(mb+1)]
  if (m >= std::ldexp(1.0, man_bits + 1)) {
    m /= 2;
    ++unbiased;
  }
  if (unbiased + bias >= exp_max) return inf;
  return uint16_t(sign | ((unbiased + bias) << man_bits) | (uint16_t(m) - (1u << man_bits)));
}
inline uint16_t double_to_f16(double x) { return encode_small_float(x, 10, 15, 31); }
inline uint16_t double_to_bf16(double x) { return encode_small_float(x, 7, 127, 255); }

inline size_t dtype_bytes(sa_dtype dt) {
  switch (dt) {
    case SA_DTYPE_F32: case SA_DTYPE_I32: return 4;
    case SA_DTYPE_F16: case SA_DTYPE_BF16: return 2;
    case SA_DTYPE_I64: return 8;
  }
  return 1;
}

// Reads element `off` (in elements) of a buffer of dtype dt as a double.
inline double load_as_double(const void *base, sa_dtype dt, int64_t off) {
  const char *p = static_cast<const char *>(base) + off * int64_t(dtype_bytes(dt));
  switch (dt) {
    case SA_DTYPE_F32: { float f; std::memcpy(&f, p, 4); return f; }
    case SA_DTYPE_F16: { uint16_t h; std::memcpy(&h, p, 2); return f16_to_double(h); }
    case SA_DTYPE_BF16: { uint16_t h; std::memcpy(&h, p, 2); return bf16_to_double(h); }
    case SA_DTYPE_I32: { int32_t i; std::memcpy(&i, p, 4); return i; }
    case SA_DTYPE_I64: { int64_t i; std::memcpy(&i, p, 8); return double(i); }
  }
  return 0;
}

inline void store_from_double(void *base, sa_dtype dt, int64_t off, double v) {
  char *p = static_cast<char *>(base) + off * int64_t(dtype_bytes(dt));
  switch (dt) {
    case SA_DTYPE_F32: { float f = float(v); std::memcpy(p, &f, 4); break; }
    case SA_DTYPE_F16: { uint16_t h = double_to_f16(v); std::memcpy(p, &h, 2); break; }
    case SA_DTYPE_BF16: { uint16_t h = double_to_bf16(v); std::memcpy(p, &h, 2); break; }
    case SA_DTYPE_I32: { int32_t i = int32_t(v); std::memcpy(p, &i, 4); break; }
    case SA_DTYPE_I64: { int64_t i = int64_t(v); std::memcpy(p, &i, 8); break; }
  }
}

// Rounds v to the nearest value representable in dt (what storing then loading gives).
inline double round_to(sa_dtype dt, double v) {
  switch (dt) {
    case SA_DTYPE_F32: return double(float(v));
    case SA_DTYPE_F16: return f16_to_double(double_to_f16(v));
    case SA_DTYPE_BF16: return bf16_to_double(double_to_bf16(v));
    default: return v;
  }
}

// ------------------------------------------------------------------ tensors with canaries

constexpr unsigned char kCanary = 0xA5;
constexpr size_t kGuardBytes = 64;

// Test-owned memory behind an sa_tensor. The elements sit between two guard regions, and
// strided layouts leave gaps; `poison()` fills everything with a canary so a test can prove
// that a call wrote nothing (on failure) or nothing outside the elements (on success).
class Tensor {
 public:
  Tensor() = default;
  // strides empty: contiguous, described to the library with all-zero strides (the
  // documented "contiguous" shorthand). Otherwise the given element strides.
  Tensor(sa_dtype dtype, std::vector<int64_t> shape, std::vector<int64_t> strides = {})
      : shape_(std::move(shape)) {
    int rank = int(shape_.size());
    std::memset(&desc_, 0, sizeof desc_);
    desc_.dtype = dtype;
    desc_.device = SA_DEVICE_CPU;
    desc_.rank = rank;
    strides_.assign(rank, 0);
    if (strides.empty()) {
      int64_t s = 1;
      for (int i = rank - 1; i >= 0; --i) {
        strides_[i] = s;
        s *= std::max<int64_t>(shape_[i], 1);
      }
    } else {
      strides_ = strides;
      for (int i = 0; i < rank; ++i) desc_.strides[i] = strides[i];
    }
    numel_ = 1;
    int64_t last = 0;
    for (int i = 0; i < rank; ++i) {
      desc_.shape[i] = shape_[i];
      numel_ *= shape_[i];
      last += (shape_[i] - 1) * strides_[i];
    }
    span_elems_ = numel_ > 0 ? last + 1 : 0;
    storage_.assign(2 * kGuardBytes + size_t(span_elems_) * dtype_bytes(dtype), kCanary);
    desc_.data = storage_.data() + kGuardBytes;
    snapshot();
  }
  // Copies must not alias the original storage.
  Tensor(const Tensor &o) { *this = o; }
  Tensor &operator=(const Tensor &o) {
    shape_ = o.shape_;
    strides_ = o.strides_;
    numel_ = o.numel_;
    span_elems_ = o.span_elems_;
    storage_ = o.storage_;
    snap_ = o.snap_;
    desc_ = o.desc_;
    desc_.data = storage_.data() + kGuardBytes;
    return *this;
  }

  sa_tensor *t() { return &desc_; }
  const sa_tensor *t() const { return &desc_; }
  sa_dtype dtype() const { return desc_.dtype; }
  int64_t numel() const { return numel_; }
  int64_t dim(int i) const { return shape_[size_t(i)]; }
  const std::vector<int64_t> &shape() const { return shape_; }
  void *data() { return desc_.data; }

  int64_t offset(std::initializer_list<int64_t> idx) const {
    int64_t off = 0;
    int i = 0;
    for (int64_t x : idx) off += x * strides_[size_t(i++)];
    return off;
  }
  double get(std::initializer_list<int64_t> idx) const { return load_as_double(desc_.data, dtype(), offset(idx)); }
  void set(std::initializer_list<int64_t> idx, double v) { store_from_double(desc_.data, dtype(), offset(idx), v); }

  // Element offsets in logical row-major order.
  std::vector<int64_t> offsets() const {
    std::vector<int64_t> out;
    out.reserve(size_t(numel_));
    if (numel_ == 0) return out;
    std::vector<int64_t> idx(shape_.size(), 0);
    for (int64_t n = 0; n < numel_; ++n) {
      int64_t off = 0;
      for (size_t i = 0; i < idx.size(); ++i) off += idx[i] * strides_[i];
      out.push_back(off);
      for (int i = int(idx.size()) - 1; i >= 0; --i) {
        if (++idx[size_t(i)] < shape_[size_t(i)]) break;
        idx[size_t(i)] = 0;
      }
    }
    return out;
  }
  std::vector<double> values() const {
    std::vector<double> out;
    for (int64_t off : offsets()) out.push_back(load_as_double(desc_.data, dtype(), off));
    return out;
  }
  void set_values(const std::vector<double> &v) {
    auto offs = offsets();
    for (size_t i = 0; i < offs.size(); ++i) store_from_double(desc_.data, dtype(), offs[i], v[i]);
  }
  // Fills the elements with normal(0, sigma) values rounded to the dtype; gaps keep canaries.
  Tensor &randomize(Rng &rng, double sigma = 1.0) {
    for (int64_t off : offsets()) store_from_double(desc_.data, dtype(), off, sigma * rng.normal());
    return *this;
  }

  // Every byte, elements included, becomes the canary; remembered as the reference state.
  void poison() {
    std::fill(storage_.begin(), storage_.end(), kCanary);
    snapshot();
  }
  void snapshot() { snap_ = storage_; }

  // On failure: nothing at all may have changed.
  ::testing::AssertionResult untouched() const {
    for (size_t i = 0; i < storage_.size(); ++i)
      if (storage_[i] != snap_[i])
        return ::testing::AssertionFailure() << "byte " << describe_byte(i) << " was written";
    return ::testing::AssertionSuccess();
  }
  // On success: guards and gaps between elements keep their bytes.
  ::testing::AssertionResult only_elements_written() const {
    std::vector<char> mine(storage_.size(), 0);
    size_t es = dtype_bytes(dtype());
    for (int64_t off : offsets())
      for (size_t b = 0; b < es; ++b) mine[kGuardBytes + size_t(off) * es + b] = 1;
    for (size_t i = 0; i < storage_.size(); ++i)
      if (!mine[i] && storage_[i] != snap_[i])
        return ::testing::AssertionFailure() << "byte " << describe_byte(i)
                                             << " outside the tensor's elements was written";
    return ::testing::AssertionSuccess();
  }

 private:
  std::string describe_byte(size_t i) const {
    std::ostringstream s;
    if (i < kGuardBytes) s << (kGuardBytes - i) << " before the data";
    else if (i >= storage_.size() - kGuardBytes) s << (i - (storage_.size() - kGuardBytes)) << " past the end";
    else s << "at data+" << (i - kGuardBytes);
    return s.str();
  }

  std::vector<int64_t> shape_, strides_;
  int64_t numel_ = 0, span_elems_ = 0;
  std::vector<unsigned char> storage_, snap_;
  sa_tensor desc_{};
};

// Contiguous tensor of `dtype` holding `values` (rounded to the dtype).
inline Tensor tensor_of(sa_dtype dtype, std::vector<int64_t> shape, const std::vector<double> &values) {
  Tensor t(dtype, std::move(shape));
  t.set_values(values);
  return t;
}
inline Tensor random_tensor(Rng &rng, sa_dtype dtype, std::vector<int64_t> shape,
                            std::vector<int64_t> strides = {}, double sigma = 1.0) {
  Tensor t(dtype, std::move(shape), std::move(strides));
  t.randomize(rng, sigma);
  return t;
}
// A [n, H, D] view of a head-major buffer [H][n][D] (strides {D, n*D, 1}).
inline std::vector<int64_t> head_major_strides(int64_t n, int64_t D) { return {D, n * D, 1}; }
// A [n, H, D] view whose rows are padded: D elements used out of d_pad, heads h_pad apart.
inline std::vector<int64_t> padded_strides(int64_t h_pad, int64_t d_pad) { return {h_pad * d_pad, d_pad, 1}; }

// ------------------------------------------------------------------ handles

struct ContextDeleter {
  void operator()(sa_context *c) const { sa_context_destroy(&c); }
};
struct IndexDeleter {
  void operator()(sa_index *i) const { sa_index_destroy(&i); }
};
using ContextPtr = std::unique_ptr<sa_context, ContextDeleter>;
using IndexPtr = std::unique_ptr<sa_index, IndexDeleter>;

// Returns nullptr (with a test failure recorded) when creation fails.
inline ContextPtr make_context(int32_t threads = 1, sa_isa isa = SA_ISA_AUTO) {
  sa_context_options o = SA_CONTEXT_OPTIONS_INIT;
  o.threads = threads;
  o.isa = isa;
  sa_context *c = nullptr;
  sa_status s = sa_context_create(&o, &c);
  EXPECT_EQ(s, SA_OK) << sa_last_error();
  return ContextPtr(s == SA_OK ? c : nullptr);
}

inline IndexPtr make_index(sa_context *ctx, int32_t h_kv, int32_t d, sa_dtype dtype = SA_DTYPE_F32,
                           sa_selector_kind kind = SA_SELECTOR_EXACT) {
  sa_index_options o = SA_INDEX_OPTIONS_INIT;
  o.kind = kind;
  o.num_kv_heads = h_kv;
  o.head_dim = d;
  o.dtype = dtype;
  sa_index *ix = nullptr;
  sa_status s = sa_index_create(ctx, &o, &ix);
  EXPECT_EQ(s, SA_OK) << sa_last_error();
  return IndexPtr(s == SA_OK ? ix : nullptr);
}

// A fixture owning a one-thread context; tests that need more threads make their own.
class ContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ctx_ = make_context(1);
    ASSERT_NE(ctx_, nullptr);
  }
  sa_context *ctx() { return ctx_.get(); }
  ContextPtr ctx_;
};

// ------------------------------------------------------------------ selections

inline sa_select_options select_options(int32_t top_k, int32_t window, int32_t sinks) {
  sa_select_options o = SA_SELECT_OPTIONS_INIT;
  o.top_k = top_k;
  o.window = window;
  o.sinks = sinks;
  return o;
}

// List (i, h) of an i32 [n_q, H, width] selection output.
inline std::vector<int32_t> row_of(const Tensor &t, int64_t i, int64_t h) {
  std::vector<int32_t> r;
  for (int64_t w = 0; w < t.dim(2); ++w) r.push_back(int32_t(t.get({i, h, w})));
  return r;
}

inline bool contains(const std::vector<int32_t> &row, int32_t slot) {
  return std::find(row.begin(), row.end(), slot) != row.end();
}

// ------------------------------------------------------------------ comparisons

// max |got - ref| <= rel * max |ref| (plus a tiny absolute floor for all-zero refs).
inline ::testing::AssertionResult close_rel(const std::vector<double> &got, const std::vector<double> &ref,
                                            double rel, double abs_floor = 1e-30) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs reference " << ref.size();
  double max_ref = 0, max_diff = 0;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(ref[i]));
    double d = std::fabs(got[i] - ref[i]);
    if (!(d <= max_diff)) {  // NaN counts as the worst
      max_diff = std::isnan(d) ? INFINITY : d;
      worst = i;
    }
  }
  if (max_diff <= rel * max_ref + abs_floor) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max |diff| " << max_diff << " at element " << worst << " (got "
                                       << got[worst] << ", reference " << ref[worst] << "), max |ref| "
                                       << max_ref << ", relative " << max_diff / max_ref << " > " << rel;
}

// True when the CPU can run the given instruction set (x86 only; others report false).
inline bool cpu_has(sa_isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
    case SA_ISA_SCALAR: return true;
    case SA_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SA_ISA_AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    default: return false;
  }
#else
  return isa == SA_ISA_SCALAR;
#endif
}

// The cap the SA_ISA environment variable puts on every context (SA_ISA_AUTO: none).
inline sa_isa env_isa_cap() {
  const char *e = std::getenv("SA_ISA");
  if (!e) return SA_ISA_AUTO;
  std::string s(e);
  if (s == "scalar") return SA_ISA_SCALAR;
  if (s == "neon") return SA_ISA_NEON;
  if (s == "avx2") return SA_ISA_AVX2;
  if (s == "avx512") return SA_ISA_AVX512;
  return SA_ISA_AUTO;
}

// Instruction-set ranks on x86 for "at most" comparisons.
inline int isa_rank(sa_isa isa) {
  switch (isa) {
    case SA_ISA_SCALAR: return 0;
    case SA_ISA_NEON: return 1;
    case SA_ISA_AVX2: return 1;
    case SA_ISA_AVX512: return 2;
    default: return 3;
  }
}

}  // namespace sat
