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

// Device is where a tensor's memory lives (sa_device_type).
type Device uint32

const (
	DeviceCPU  Device = C.SA_DEVICE_CPU
	DeviceCUDA Device = C.SA_DEVICE_CUDA // served by the CUDA plugin
)

func (d Device) String() string {
	switch d {
	case DeviceCPU:
		return "cpu"
	case DeviceCUDA:
		return "cuda"
	}
	return fmt.Sprintf("Device(%d)", uint32(d))
}

// MaxRank is the largest rank of a tensor.
const MaxRank = C.SA_MAX_RANK

// Tensor describes a tensor for one call: dtype, shape and optional strides
// (in elements; nil or all zeros: contiguous row-major) over either a Go slice
// (TensorF32 and friends) or memory Go does not manage (ExternalTensor). A
// view of a slice is checked against the slice's length on every call that
// uses it, so a call never reads or writes outside the slice. The same type
// serves inputs and outputs.
type Tensor struct {
	data     unsafe.Pointer // Go memory: the slice's first element, nil when empty
	addr     uintptr        // memory outside Go (ExternalTensor), 0 for slices
	n        int            // elements in the slice (Go memory only)
	dtype    DType
	device   Device
	deviceID int
	shape    []int
	strides  []int
}

// first is the address of s[0], nil for an empty slice.
func first[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

func view(p unsafe.Pointer, n int, dtype DType, shape []int) Tensor {
	return Tensor{data: p, n: n, dtype: dtype, device: DeviceCPU, shape: append([]int(nil), shape...)}
}

// TensorF32 views data as an f32 tensor of the given shape, e.g.
// TensorF32(keys, n, 8, 128).
func TensorF32(data []float32, shape ...int) Tensor {
	return view(first(data), len(data), F32, shape)
}

// TensorF16 views IEEE binary16 bits as an f16 tensor.
func TensorF16(data []uint16, shape ...int) Tensor {
	return view(first(data), len(data), F16, shape)
}

// TensorBF16 views bfloat16 bits as a bf16 tensor.
func TensorBF16(data []uint16, shape ...int) Tensor {
	return view(first(data), len(data), BF16, shape)
}

// TensorI32 views data as an i32 tensor.
func TensorI32(data []int32, shape ...int) Tensor {
	return view(first(data), len(data), I32, shape)
}

// TensorI64 views data as an i64 tensor.
func TensorI64(data []int64, shape ...int) Tensor {
	return view(first(data), len(data), I64, shape)
}

// ExternalTensor describes memory that Go does not manage: a CUDA allocation
// (device DeviceCUDA, deviceID its ordinal) or host memory from C (DeviceCPU).
// addr is its first element. The package cannot know the extent of such
// memory, so only the library's own checks apply; the memory must stay
// allocated for the call.
func ExternalTensor(addr uintptr, dtype DType, device Device, deviceID int, shape ...int) Tensor {
	return Tensor{addr: addr, dtype: dtype, device: device, deviceID: deviceID,
		shape: append([]int(nil), shape...)}
}

// WithStrides returns the same view with strides in elements, one per dimension.
func (t Tensor) WithStrides(strides ...int) Tensor {
	t.strides = append([]int(nil), strides...)
	return t
}

func (t Tensor) DType() DType   { return t.dtype }
func (t Tensor) Device() Device { return t.device }
func (t Tensor) Shape() []int   { return append([]int(nil), t.shape...) }
func (t Tensor) Strides() []int { return append([]int(nil), t.strides...) }

// desc checks the view and returns its C descriptor. For a Go slice the data
// pointer stays NULL: the shim adds it on the C side (see shim.h). External
// memory is not Go memory, so its address goes into the descriptor.
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
	for _, s := range t.strides {
		if s < 0 {
			return d, errorf(StatusShape, "%s: strides %v have a negative stride", name, t.strides)
		}
	}
	need, ok := extent(t.shape, t.strides)
	if !ok {
		return d, errorf(StatusOverflow, "%s: shape %v strides %v overflow 64-bit element offsets", name, t.shape, t.strides)
	}
	if t.addr == 0 && need > int64(t.n) {
		return d, errorf(StatusShape, "%s: shape %v strides %v needs %d elements, the slice has %d",
			name, t.shape, t.strides, need, t.n)
	}
	if t.deviceID < math.MinInt32 || t.deviceID > math.MaxInt32 {
		return d, errorf(StatusInvalidArgument, "%s: device id %d does not fit the C ABI's int32", name, t.deviceID)
	}
	if t.addr != 0 {
		d.data = C.sago_address(C.uintptr_t(t.addr))
	}
	d.dtype = C.sa_dtype(t.dtype)
	d.device = C.sa_device_type(t.device)
	d.device_id = C.int32_t(t.deviceID)
	d.rank = C.int32_t(rank)
	for i := 0; i < rank; i++ {
		d.shape[i] = C.int64_t(t.shape[i])
		if t.strides != nil {
			d.strides[i] = C.int64_t(t.strides[i])
		}
	}
	return d, nil
}

// extent is the number of elements a view spans (the largest offset + 1, 0
// when an extent is 0), and false when that overflows int64. All-zero or nil
// strides mean contiguous row-major.
func extent(shape, strides []int) (int64, bool) {
	contiguous := true
	for _, s := range strides {
		if s != 0 {
			contiguous = false
		}
	}
	for _, s := range shape {
		if s == 0 {
			return 0, true
		}
	}
	if contiguous {
		var n int64 = 1
		for _, s := range shape {
			if int64(s) > math.MaxInt64/n {
				return 0, false
			}
			n *= int64(s)
		}
		return n, true
	}
	var last int64
	for i, s := range shape {
		st := int64(strides[i])
		if st != 0 && int64(s-1) > (math.MaxInt64-last)/st {
			return 0, false
		}
		last += int64(s-1) * st
	}
	if last == math.MaxInt64 {
		return 0, false
	}
	return last + 1, true
}

// dim0 is the leading extent (n_q, n_kv), 0 when the rank is 0.
func (t *Tensor) dim0() int {
	if len(t.shape) == 0 {
		return 0
	}
	return t.shape[0]
}

func checkLen(what string, have, need int) error {
	if have < need {
		return errorf(StatusShape, "%s: %d values given, %d needed", what, have, need)
	}
	return nil
}

// Pointers to the first element of option slices (nil when empty).
func ptrI64(s []int64) *C.int64_t { return (*C.int64_t)(first(s)) }
func ptrI32(s []int32) *C.int32_t { return (*C.int32_t)(first(s)) }
