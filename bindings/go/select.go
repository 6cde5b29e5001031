package sparseattn

// #include "shim.h"
import "C"

import (
	"fmt"
	"sort"
	"unsafe"
)

// SelectOptions are the settings of Index.Select and SelectBatch
// (sa_select_options). Start from DefaultSelectOptions.
type SelectOptions struct {
	TopK         int     // keys chosen by score, beyond window and sinks (>= 1)
	Window       int     // keys at positions (p - Window, p] always kept
	Sinks        int     // keys at positions [0, Sinks) always kept
	PerQueryHead bool    // one list per query head instead of per KV head
	MassTarget   float32 // 0: off; in (0, 1]: stop once the estimated mass reaches it
	Scale        float32 // softmax scale for the mass estimate; 0: 1/sqrt(D)
	// Position of each query (n_q values); nil: the last n_q positions.
	QueryPositions []int64
	// Segments of each query (n_q) and each slot (Len()): both or neither.
	// SelectBatch refuses them (its sequences are apart already).
	QuerySegments []int32
	KeySegments   []int32
	// cudaStream_t for an index on a CUDA device; 0: the context's stream.
	CUDAStream uintptr
	// For an index created with BorrowKeys: the host's keys [n_slots, H_kv, D]
	// (F32/F16/BF16, CPU, any strides), row s holding slot s's key, n_slots >=
	// Len(). Read during the call only. Ignored by other indexes and by
	// SelectBatch, which reads borrowed keys from its PagedKV.
	Keys *Tensor
}

// DefaultSelectOptions are the library's defaults (sa_select_options_default).
func DefaultSelectOptions() SelectOptions {
	o := C.sa_select_options_default()
	return SelectOptions{TopK: int(o.top_k), Window: int(o.window), Sinks: int(o.sinks),
		PerQueryHead: o.per_query_head != 0, MassTarget: float32(o.mass_target),
		Scale: float32(o.scale)}
}

// selectArgs is SelectOptions for the shim: the C struct without Go
// pointers, and the Go memory that travels beside it.
type selectArgs struct {
	o          C.sa_select_options
	qpos       []int64
	qseg, kseg []int32
	keysDesc   *C.sa_tensor
	keysData   unsafe.Pointer
}

// selectOptions converts opts (nil: the defaults), checking the per-query
// lists against nq queries.
func (b *describer) selectOptions(opts *SelectOptions, nq int) selectArgs {
	var a selectArgs
	if opts == nil {
		def := DefaultSelectOptions()
		opts = &def
	}
	a.qpos, a.qseg, a.kseg = opts.QueryPositions, opts.QuerySegments, opts.KeySegments
	if a.qpos != nil {
		b.fail(checkLen("SelectOptions.QueryPositions (one per query)", len(a.qpos), nq))
	}
	if a.qseg != nil {
		b.fail(checkLen("SelectOptions.QuerySegments (one per query)", len(a.qseg), nq))
	}
	a.o = C.sa_select_options_default()
	a.o.struct_size = C.size_t(unsafe.Sizeof(a.o))
	var n narrower
	a.o.top_k = n.i32("SelectOptions.TopK", opts.TopK)
	a.o.window = n.i32("SelectOptions.Window", opts.Window)
	a.o.sinks = n.i32("SelectOptions.Sinks", opts.Sinks)
	b.fail(n.err)
	a.o.per_query_head = cbool(opts.PerQueryHead)
	a.o.mass_target = C.float(opts.MassTarget)
	a.o.scale = C.float(opts.Scale)
	a.o.query_positions, a.o.query_segments, a.o.key_segments, a.o.keys = nil, nil, nil, nil
	if opts.CUDAStream != 0 {
		a.o.cuda_stream = C.sago_address(C.uintptr_t(opts.CUDAStream))
	}
	a.keysDesc, a.keysData = b.optional(opts.Keys, "SelectOptions.Keys")
	return a
}

