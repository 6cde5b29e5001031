package sparseattn

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// cudaContext is a context on CUDA device 0; the test is skipped where no
// plugin can serve one (no GPU, no CUDA runtime).
func cudaContext(t *testing.T) *Context {
	t.Helper()
	ctx, err := NewContext(&ContextOptions{Threads: 1, ISA: ISAAuto, Device: DeviceCUDA, DeviceID: 0})
	if errors.Is(err, StatusBackendUnavailable) {
		t.Skipf("no usable CUDA device: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

// CUDAPluginPath reaches the library: a missing plugin is reported with its path.
func TestCUDAPluginPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-plugin.so")
	_, err := NewContext(&ContextOptions{Device: DeviceCUDA, CUDAPluginPath: path})
	expectStatus(t, "missing plugin", err, StatusBackendUnavailable)
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("the message does not name the plugin path: %v", err)
	}
}

// Without a GPU, device tensors and device contexts are refused with
// StatusBackendUnavailable, never a crash (the address is never read).
func TestCUDATensorsWithoutGPU(t *testing.T) {
	if ctx, err := NewContext(&ContextOptions{Device: DeviceCUDA}); err == nil {
		ctx.Close()
		t.Skip("a CUDA device is present; TestCUDADeviceIndex covers it")
	}
	ctx := newContext(t)
	const hq, hkv, d, n = 2, 1, 64, 8
	dev := func(shape ...int) Tensor { return ExternalTensor(0x1000, F16, DeviceCUDA, 0, shape...) }
	err := ctx.Attend(dev(1, hq, d), dev(n, hkv, d), dev(n, hkv, d), nil, nil, dev(1, hq, d), nil)
	expectStatus(t, "CUDA tensors without a GPU", err, StatusBackendUnavailable)
	ix := newIndex(t, ctx, indexOptions(hkv, d, F16))
	expectStatus(t, "append CUDA keys without a GPU", ix.Append(dev(n, hkv, d)), StatusBackendUnavailable)
}

// An index on a CUDA context lives on the device: the calls the header
// reserves to host indexes refuse it with StatusUnsupported.
func TestCUDADeviceIndex(t *testing.T) {
	ctx := cudaContext(t)
	o := indexOptions(1, 64, F16)
	ix, err := NewIndex(ctx, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	expectStatus(t, "truncate on a device", ix.Truncate(0), StatusUnsupported)
	_, err = ix.Clone()
	expectStatus(t, "clone on a device", err, StatusUnsupported)
	q := make([]float32, 64)
	idx := make([]int32, 8)
	err = SelectBatch([]*Index{ix}, TensorF32(q, 1, 1, 64), nil, &SelectOptions{TopK: 1, Window: 1, Sinks: 1}, nil,
		TensorI32(idx, 1, 1, 8))
	expectStatus(t, "select_batch with a device index", err, StatusUnsupported)
}
