//go:build unix

package sparseattn

import (
	"syscall"
	"testing"
	"unsafe"
)

// ExternalTensor passes memory Go does not manage by address: keys and
// values in an anonymous mapping give the same attention as Go slices.
func TestExternalHostMemory(t *testing.T) {
	const nq, hq, hkv, d, n = 2, 4, 2, 8, 13
	r := rng(81)
	q, k, v := r.vec(nq*hq*d), r.vec(n*hkv*d), r.vec(n*hkv*d)
	m, err := syscall.Mmap(-1, 0, 2*len(k)*4, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skipf("mmap: %v", err)
	}
	defer syscall.Munmap(m)
	mapped := unsafe.Slice((*float32)(unsafe.Pointer(&m[0])), 2*len(k))
	copy(mapped, k)
	copy(mapped[len(k):], v)
	base := uintptr(unsafe.Pointer(&m[0]))
	ek := ExternalTensor(base, F32, DeviceCPU, 0, n, hkv, d)
	ev := ExternalTensor(base+uintptr(len(k)*4), F32, DeviceCPU, 0, n, hkv, d)

	ctx := newContext(t)
	want := make([]float32, nq*hq*d)
	got := make([]float32, nq*hq*d)
	if err := ctx.Attend(TensorF32(q, nq, hq, d), TensorF32(k, n, hkv, d), TensorF32(v, n, hkv, d), nil, nil,
		TensorF32(want, nq, hq, d), nil); err != nil {
		t.Fatal(err)
	}
	if err := ctx.Attend(TensorF32(q, nq, hq, d), ek, ev, nil, nil, TensorF32(got, nq, hq, d), nil); err != nil {
		t.Fatal(err)
	}
	if e := maxRelErr(got, want); e != 0 {
		t.Fatalf("external memory vs slices: %g", e)
	}
}
