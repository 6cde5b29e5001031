package sparseattn

// #include "shim.h"
import "C"

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ContextOptions are a Context's execution settings (sa_context_options).
// Start from DefaultContextOptions.
type ContextOptions struct {
	// 0: OpenMP's default (at most 1024); 1: the calling thread only (no OpenMP region);
	// 2..1024: a team of up to n threads per call, or the calling thread alone when called
	// from inside an OpenMP parallel region; more is refused (StatusInvalidArgument).
	Threads int
	// Cap on the instruction set; ISAAuto for the best.
	ISA ISA
	// Where to load the CUDA plugin from; "": $SA_CUDA_PLUGIN, then
	// libsparseattn_cuda.so beside the library. Loaded on first need.
	CUDAPluginPath string
	// DeviceCUDA: load the plugin now (StatusBackendUnavailable if it cannot
	// serve DeviceID) and keep the keys of indexes created on this context on
	// that device.
	Device   Device
	DeviceID int // CUDA device ordinal for Device == DeviceCUDA
	// cudaStream_t for device work when a call's options name none (index
	// appends always); 0: the legacy default stream.
	CUDAStream uintptr
}

// DefaultContextOptions are the library's defaults (sa_context_options_default).
func DefaultContextOptions() ContextOptions {
	o := C.sa_context_options_default()
	return ContextOptions{Threads: int(o.threads), ISA: ISA(o.isa), Device: Device(o.device),
		DeviceID: int(o.device_id)}
}

// Context holds execution settings shared by calls (sa_context). Attend,
// AttendPaged and Evict may run on many goroutines at once. Close it after its
// indexes.
type Context struct {
	mu      sync.RWMutex // read: calls and NewIndex; write: Close
	ptr     *C.sa_context
	indexes atomic.Int32 // open indexes created on this context (or cloned from one)
}

// NewContext creates a context; opts nil means the library's defaults.
func NewContext(opts *ContextOptions) (*Context, error) {
	o := C.sa_context_options_default()
	o.struct_size = C.size_t(unsafe.Sizeof(o))
	var path *C.char
	if opts != nil {
		var n narrower
		o.threads = n.i32("ContextOptions.Threads", opts.Threads)
		o.isa = C.sa_isa(opts.ISA)
		o.device = C.sa_device_type(opts.Device)
		o.device_id = n.i32("ContextOptions.DeviceID", opts.DeviceID)
		if n.err != nil {
			return nil, n.err
		}
		if opts.CUDAStream != 0 {
			o.cuda_stream = C.sago_address(C.uintptr_t(opts.CUDAStream))
		}
		if opts.CUDAPluginPath != "" {
			path = C.CString(opts.CUDAPluginPath) // copied by sa_context_create
			defer C.free(unsafe.Pointer(path))
		}
	}
	var out *C.sa_context
	var msg *C.char
	if err := check(C.sago_context_create(&o, path, &out, &msg), msg); err != nil {
		return nil, err
	}
	c := &Context{ptr: out}
	runtime.SetFinalizer(c, (*Context).destroy)
	return c, nil
}

func (c *Context) destroy() {
	if c.ptr != nil {
		p := c.ptr
		C.sa_context_destroy(&p)
		c.ptr = nil
	}
}

// Close frees the context. It fails while indexes created on it are open.
// Closing twice is a no-op.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.indexes.Load(); n > 0 {
		return errorf(StatusInvalidArgument, "context: %d index(es) created on it are still open", n)
	}
	c.destroy()
	runtime.SetFinalizer(c, nil)
	return nil
}

func errClosed(what string) error {
	return errorf(StatusNullPointer, "%s is closed", what)
}

// ISA is the instruction set the context's kernels use, after caps.
func (c *Context) ISA() ISA {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return ISAScalar
	}
	return ISA(C.sa_context_isa(c.ptr))
}

// Threads is the number of threads the context uses (>= 1; 0 once closed).
func (c *Context) Threads() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return 0
	}
	return int(C.sa_context_threads(c.ptr))
}
