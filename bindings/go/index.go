package sparseattn

// #include "shim.h"
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// PageOptions configure the Quest-style page selector.
type PageOptions struct {
	PageSize int32 // tokens per page
	Refine   bool  // rescore the candidate pages' keys exactly
}

// LSHOptions configure the SimHash selector.
type LSHOptions struct {
	Rounds int32
	Bits   int32 // bits per table; 0: adapted to N
	Probes int32
	Seed   uint64
}

// HNSWOptions configure the HNSW selector.
type HNSWOptions struct {
	M              int32
	EfConstruction int32
	EfSearch       int32
}

// LearnedOptions configure the learned selector.
type LearnedOptions struct {
	WeightsPath string // safetensors file, read by NewIndex
	Layer       int32
	Rescore     int64 // learned kind: rescore*top_k candidates rescored exactly (0: one stage)
}

// IndexOptions are the settings of an Index.
type IndexOptions struct {
	Kind       SelectorKind
	NumKVHeads int32 // H_kv >= 1
	HeadDim    int32 // D >= 1
	DType      DType // storage of the index's keys: F32, F16 or BF16
	Capacity   int64 // expected number of slots (a hint; 0: none)
	Page       PageOptions
	LSH        LSHOptions
	HNSW       HNSWOptions
	Learned    LearnedOptions
}

// DefaultIndexOptions are the library's defaults (sa_index_options_default):
// set NumKVHeads and HeadDim.
func DefaultIndexOptions() IndexOptions {
	o := C.sa_index_options_default()
	path := ""
	if o.learned.weights_path != nil {
		path = C.GoString(o.learned.weights_path)
	}
	return IndexOptions{
		Kind:       SelectorKind(o.kind),
		NumKVHeads: int32(o.num_kv_heads),
		HeadDim:    int32(o.head_dim),
		DType:      DType(o.dtype),
		Capacity:   int64(o.capacity),
		Page:       PageOptions{PageSize: int32(o.page.page_size), Refine: o.page.refine != 0},
		LSH: LSHOptions{Rounds: int32(o.lsh.rounds), Bits: int32(o.lsh.bits),
			Probes: int32(o.lsh.probes), Seed: uint64(o.lsh.seed)},
		HNSW: HNSWOptions{M: int32(o.hnsw.m), EfConstruction: int32(o.hnsw.ef_construction),
			EfSearch: int32(o.hnsw.ef_search)},
		Learned: LearnedOptions{WeightsPath: path, Layer: int32(o.learned.layer),
			Rescore: int64(o.learned.rescore)},
	}
}

// Index is the selection state for one layer's cache, all KV heads
// (sa_index). Select may run on many goroutines at once; Append, Update and
// Close wait for them (the index holds a read-write lock).
type Index struct {
	mu  sync.RWMutex
	ptr *C.sa_index
	ctx *Context
}

// NewIndex creates an empty index on ctx (sa_index_create); opts nil means
// the library's defaults. ctx cannot be closed while the index is open.
func NewIndex(ctx *Context, opts *IndexOptions) (*Index, error) {
	def := DefaultIndexOptions()
	if opts == nil {
		opts = &def
	}
	o := C.sa_index_options_default()
	o.struct_size = C.size_t(unsafe.Sizeof(o))
	o.kind = C.sa_selector_kind(opts.Kind)
	o.num_kv_heads = C.int32_t(opts.NumKVHeads)
	o.head_dim = C.int32_t(opts.HeadDim)
	o.dtype = C.sa_dtype(opts.DType)
	o.capacity = C.int64_t(opts.Capacity)
	o.page.page_size = C.int32_t(opts.Page.PageSize)
	o.page.refine = cbool(opts.Page.Refine)
	o.lsh.rounds = C.int32_t(opts.LSH.Rounds)
	o.lsh.bits = C.int32_t(opts.LSH.Bits)
	o.lsh.probes = C.int32_t(opts.LSH.Probes)
	o.lsh.seed = C.uint64_t(opts.LSH.Seed)
	o.hnsw.m = C.int32_t(opts.HNSW.M)
	o.hnsw.ef_construction = C.int32_t(opts.HNSW.EfConstruction)
	o.hnsw.ef_search = C.int32_t(opts.HNSW.EfSearch)
	o.learned.weights_path = nil
	o.learned.layer = C.int32_t(opts.Learned.Layer)
	o.learned.rescore = C.int64_t(opts.Learned.Rescore)
	var path *C.char
	if opts.Learned.WeightsPath != "" {
		path = C.CString(opts.Learned.WeightsPath)
		defer C.free(unsafe.Pointer(path))
	}

	ctx.mu.RLock()
	defer ctx.mu.RUnlock()
	if ctx.ptr == nil {
		return nil, errClosed("context")
	}
	var out *C.sa_index
	var msg *C.char
	if err := check(C.sago_index_create(ctx.ptr, &o, path, &out, &msg), msg); err != nil {
		return nil, err
	}
	ctx.indexes.Add(1)
	ix := &Index{ptr: out, ctx: ctx}
	runtime.SetFinalizer(ix, (*Index).destroy)
	return ix, nil
}

