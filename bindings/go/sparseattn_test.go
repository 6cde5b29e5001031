package sparseattn

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestVersionAndDefaults(t *testing.T) {
	if Version()>>8 != HeaderVersion>>8 {
		t.Fatalf("library %s vs header %#x", VersionString(), HeaderVersion)
	}
	if VersionString() == "" {
		t.Fatal("empty version string")
	}
	if s := DefaultSelectOptions(); s.TopK != 64 || s.Window != 64 || s.Sinks != 4 || s.PerQueryHead {
		t.Fatalf("select defaults %+v", s)
	}
	if e := DefaultEvictOptions(); e.Incoming != 1 || e.Sinks != 4 || e.Window != 64 {
		t.Fatalf("evict defaults %+v", e)
	}
	if i := DefaultIndexOptions(); i.Kind != SelectorExact || i.DType != F16 || i.Page.PageSize != 16 ||
		!i.Page.Refine || i.LSH.Seed != 0x5eed5eed || i.HNSW.EfSearch != 256 || i.Learned.Rescore != 12 || i.BorrowKeys {
		t.Fatalf("index defaults %+v", i)
	}
	if c := DefaultContextOptions(); c.Threads != 0 || c.ISA != ISAAuto || c.Device != DeviceCPU || c.DeviceID != 0 ||
		c.CUDAPluginPath != "" || c.CUDAStream != 0 {
		t.Fatalf("context defaults %+v", c)
	}
	if a := DefaultAttendOptions(); a.Causal || a.Scale != 0 || a.MassDecay != 0.99 || a.SlotMass != nil {
		t.Fatalf("attend defaults %+v", a)
	}
	ctx := newContext(t)
	if ctx.Threads() != 1 || ctx.ISA().String() == "" {
		t.Fatalf("threads %d isa %q", ctx.Threads(), ctx.ISA())
	}
}

func TestDenseEqualsSparseWithAllIndices(t *testing.T) {
	const nq, hq, hkv, d, nkv = 3, 4, 2, 16, 37
	r := rng(0x123456789abcdef1)
	q, k, v := r.vec(nq*hq*d), r.vec(nkv*hkv*d), r.vec(nkv*hkv*d)
	ctx := newContext(t)
	qt, kt, vt := TensorF32(q, nq, hq, d), TensorF32(k, nkv, hkv, d), TensorF32(v, nkv, hkv, d)

	dense := make([]float32, nq*hq*d)
	denseLSE := make([]float32, nq*hq)
	lse := TensorF32(denseLSE, nq, hq)
	if err := ctx.Attend(qt, kt, vt, nil, nil, TensorF32(dense, nq, hq, d), &lse); err != nil {
		t.Fatal(err)
	}

	// Reference: softmax(q k^T / sqrt(d)) v, GQA groups of hq/hkv heads.
	ref := make([]float32, len(dense))
	for i := 0; i < nq; i++ {
		for h := 0; h < hq; h++ {
			kh := h / (hq / hkv)
			scores := make([]float64, nkv)
			m := math.Inf(-1)
			for j := 0; j < nkv; j++ {
				var s float64
				for c := 0; c < d; c++ {
					s += float64(q[(i*hq+h)*d+c]) * float64(k[(j*hkv+kh)*d+c])
				}
				scores[j] = s / math.Sqrt(d)
				m = math.Max(m, scores[j])
			}
			var den float64
			for j := range scores {
				den += math.Exp(scores[j] - m)
			}
			for j := range scores {
				p := math.Exp(scores[j]-m) / den
				for c := 0; c < d; c++ {
					ref[(i*hq+h)*d+c] += float32(p * float64(v[(j*hkv+kh)*d+c]))
				}
			}
		}
	}
	if e := maxRelErr(dense, ref); e > 1e-5 {
		t.Fatalf("dense vs reference: %g", e)
	}

	all := make([]int32, 0, nq*hkv*nkv)
	for i := 0; i < nq*hkv; i++ {
		for j := int32(0); j < nkv; j++ {
			all = append(all, j)
		}
	}
	idx := TensorI32(all, nq, hkv, nkv)
	sparse := make([]float32, len(dense))
	sparseLSE := make([]float32, len(denseLSE))
	lse2 := TensorF32(sparseLSE, nq, hq)
	if err := ctx.Attend(qt, kt, vt, &idx, nil, TensorF32(sparse, nq, hq, d), &lse2); err != nil {
		t.Fatal(err)
	}
	if e := maxRelErr(sparse, dense); e > 1e-5 {
		t.Fatalf("sparse vs dense: %g", e)
	}
	if e := maxRelErr(sparseLSE, denseLSE); e > 1e-5 {
		t.Fatalf("sparse lse vs dense lse: %g", e)
	}

	// Head-major values described by strides give the same result.
	vhm := make([]float32, len(v))
	for tok := 0; tok < nkv; tok++ {
		for h := 0; h < hkv; h++ {
			copy(vhm[(h*nkv+tok)*d:][:d], v[(tok*hkv+h)*d:][:d])
		}
	}
	strided := make([]float32, len(dense))
	vs := TensorF32(vhm, nkv, hkv, d).WithStrides(d, nkv*d, 1)
	if err := ctx.Attend(qt, kt, vs, &idx, &AttendOptions{}, TensorF32(strided, nq, hq, d), nil); err != nil {
		t.Fatal(err)
	}
	if e := maxRelErr(strided, dense); e > 1e-6 {
		t.Fatalf("strided vs contiguous: %g", e)
	}
}

