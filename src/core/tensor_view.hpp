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
  sa_device_type device = SA_DEVICE_CPU;
  int32_t device_id = 0;
  int rank = 0;
  int64_t shape[SA_MAX_RANK] = {0, 0, 0, 0};
  int64_t stride[SA_MAX_RANK] = {0, 0, 0, 0};  // elements
  int64_t numel = 0;

  template <class T>
  T *ptr() const { return static_cast<T *>(data); }
  char *bytes() const { return static_cast<char *>(data); }
};

// Where a call's tensors live: the CPU, or one CUDA device.
struct Device {
  sa_device_type type = SA_DEVICE_CPU;
  int32_t id = 0;
};

// Validates t as a tensor on `device` of the given rank and one of the given dtypes, from its
// descriptor alone (data is never read). `name` is the argument name used in messages. A tensor
// on another device fails: SA_ERR_UNSUPPORTED for a CUDA tensor where CPU memory is expected,
// SA_ERR_INVALID_ARGUMENT otherwise.
TensorView view_tensor(const sa_tensor *t, const char *name, int rank,
                       std::initializer_list<sa_dtype> dtypes, Device device = Device{});

// The device of the first CUDA tensor among ts (NULL entries skipped), or the CPU.
Device first_cuda_device(std::initializer_list<const sa_tensor *> ts);

// A descriptor of v with explicit strides, for a plugin.
sa_tensor describe(const TensorView &v);

// Checks shape[dim] == expected, naming both in the message.
void expect_dim(const TensorView &v, const char *name, int dim, int64_t expected,
                const char *what);

// Element `off` (in elements) of a float tensor, as f32: the scalar path for small inputs such
// as queries; kernels read K/V in bulk.
float read_float(const TensorView &t, int64_t off);

// An output whose strides let two elements share memory (a zero stride, or dimensions that
// interleave) would be written by several threads at once: SA_ERR_SHAPE naming `name`. Each
// dimension of extent > 1, in order of stride, must step past everything the smaller ones span.
void expect_distinct_elements(const TensorView &v, const char *name);

// a * b with overflow -> SA_ERR_OVERFLOW naming `what`.
int64_t checked_mul(int64_t a, int64_t b, const char *what);
int64_t checked_add(int64_t a, int64_t b, const char *what);

}  // namespace sa