func (ix *Index) destroy() {
	if ix.ptr == nil {
		return
	}
	p := ix.ptr
	C.sa_index_destroy(&p)
	ix.ptr = nil
	ix.ctx.indexes.Add(-1)
}

// Close frees the index. Closing twice is a no-op.
func (ix *Index) Close() error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.destroy()
	runtime.SetFinalizer(ix, nil)
	return nil
}

// Append adds keys [n, H_kv, D] (F32/F16/BF16, any strides) as the next n slots.
func (ix *Index) Append(keys Tensor) error {
	kd, err := keys.desc("keys")
	if err != nil {
		return err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.ptr == nil {
		return errClosed("index")
	}
	var msg *C.char
	return check(C.sago_index_append(ix.ptr, &kd, keys.data, &msg), msg)
}

// Update refills existing slots with keys [len(slots), H_kv, D] and the token
// positions they now hold (nil: the next positions in order).
func (ix *Index) Update(slots []int32, keys Tensor, positions []int64) error {
	kd, err := keys.desc("keys")
	if err != nil {
		return err
	}
	if positions != nil && len(positions) != len(slots) {
		return errorf(StatusShape, "positions: %d values given for %d slots", len(positions), len(slots))
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.ptr == nil {
		return errClosed("index")
	}
	var msg *C.char
	return check(C.sago_index_update(ix.ptr, ptrI32(slots), C.int64_t(len(slots)), &kd, keys.data,
		ptrI64(positions), &msg), msg)
}

// Len is the number of slots appended so far (0 once closed).
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, _ := ix.lenLocked()
	return n
}

func (ix *Index) lenLocked() (int, error) {
	if ix.ptr == nil {
		return 0, errClosed("index")
	}
	var n C.int64_t
	var msg *C.char
	if err := check(C.sago_index_size(ix.ptr, &n, &msg), msg); err != nil {
		return 0, err
	}
	return int(n), nil
}

// SelectOptions are the settings of Index.Select.
type SelectOptions struct {
	TopK         int32   // keys chosen by score, beyond window and sinks (>= 1)
	Window       int32   // keys at positions (p - Window, p] always kept
	Sinks        int32   // keys at positions [0, Sinks) always kept
	PerQueryHead bool    // one list per query head instead of per KV head
	MassTarget   float32 // 0: off; in (0, 1]: stop once the estimated mass reaches it
	Scale        float32 // softmax scale for the mass estimate; 0: 1/sqrt(D)
	// Position of each query (n_q values); nil: the last n_q positions.
	QueryPositions []int64
	// Segments of each query (n_q) and each slot (Len()): both or neither.
	QuerySegments []int32
	KeySegments   []int32
}

// DefaultSelectOptions are the library's defaults (sa_select_options_default).
func DefaultSelectOptions() SelectOptions {
	o := C.sa_select_options_default()
	return SelectOptions{TopK: int32(o.top_k), Window: int32(o.window), Sinks: int32(o.sinks),
		PerQueryHead: o.per_query_head != 0, MassTarget: float32(o.mass_target),
		Scale: float32(o.scale)}
}

// Select chooses, for each query and KV head (or query head), the slots to
// attend (sa_select). queries [n_q, H_q, D]; indices i32 [n_q, H, width] with
// H = H_kv (H_q with PerQueryHead) and width >= Sinks + Window + TopK, written
// ascending, then -1 padding. opts nil means the defaults.
func (ix *Index) Select(queries Tensor, opts *SelectOptions, indices Tensor) error {
	qd, err := queries.desc("queries")
	if err != nil {
		return err
	}
	id, err := indices.desc("indices")
	if err != nil {
		return err
	}
	def := DefaultSelectOptions()
	if opts == nil {
		opts = &def
	}
	nq := queries.dim0()
	if opts.QueryPositions != nil {
		if err := checkLen("SelectOptions.QueryPositions (one per query)", len(opts.QueryPositions), nq); err != nil {
			return err
		}
	}
	if opts.QuerySegments != nil {
		if err := checkLen("SelectOptions.QuerySegments (one per query)", len(opts.QuerySegments), nq); err != nil {
			return err
		}
	}
	o := C.sa_select_options_default()
	o.struct_size = C.size_t(unsafe.Sizeof(o))
	o.top_k = C.int32_t(opts.TopK)
	o.window = C.int32_t(opts.Window)
	o.sinks = C.int32_t(opts.Sinks)
	o.per_query_head = cbool(opts.PerQueryHead)
	o.mass_target = C.float(opts.MassTarget)
	o.scale = C.float(opts.Scale)
	o.query_positions, o.query_segments, o.key_segments = nil, nil, nil

	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if opts.KeySegments != nil {
		n, err := ix.lenLocked()
		if err != nil {
			return err
		}
		if err := checkLen("SelectOptions.KeySegments (one per slot)", len(opts.KeySegments), int64(n)); err != nil {
			return err
		}
	}
	if ix.ptr == nil {
		return errClosed("index")
	}
	var msg *C.char
	st := C.sago_select(ix.ptr, &qd, queries.data, &o, ptrI64(opts.QueryPositions),
		ptrI32(opts.QuerySegments), ptrI32(opts.KeySegments), &id, indices.data, &msg)
	return check(st, msg)
}
