package sparseattn

import (
	"errors"
	"testing"
)

// SlotMass accumulates, per key row, the softmax probability the row got,
// after multiplying the buffer by MassDecay: checked against the
// probabilities of the float64 reference, per KV head ([H_kv, n_kv]) and
// over all heads ([n_kv]), dense causal and sparse with duplicates, and over
// the physical slots of a paged cache.
func TestSlotMassEqualsSoftmaxMass(t *testing.T) {
	const nq, hq, hkv, d, nkv, group = 3, 4, 2, 8, 19, 2
	r := rng(31)
	c := cache{k: r.vec(nkv * hkv * d), v: r.vec(nkv * hkv * d), hkv: hkv, d: d}
	q := r.vec(nq * hq * d)
	ctx := newContext(t)
	qt, kt, vt := TensorF32(q, nq, hq, d), TensorF32(c.k, nkv, hkv, d), TensorF32(c.v, nkv, hkv, d)
	out := make([]float32, nq*hq*d)

	perHead := make([]float32, hkv*nkv)
	shared := make([]float32, nkv)
	for i := range perHead {
		perHead[i] = (r.next() + 1) / 2
	}
	for i := range shared {
		shared[i] = (r.next() + 1) / 2
	}
	wantPerHead := make([]float64, len(perHead))
	wantShared := make([]float64, len(shared))
	for i := range perHead {
		wantPerHead[i] = 0.5 * float64(perHead[i])
	}
	for i := range shared {
		wantShared[i] = 0.5 * float64(shared[i])
	}
	// Dense, causal: query i is at position nkv-nq+i and sees rows up to it.
	for i := 0; i < nq; i++ {
		rows := make([]int, nkv-nq+i+1)
		for j := range rows {
			rows[j] = j
		}
		for h := 0; h < hq; h++ {
			_, _, prob := refAttend(q[(i*hq+h)*d:][:d], c, h/group, rows)
			for j, row := range rows {
				wantPerHead[(h/group)*nkv+row] += prob[j]
				wantShared[row] += prob[j]
			}
		}
	}
	for _, m := range []struct {
		name string
		buf  Tensor
		got  []float32
		want []float64
	}{
		{"[H_kv, n_kv]", TensorF32(perHead, hkv, nkv), perHead, wantPerHead},
		{"[n_kv]", TensorF32(shared, nkv), shared, wantShared},
	} {
		opts := DefaultAttendOptions()
		opts.Causal, opts.MassDecay = true, 0.5
		opts.SlotMass = &m.buf
		if err := ctx.Attend(qt, kt, vt, nil, &opts, TensorF32(out, nq, hq, d), nil); err != nil {
			t.Fatal(err)
		}
		closeTo(t, "dense causal mass "+m.name, m.got, m.want, 1e-5)
	}

	// Sparse lists per query head, with a duplicate and padding; decay 1 (the default is 0.99).
	const w = 5
	idx := make([]int32, nq*hq*w)
	for i := 0; i < nq; i++ {
		for h := 0; h < hq; h++ {
			row := idx[(i*hq+h)*w:][:w]
			a, b := int32(r.below(nkv)), int32(r.below(nkv))
			copy(row, []int32{a, b, a, -1, int32((i + h) % nkv)})
			_, _, prob := refAttend(q[(i*hq+h)*d:][:d], c, h/group, listed(row, nil))
			for j, rr := range listed(row, nil) {
				wantPerHead[(h/group)*nkv+rr] += prob[j]
			}
		}
	}
	it := TensorI32(idx, nq, hq, w)
	opts := DefaultAttendOptions()
	opts.MassDecay = 1
	mass := TensorF32(perHead, hkv, nkv)
	opts.SlotMass = &mass
	if err := ctx.Attend(qt, kt, vt, &it, &opts, TensorF32(out, nq, hq, d), nil); err != nil {
		t.Fatal(err)
	}
	closeTo(t, "sparse mass after dense", perHead, wantPerHead, 1e-5)

	// A decay outside [0, 1] is refused and leaves the buffer as it was.
	before := append([]float32(nil), perHead...)
	opts.MassDecay = 1.5
	err := ctx.Attend(qt, kt, vt, &it, &opts, TensorF32(out, nq, hq, d), nil)
	if !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("MassDecay 1.5: %v", err)
	}
	if maxRelErr(perHead, before) != 0 {
		t.Fatal("the mass buffer changed on failure")
	}
}

func TestSlotMassOverPhysicalSlots(t *testing.T) {
	const hq, hkv, d, P = 2, 1, 8, 4
	lens := []int{7, 10}
	r := rng(32)
	c := newPagedCache(&r, lens, P, hkv, d)
	ctx := newContext(t)
	q := r.vec(len(lens) * hq * d)
	mass := make([]float32, c.numSlots())
	for i := range mass {
		mass[i] = 3 // decay 0 drops it
	}
	want := make([]float64, c.numSlots())
	for b, n := range lens {
		for h := 0; h < hq; h++ {
			rows := c.tokens(b, n)
			_, _, prob := refAttend(q[(b*hq+h)*d:][:d], c.physical(), 0, rows)
			for j, s := range rows {
				want[s] += prob[j]
			}
		}
	}
	opts := DefaultAttendOptions()
	mt := TensorF32(mass, c.numSlots())
	opts.SlotMass, opts.MassDecay = &mt, 0
	out := make([]float32, len(lens)*hq*d)
	if err := ctx.AttendPaged(TensorF32(q, len(lens), hq, d), nil, c.kv(), nil, &opts,
		TensorF32(out, len(lens), hq, d), nil); err != nil {
		t.Fatal(err)
	}
	closeTo(t, "paged mass", mass, want, 1e-5)
}