// plantedSetup: small random keys, and per KV head one key aligned with the
// (shared) query direction of its group.
func plantedSetup(n, hq, hkv, d int, planted []int) (keys, query []float32) {
	r := rng(7)
	keys = r.vec(n * hkv * d)
	for i := range keys {
		keys[i] *= 0.05
	}
	query = make([]float32, hq*d)
	group := hq / hkv
	for kh := 0; kh < hkv; kh++ {
		dir := r.vec(d)
		for g := 0; g < group; g++ {
			copy(query[(kh*group+g)*d:][:d], dir)
		}
		for c := 0; c < d; c++ {
			keys[(planted[kh]*hkv+kh)*d+c] = dir[c] * 4
		}
	}
	return keys, query
}

func checkRow(t *testing.T, row []int32, planted, n int, sel SelectOptions) {
	t.Helper()
	var chosen []int32
	for i, s := range row {
		if s < 0 {
			for _, p := range row[i:] {
				if p != -1 {
					t.Fatalf("padding not -1 at the end: %v", row)
				}
			}
			break
		}
		if len(chosen) > 0 && s <= chosen[len(chosen)-1] {
			t.Fatalf("not ascending: %v", row)
		}
		chosen = append(chosen, s)
	}
	has := func(s int) bool {
		for _, c := range chosen {
			if int(c) == s {
				return true
			}
		}
		return false
	}
	if !has(planted) {
		t.Fatalf("planted slot %d not in %v", planted, row)
	}
	for s := 0; s < sel.Sinks; s++ {
		if !has(s) {
			t.Fatalf("sink %d not in %v", s, row)
		}
	}
	for s := n - sel.Window; s < n; s++ {
		if !has(s) {
			t.Fatalf("window slot %d not in %v", s, row)
		}
	}
}

func TestExactSelectorFindsPlantedKey(t *testing.T) {
	const n, hq, hkv, d = 512, 4, 2, 32
	planted := []int{300, 77}
	keys, query := plantedSetup(n, hq, hkv, d, planted)
	ctx := newContext(t)
	sel := SelectOptions{TopK: 4, Window: 8, Sinks: 2}
	const width = 16

	ix := newIndex(t, ctx, indexOptions(hkv, d, F32))
	if err := ix.Append(TensorF32(keys[:200*hkv*d], 200, hkv, d)); err != nil {
		t.Fatal(err)
	}
	if err := ix.Append(TensorF32(keys[200*hkv*d:], n-200, hkv, d)); err != nil {
		t.Fatal(err)
	}
	if ix.Len() != n {
		t.Fatalf("Len %d", ix.Len())
	}
	out := make([]int32, hkv*width)
	if err := ix.Select(TensorF32(query, 1, hq, d), &sel, TensorI32(out, 1, hkv, width)); err != nil {
		t.Fatal(err)
	}
	for kh := 0; kh < hkv; kh++ {
		checkRow(t, out[kh*width:][:width], planted[kh], n, sel)
	}

	// bf16 storage and bf16 queries.
	k16 := make([]uint16, len(keys))
	for i, x := range keys {
		k16[i] = toBF16(x)
	}
	q16 := make([]uint16, len(query))
	for i, x := range query {
		q16[i] = toBF16(x)
	}
	ix16 := newIndex(t, ctx, indexOptions(hkv, d, BF16))
	if err := ix16.Append(TensorBF16(k16, n, hkv, d)); err != nil {
		t.Fatal(err)
	}
	out16 := make([]int32, hkv*width)
	if err := ix16.Select(TensorBF16(q16, 1, hq, d), &sel, TensorI32(out16, 1, hkv, width)); err != nil {
		t.Fatal(err)
	}
	for kh := 0; kh < hkv; kh++ {
		checkRow(t, out16[kh*width:][:width], planted[kh], n, sel)
	}
}

