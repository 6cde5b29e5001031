package sparseattn

// #include "shim.h"
import "C"

import "unsafe"

// PagedKV describes the KV cache of a batch of B sequences held in pages, as
// vLLM, SGLang and FlashInfer hold it (sa_paged_kv). Token t of sequence b
// lives in page PageTable[b][t / page_size] at offset t % page_size; a
// physical slot is page*page_size + offset, and sparse index entries into a
// paged cache are physical slots. Nothing is copied: the library reads these
// tensors during a call only.
//
// The optional tensors are absent when they are the zero Tensor (rank 0).
type PagedKV struct {
	// [num_pages, page_size, H_kv, D] F32/F16/BF16, any strides; or
	// [n, H_kv, D]: n pages of one row each (llama.cpp's cells).
	K, V Tensor
	// I32 [B, max_pages]: each sequence's pages in token order. With SeqLens
	// absent too, K and V of rank 3 hold one sequence, row t = token t.
	PageTable Tensor
	// I32 or I64 [B]: tokens held by each sequence.
	SeqLens Tensor
	// Optional I64 [num_pages * page_size]: the token position each physical
	// slot holds (-1: empty, never attended); absent: token t is at position t.
	SlotPositions Tensor
}

// pagedData holds the Go data pointers of a PagedKV's tensors, which travel
// to the shim as separate arguments (see shim.h).
type pagedData struct {
	k, v, pageTable, seqLens, slotPositions unsafe.Pointer
}

// desc checks kv and returns its C descriptor without Go pointers.
func (kv *PagedKV) desc() (C.sa_paged_kv, pagedData, error) {
	var d C.sa_paged_kv
	var p pagedData
	d.struct_size = C.size_t(unsafe.Sizeof(d))
	var err error
	if d.k, err = kv.K.desc("PagedKV.K"); err != nil {
		return d, p, err
	}
	if d.v, err = kv.V.desc("PagedKV.V"); err != nil {
		return d, p, err
	}
	p.k, p.v = kv.K.data, kv.V.data
	if d.page_table, p.pageTable, err = absentOrDesc(&kv.PageTable, "PagedKV.PageTable"); err != nil {
		return d, p, err
	}
	if d.seq_lens, p.seqLens, err = absentOrDesc(&kv.SeqLens, "PagedKV.SeqLens"); err != nil {
		return d, p, err
	}
	if d.slot_positions, p.slotPositions, err = absentOrDesc(&kv.SlotPositions, "PagedKV.SlotPositions"); err != nil {
		return d, p, err
	}
	return d, p, nil
}

// absentOrDesc: the zero Tensor is an absent optional tensor (a zero
// descriptor, rank 0, as SA_TENSOR_ABSENT); anything else must be valid.
func absentOrDesc(t *Tensor, name string) (C.sa_tensor, unsafe.Pointer, error) {
	if len(t.shape) == 0 && t.data == nil && t.addr == 0 {
		return C.sa_tensor{}, nil, nil
	}
	d, err := t.desc(name)
	return d, t.data, err
}

// describer builds the C arguments of one call (descriptors, options) and
// keeps the first error, so that a call checks them all with one test.
type describer struct{ err error }

// fail keeps err unless an error came first.
func (b *describer) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// tensor is the descriptor of a required tensor.
func (b *describer) tensor(t *Tensor, name string) C.sa_tensor {
	if b.err != nil {
		return C.sa_tensor{}
	}
	d, err := t.desc(name)
	b.err = err
	return d
}

// optional is the descriptor of an optional tensor: nil for nil.
func (b *describer) optional(t *Tensor, name string) (*C.sa_tensor, unsafe.Pointer) {
	if b.err != nil || t == nil {
		return nil, nil
	}
	d, err := t.desc(name)
	if err != nil {
		b.err = err
		return nil, nil
	}
	return &d, t.data
}

// paged is the descriptor of an optional paged cache: nil for nil.
func (b *describer) paged(kv *PagedKV) (*C.sa_paged_kv, pagedData) {
	if b.err != nil || kv == nil {
		return nil, pagedData{}
	}
	d, p, err := kv.desc()
	b.err = err
	return &d, p
}
