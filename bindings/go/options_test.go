package sparseattn

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every option field reaches the library: a value out of its domain is
// refused with StatusInvalidArgument and a message naming the C field.
func TestOptionFieldsReachTheLibrary(t *testing.T) {
	ctx := newContext(t)
	index := func(kind SelectorKind, set func(*IndexOptions)) error {
		o := indexOptions(2, 16, F32)
		o.Kind = kind
		set(&o)
		ix, err := NewIndex(ctx, &o)
		if err == nil {
			ix.Close()
		}
		return err
	}
	_, isaErr := NewContext(&ContextOptions{ISA: 7})
	cases := []struct {
		field string
		err   error
	}{
		{"opt->isa", isaErr},
		{"opt->num_kv_heads", index(SelectorExact, func(o *IndexOptions) { o.NumKVHeads = 0 })},
		{"opt->head_dim", index(SelectorExact, func(o *IndexOptions) { o.HeadDim = 0 })},
		{"opt->capacity", index(SelectorExact, func(o *IndexOptions) { o.Capacity = -1 })},
		{"opt->page.page_size", index(SelectorPage, func(o *IndexOptions) { o.Page.PageSize = 0 })},
		{"opt->lsh.rounds", index(SelectorLSH, func(o *IndexOptions) { o.LSH.Rounds = 65 })},
		{"opt->lsh.bits", index(SelectorLSH, func(o *IndexOptions) { o.LSH.Bits = 25 })},
		{"opt->lsh.probes", index(SelectorLSH, func(o *IndexOptions) { o.LSH.Probes = 65 })},
		{"opt->hnsw.m", index(SelectorHNSW, func(o *IndexOptions) { o.HNSW.M = 1 })},
		{"opt->hnsw.ef_construction", index(SelectorHNSW, func(o *IndexOptions) { o.HNSW.EfConstruction = 0 })},
		{"opt->hnsw.ef_search", index(SelectorHNSW, func(o *IndexOptions) { o.HNSW.EfSearch = 0 })},
		{"opt->learned.layer", index(SelectorLearned, func(o *IndexOptions) { o.Learned.WeightsPath, o.Learned.Layer = "w", -1 })},
		{"opt->learned.rescore", index(SelectorLearned, func(o *IndexOptions) { o.Learned.WeightsPath, o.Learned.Rescore = "w", -1 })},
	}
	ix := newIndex(t, ctx, indexOptions(2, 16, F32))
	if err := ix.Append(TensorF32(make([]float32, 4*2*16), 4, 2, 16)); err != nil {
		t.Fatal(err)
	}
	sel := func(set func(*SelectOptions)) error {
		o := DefaultSelectOptions()
		set(&o)
		return ix.Select(TensorF32(make([]float32, 4*16), 1, 4, 16), &o, TensorI32(make([]int32, 2*200), 1, 2, 200))
	}
	attend := func(set func(*AttendOptions)) error {
		o := DefaultAttendOptions()
		set(&o)
		k := TensorF32(make([]float32, 4*2*16), 4, 2, 16)
		return ctx.Attend(TensorF32(make([]float32, 4*16), 1, 4, 16), k, k, nil, &o, TensorF32(make([]float32, 4*16), 1, 4, 16), nil)
	}
	evict := func(set func(*EvictOptions)) error {
		o := DefaultEvictOptions()
		o.Budget = 100
		set(&o)
		_, err := ctx.Evict(&o, TensorF32(make([]float32, 4), 4), TensorI64([]int64{0, 1, 2, 3}, 4), make([]int32, 4))
		return err
	}
	cases = append(cases, []struct {
		field string
		err   error
	}{
		{"opt->top_k", sel(func(o *SelectOptions) { o.TopK = 0 })},
		{"opt->window", sel(func(o *SelectOptions) { o.Window = -1 })},
		{"opt->sinks", sel(func(o *SelectOptions) { o.Sinks = -1 })},
		{"opt->mass_target", sel(func(o *SelectOptions) { o.MassTarget = 2 })},
		{"opt->scale", sel(func(o *SelectOptions) { o.Scale = -1 })},
		{"opt->query_segments", sel(func(o *SelectOptions) { o.QuerySegments = []int32{0} })},
		{"opt->scale", attend(func(o *AttendOptions) { o.Scale = float32(math.Inf(1)) })},
		{"opt->mass_decay", attend(func(o *AttendOptions) {
			mass := TensorF32(make([]float32, 4), 4)
			o.MassDecay, o.SlotMass = -0.5, &mass
		})},
		{"opt->budget", evict(func(o *EvictOptions) { o.Budget = 0 })},
		{"opt->incoming", evict(func(o *EvictOptions) { o.Incoming = -1 })},
		{"opt->sinks", evict(func(o *EvictOptions) { o.Sinks = -1 })},
	}...)
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.field) {
			t.Errorf("%s: %v", c.field, c.err)
			continue
		}
		expectStatus(t, c.field, c.err, StatusInvalidArgument)
	}

	// PerQueryHead: one list per query head, so indices have H_q rows.
	o := DefaultSelectOptions()
	o.PerQueryHead = true
	q := TensorF32(make([]float32, 4*16), 1, 4, 16)
	if err := ix.Select(q, &o, TensorI32(make([]int32, 4*200), 1, 4, 200)); err != nil {
		t.Fatalf("per query head, [1, H_q, width]: %v", err)
	}
	expectStatus(t, "per query head, [1, H_kv, width]", ix.Select(q, &o, TensorI32(make([]int32, 2*200), 1, 2, 200)), StatusShape)
}

