#include "core/tensor_view.hpp"

#include <limits>
#include <string>
#include <utility>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/plugin_loader.hpp"

namespace sa {

size_t dtype_size(sa_dtype dtype) {
  switch (dtype) {
    case SA_DTYPE_F32: return 4;
    case SA_DTYPE_F16: return 2;
    case SA_DTYPE_BF16: return 2;
    case SA_DTYPE_I32: return 4;
    case SA_DTYPE_I64: return 8;
  }
  return 0;
}

const char *dtype_name(sa_dtype dtype) {
  switch (dtype) {
    case SA_DTYPE_F32: return "f32";
    case SA_DTYPE_F16: return "f16";
    case SA_DTYPE_BF16: return "bf16";
    case SA_DTYPE_I32: return "i32";
    case SA_DTYPE_I64: return "i64";
  }
  return "unknown";
}

float read_float(const TensorView &t, int64_t off) {
  switch (t.dtype) {
    case SA_DTYPE_F16: return f16_to_f32(t.ptr<const uint16_t>()[off]);
    case SA_DTYPE_BF16: return bf16_to_f32(t.ptr<const uint16_t>()[off]);
    default: return t.ptr<const float>()[off];
  }
}

int64_t checked_mul(int64_t a, int64_t b, const char *what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(SA_ERR_OVERFLOW, "%s overflows 64 bits", what);
  return r;
}

void expect_distinct_elements(const TensorView &v, const char *name) {
  int dims[SA_MAX_RANK], n = 0;
  for (int d = 0; d < v.rank; ++d)
    if (v.shape[d] > 1) dims[n++] = d;
  for (int i = 1; i < n; ++i)  // insertion sort by stride: at most SA_MAX_RANK entries
    for (int j = i; j > 0 && v.stride[dims[j]] < v.stride[dims[j - 1]]; --j) std::swap(dims[j], dims[j - 1]);
  int64_t span = 1;  // elements the smaller dimensions reach (offsets fit: checked by view_tensor)
  for (int i = 0; i < n; ++i) {
    const int d = dims[i];
    if (v.stride[d] < span)
      fail(SA_ERR_SHAPE,
           "%s: stride[%d] = %lld makes elements overlap (dimensions of smaller stride span %lld elements); an output "
           "needs distinct elements",
           name, d, (long long)v.stride[d], (long long)span);
    span = v.stride[d] * (v.shape[d] - 1) + span;
  }
}

int64_t checked_add(int64_t a, int64_t b, const char *what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(SA_ERR_OVERFLOW, "%s overflows 64 bits", what);
  return r;
}

Device first_cuda_device(std::initializer_list<const sa_tensor *> ts) {
  for (const sa_tensor *t : ts)
    if (t && enum_value(t->device) == SA_DEVICE_CUDA) return Device{SA_DEVICE_CUDA, t->device_id};
  return Device{};
}

sa_tensor describe(const TensorView &v) {
  sa_tensor t{};
  t.data = v.data;
  t.dtype = v.dtype;
  t.device = v.device;
  t.device_id = v.device_id;
  t.rank = v.rank;
  for (int i = 0; i < v.rank; ++i) {
    t.shape[i] = v.shape[i];
    t.strides[i] = v.stride[i];
  }
  return t;
}

TensorView view_tensor(const sa_tensor *t, const char *name, int rank,
                       std::initializer_list<sa_dtype> dtypes, Device want) {
  if (!t) fail(SA_ERR_NULL_POINTER, "%s is NULL", name);
  const int device = enum_value(t->device), dtype = enum_value(t->dtype);
  if (device != SA_DEVICE_CPU && device != SA_DEVICE_CUDA)
    fail(SA_ERR_INVALID_ARGUMENT, "%s has an unknown device %d", name, device);
  if (device == SA_DEVICE_CUDA && want.type == SA_DEVICE_CPU)
    fail(SA_ERR_UNSUPPORTED, "%s is a CUDA tensor, where this call takes CPU memory", name);
  if (device == SA_DEVICE_CPU && want.type == SA_DEVICE_CUDA)
    fail(SA_ERR_INVALID_ARGUMENT, "%s is a CPU tensor, but this call runs on CUDA device %d (all its tensors must be there)",
         name, int(want.id));
  if (device == SA_DEVICE_CUDA && t->device_id != want.id)
    fail(SA_ERR_INVALID_ARGUMENT, "%s is on CUDA device %d, but this call runs on CUDA device %d", name,
         int(t->device_id), int(want.id));
  bool dtype_ok = false;
  std::string allowed;
  for (sa_dtype d : dtypes) {
    dtype_ok |= (dtype == int(d));
    allowed += allowed.empty() ? "" : "/";
    allowed += dtype_name(d);
  }
  if (!dtype_ok)
    fail(SA_ERR_DTYPE, "%s has dtype %s (%d), expected %s", name,
         dtype >= 0 && dtype <= SA_DTYPE_I64 ? dtype_name(sa_dtype(dtype)) : "unknown", dtype,
         allowed.c_str());
  if (t->rank != rank) fail(SA_ERR_SHAPE, "%s has rank %d, expected %d", name, int(t->rank), rank);

  TensorView v;
  v.data = t->data;
  v.dtype = t->dtype;
  v.device = want.type;
  v.device_id = want.id;
  v.rank = rank;
  bool all_zero = true;
  for (int i = 0; i < rank; ++i) {
    if (t->shape[i] < 0) fail(SA_ERR_SHAPE, "%s.shape[%d] is negative (%lld)", name, i, (long long)t->shape[i]);
    if (t->strides[i] < 0)
      fail(SA_ERR_SHAPE, "%s.strides[%d] is negative (%lld)", name, i, (long long)t->strides[i]);
    v.shape[i] = t->shape[i];
    all_zero &= (t->strides[i] == 0);
  }
  v.numel = 1;
  for (int i = 0; i < rank; ++i) v.numel = checked_mul(v.numel, v.shape[i], name);
  if (all_zero) {
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; --i) {
      v.stride[i] = s;
      s = checked_mul(s, v.shape[i] > 0 ? v.shape[i] : 1, name);
    }
  } else {
    for (int i = 0; i < rank; ++i) v.stride[i] = t->strides[i];
  }
  if (v.numel == 0) return v;  // nothing is read or written; data may be NULL
  if (!t->data) fail(SA_ERR_NULL_POINTER, "%s.data is NULL", name);
  check_memory(t->data, name, want.type, want.id);  // the memory is what the descriptor says
  // The largest element offset and its byte extent must be addressable.
  int64_t last = 0;
  for (int i = 0; i < rank; ++i) last = checked_add(last, checked_mul(v.shape[i] - 1, v.stride[i], name), name);
  int64_t bytes = checked_mul(checked_add(last, 1, name), int64_t(dtype_size(v.dtype)), name);
  if (uint64_t(bytes) > uint64_t(std::numeric_limits<ptrdiff_t>::max()) ||
      uint64_t(bytes) > std::numeric_limits<uintptr_t>::max() - reinterpret_cast<uintptr_t>(t->data))
    fail(SA_ERR_OVERFLOW, "%s spans %lld bytes, past the address space", name, (long long)bytes);
  return v;
}

void expect_dim(const TensorView &v, const char *name, int dim, int64_t expected, const char *what) {
  if (v.shape[dim] != expected)
    fail(SA_ERR_SHAPE, "%s.shape[%d] is %lld, expected %lld (%s)", name, dim, (long long)v.shape[dim],
         (long long)expected, what);
}

}  // namespace sa