// Select chooses, for each query and KV head (or query head), the slots to
// attend (sa_select). queries [n_q, H_q, D]; indices i32 [n_q, H, width] with
// H = H_kv (H_q with PerQueryHead) and width >= Sinks + Window + TopK, written
// ascending, then -1 padding. opts nil means the defaults.
func (ix *Index) Select(queries Tensor, opts *SelectOptions, indices Tensor) error {
	var b describer
	qd, id := b.tensor(&queries, "queries"), b.tensor(&indices, "indices")
	a := b.selectOptions(opts, queries.dim0())
	if b.err != nil {
		return b.err
	}
	o := a.o

	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.ptr == nil {
		return errClosed("index")
	}
	if a.kseg != nil {
		n, err := ix.lenLocked()
		if err != nil {
			return err
		}
		if err := checkLen("SelectOptions.KeySegments (one per slot)", len(a.kseg), n); err != nil {
			return err
		}
	}
	var msg *C.char
	st := C.sago_select(ix.ptr, &qd, queries.data, &o, ptrI64(a.qpos),
		ptrI32(a.qseg), ptrI32(a.kseg), a.keysDesc, a.keysData,
		&id, indices.data, &msg)
	return check(st, msg)
}

// SelectBatch runs Select for a batch of B = len(indexes) sequences in one
// call (sa_select_batch): indexes[b] holds sequence b's keys, the queries of
// sequence b are rows queryStarts[b] .. queryStarts[b+1]-1 of queries
// (queryStarts I32 or I64 [B+1]; nil: one query per sequence). indices: i32
// [n_q, H, width] as for Select. kv nil: entries are slots of each index;
// else they are physical slots of kv's page table, ready for AttendPaged, and
// indexes that borrow their keys read them from kv. The indexes may differ in
// kind and size, not in KV heads and head dimension; an index may appear
// more than once. opts nil means the defaults.
func SelectBatch(indexes []*Index, queries Tensor, queryStarts *Tensor, opts *SelectOptions,
	kv *PagedKV, indices Tensor) error {
	var b describer
	qd := b.tensor(&queries, "queries")
	startsDesc, startsData := b.optional(queryStarts, "queryStarts")
	id := b.tensor(&indices, "indices")
	kvDesc, kvData := b.paged(kv)
	a := b.selectOptions(opts, queries.dim0())
	if b.err != nil {
		return b.err
	}
	o := a.o

	unlock, err := readLockAll(indexes)
	if err != nil {
		return err
	}
	defer unlock()
	// The C handles, in Go memory that holds no Go pointer: cgo lets it be
	// passed as an argument.
	handles := make([]*C.sa_index, len(indexes))
	for b, ix := range indexes {
		if ix.ptr == nil {
			return errClosed(fmt.Sprintf("indexes[%d]", b))
		}
		handles[b] = ix.ptr
	}
	var msg *C.char
	st := C.sago_select_batch((**C.sa_index)(first(handles)), C.int64_t(len(handles)),
		&qd, queries.data, startsDesc, startsData, &o, ptrI64(a.qpos),
		ptrI32(a.qseg), ptrI32(a.kseg), a.keysDesc, a.keysData,
		kvDesc, kvData.k, kvData.v, kvData.pageTable, kvData.seqLens, kvData.slotPositions,
		&id, indices.data, &msg)
	return check(st, msg)
}

// afterReadLock, when set (by tests only), runs after each read lock that
// readLockAll takes: it can hold a batch between two locks.
var afterReadLock func(*Index)

// readLockAll read-locks each distinct index once, in one global order (by
// address), so that two batches over the same indexes cannot deadlock with a
// writer waiting between them. nil entries are refused.
func readLockAll(indexes []*Index) (unlock func(), err error) {
	distinct := make([]*Index, 0, len(indexes))
	seen := make(map[*Index]bool, len(indexes))
	for b, ix := range indexes {
		if ix == nil {
			return nil, errorf(StatusNullPointer, "indexes[%d] is nil", b)
		}
		if !seen[ix] {
			seen[ix] = true
			distinct = append(distinct, ix)
		}
	}
	// Go's heap objects do not move, so their addresses give a stable order.
	sort.Slice(distinct, func(i, j int) bool {
		return uintptr(unsafe.Pointer(distinct[i])) < uintptr(unsafe.Pointer(distinct[j]))
	})
	for _, ix := range distinct {
		ix.mu.RLock()
		if afterReadLock != nil {
			afterReadLock(ix)
		}
	}
	return func() {
		for _, ix := range distinct {
			ix.mu.RUnlock()
		}
	}, nil
}
