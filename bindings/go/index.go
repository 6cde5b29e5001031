package sparseattn

// #include "shim.h"
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// PageOptions configure the Quest-style page selector (sa_page_options).
type PageOptions struct {
	PageSize int  // slots per page, >= 1
	Refine   bool // rescore the best pages' keys exactly (the default); false: whole pages fill TopK
}

// LSHOptions configure the SimHash selector (sa_lsh_options).
type LSHOptions struct {
	Rounds int    // hash tables, 1..64
	Bits   int    // bits per table, 0..24; 0: adapted to the index size
	Probes int    // extra buckets probed per table, 0..64
	Seed   uint64 // fixed seed: deterministic tables
}

// HNSWOptions configure the HNSW selector (sa_hnsw_options).
type HNSWOptions struct {
	M              int // graph degree, 2..512
	EfConstruction int // build beam, 1..65536
	EfSearch       int // search beam, 1..65536
}

// LearnedOptions configure the learned and indexer selectors (sa_learned_options).
type LearnedOptions struct {
	WeightsPath string // safetensors file, read by NewIndex
	Layer       int    // the layer whose tensors to use (>= 0)
	Rescore     int    // learned and indexer kinds: Rescore*TopK candidates rescored exactly (0: one stage)
}

// IndexOptions are the settings of an Index (sa_index_options). Start from
// DefaultIndexOptions and set NumKVHeads and HeadDim: the zero value of the
// selectors' options is not their default (Page.Refine false, zero sizes).
type IndexOptions struct {
	Kind       SelectorKind
	NumKVHeads int   // H_kv >= 1
	HeadDim    int   // D >= 1
	DType      DType // storage of the index's keys (with BorrowKeys: of what it keeps): F32, F16 or BF16
	Capacity   int   // expected number of slots (a hint; 0: none)
	Page       PageOptions
	LSH        LSHOptions
	HNSW       HNSWOptions
	Learned    LearnedOptions
	// The index keeps no copy of the keys where its selector does not need
	// one; Select then reads the host's keys from SelectOptions.Keys (and
	// SelectBatch from its PagedKV). Truncate and Clone refuse such indexes
	// for now (StatusUnsupported). Appended and updated keys are still passed
	// to Append and Update.
	BorrowKeys bool
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
		NumKVHeads: int(o.num_kv_heads),
		HeadDim:    int(o.head_dim),
		DType:      DType(o.dtype),
		Capacity:   int(o.capacity),
		Page:       PageOptions{PageSize: int(o.page.page_size), Refine: o.page.refine != 0},
		LSH: LSHOptions{Rounds: int(o.lsh.rounds), Bits: int(o.lsh.bits),
			Probes: int(o.lsh.probes), Seed: uint64(o.lsh.seed)},
		HNSW: HNSWOptions{M: int(o.hnsw.m), EfConstruction: int(o.hnsw.ef_construction),
			EfSearch: int(o.hnsw.ef_search)},
		Learned: LearnedOptions{WeightsPath: path, Layer: int(o.learned.layer),
			Rescore: int(o.learned.rescore)},
		BorrowKeys: o.borrow_keys != 0,
	}
}

// toC converts the options; the weights path is passed to the shim apart.
func (opts *IndexOptions) toC() (C.sa_index_options, error) {
	o := C.sa_index_options_default()
	o.struct_size = C.size_t(unsafe.Sizeof(o))
	var n narrower
	o.kind = C.sa_selector_kind(opts.Kind)
	o.num_kv_heads = n.i32("IndexOptions.NumKVHeads", opts.NumKVHeads)
	o.head_dim = n.i32("IndexOptions.HeadDim", opts.HeadDim)
	o.dtype = C.sa_dtype(opts.DType)
	o.capacity = C.int64_t(opts.Capacity)
	o.page.page_size = n.i32("IndexOptions.Page.PageSize", opts.Page.PageSize)
	o.page.refine = cbool(opts.Page.Refine)
	o.lsh.rounds = n.i32("IndexOptions.LSH.Rounds", opts.LSH.Rounds)
	o.lsh.bits = n.i32("IndexOptions.LSH.Bits", opts.LSH.Bits)
	o.lsh.probes = n.i32("IndexOptions.LSH.Probes", opts.LSH.Probes)
	o.lsh.seed = C.uint64_t(opts.LSH.Seed)
	o.hnsw.m = n.i32("IndexOptions.HNSW.M", opts.HNSW.M)
	o.hnsw.ef_construction = n.i32("IndexOptions.HNSW.EfConstruction", opts.HNSW.EfConstruction)
	o.hnsw.ef_search = n.i32("IndexOptions.HNSW.EfSearch", opts.HNSW.EfSearch)
	o.learned.weights_path = nil
	o.learned.layer = n.i32("IndexOptions.Learned.Layer", opts.Learned.Layer)
	o.learned.rescore = C.int64_t(opts.Learned.Rescore)
	o.borrow_keys = cbool(opts.BorrowKeys)
	return o, n.err
}

// Index is the selection state for one layer's cache, all KV heads
// (sa_index). Select, SelectBatch and Clone may run on many goroutines at
// once; Append, Update, Truncate and Close wait for them (the index holds a
// read-write lock).
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
	o, err := opts.toC()
	if err != nil {
		return nil, err
	}
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
	return adopt(ctx, out), nil
}

// adopt wraps a new C index created on ctx.
func adopt(ctx *Context, p *C.sa_index) *Index {
	ctx.indexes.Add(1)
	ix := &Index{ptr: p, ctx: ctx}
	runtime.SetFinalizer(ix, (*Index).destroy)
	return ix
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

// Update refills existing slots (e.g. freed by Evict) with keys
// [len(slots), H_kv, D] and the token positions they now hold (nil: the next
// positions in order).
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

// Truncate drops every slot holding a token position >= position (draft
// tokens that speculative decoding rejected); those must be the index's last
// slots (sa_index_truncate). Nothing to drop is not an error.
func (ix *Index) Truncate(position int64) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.ptr == nil {
		return errClosed("index")
	}
	var msg *C.char
	return check(C.sago_index_truncate(ix.ptr, C.int64_t(position), &msg), msg)
}

// Clone returns a deep copy of the index on the same context that selects
// exactly like it; the two change independently afterwards (sa_index_clone:
// beam search, a forked sequence). Close the copy too.
func (ix *Index) Clone() (*Index, error) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.ptr == nil {
		return nil, errClosed("index")
	}
	var out *C.sa_index
	var msg *C.char
	if err := check(C.sago_index_clone(ix.ptr, &out, &msg), msg); err != nil {
		return nil, err
	}
	return adopt(ix.ctx, out), nil
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
	if int64(int(n)) != int64(n) {
		return 0, errorf(StatusOverflow, "the index holds %d slots, more than a Go int holds", n)
	}
	return int(n), nil
}
