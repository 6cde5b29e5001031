package sparseattn

import (
	"errors"
	"testing"
)

// selectOne runs ix.Select for one query [1, hq, d] into a fresh index row.
func selectOne(t *testing.T, ix *Index, q []float32, hq, hkv, d, width int, o *SelectOptions) []int32 {
	t.Helper()
	idx := make([]int32, hkv*width)
	if err := ix.Select(TensorF32(q, 1, hq, d), o, TensorI32(idx, 1, hkv, width)); err != nil {
		t.Fatal(err)
	}
	return idx
}

func sameRows(t *testing.T, what string, got, want []int32) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
}

// Truncate drops draft tokens: the index then selects the brute-force top-K
// of the kept keys, exactly like an index built from them, and continues
// positions after them. Clone forks an index that changes independently.
func TestTruncateAndClone(t *testing.T) {
	const n, keep, hq, hkv, d, width, group = 60, 45, 4, 2, 16, 16, 2
	r := rng(51)
	c := cache{k: r.vec(n * hkv * d), hkv: hkv, d: d}
	q := r.vec(hq * d)
	o := SelectOptions{TopK: 6, Window: 4, Sinks: 2}
	ctx := newContext(t)
	ix := newIndex(t, ctx, indexOptions(hkv, d, F32))
	for _, part := range [][2]int{{0, 20}, {20, 50}, {50, n}} {
		if err := ix.Append(TensorF32(c.k[part[0]*hkv*d:part[1]*hkv*d], part[1]-part[0], hkv, d)); err != nil {
			t.Fatal(err)
		}
	}
	fork, err := ix.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer fork.Close()
	if err := ctx.Close(); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("closing the context under a clone: %v", err)
	}

	if err := ix.Truncate(keep); err != nil {
		t.Fatal(err)
	}
	if ix.Len() != keep || fork.Len() != n {
		t.Fatalf("Len after truncate: %d and clone %d", ix.Len(), fork.Len())
	}
	positions := func(m int) []int64 {
		p := make([]int64, m)
		for i := range p {
			p[i] = int64(i)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		ix   *Index
		m    int
	}{{"truncated", ix, keep}, {"clone", fork, n}} {
		got := selectOne(t, tc.ix, q, hq, hkv, d, width, &o)
		for kh := 0; kh < hkv; kh++ {
			e := refExactRow(heads(q, hq, d, 0, kh*group, (kh+1)*group), c, kh, positions(tc.m), int64(tc.m-1), o.Sinks, o.Window)
			checkExactRow(t, tc.name, got[kh*width:][:width], e, o.TopK)
		}
	}
	fresh := newIndex(t, ctx, indexOptions(hkv, d, F32))
	if err := fresh.Append(TensorF32(c.k[:keep*hkv*d], keep, hkv, d)); err != nil {
		t.Fatal(err)
	}
	sameRows(t, "truncated vs built from the kept keys", selectOne(t, ix, q, hq, hkv, d, width, &o),
		selectOne(t, fresh, q, hq, hkv, d, width, &o))

	// Appends continue after the kept positions, on the truncated index only.
	more := r.vec(3 * hkv * d)
	if err := ix.Append(TensorF32(more, 3, hkv, d)); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Append(TensorF32(more, 3, hkv, d)); err != nil {
		t.Fatal(err)
	}
	sameRows(t, "after appending", selectOne(t, ix, q, hq, hkv, d, width, &o), selectOne(t, fresh, q, hq, hkv, d, width, &o))
	if fork.Len() != n {
		t.Fatalf("the clone changed with the original: %d slots", fork.Len())
	}

	// Nothing at or past the position: no change. A negative one is refused.
	if err := ix.Truncate(1000); err != nil || ix.Len() != keep+3 {
		t.Fatalf("truncate past the end: %v, %d slots", err, ix.Len())
	}
	if err := ix.Truncate(-1); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("truncate(-1): %v", err)
	}
	fork.Close()
	if _, err := fork.Clone(); !errors.Is(err, StatusNullPointer) {
		t.Fatalf("clone of a closed index: %v", err)
	}
	if err := fork.Truncate(1); !errors.Is(err, StatusNullPointer) {
		t.Fatalf("truncate of a closed index: %v", err)
	}
}

// A clone of an approximate index carries its selector state: it selects
// like the original, and like it after the same appends.
func TestCloneKeepsSelectorState(t *testing.T) {
	const n, hq, hkv, d, width = 300, 2, 1, 16, 40
	r := rng(52)
	keys := r.vec(n * hkv * d)
	ctx := newContext(t)
	for _, kind := range []SelectorKind{SelectorPage, SelectorLSH, SelectorHNSW} {
		o := indexOptions(hkv, d, F16)
		o.Kind = kind
		ix := newIndex(t, ctx, o)
		if err := ix.Append(TensorF32(keys[:200*hkv*d], 200, hkv, d)); err != nil {
			t.Fatal(err)
		}
		fork, err := ix.Clone()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fork.Close() })
		sel := SelectOptions{TopK: 16, Window: 8, Sinks: 4}
		q := r.vec(hq * d)
		sameRows(t, kind.String(), selectOne(t, fork, q, hq, hkv, d, width, &sel), selectOne(t, ix, q, hq, hkv, d, width, &sel))
		for _, x := range []*Index{ix, fork} {
			if err := x.Append(TensorF32(keys[200*hkv*d:], n-200, hkv, d)); err != nil {
				t.Fatal(err)
			}
		}
		sameRows(t, kind.String()+" after appends", selectOne(t, fork, q, hq, hkv, d, width, &sel),
			selectOne(t, ix, q, hq, hkv, d, width, &sel))
	}
}
