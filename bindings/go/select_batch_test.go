package sparseattn

import (
	"sync"
	"testing"
	"time"
)

// batchSetup: three sequences in a paged cache, an index per sequence holding
// its keys in token order (exact, page, exact), and queries: 2, 1 and 3 per
// sequence.
type batchSetup struct {
	hq, hkv, d, width int
	lens, chunk       []int
	starts            []int32
	c                 *pagedCache
	indexes           []*Index
	q                 []float32
	opts              SelectOptions
}

func newBatchSetup(t *testing.T, ctx *Context, borrow bool) *batchSetup {
	s := &batchSetup{hq: 4, hkv: 2, d: 16, lens: []int{40, 17, 64}, chunk: []int{2, 1, 3},
		starts: []int32{0, 2, 3, 6}}
	s.opts = DefaultSelectOptions()
	s.opts.TopK, s.opts.Window, s.opts.Sinks = 5, 3, 2
	s.width = 10
	r := rng(21)
	s.c = newPagedCache(&r, s.lens, 8, s.hkv, s.d)
	s.q = r.vec(6 * s.hq * s.d)
	for b, n := range s.lens {
		o := indexOptions(s.hkv, s.d, F32)
		o.BorrowKeys = borrow
		if b == 1 {
			o.Kind, o.Page.PageSize = SelectorPage, 8
		}
		ix := newIndex(t, ctx, o)
		g := s.c.gather(b)
		half := n / 2 * s.hkv * s.d // two appends
		if err := ix.Append(TensorF32(g.k[:half], n/2, s.hkv, s.d)); err != nil {
			t.Fatal(err)
		}
		if err := ix.Append(TensorF32(g.k[half:], n-n/2, s.hkv, s.d)); err != nil {
			t.Fatal(err)
		}
		s.indexes = append(s.indexes, ix)
	}
	return s
}

func (s *batchSetup) nq() int { return int(s.starts[len(s.starts)-1]) }

// rows of sequence b's queries in q and in an index tensor.
func (s *batchSetup) queries(b int) []float32 {
	return s.q[int(s.starts[b])*s.hq*s.d : int(s.starts[b+1])*s.hq*s.d]
}
func (s *batchSetup) rows(idx []int32, b int) []int32 {
	return idx[int(s.starts[b])*s.hkv*s.width : int(s.starts[b+1])*s.hkv*s.width]
}

// SelectBatch equals one Select per sequence (index slots), its paged form
// maps those through the page table, the exact indexes' choices are the
// brute-force top-K, and paged sparse attention over the selection equals the
// float64 reference and Attend over each gathered sequence.
func TestSelectBatchEqualsPerSequenceSelect(t *testing.T) {
	ctx := newContext(t)
	s := newBatchSetup(t, ctx, false)
	nq, hq, hkv, d, w := s.nq(), s.hq, s.hkv, s.d, s.width
	qt := TensorF32(s.q, nq, hq, d)
	starts := TensorI32(s.starts, len(s.starts))

	batch := make([]int32, nq*hkv*w)
	if err := SelectBatch(s.indexes, qt, &starts, &s.opts, nil, TensorI32(batch, nq, hkv, w)); err != nil {
		t.Fatal(err)
	}
	for b, ix := range s.indexes {
		n := s.chunk[b]
		one := make([]int32, n*hkv*w)
		if err := ix.Select(TensorF32(s.queries(b), n, hq, d), &s.opts, TensorI32(one, n, hkv, w)); err != nil {
			t.Fatal(err)
		}
		got := s.rows(batch, b)
		for e := range one {
			if got[e] != one[e] {
				t.Fatalf("sequence %d: batch %v, Select %v", b, got, one)
			}
		}
		if b == 1 { // the page selector is approximate
			continue
		}
		g := s.c.gather(b)
		pos := make([]int64, s.lens[b])
		for i := range pos {
			pos[i] = int64(i)
		}
		for j := 0; j < n; j++ {
			p := int64(s.lens[b] - n + j)
			group := hq / hkv
			for kh := 0; kh < hkv; kh++ {
				qs := heads(s.queries(b), hq, d, j, kh*group, (kh+1)*group)
				e := refExactRow(qs, g, kh, pos, p, s.opts.Sinks, s.opts.Window)
				checkExactRow(t, "batch row", got[(j*hkv+kh)*w:][:w], e, s.opts.TopK)
			}
		}
	}

	paged := make([]int32, nq*hkv*w)
	if err := SelectBatch(s.indexes, qt, &starts, &s.opts, s.c.kv(), TensorI32(paged, nq, hkv, w)); err != nil {
		t.Fatal(err)
	}
	for b := range s.indexes {
		logical, physical := s.rows(batch, b), s.rows(paged, b)
		for e, x := range logical {
			want := int32(-1)
			if x >= 0 {
				want = int32(s.c.slot(b, int(x)))
			}
			if physical[e] != want {
				t.Fatalf("sequence %d entry %d: physical %d, want slot %d -> %d", b, e, physical[e], x, want)
			}
		}
	}

	out := make([]float32, nq*hq*d)
	idxT := TensorI32(paged, nq, hkv, w)
	if err := ctx.AttendPaged(qt, &starts, s.c.kv(), &idxT, nil, TensorF32(out, nq, hq, d), nil); err != nil {
		t.Fatal(err)
	}
	var want []float64
	for i := 0; i < nq; i++ {
		for h := 0; h < hq; h++ {
			kh := h / (hq / hkv)
			o, _, _ := refAttend(s.q[(i*hq+h)*d:][:d], s.c.physical(), kh, listed(paged[(i*hkv+kh)*w:][:w], nil))
			want = append(want, o...)
		}
	}
	closeTo(t, "paged sparse out", out, want, 1e-5)
	for b, n := range s.lens {
		g := s.c.gather(b)
		k := s.chunk[b]
		contiguous := make([]float32, k*hq*d)
		it := TensorI32(s.rows(batch, b), k, hkv, w)
		if err := ctx.Attend(TensorF32(s.queries(b), k, hq, d), TensorF32(g.k, n, hkv, d), TensorF32(g.v, n, hkv, d),
			&it, nil, TensorF32(contiguous, k, hq, d), nil); err != nil {
			t.Fatal(err)
		}
		if e := maxRelErr(out[int(s.starts[b])*hq*d:][:k*hq*d], contiguous); e > 1e-6 {
			t.Fatalf("sequence %d: paged sparse vs contiguous sparse %g", b, e)
		}
	}
}

