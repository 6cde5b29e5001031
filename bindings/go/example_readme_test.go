package sparseattn_test

import (
	"fmt"
	"math"

	sa "sparseattn.dev/sparseattn"
)

// sparseAttention is the snippet in bindings/README.md: an index over one
// layer's cached keys [n, 8, 128], the slots a query of 32 heads should
// attend to (idx: 8 KV heads x 132), and attention over just those (out: 32 x 128).
// README: begin (README.md shows the function; tools/readme_snippets.py checks it)
func sparseAttention(keys, values, q []float32, n int, idx []int32, out []float32) error {
	ctx, err := sa.NewContext(nil)
	if err != nil {
		return err
	}
	defer ctx.Close()
	opts := sa.DefaultIndexOptions() // exact top-K, f16 index keys
	opts.NumKVHeads, opts.HeadDim = 8, 128
	ix, err := sa.NewIndex(ctx, &opts)
	if err != nil {
		return err
	}
	defer ix.Close()                   // runs before ctx.Close
	it := sa.TensorI32(idx, 1, 8, 132) // 4 sinks + 64 window + 64 top-K (the defaults)
	if err := ix.Append(sa.TensorF32(keys, n, 8, 128)); err != nil {
		return err
	}
	if err := ix.Select(sa.TensorF32(q, 1, 32, 128), nil, it); err != nil {
		return err
	}
	return ctx.Attend(sa.TensorF32(q, 1, 32, 128), sa.TensorF32(keys, n, 8, 128), sa.TensorF32(values, n, 8, 128),
		&it, nil, sa.TensorF32(out, 1, 32, 128), nil)
}

// README: end

// exampleCache: n small random keys and values, a query whose heads share
// their KV head's direction, and in slot `planted` a key along it that takes
// almost all the attention.
func exampleCache(n, planted int) (keys, values, q []float32) {
	x := uint32(1)
	next := func() float32 { // xorshift in [-1, 1)
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return float32(x)/float32(1<<31) - 1
	}
	keys, values, q = make([]float32, n*8*128), make([]float32, n*8*128), make([]float32, 32*128)
	for i := range keys {
		keys[i], values[i] = 0.1*next(), next()
	}
	for h := 0; h < 8; h++ {
		for c := 0; c < 128; c++ {
			dir := next()
			keys[(planted*8+h)*128+c] = 4 * dir
			for g := 0; g < 4; g++ {
				q[((4*h+g)*128)+c] = dir
			}
		}
	}
	return keys, values, q
}

func Example_readme() {
	const n, planted = 1000, 500
	keys, values, q := exampleCache(n, planted)
	idx, out := make([]int32, 8*132), make([]float32, 32*128)
	if err := sparseAttention(keys, values, q, n, idx, out); err != nil {
		fmt.Println(err)
		return
	}
	selected, near := true, true
	for h := 0; h < 8; h++ {
		row := idx[h*132 : (h+1)*132]
		found := false
		for _, s := range row {
			found = found || s == planted
		}
		selected = selected && found
		for c := 0; c < 128; c++ { // query head 4h+g attends KV head h
			near = near && math.Abs(float64(out[4*h*128+c]-values[(planted*8+h)*128+c])) < 0.01
		}
	}
	fmt.Println("slot 500 selected by every KV head:", selected)
	fmt.Println("output is its value:", near)
	// Output:
	// slot 500 selected by every KV head: true
	// output is its value: true
}
