package sparseattn

import (
	"math"
	"testing"
)

// rng gives deterministic xorshift numbers in [-1, 1).
type rng uint64

func (r *rng) next() float32 {
	x := uint64(*r)
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	*r = rng(x)
	return float32(x>>40)/float32(1<<24)*2 - 1
}

func (r *rng) vec(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = r.next()
	}
	return v
}

func toBF16(x float32) uint16 {
	b := math.Float32bits(x)
	return uint16((b + 0x7fff + ((b >> 16) & 1)) >> 16)
}

func maxRelErr(a, b []float32) float64 {
	var scale, diff float64
	for i := range b {
		scale = math.Max(scale, math.Abs(float64(b[i])))
		diff = math.Max(diff, math.Abs(float64(a[i])-float64(b[i])))
	}
	return diff / math.Max(scale, 1e-30)
}

func newContext(t *testing.T) *Context {
	t.Helper()
	ctx, err := NewContext(&ContextOptions{Threads: 1, ISA: ISAAuto})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctx.Close(); err != nil {
			t.Error(err)
		}
	})
	return ctx
}

func newIndex(t *testing.T, ctx *Context, opts IndexOptions) *Index {
	t.Helper()
	ix, err := NewIndex(ctx, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return ix
}

func indexOptions(hkv, d int, dtype DType) IndexOptions {
	o := DefaultIndexOptions()
	o.NumKVHeads, o.HeadDim, o.DType = hkv, d, dtype
	return o
}

// below is a deterministic integer in [0, n).
func (r *rng) below(n int) int {
	i := int((r.next() + 1) / 2 * float32(n))
	if i >= n {
		i = n - 1
	}
	return i
}
