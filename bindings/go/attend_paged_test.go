package sparseattn

import "testing"

// Dense paged attention of a decode batch (one query per sequence, one of
// them empty) equals the float64 reference over each sequence's tokens and
// sa_attend over the same sequence gathered into a contiguous cache.
func TestAttendPagedEqualsContiguousAndReference(t *testing.T) {
	const hq, hkv, d, P = 4, 2, 8, 4
	lens := []int{9, 21, 0, 14}
	B := len(lens)
	r := rng(11)
	c := newPagedCache(&r, lens, P, hkv, d)
	ctx := newContext(t)
	q := r.vec(B * hq * d)
	out := make([]float32, B*hq*d)
	lse := make([]float32, B*hq)
	lseT := TensorF32(lse, B, hq)
	if err := ctx.AttendPaged(TensorF32(q, B, hq, d), nil, c.kv(), nil, nil, TensorF32(out, B, hq, d), &lseT); err != nil {
		t.Fatal(err)
	}
	for b, n := range lens {
		var want, wantLSE []float64
		for h := 0; h < hq; h++ {
			o, l, _ := refAttend(q[(b*hq+h)*d:][:d], c.physical(), h/(hq/hkv), c.tokens(b, n))
			want = append(want, o...)
			wantLSE = append(wantLSE, l)
		}
		closeTo(t, "paged out", out[b*hq*d:][:hq*d], want, 1e-5)
		closeTo(t, "paged lse", lse[b*hq:][:hq], wantLSE, 1e-5)
		if n == 0 {
			continue
		}
		g := c.gather(b)
		contiguous := make([]float32, hq*d)
		if err := ctx.Attend(TensorF32(q[b*hq*d:][:hq*d], 1, hq, d), TensorF32(g.k, n, hkv, d), TensorF32(g.v, n, hkv, d),
			nil, nil, TensorF32(contiguous, 1, hq, d), nil); err != nil {
			t.Fatal(err)
		}
		if e := maxRelErr(out[b*hq*d:][:hq*d], contiguous); e > 1e-6 {
			t.Fatalf("sequence %d: paged vs contiguous %g", b, e)
		}
	}
}

// Prefill chunks: queryStarts gives sequences several queries, the last
// tokens of each, and causal attention limits each to the tokens up to its
// own position.
func TestAttendPagedPrefillChunksCausal(t *testing.T) {
	const hq, hkv, d, P = 2, 1, 8, 8
	lens := []int{12, 30, 5}
	chunk := []int{3, 5, 1}
	starts := []int64{0, 3, 8, 9}
	nq := 9
	r := rng(12)
	c := newPagedCache(&r, lens, P, hkv, d)
	ctx := newContext(t)
	q := r.vec(nq * hq * d)
	out := make([]float32, nq*hq*d)
	opts := DefaultAttendOptions()
	opts.Causal = true
	st := TensorI64(starts, len(starts))
	if err := ctx.AttendPaged(TensorF32(q, nq, hq, d), &st, c.kv(), nil, &opts, TensorF32(out, nq, hq, d), nil); err != nil {
		t.Fatal(err)
	}
	var want []float64
	for b, n := range lens {
		for j := 0; j < chunk[b]; j++ {
			i := int(starts[b]) + j
			pos := n - chunk[b] + j // the query's own token; it sees tokens 0..pos
			for h := 0; h < hq; h++ {
				o, _, _ := refAttend(q[(i*hq+h)*d:][:d], c.physical(), h/(hq/hkv), c.tokens(b, pos+1))
				want = append(want, o...)
			}
		}
	}
	closeTo(t, "causal chunks", out, want, 1e-5)
}