// The same index may appear several times in a batch (two beams of one
// sequence): each gets its own queries.
func TestSelectBatchRepeatedIndex(t *testing.T) {
	ctx := newContext(t)
	s := newBatchSetup(t, ctx, false)
	hq, hkv, d, w := s.hq, s.hkv, s.d, s.width
	ix := s.indexes[2]
	q := s.q[:2*hq*d]
	batch := make([]int32, 2*hkv*w)
	if err := SelectBatch([]*Index{ix, ix}, TensorF32(q, 2, hq, d), nil, &s.opts, nil, TensorI32(batch, 2, hkv, w)); err != nil {
		t.Fatal(err)
	}
	for j := 0; j < 2; j++ {
		one := make([]int32, hkv*w)
		if err := ix.Select(TensorF32(q[j*hq*d:][:hq*d], 1, hq, d), &s.opts, TensorI32(one, 1, hkv, w)); err != nil {
			t.Fatal(err)
		}
		for e := range one {
			if batch[j*hkv*w+e] != one[e] {
				t.Fatalf("query %d: batch %v, Select %v", j, batch[j*hkv*w:][:hkv*w], one)
			}
		}
	}
}

// Two batches over the same two indexes in opposite orders, with a writer
// queued on each, cannot deadlock: a batch holding one index while waiting
// for the other would wait on a writer that waits on the other batch, unless
// both batches lock in one order. The first batch is held after its first
// lock while the writers and the second batch queue up.
func TestSelectBatchLockOrder(t *testing.T) {
	const hq, hkv, d, w = 2, 1, 8, 8
	// Not closed by cleanups: after a deadlock, Close would wait for ever.
	ctx, err := NewContext(&ContextOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := rng(22)
	var pair [2]*Index
	for i := range pair {
		o := indexOptions(hkv, d, F32)
		if pair[i], err = NewIndex(ctx, &o); err != nil {
			t.Fatal(err)
		}
		if err := pair[i].Append(TensorF32(r.vec(16*hkv*d), 16, hkv, d)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := pair[0], pair[1]
	q := r.vec(2 * hq * d)
	key := r.vec(hkv * d)
	sel := SelectOptions{TopK: 2, Window: 2, Sinks: 1}
	batch := func(first, second *Index) error {
		return SelectBatch([]*Index{first, second}, TensorF32(q, 2, hq, d), nil, &sel, nil,
			TensorI32(make([]int32, 2*w), 2, hkv, w))
	}

	held, release := make(chan *Index, 1), make(chan struct{})
	var once sync.Once
	afterReadLock = func(ix *Index) { once.Do(func() { held <- ix; <-release }) }
	defer func() { afterReadLock = nil }()
	errs := make(chan error, 4)
	go func() { errs <- batch(a, b) }()
	x := <-held // locked first by the first batch
	y := a
	if x == a {
		y = b
	}
	settle := func() { time.Sleep(30 * time.Millisecond) }
	go func() { errs <- x.Append(TensorF32(key, 1, hkv, d)) }() // queued behind the first batch
	settle()
	go func() { errs <- batch(y, x) }()
	settle()
	go func() { errs <- y.Append(TensorF32(key, 1, hkv, d)) }()
	settle()
	close(release)
	timeout := time.After(20 * time.Second)
	for i := 0; i < 4; i++ {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatal("batches and appends deadlocked")
		}
	}
	if a.Len() != 17 || b.Len() != 17 {
		t.Fatalf("Len %d and %d after one append each", a.Len(), b.Len())
	}
	a.Close()
	b.Close()
	if err := ctx.Close(); err != nil {
		t.Fatal(err)
	}
}
