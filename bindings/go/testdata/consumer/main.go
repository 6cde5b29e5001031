// A program outside the binding's module, built by scripts/ci_bindings.sh in
// a module of its own that reaches sparseattn.dev/sparseattn through a
// replace directive, exactly as bindings/README.md tells users to. It checks
// that sparse attention over every selected key equals dense attention, and
// that the same cache described as a paged one (llama.cpp's cells) agrees.
package main

import (
	"fmt"
	"math"
	"os"

	sa "sparseattn.dev/sparseattn"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
	fmt.Println("consumer: ok, library", sa.VersionString())
}

func run() error {
	const n, hq, hkv, d = 200, 4, 2, 32
	x := uint32(7)
	vec := func(m int) []float32 {
		v := make([]float32, m)
		for i := range v {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			v[i] = float32(x)/float32(1<<31) - 1
		}
		return v
	}
	keys, values, q := vec(n*hkv*d), vec(n*hkv*d), vec(hq*d)

	ctx, err := sa.NewContext(&sa.ContextOptions{Threads: 1, ISA: sa.ISAAuto})
	if err != nil {
		return err
	}
	defer ctx.Close()
	opts := sa.DefaultIndexOptions()
	opts.NumKVHeads, opts.HeadDim, opts.DType = hkv, d, sa.F32
	ix, err := sa.NewIndex(ctx, &opts)
	if err != nil {
		return err
	}
	defer ix.Close()
	if err := ix.Append(sa.TensorF32(keys, n, hkv, d)); err != nil {
		return err
	}
	sel := sa.DefaultSelectOptions()
	sel.TopK = n // every key: sparse must equal dense
	width := sel.Sinks + sel.Window + sel.TopK
	idx := sa.TensorI32(make([]int32, hkv*width), 1, hkv, width)
	if err := ix.Select(sa.TensorF32(q, 1, hq, d), &sel, idx); err != nil {
		return err
	}
	kt, vt, qt := sa.TensorF32(keys, n, hkv, d), sa.TensorF32(values, n, hkv, d), sa.TensorF32(q, 1, hq, d)
	sparse, dense, paged := make([]float32, hq*d), make([]float32, hq*d), make([]float32, hq*d)
	if err := ctx.Attend(qt, kt, vt, &idx, nil, sa.TensorF32(sparse, 1, hq, d), nil); err != nil {
		return err
	}
	if err := ctx.Attend(qt, kt, vt, nil, nil, sa.TensorF32(dense, 1, hq, d), nil); err != nil {
		return err
	}
	if err := ctx.AttendPaged(qt, nil, &sa.PagedKV{K: kt, V: vt}, nil, nil, sa.TensorF32(paged, 1, hq, d), nil); err != nil {
		return err
	}
	for i := range dense {
		if math.Abs(float64(sparse[i]-dense[i])) > 1e-5 || math.Abs(float64(paged[i]-dense[i])) > 1e-5 {
			return fmt.Errorf("element %d: sparse %g, paged %g, dense %g", i, sparse[i], paged[i], dense[i])
		}
	}
	return nil
}
