package sparseattn

// #include "shim.h"
import "C"

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ContextOptions are a Context's execution settings.
type ContextOptions struct {
	// 0: OpenMP's default (at most 1024); 1: the calling thread only (no OpenMP region);
	// 2..1024: a team of up to n threads per call, or the calling thread alone when called
	// from inside an OpenMP parallel region; more is refused (StatusInvalidArgument).
	Threads int32
	// Cap on the instruction set; ISAAuto for the best.
	ISA ISA
}

// DefaultContextOptions are the library's defaults (sa_context_options_default).
func DefaultContextOptions() ContextOptions {
	o := C.sa_context_options_default()
	return ContextOptions{Threads: int32(o.threads), ISA: ISA(o.isa)}
}

// Context holds execution settings shared by calls (sa_context). Attend and
// Evict may run on many goroutines at once. Close it after its indexes.
type Context struct {
	mu      sync.RWMutex // read: calls and NewIndex; write: Close
	ptr     *C.sa_context
	indexes atomic.Int32 // open indexes created on this context
}

// NewContext creates a context; opts nil means the library's defaults.
func NewContext(opts *ContextOptions) (*Context, error) {
	o := C.sa_context_options_default()
	o.struct_size = C.size_t(unsafe.Sizeof(o))
	if opts != nil {
		o.threads = C.int32_t(opts.Threads)
		o.isa = C.sa_isa(opts.ISA)
	}
	var out *C.sa_context
	var msg *C.char
	if err := check(C.sago_context_create(&o, &out, &msg), msg); err != nil {
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

// AttendOptions are the settings of Context.Attend.
type AttendOptions struct {
	Scale  float32 // 0: 1/sqrt(D)
	Causal bool    // a query at position p ignores keys at positions > p
	// Position of each query (n_q values); nil: the last n_q positions.
	QueryPositions []int64
	// Token position held by each key row (n_kv values); nil: row r holds r.
	KeyPositions []int64
}

// DefaultAttendOptions are the library's defaults (sa_attend_options_default).
func DefaultAttendOptions() AttendOptions {
	o := C.sa_attend_options_default()
	return AttendOptions{Scale: float32(o.scale), Causal: o.causal != 0}
}

// Attend runs exact softmax attention (sa_attend), f32 accumulation.
// q [n_q, H_q, D]; k, v [n_kv, H_kv, D]; indices nil for dense attention, else
// i32 [n_q, H_kv or H_q, width] with entries in [0, n_kv) or -1; out
// [n_q, H_q, D]; lse nil or f32 [n_q, H_q]. opts nil means the defaults.
func (c *Context) Attend(q, k, v Tensor, indices *Tensor, opts *AttendOptions, out Tensor, lse *Tensor) error {
	qd, err := q.desc("q")
	if err != nil {
		return err
	}
	kd, err := k.desc("k")
	if err != nil {
		return err
	}
	vd, err := v.desc("v")
	if err != nil {
		return err
	}
	outd, err := out.desc("out")
	if err != nil {
		return err
	}
	var idxDesc, lseDesc *C.sa_tensor
	var idxData, lseData unsafe.Pointer
	if indices != nil {
		d, err := indices.desc("indices")
		if err != nil {
			return err
		}
		idxDesc, idxData = &d, indices.data
	}
	if lse != nil {
		d, err := lse.desc("lse")
		if err != nil {
			return err
		}
		lseDesc, lseData = &d, lse.data
	}
	o := C.sa_attend_options_default()
	o.struct_size = C.size_t(unsafe.Sizeof(o))
	var qpos, kpos []int64
	if opts != nil {
		o.scale = C.float(opts.Scale)
		o.causal = cbool(opts.Causal)
		qpos, kpos = opts.QueryPositions, opts.KeyPositions
		if qpos != nil {
			if err := checkLen("AttendOptions.QueryPositions (one per query)", len(qpos), q.dim0()); err != nil {
				return err
			}
		}
		if kpos != nil {
			if err := checkLen("AttendOptions.KeyPositions (one per key row)", len(kpos), k.dim0()); err != nil {
				return err
			}
		}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return errClosed("context")
	}
	var msg *C.char
	st := C.sago_attend(c.ptr, &qd, q.data, &kd, k.data, &vd, v.data, idxDesc, idxData, &o,
		ptrI64(qpos), ptrI64(kpos), &outd, out.data, lseDesc, lseData, &msg)
	return check(st, msg)
}

// EvictOptions are the settings of Context.Evict.
type EvictOptions struct {
	Budget   int64 // slots the cache may hold after the incoming tokens
	Incoming int64 // tokens about to be inserted
	Sinks    int32 // positions [0, Sinks) are never freed
	Window   int32 // positions (max_pos - Window, max_pos] are never freed
}

// DefaultEvictOptions are the library's defaults (sa_evict_options_default).
func DefaultEvictOptions() EvictOptions {
	o := C.sa_evict_options_default()
	return EvictOptions{Budget: int64(o.budget), Incoming: int64(o.incoming),
		Sinks: int32(o.sinks), Window: int32(o.window)}
}

// Evict chooses cache slots to free so that occupied + incoming <= budget
// (sa_cache_evict). scores: f32 [n_slots] or [H, n_slots]; positions: i64
// [n_slots], -1 for an empty slot. The slots to free are written to the
// front of freed, lowest score first; Evict returns their count.
func (c *Context) Evict(opts *EvictOptions, scores, positions Tensor, freed []int32) (int, error) {
	sd, err := scores.desc("scores")
	if err != nil {
		return 0, err
	}
	pd, err := positions.desc("positions")
	if err != nil {
		return 0, err
	}
	freedT := TensorI32(freed, int64(len(freed)))
	fd, err := freedT.desc("freed")
	if err != nil {
		return 0, err
	}
	o := C.sa_evict_options_default()
	o.struct_size = C.size_t(unsafe.Sizeof(o))
	if opts != nil {
		o.budget = C.int64_t(opts.Budget)
		o.incoming = C.int64_t(opts.Incoming)
		o.sinks = C.int32_t(opts.Sinks)
		o.window = C.int32_t(opts.Window)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return 0, errClosed("context")
	}
	var n C.int64_t
	var msg *C.char
	st := C.sago_cache_evict(c.ptr, &o, &sd, scores.data, &pd, positions.data, &fd, freedT.data, &n, &msg)
	if err := check(st, msg); err != nil {
		return 0, err
	}
	if n < 0 || int(n) > len(freed) {
		return 0, errorf(StatusInternal, "sa_cache_evict reported %d freed slots for a capacity of %d", n, len(freed))
	}
	return int(n), nil
}
