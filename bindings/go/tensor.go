package sparseattn

// #include "shim.h"
import "C"

import (
	"fmt"
	"math"
	"unsafe"
)

// DType is the element type of a tensor.
type DType uint32

const (
	F32  DType = C.SA_DTYPE_F32
	F16  DType = C.SA_DTYPE_F16  // IEEE binary16, held as uint16 bits
	BF16 DType = C.SA_DTYPE_BF16 // bfloat16, held as uint16 bits
	I32  DType = C.SA_DTYPE_I32
	I64  DType = C.SA_DTYPE_I64
)

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	case I32:
		return "i32"
	case I64:
		return "i64"
	}
	return fmt.Sprintf("DType(%d)", uint32(d))
}

// MaxRank is the largest rank of a tensor.
const MaxRank = C.SA_MAX_RANK

// Tensor views a Go slice as a tensor: dtype, shape and optional strides (in
// elements; nil or all zeros: contiguous row-major). It is checked against the
// slice's length on every call that uses it, so a call never reads or writes
// outside the slice. The same type serves inputs and outputs.
type Tensor struct {
	data    unsafe.Pointer // first element, nil for an empty slice
	n       int            // elements in the slice
	dtype   DType
	shape   []int64
	strides []int64
}

// first is the address of s[0], nil for an empty slice.
func first[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

func view(p unsafe.Pointer, n int, dtype DType, shape []int64) Tensor {
	return Tensor{data: p, n: n, dtype: dtype, shape: append([]int64(nil), shape...)}
}

// TensorF32 views data as an f32 tensor of the given shape.
func TensorF32(data []float32, shape ...int64) Tensor {
	return view(first(data), len(data), F32, shape)
}

// TensorF16 views IEEE binary16 bits as an f16 tensor.
func TensorF16(data []uint16, shape ...int64) Tensor {
	return view(first(data), len(data), F16, shape)
}

// TensorBF16 views bfloat16 bits as a bf16 tensor.
func TensorBF16(data []uint16, shape ...int64) Tensor {
	return view(first(data), len(data), BF16, shape)
}

// TensorI32 views data as an i32 tensor.
func TensorI32(data []int32, shape ...int64) Tensor {
	return view(first(data), len(data), I32, shape)
}

// TensorI64 views data as an i64 tensor.
func TensorI64(data []int64, shape ...int64) Tensor {
	return view(first(data), len(data), I64, shape)
}

// WithStrides returns the same view with strides in elements, one per dimension.
func (t Tensor) WithStrides(strides ...int64) Tensor {
	t.strides = append([]int64(nil), strides...)
	return t
}

func (t Tensor) DType() DType     { return t.dtype }
func (t Tensor) Shape() []int64   { return append([]int64(nil), t.shape...) }
func (t Tensor) Strides() []int64 { return append([]int64(nil), t.strides...) }

// desc checks the view and returns its C descriptor with a NULL data pointer
// (the shim adds the pointer on the C side).
func (t *Tensor) desc(name string) (C.sa_tensor, error) {
	var d C.sa_tensor
	rank := len(t.shape)
	if rank < 1 || rank > MaxRank {
		return d, errorf(StatusShape, "%s: rank %d is not in 1..%d", name, rank, MaxRank)
	}
	for _, s := range t.shape {
		if s < 0 {
			return d, errorf(StatusShape, "%s: shape %v has a negative extent", name, t.shape)
		}
	}
	if t.strides != nil && len(t.strides) != rank {
		return d, errorf(StatusShape, "%s: %d strides for rank %d", name, len(t.strides), rank)
	}
	allZero := true
	for _, s := range t.strides {
		if s < 0 {
			return d, errorf(StatusShape, "%s: strides %v have a negative stride", name, t.strides)
		}
		if s != 0 {
			allZero = false
		}
	}
	overflow := errorf(StatusOverflow, "%s: shape %v strides %v overflow", name, t.shape, t.strides)
	var need int64 = 1
	if allZero {
		for _, s := range t.shape {
			if s != 0 && need > math.MaxInt64/s {
				return d, overflow
			}
			need *= s
		}
	} else {
		var last int64
		empty := false
		for i, s := range t.shape {
			if s == 0 {
				empty = true
				break
			}
			st := t.strides[i]
			if st != 0 && s-1 > (math.MaxInt64-last)/st {
				return d, overflow
			}
			last += (s - 1) * st
		}
		if empty {
			need = 0
		} else {
			need = last + 1
		}
	}
	if need > int64(t.n) {
		return d, errorf(StatusShape, "%s: shape %v strides %v needs %d elements, the slice has %d",
			name, t.shape, t.strides, need, t.n)
	}
	d.dtype = C.sa_dtype(t.dtype)
	d.device = C.SA_DEVICE_CPU
	d.rank = C.int32_t(rank)
	for i := 0; i < rank; i++ {
		d.shape[i] = C.int64_t(t.shape[i])
		if t.strides != nil {
			d.strides[i] = C.int64_t(t.strides[i])
		}
	}
	return d, nil
}

// dim0 is the leading extent (n_q, n_kv), 0 when the rank is 0.
func (t *Tensor) dim0() int64 {
	if len(t.shape) == 0 {
		return 0
	}
	return t.shape[0]
}

func checkLen(what string, have int, need int64) error {
	if int64(have) < need {
		return errorf(StatusShape, "%s: %d values given, %d needed", what, have, need)
	}
	return nil
}

// Pointers to the first element of option slices (nil when empty).
func ptrI64(s []int64) *C.int64_t { return (*C.int64_t)(first(s)) }
func ptrI32(s []int32) *C.int32_t { return (*C.int32_t)(first(s)) }
