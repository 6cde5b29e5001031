// Where a selector reads the native keys of its slots: the rows of its own KeyStore, or, for an
// index created with borrow_keys, the host's keys of the request (host_keys.hpp). Scoring and
// loading go through here so the two give bit-identical scores: a row's dot product does not
// depend on where the row lies, and rows that are not D elements apart are copied (bits
// unchanged) into a small block before the kernels, which take contiguous rows.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/kernels.hpp"
#include "core/tensor_view.hpp"
#include "select/host_keys.hpp"
#include "select/key_store.hpp"
#include "select/selector.hpp"

namespace sa {

class NativeRows {
 public:
  explicit NativeRows(const KeyStore &own);       // own.has_rows()
  NativeRows(const HostKeys &host, int64_t dim);  // the host's rows of dim elements

  sa_dtype dtype() const { return dtype_; }
  int64_t dim() const { return dim_; }
  size_t row_bytes() const { return size_t(dim_) * elem_; }
  const void *row(int h, int64_t slot) const { return own_ ? own_->row(h, slot) : host_.row(h, slot); }
  // Whether the rows of consecutive slots lie dim() elements apart, so a range of them is one
  // contiguous block the kernels read in place.
  bool contiguous() const { return own_ != nullptr || host_.rows_contiguous(dim_); }
  // Copies the rows of the n listed slots of head h to dst (row_bytes() each, bits unchanged).
  void gather(int h, const int32_t *slots, int64_t n, char *dst) const;
  // Copies the rows of slots [slot0, slot0 + n) of head h to dst.
  void copy_range(int h, int64_t slot0, int64_t n, char *dst) const;
  // Row values as f32, rounded to `as` first: what a copy of the keys in dtype `as` would hold.
  void load(int h, int64_t slot, sa_dtype as, float *out) const;

 private:
  const KeyStore *own_ = nullptr;
  HostKeys host_;
  sa_dtype dtype_;
  int64_t dim_;
  size_t elem_;
};

// The rows a selector whose KeyStore may keep none reads: its own, else req.host_keys (which the
// api layer sets for every index created with borrow_keys; SA_ERR_INTERNAL when absent).
NativeRows native_rows(const KeyStore &keys, const SelectRequest &req);
// The host's rows of the request (SA_ERR_INTERNAL when it has none).
NativeRows host_rows(const SelectRequest &req, int64_t dim);

// scores[g * ld + j] = q_g . row(h, slot0 + j) for g < q_heads, j < n: in place when the rows
// are contiguous, else in blocks copied to buf.
void score_slot_range(const KernelTable &k, const NativeRows &rows, int h, const float *q, int64_t q_heads,
                      int64_t slot0, int64_t n, float *scores, int64_t ld, std::vector<char> &buf);

// Row r of keys [n, H, D] (an append's or update's tensor), head h, as f32 rounded to `as`:
// the values a KeyStore of dtype `as` would hold for it.
void load_tensor_row(const TensorView &keys, int64_t r, int h, sa_dtype as, float *out);

// x as a key store of dtype `as` would hold it.
float round_to_dtype(float x, sa_dtype as);

}  // namespace sa
