package sparseattn

import (
	"math"
	"testing"
)

// The README's fixed-budget cache from Go: each step frees a slot by
// accumulated attention (Evict), writes the new token there (Update), selects
// and attends with SlotMass and KeyPositions. Every step is checked against
// independent references: the victim (lowest summed mass outside sinks and
// window, older first), the brute-force top-K, float64 attention and the
// mass it adds.
func TestFixedBudgetLoop(t *testing.T) {
	const budget, hq, hkv, d, group = 24, 4, 2, 8, 2
	const steps, decay = 40, float32(0.9)
	r := rng(41)
	c := cache{k: r.vec(budget * hkv * d), v: r.vec(budget * hkv * d), hkv: hkv, d: d}
	positions := make([]int64, budget)
	for i := range positions {
		positions[i] = int64(i)
	}
	mass := make([]float32, hkv*budget)
	ctx := newContext(t)
	ix := newIndex(t, ctx, indexOptions(hkv, d, F32))
	if err := ix.Append(TensorF32(c.k, budget, hkv, d)); err != nil {
		t.Fatal(err)
	}
	eopt := EvictOptions{Budget: budget, Incoming: 1, Sinks: 2, Window: 4}
	sopt := SelectOptions{TopK: 6, Window: eopt.Window, Sinks: eopt.Sinks}
	const width = 12
	massT := TensorF32(mass, hkv, budget)
	aopt := DefaultAttendOptions()
	aopt.Causal, aopt.KeyPositions, aopt.SlotMass, aopt.MassDecay = true, positions, &massT, decay
	freed := make([]int32, 4)

	for step := 0; step < steps; step++ {
		p := int64(budget + step)
		n, err := ctx.Evict(&eopt, massT, TensorI64(positions, budget), freed)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 || int(freed[0]) != expectedVictim(mass, positions, hkv, eopt) {
			t.Fatalf("step %d: freed %v, want [%d]", step, freed[:n], expectedVictim(mass, positions, hkv, eopt))
		}
		s := int(freed[0])
		copy(c.k[s*hkv*d:][:hkv*d], r.vec(hkv*d))
		copy(c.v[s*hkv*d:][:hkv*d], r.vec(hkv*d))
		positions[s] = p
		for h := 0; h < hkv; h++ {
			mass[h*budget+s] = 0
		}
		if err := ix.Update([]int32{int32(s)}, TensorF32(c.k[s*hkv*d:][:hkv*d], 1, hkv, d), []int64{p}); err != nil {
			t.Fatal(err)
		}

		q := r.vec(hq * d)
		idx := make([]int32, hkv*width)
		if err := ix.Select(TensorF32(q, 1, hq, d), &sopt, TensorI32(idx, 1, hkv, width)); err != nil {
			t.Fatal(err)
		}
		for kh := 0; kh < hkv; kh++ {
			e := refExactRow(heads(q, hq, d, 0, kh*group, (kh+1)*group), c, kh, positions, p, sopt.Sinks, sopt.Window)
			checkExactRow(t, "budget select", idx[kh*width:][:width], e, sopt.TopK)
		}

		wantMass := make([]float64, len(mass))
		for i, m := range mass {
			wantMass[i] = float64(decay) * float64(m)
		}
		var want []float64
		for h := 0; h < hq; h++ {
			kh := h / group
			rows := listed(idx[kh*width:][:width], nil)
			o, _, prob := refAttend(q[h*d:][:d], c, kh, rows)
			want = append(want, o...)
			for j, row := range rows {
				wantMass[kh*budget+row] += prob[j]
			}
		}
		out := make([]float32, hq*d)
		it := TensorI32(idx, 1, hkv, width)
		if err := ctx.Attend(TensorF32(q, 1, hq, d), TensorF32(c.k, budget, hkv, d), TensorF32(c.v, budget, hkv, d),
			&it, &aopt, TensorF32(out, 1, hq, d), nil); err != nil {
			t.Fatal(err)
		}
		closeTo(t, "budget attend", out, want, 1e-5)
		closeTo(t, "budget mass", mass, wantMass, 1e-5)
	}

	if ix.Len() != budget {
		t.Fatalf("the index grew to %d slots", ix.Len())
	}
	held := map[int64]bool{}
	for _, p := range positions {
		held[p] = true
	}
	last := int64(budget + steps - 1)
	for _, p := range []int64{0, 1, last - 3, last - 2, last - 1, last} {
		if !held[p] {
			t.Fatalf("sink or window position %d was evicted: %v", p, positions)
		}
	}
}

// expectedVictim is the slot Evict must free when the cache is full and one
// token comes: outside the sinks and the window, the lowest mass summed over
// the heads; equal mass: the older position, then the lower slot.
func expectedVictim(mass []float32, positions []int64, hkv int, o EvictOptions) int {
	n := len(positions)
	maxPos := int64(-1)
	for _, p := range positions {
		if p > maxPos {
			maxPos = p
		}
	}
	best, bestMass := -1, math.Inf(1)
	for s, p := range positions {
		if p < int64(o.Sinks) || p > maxPos-int64(o.Window) {
			continue
		}
		var m float64
		for h := 0; h < hkv; h++ {
			m += float64(mass[h*n+s])
		}
		if best < 0 || m < bestMass || (m == bestMass && p < positions[best]) {
			best, bestMass = s, m
		}
	}
	return best
}
