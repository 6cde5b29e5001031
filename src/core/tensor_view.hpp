// A validated view of an sa_tensor: shape and strides checked once at the API boundary
// (non-negative, offsets fit in int64/ptrdiff_t), so kernels index without checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "sparseattn.h"

namespace sa {

size_t dtype_size(sa_dtype dtype);
const char *dtype_name(sa_dtype dtype);

struct TensorView {
  void *data = nullptr;
  sa_dtype dtype = SA_DTYPE_F32;
  int rank = 0;
  int64_t shape[SA_MAX_RANK] = {0, 0, 0, 0};
  int64_t stride[SA_MAX_RANK] = {0, 0, 0, 0};  // elements
  int64_t numel = 0;

  template <class T>
  T *ptr() const { return static_cast<T *>(data); }
  char *bytes() const { return static_cast<char *>(data); }
};

// Validates t as a CPU tensor of the given rank and one of the given dtypes. `name` is the
// argument name used in messages. CUDA tensors fail with SA_ERR_BACKEND_UNAVAILABLE.
TensorView view_tensor(const sa_tensor *t, const char *name, int rank,
                       std::initializer_list<sa_dtype> dtypes);

// Checks shape[dim] == expected, naming both in the message.
void expect_dim(const TensorView &v, const char *name, int dim, int64_t expected,
                const char *what);

// Element `off` (in elements) of a float tensor, as f32: the scalar path for small inputs such
// as queries; kernels read K/V in bulk.
float read_float(const TensorView &t, int64_t off);

// a * b with overflow -> SA_ERR_OVERFLOW naming `what`.
int64_t checked_mul(int64_t a, int64_t b, const char *what);
int64_t checked_add(int64_t a, int64_t b, const char *what);

}  // namespace sa
