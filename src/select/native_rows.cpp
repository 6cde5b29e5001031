#include "select/native_rows.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"
#include "core/half.hpp"
#include "select/candidate_rescore.hpp"

namespace sa {
namespace {

// Rows copied at a time when they are not contiguous: 16 KiB of f16 rows of 128, which stay in
// L1 between the copy and the kernel.
constexpr int64_t kCopyBlockRows = 64;

float load_elem(sa_dtype dt, const void *row, int64_t d) {
  switch (dt) {
    case SA_DTYPE_F16: return f16_to_f32(static_cast<const uint16_t *>(row)[d]);
    case SA_DTYPE_BF16: return bf16_to_f32(static_cast<const uint16_t *>(row)[d]);
    default: return static_cast<const float *>(row)[d];
  }
}

}  // namespace

float round_to_dtype(float x, sa_dtype as) {
  switch (as) {
    case SA_DTYPE_F16: return f16_to_f32(f32_to_f16(x));
    case SA_DTYPE_BF16: return bf16_to_f32(f32_to_bf16(x));
    default: return x;
  }
}

NativeRows::NativeRows(const KeyStore &own)
    : own_(&own), dtype_(own.dtype()), dim_(own.dim()), elem_(dtype_size(own.dtype())) {}

NativeRows::NativeRows(const HostKeys &host, int64_t dim)
    : host_(host), dtype_(host.dtype), dim_(dim), elem_(host.elem_bytes()) {}

void NativeRows::gather(int h, const int32_t *slots, int64_t n, char *dst) const {
  const size_t rb = row_bytes();
  for (int64_t j = 0; j < n; ++j) std::memcpy(dst + size_t(j) * rb, row(h, slots[j]), rb);
}

void NativeRows::copy_range(int h, int64_t slot0, int64_t n, char *dst) const {
  const size_t rb = row_bytes();
  for (int64_t j = 0; j < n; ++j) std::memcpy(dst + size_t(j) * rb, row(h, slot0 + j), rb);
}

void NativeRows::load(int h, int64_t slot, sa_dtype as, float *out) const {
  const void *r = row(h, slot);
  if (dtype_ == as) {
    for (int64_t d = 0; d < dim_; ++d) out[d] = load_elem(dtype_, r, d);
  } else {
    for (int64_t d = 0; d < dim_; ++d) out[d] = round_to_dtype(load_elem(dtype_, r, d), as);
  }
}

NativeRows host_rows(const SelectRequest &req, int64_t dim) {
  if (!req.host_keys) fail(SA_ERR_INTERNAL, "an index that borrows the host's keys was given none");
  return NativeRows(*req.host_keys, dim);
}

NativeRows native_rows(const KeyStore &keys, const SelectRequest &req) {
  if (keys.has_rows()) return NativeRows(keys);
  return host_rows(req, keys.dim());
}

void score_slot_range(const KernelTable &k, const NativeRows &rows, int h, const float *q, int64_t q_heads,
                      int64_t slot0, int64_t n, float *scores, int64_t ld, std::vector<char> &buf) {
  if (n <= 0) return;
  const int64_t D = rows.dim();
  if (rows.contiguous()) {
    score_rows_grouped(k.of(rows.dtype()), q, q_heads, D, rows.row(h, slot0), n, scores, ld);
    return;
  }
  buf.resize(size_t(kCopyBlockRows) * rows.row_bytes());
  for (int64_t j0 = 0; j0 < n; j0 += kCopyBlockRows) {
    const int64_t m = std::min(kCopyBlockRows, n - j0);
    rows.copy_range(h, slot0 + j0, m, buf.data());
    score_rows_grouped(k.of(rows.dtype()), q, q_heads, D, buf.data(), m, scores + j0, ld);
  }
}

void load_tensor_row(const TensorView &keys, int64_t r, int h, sa_dtype as, float *out) {
  const int64_t D = keys.shape[2], base = r * keys.stride[0] + h * keys.stride[1];
  if (keys.dtype == as) {
    for (int64_t d = 0; d < D; ++d) out[d] = read_float(keys, base + d * keys.stride[2]);
  } else {
    for (int64_t d = 0; d < D; ++d) out[d] = round_to_dtype(read_float(keys, base + d * keys.stride[2]), as);
  }
}

}  // namespace sa