// writeSafetensors writes F32 tensors in the safetensors format: a
// little-endian u64 header size, a JSON header, the data.
func writeSafetensors(t *testing.T, path string, tensors map[string][]float32, shapes map[string][]int) {
	t.Helper()
	header := map[string]interface{}{}
	var data []byte
	names := make([]string, 0, len(tensors))
	for name := range tensors {
		names = append(names, name)
	}
	for _, name := range names {
		start := len(data)
		for _, x := range tensors[name] {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(x))
		}
		header[name] = map[string]interface{}{"dtype": "F32", "shape": shapes[name], "data_offsets": []int{start, len(data)}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	file = append(append(file, h...), data...)
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The learned selector reads its weights from LearnedOptions.WeightsPath at
// LearnedOptions.Layer: with identity projections it scores like exact
// attention, so it picks the brute-force top-K.
func TestLearnedSelectorWeights(t *testing.T) {
	const n, hq, hkv, d, width, group, layer = 80, 4, 2, 16, 16, 2, 3
	eye := make([]float32, d*d)
	for i := 0; i < d; i++ {
		eye[i*d+i] = 1
	}
	path := filepath.Join(t.TempDir(), "identity.safetensors")
	writeSafetensors(t, path, map[string][]float32{"layers.3.q_proj": eye, "layers.3.k_proj": eye},
		map[string][]int{"layers.3.q_proj": {d, d}, "layers.3.k_proj": {d, d}})
	r := rng(91)
	c := cache{k: r.vec(n * hkv * d), hkv: hkv, d: d}
	q := r.vec(hq * d)
	ctx := newContext(t)
	o := indexOptions(hkv, d, F32)
	o.Kind, o.Learned = SelectorLearned, LearnedOptions{WeightsPath: path, Layer: layer, Rescore: 0}
	ix := newIndex(t, ctx, o)
	if err := ix.Append(TensorF32(c.k, n, hkv, d)); err != nil {
		t.Fatal(err)
	}
	sel := SelectOptions{TopK: 6, Window: 4, Sinks: 2}
	got := selectOne(t, ix, q, hq, hkv, d, width, &sel)
	pos := make([]int64, n)
	for i := range pos {
		pos[i] = int64(i)
	}
	for kh := 0; kh < hkv; kh++ {
		e := refExactRow(heads(q, hq, d, 0, kh*group, (kh+1)*group), c, kh, pos, n-1, sel.Sinks, sel.Window)
		checkExactRow(t, "learned identity", got[kh*width:][:width], e, sel.TopK)
	}

	o.Learned.Layer = 0 // no such layer in the file
	_, err := NewIndex(ctx, &o)
	expectStatus(t, "missing layer", err, StatusFormat)
	o.Learned.WeightsPath = filepath.Join(t.TempDir(), "missing.safetensors")
	_, err = NewIndex(ctx, &o)
	expectStatus(t, "missing file", err, StatusInvalidArgument)
}
