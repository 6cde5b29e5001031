package sparseattn

// #include "shim.h"
import "C"

import "unsafe"

// AttendOptions are the settings of Context.Attend and Context.AttendPaged
// (sa_attend_options). Start from DefaultAttendOptions: its MassDecay is 0.99,
// while the zero AttendOptions has MassDecay 0 (SlotMass then holds the last
// call's mass only).
type AttendOptions struct {
	Scale  float32 // 0: 1/sqrt(D)
	Causal bool    // a query at position p ignores keys at positions > p
	// Position of each query (n_q values); nil: the last n_q positions.
	QueryPositions []int64
	// Token position held by each key row (n_kv values), after eviction
	// reordered the cache; -1: an empty row, never attended. nil: row r holds
	// position r. Must be nil for AttendPaged (PagedKV.SlotPositions instead).
	KeyPositions []int64
	// cudaStream_t for CUDA tensors; 0: the context's stream.
	CUDAStream uintptr
	// Accumulated attention per key row (H2O scores for Evict), or nil: off.
	// F32 [H_kv, n_kv] (per KV head, summed over its query group) or [n_kv]
	// (summed over all heads), CPU. Each call first multiplies it by
	// MassDecay, then adds the softmax probability each row received, summed
	// over the call's queries. For AttendPaged n_kv is num_pages*page_size
	// (physical slots).
	SlotMass *Tensor
	// In [0, 1]; 1: plain sum; 0: this call's mass only.
	MassDecay float32
}

// DefaultAttendOptions are the library's defaults (sa_attend_options_default).
func DefaultAttendOptions() AttendOptions {
	o := C.sa_attend_options_default()
	return AttendOptions{Scale: float32(o.scale), Causal: o.causal != 0, MassDecay: float32(o.mass_decay)}
}

// attendArgs is AttendOptions for the shim: the C struct without Go
// pointers, and the Go memory that travels beside it.
type attendArgs struct {
	o          C.sa_attend_options
	qpos, kpos []int64
	massDesc   *C.sa_tensor
	massData   unsafe.Pointer
}

// attendOptions converts opts (nil: the defaults). nq and nkv are the counts
// the position lists must cover (nkv < 0: not checked, the library decides).
func (b *describer) attendOptions(opts *AttendOptions, nq, nkv int) attendArgs {
	var a attendArgs
	a.o = C.sa_attend_options_default()
	a.o.struct_size = C.size_t(unsafe.Sizeof(a.o))
	if opts == nil {
		return a
	}
	a.o.scale = C.float(opts.Scale)
	a.o.causal = cbool(opts.Causal)
	a.o.mass_decay = C.float(opts.MassDecay)
	if opts.CUDAStream != 0 {
		a.o.cuda_stream = C.sago_address(C.uintptr_t(opts.CUDAStream))
	}
	a.qpos, a.kpos = opts.QueryPositions, opts.KeyPositions
	if a.qpos != nil {
		b.fail(checkLen("AttendOptions.QueryPositions (one per query)", len(a.qpos), nq))
	}
	if a.kpos != nil && nkv >= 0 {
		b.fail(checkLen("AttendOptions.KeyPositions (one per key row)", len(a.kpos), nkv))
	}
	a.massDesc, a.massData = b.optional(opts.SlotMass, "AttendOptions.SlotMass")
	return a
}

// Attend runs exact softmax attention (sa_attend), f32 accumulation.
// q [n_q, H_q, D]; k, v [n_kv, H_kv, D]; indices nil for dense attention, else
// i32 [n_q, H_kv or H_q, width] with entries in [0, n_kv) or -1; out
// [n_q, H_q, D]; lse nil or f32 [n_q, H_q] (log of the softmax denominator).
// opts nil means the defaults.
func (c *Context) Attend(q, k, v Tensor, indices *Tensor, opts *AttendOptions, out Tensor, lse *Tensor) error {
	var b describer
	qd, kd, vd := b.tensor(&q, "q"), b.tensor(&k, "k"), b.tensor(&v, "v")
	outd := b.tensor(&out, "out")
	idxDesc, idxData := b.optional(indices, "indices")
	lseDesc, lseData := b.optional(lse, "lse")
	a := b.attendOptions(opts, q.dim0(), k.dim0())
	if b.err != nil {
		return b.err
	}
	o := a.o
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return errClosed("context")
	}
	var msg *C.char
	st := C.sago_attend(c.ptr, &qd, q.data, &kd, k.data, &vd, v.data, idxDesc, idxData, &o,
		ptrI64(a.qpos), ptrI64(a.kpos), a.massDesc, a.massData, &outd, out.data, lseDesc, lseData, &msg)
	return check(st, msg)
}

// AttendPaged runs exact softmax attention for a batch of sequences over a
// paged cache in one call (sa_attend_paged). q [n_q, H_q, D]: the queries of
// sequence b are rows queryStarts[b] .. queryStarts[b+1]-1 (queryStarts I32 or
// I64 [B+1]; nil: one query per sequence). indices nil for dense attention
// over each sequence's tokens, else i32 [n_q, H_kv or H_q, width] of physical
// slots (-1 skipped), e.g. from SelectBatch. out [n_q, H_q, D]; lse nil or
// f32 [n_q, H_q]. Default query positions: the last n_b tokens of sequence b.
// CPU tensors only for now.
func (c *Context) AttendPaged(q Tensor, queryStarts *Tensor, kv *PagedKV, indices *Tensor,
	opts *AttendOptions, out Tensor, lse *Tensor) error {
	var b describer
	qd := b.tensor(&q, "q")
	startsDesc, startsData := b.optional(queryStarts, "queryStarts")
	kvDesc, kvData := b.paged(kv)
	idxDesc, idxData := b.optional(indices, "indices")
	outd := b.tensor(&out, "out")
	lseDesc, lseData := b.optional(lse, "lse")
	a := b.attendOptions(opts, q.dim0(), -1)
	if b.err != nil {
		return b.err
	}
	o := a.o
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return errClosed("context")
	}
	var msg *C.char
	st := C.sago_attend_paged(c.ptr, &qd, q.data, startsDesc, startsData,
		kvDesc, kvData.k, kvData.v, kvData.pageTable, kvData.seqLens, kvData.slotPositions,
		idxDesc, idxData, &o, ptrI64(a.qpos), ptrI64(a.kpos), a.massDesc, a.massData,
		&outd, out.data, lseDesc, lseData, &msg)
	return check(st, msg)
}