func TestConcurrentSelectAndAttend(t *testing.T) {
	const n, hq, hkv, d, width = 256, 4, 2, 16, 13
	keys, query := plantedSetup(n, hq, hkv, d, []int{100, 200})
	r := rng(9)
	values := r.vec(n * hkv * d)
	ctx := newContext(t)
	ix := newIndex(t, ctx, indexOptions(hkv, d, F32))
	if err := ix.Append(TensorF32(keys, n, hkv, d)); err != nil {
		t.Fatal(err)
	}
	sel := SelectOptions{TopK: 8, Window: 4, Sinks: 1}
	run := func() ([]int32, []float32, error) {
		idx := make([]int32, hkv*width)
		if err := ix.Select(TensorF32(query, 1, hq, d), &sel, TensorI32(idx, 1, hkv, width)); err != nil {
			return nil, nil, err
		}
		out := make([]float32, hq*d)
		it := TensorI32(idx, 1, hkv, width)
		err := ctx.Attend(TensorF32(query, 1, hq, d), TensorF32(keys, n, hkv, d),
			TensorF32(values, n, hkv, d), &it, nil, TensorF32(out, 1, hq, d), nil)
		return idx, out, err
	}
	wantIdx, wantOut, err := run()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := 0; it < 20; it++ {
				idx, out, err := run()
				if err != nil {
					errs <- err
					return
				}
				for i := range idx {
					if idx[i] != wantIdx[i] {
						errs <- errors.New("indices differ between goroutines")
						return
					}
				}
				if maxRelErr(out, wantOut) != 0 {
					errs <- errors.New("outputs differ between goroutines")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestEviction(t *testing.T) {
	ctx := newContext(t)
	scores := []float32{9, 1, 5, 6, 2, 0.5, 7, 8, 3, 4}
	positions := []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	opts := EvictOptions{Budget: 8, Incoming: 1, Sinks: 1, Window: 2}
	freed := make([]int32, 10)
	n, err := ctx.Evict(&opts, TensorF32(scores, 10), TensorI64(positions, 10), freed)
	if err != nil {
		t.Fatal(err)
	}
	if got := freed[:n]; len(got) != 3 || got[0] != 5 || got[1] != 1 || got[2] != 4 {
		t.Fatalf("freed %v, want [5 1 4]", got)
	}

	withEmpty := append([]int64(nil), positions...)
	withEmpty[3] = -1
	n, err = ctx.Evict(&opts, TensorF32(scores, 10), TensorI64(withEmpty, 10), freed)
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 || freed[0] != 3 {
		t.Fatalf("freed %v: the empty slot 3 should come first", freed[:n])
	}

	_, err = ctx.Evict(&opts, TensorF32(scores, 10), TensorI64(positions, 10), make([]int32, 1))
	if !errors.Is(err, StatusShape) {
		t.Fatalf("freed too small: got %v, want SA_ERR_SHAPE", err)
	}

	// Refill the freed slots in the index.
	const hkv, d = 1, 8
	ix := newIndex(t, ctx, indexOptions(hkv, d, F32))
	r := rng(3)
	if err := ix.Append(TensorF32(r.vec(10*hkv*d), 10, hkv, d)); err != nil {
		t.Fatal(err)
	}
	if err := ix.Update([]int32{5, 1, 4}, TensorF32(r.vec(3*hkv*d), 3, hkv, d), []int64{10, 11, 12}); err != nil {
		t.Fatal(err)
	}
	if ix.Len() != 10 {
		t.Fatalf("Len %d after update", ix.Len())
	}
}

func TestBadShapeError(t *testing.T) {
	ctx := newContext(t)
	ix := newIndex(t, ctx, indexOptions(2, 16, F32))
	keys := make([]float32, 4*2*8)
	err := ix.Append(TensorF32(keys, 4, 2, 8)) // head_dim 8, index has 16
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("want *Error, got %v", err)
	}
	if se.Status != StatusShape || !errors.Is(err, StatusShape) {
		t.Fatalf("status %v, want SA_ERR_SHAPE", se.Status)
	}
	if se.Message == "" || !strings.HasPrefix(err.Error(), "SA_ERR_SHAPE: ") {
		t.Fatalf("message %q / %q", se.Message, err.Error())
	}
	if ix.Len() != 0 {
		t.Fatal("appended on failure")
	}

	// Caught in Go before calling C: the slice is shorter than the shape.
	err = ix.Append(TensorF32(keys, 4, 2, 16))
	if !errors.Is(err, StatusShape) || !strings.Contains(err.Error(), "needs 128 elements") {
		t.Fatalf("short slice: %v", err)
	}

	// Other statuses come through too.
	bad := indexOptions(0, 16, F32)
	if _, err := NewIndex(ctx, &bad); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("num_kv_heads 0: %v", err)
	}
}

func TestCloseRules(t *testing.T) {
	ctx, err := NewContext(nil)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := NewIndex(ctx, &IndexOptions{Kind: SelectorExact, NumKVHeads: 1, HeadDim: 4, DType: F32})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctx.Close(); !errors.Is(err, StatusInvalidArgument) {
		t.Fatalf("closing a context with an open index: %v", err)
	}
	ix.Close()
	ix.Close()
	if err := ix.Append(TensorF32(make([]float32, 4), 1, 1, 4)); !errors.Is(err, StatusNullPointer) {
		t.Fatalf("append after close: %v", err)
	}
	if err := ctx.Close(); err != nil {
		t.Fatal(err)
	}
	ctx.Close()

	// Handles left to the finalizers.
	for i := 0; i < 4; i++ {
		c, _ := NewContext(nil)
		NewIndex(c, &IndexOptions{Kind: SelectorExact, NumKVHeads: 1, HeadDim: 4, DType: F32})
	}
	runtime.GC()
	runtime.GC()
}
