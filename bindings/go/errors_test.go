package sparseattn

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

// expectStatus fails unless err is an *Error with status want and a message.
func expectStatus(t *testing.T, what string, err error, want Status) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
	if e.Message == "" {
		t.Fatalf("%s: %v without a message", what, want)
	}
}

// Bad input to the new calls comes back as the library's status and message
// (or this package's, checked before C), and writes no output.
func TestErrorsOfPagedAndBatchedCalls(t *testing.T) {
	const hq, hkv, d, P = 2, 1, 8, 4
	lens := []int{7, 10}
	r := rng(71)
	c := newPagedCache(&r, lens, P, hkv, d)
	ctx := newContext(t)
	q := r.vec(2 * hq * d)
	qt := TensorF32(q, 2, hq, d)
	out := make([]float32, 2*hq*d)
	for i := range out {
		out[i] = 42
	}
	outT := TensorF32(out, 2, hq, d)
	untouched := func(what string) {
		t.Helper()
		for _, x := range out {
			if x != 42 {
				t.Fatalf("%s: out was written on failure", what)
			}
		}
	}

	bad := c.kv()
	table := append([]int32(nil), c.table...)
	table[0] = int32(c.numPages) // a page that does not exist
	bad.PageTable = TensorI32(table, 2, c.maxPages)
	expectStatus(t, "page outside the cache", ctx.AttendPaged(qt, nil, bad, nil, nil, outT, nil), StatusOutOfRange)
	untouched("page outside the cache")

	long := c.kv()
	long.SeqLens = TensorI32([]int32{7, int32(c.maxPages*P + 1)}, 2)
	err := ctx.AttendPaged(qt, nil, long, nil, nil, outT, nil)
	if !errors.Is(err, StatusOutOfRange) && !errors.Is(err, StatusShape) {
		t.Fatalf("length beyond the page table: %v", err)
	}
	untouched("length beyond the page table")

	expectStatus(t, "nil PagedKV", ctx.AttendPaged(qt, nil, nil, nil, nil, outT, nil), StatusNullPointer)
	opts := DefaultAttendOptions()
	opts.KeyPositions = []int64{0, 1, 2}
	expectStatus(t, "KeyPositions with a paged cache", ctx.AttendPaged(qt, nil, c.kv(), nil, &opts, outT, nil),
		StatusInvalidArgument)
	untouched("KeyPositions with a paged cache")
	shortV := c.kv()
	shortV.V = TensorF32(c.v[:len(c.v)-1], c.numPages, P, hkv, d)
	expectStatus(t, "V shorter than its shape", ctx.AttendPaged(qt, nil, shortV, nil, nil, outT, nil), StatusShape)

	// SelectBatch.
	ix := newIndex(t, ctx, indexOptions(hkv, d, F32))
	other := newIndex(t, ctx, indexOptions(hkv, 2*d, F32))
	for b, x := range []*Index{ix, other} {
		dim := d * (b + 1)
		if err := x.Append(TensorF32(r.vec(5*hkv*dim), 5, hkv, dim)); err != nil {
			t.Fatal(err)
		}
	}
	idx := make([]int32, 2*hkv*8)
	for i := range idx {
		idx[i] = 42
	}
	idxT := TensorI32(idx, 2, hkv, 8)
	sel := SelectOptions{TopK: 2, Window: 2, Sinks: 1}
	expectStatus(t, "nil index", SelectBatch([]*Index{ix, nil}, qt, nil, &sel, nil, idxT), StatusNullPointer)
	expectStatus(t, "head_dim differs", SelectBatch([]*Index{ix, other}, qt, nil, &sel, nil, idxT), StatusShape)
	segs := sel
	segs.QuerySegments, segs.KeySegments = []int32{0, 0}, make([]int32, 5)
	expectStatus(t, "segments in a batch", SelectBatch([]*Index{ix, ix}, qt, nil, &segs, nil, idxT), StatusInvalidArgument)
	starts := TensorI64([]int64{0, 2, 1}, 3) // decreasing
	expectStatus(t, "decreasing query starts", SelectBatch([]*Index{ix, ix}, qt, &starts, &sel, nil, idxT), StatusInvalidArgument)
	for _, x := range idx {
		if x != 42 {
			t.Fatal("indices written by a failed SelectBatch")
		}
	}
	other.Close()
	expectStatus(t, "closed index", SelectBatch([]*Index{ix, other}, qt, nil, &sel, nil, idxT), StatusNullPointer)
	if err := SelectBatch(nil, TensorF32(nil, 0, hq, d), nil, &sel, nil, TensorI32(nil, 0, hkv, 8)); err != nil {
		t.Fatalf("an empty batch: %v", err)
	}
}

// Checks this package makes before C: shapes whose element count overflows,
// Go ints that do not fit an int32 field, option lists shorter than the
// queries, and nil evict options.
func TestErrorsCaughtInGo(t *testing.T) {
	ctx := newContext(t)
	ix := newIndex(t, ctx, indexOptions(1, 4, F32))
	huge := TensorF32(make([]float32, 4), math.MaxInt64/2, 4, 4)
	expectStatus(t, "overflowing shape", ix.Append(huge), StatusOverflow)
	strided := TensorF32(make([]float32, 4), 3, 1, 4).WithStrides(math.MaxInt64/2, 0, 1)
	expectStatus(t, "overflowing strides", ix.Append(strided), StatusOverflow)
	expectStatus(t, "negative extent", ix.Append(TensorF32(nil, -1, 1, 4)), StatusShape)

	if strconv.IntSize == 64 {
		o := indexOptions(1, math.MaxInt32+1, F32)
		_, err := NewIndex(ctx, &o)
		expectStatus(t, "HeadDim beyond int32", err, StatusInvalidArgument)
		if !strings.Contains(err.Error(), "IndexOptions.HeadDim") {
			t.Fatalf("the message does not name the field: %v", err)
		}
		_, err = NewContext(&ContextOptions{Threads: math.MaxInt32 + 1})
		expectStatus(t, "Threads beyond int32", err, StatusInvalidArgument)
	}
	_, err := NewContext(&ContextOptions{Threads: 2000})
	expectStatus(t, "Threads 2000", err, StatusInvalidArgument)

	if err := ix.Append(TensorF32(make([]float32, 8), 2, 1, 4)); err != nil {
		t.Fatal(err)
	}
	q := make([]float32, 2*4)
	idx := make([]int32, 2*8)
	sel := SelectOptions{TopK: 1, Window: 1, Sinks: 1, QueryPositions: []int64{1}}
	expectStatus(t, "one position for two queries", ix.Select(TensorF32(q, 2, 1, 4), &sel, TensorI32(idx, 2, 1, 8)), StatusShape)

	_, err = ctx.Evict(nil, TensorF32(make([]float32, 2), 2), TensorI64(make([]int64, 2), 2), make([]int32, 2))
	expectStatus(t, "nil EvictOptions", err, StatusNullPointer)
}
