package sparseattn

import (
	"errors"
	"testing"
)

// An index created with BorrowKeys reads the host's keys, passed to each
// Select in SelectOptions.Keys (any strides), and selects like an index that
// keeps its own copy; SelectBatch reads them from the paged cache.
func TestBorrowedKeys(t *testing.T) {
	const n, hq, hkv, d, width = 150, 4, 2, 16, 24
	r := rng(61)
	keys := r.vec(n * hkv * d)
	q := r.vec(hq * d)
	ctx := newContext(t)
	sel := SelectOptions{TopK: 12, Window: 8, Sinks: 4}
	// The same keys head-major [hkv, n, d], described as [n, hkv, d] by strides.
	headMajor := make([]float32, len(keys))
	for tok := 0; tok < n; tok++ {
		for h := 0; h < hkv; h++ {
			copy(headMajor[(h*n+tok)*d:][:d], keys[(tok*hkv+h)*d:][:d])
		}
	}
	for _, kind := range []SelectorKind{SelectorExact, SelectorPage} {
		own := indexOptions(hkv, d, F32)
		own.Kind = kind
		borrowed := own
		borrowed.BorrowKeys = true
		owner, lender := newIndex(t, ctx, own), newIndex(t, ctx, borrowed)
		for _, ix := range []*Index{owner, lender} {
			if err := ix.Append(TensorF32(keys, n, hkv, d)); err != nil {
				t.Fatal(err)
			}
		}
		want := selectOne(t, owner, q, hq, hkv, d, width, &sel)
		withKeys := sel
		host := TensorF32(keys, n, hkv, d)
		withKeys.Keys = &host
		sameRows(t, kind.String()+" borrowed", selectOne(t, lender, q, hq, hkv, d, width, &withKeys), want)
		strided := TensorF32(headMajor, n, hkv, d).WithStrides(d, n*d, 1)
		withKeys.Keys = &strided
		sameRows(t, kind.String()+" borrowed head-major", selectOne(t, lender, q, hq, hkv, d, width, &withKeys), want)

		idx := make([]int32, hkv*width)
		if err := lender.Select(TensorF32(q, 1, hq, d), &sel, TensorI32(idx, 1, hkv, width)); !errors.Is(err, StatusNullPointer) {
			t.Fatalf("borrowing index without Keys: %v", err)
		}
		short := TensorF32(keys, n-1, hkv, d)
		withKeys.Keys = &short
		if err := lender.Select(TensorF32(q, 1, hq, d), &withKeys, TensorI32(idx, 1, hkv, width)); !errors.Is(err, StatusShape) {
			t.Fatalf("Keys shorter than the index: %v", err)
		}
		if err := lender.Truncate(10); !errors.Is(err, StatusUnsupported) {
			t.Fatalf("truncate of a borrowing index: %v", err)
		}
		if _, err := lender.Clone(); !errors.Is(err, StatusUnsupported) {
			t.Fatalf("clone of a borrowing index: %v", err)
		}
	}
}

func TestSelectBatchBorrowedKeysFromThePagedCache(t *testing.T) {
	ctx := newContext(t)
	own, lend := newBatchSetup(t, ctx, false), newBatchSetup(t, ctx, true)
	nq, hq, hkv, d, w := own.nq(), own.hq, own.hkv, own.d, own.width
	starts := TensorI32(own.starts, len(own.starts))
	want := make([]int32, nq*hkv*w)
	if err := SelectBatch(own.indexes, TensorF32(own.q, nq, hq, d), &starts, &own.opts, own.c.kv(),
		TensorI32(want, nq, hkv, w)); err != nil {
		t.Fatal(err)
	}
	got := make([]int32, nq*hkv*w)
	if err := SelectBatch(lend.indexes, TensorF32(lend.q, nq, hq, d), &starts, &lend.opts, lend.c.kv(),
		TensorI32(got, nq, hkv, w)); err != nil {
		t.Fatal(err)
	}
	sameRows(t, "borrowed batch", got, want)
	err := SelectBatch(lend.indexes, TensorF32(lend.q, nq, hq, d), &starts, &lend.opts, nil, TensorI32(got, nq, hkv, w))
	if !errors.Is(err, StatusNullPointer) {
		t.Fatalf("borrowing indexes without a cache: %v", err)
	}
}
