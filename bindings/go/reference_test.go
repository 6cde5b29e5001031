package sparseattn

// Independent references the tests compare the library with: float64 softmax
// attention over listed key rows, and the exact selector's top-K by brute force.

import (
	"math"
	"sort"
	"testing"
)

// cache is a test-owned token-major K/V cache [rows, hkv, d].
type cache struct {
	k, v   []float32
	hkv, d int
}

func (c cache) key(row, kh int) []float32 { return c.k[(row*c.hkv+kh)*c.d:][:c.d] }
func (c cache) val(row, kh int) []float32 { return c.v[(row*c.hkv+kh)*c.d:][:c.d] }

func dot64(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// refAttend is softmax(q.k / sqrt(d)) v in float64 for one query head q over
// the rows listed (KV head kh; a row listed twice counts twice). It returns
// the output, the log of the softmax denominator (-inf for no rows) and the
// probability of each listed entry.
func refAttend(q []float32, c cache, kh int, rows []int) (out []float64, lse float64, prob []float64) {
	out = make([]float64, c.d)
	prob = make([]float64, len(rows))
	if len(rows) == 0 {
		return out, math.Inf(-1), prob
	}
	scale := 1 / math.Sqrt(float64(c.d))
	m := math.Inf(-1)
	logit := make([]float64, len(rows))
	for j, r := range rows {
		logit[j] = scale * dot64(q, c.key(r, kh))
		m = math.Max(m, logit[j])
	}
	var z float64
	for j := range rows {
		z += math.Exp(logit[j] - m)
	}
	for j, r := range rows {
		prob[j] = math.Exp(logit[j]-m) / z
		if c.v == nil { // keys only (selection)
			continue
		}
		for x, vx := range c.val(r, kh) {
			out[x] += prob[j] * float64(vx)
		}
	}
	return out, m + math.Log(z), prob
}

// listed turns an index row (entries, -1 skipped) into rows through slot
// (identity when nil).
func listed(entries []int32, slot func(int) int) []int {
	var rows []int
	for _, e := range entries {
		if e < 0 {
			continue
		}
		r := int(e)
		if slot != nil {
			r = slot(r)
		}
		rows = append(rows, r)
	}
	return rows
}

// closeTo fails when got (float32) and want (float64) differ by more than tol
// relative to the largest |want|.
func closeTo(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var scale, diff float64
	for i := range want {
		if math.IsInf(want[i], -1) {
			if !math.IsInf(float64(got[i]), -1) {
				t.Fatalf("%s[%d] = %g, want -inf", what, i, got[i])
			}
			continue
		}
		scale = math.Max(scale, math.Abs(want[i]))
		diff = math.Max(diff, math.Abs(float64(got[i])-want[i]))
	}
	if diff > tol*math.Max(scale, 1e-30) {
		t.Fatalf("%s: max difference %g (scale %g)", what, diff, scale)
	}
}

// exactRow is the exact selector's expectation for one query and KV head:
// which slots the query sees (position <= p), which it must keep (sinks and
// window) and the score of each: the group's summed softmax probability over
// the visible slots.
type exactRow struct {
	visible, forced []bool
	score           []float64
}

// refExactRow computes it from the group's query heads qs, the keys of KV head
// kh in slot order (c) and each slot's position.
func refExactRow(qs [][]float32, c cache, kh int, pos []int64, p int64, sinks, window int) exactRow {
	n := len(pos)
	e := exactRow{visible: make([]bool, n), forced: make([]bool, n), score: make([]float64, n)}
	var vis []int
	for s, ps := range pos {
		if ps >= 0 && ps <= p {
			e.visible[s] = true
			e.forced[s] = ps < int64(sinks) || ps > p-int64(window)
			vis = append(vis, s)
		}
	}
	for _, q := range qs {
		_, _, prob := refAttend(q, c, kh, vis)
		for j, s := range vis {
			e.score[s] += prob[j]
		}
	}
	return e
}

// checkExactRow checks an index row: ascending slots then -1 padding, visible
// slots only, every forced slot, and min(topK, eligible) more slots that are
// the best-scored (two scores within 1e-4 may swap).
func checkExactRow(t *testing.T, what string, row []int32, e exactRow, topK int) {
	t.Helper()
	chosen := make([]bool, len(e.visible))
	used := 0
	for used < len(row) && row[used] != -1 {
		s := int(row[used])
		if s < 0 || s >= len(chosen) || !e.visible[s] {
			t.Fatalf("%s: entry %d is not a visible slot: %v", what, s, row)
		}
		if used > 0 && row[used] <= row[used-1] {
			t.Fatalf("%s: not ascending: %v", what, row)
		}
		chosen[s] = true
		used++
	}
	for _, x := range row[used:] {
		if x != -1 {
			t.Fatalf("%s: padding is not all -1: %v", what, row)
		}
	}
	var in, out []float64
	for s := range chosen {
		switch {
		case e.forced[s] && !chosen[s]:
			t.Fatalf("%s: sink/window slot %d missing from %v", what, s, row)
		case e.forced[s] || !e.visible[s]:
		case chosen[s]:
			in = append(in, e.score[s])
		default:
			out = append(out, e.score[s])
		}
	}
	if want := len(in) + len(out); want > topK {
		want = topK
		if len(in) != want {
			t.Fatalf("%s: %d scored slots chosen, want %d: %v", what, len(in), want, row)
		}
	} else if len(out) != 0 {
		t.Fatalf("%s: %d eligible slots left out with top-K %d", what, len(out), topK)
	}
	sort.Float64s(in)
	sort.Float64s(out)
	if len(in) > 0 && len(out) > 0 && in[0] < out[len(out)-1]*(1-1e-4) {
		t.Fatalf("%s: a slot of score %g chosen over one of %g: %v", what, in[0], out[len(out)-1], row)
	}
}

// heads returns the query vectors of query row i, heads [h0, h1), from q [n, hq, d].
func heads(q []float32, hq, d, i, h0, h1 int) [][]float32 {
	var out [][]float32
	for h := h0; h < h1; h++ {
		out = append(out, q[(i*hq+h)*d:][:d])
	}
	return out
}
