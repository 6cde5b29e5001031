package sparseattn

// pagedCache is a test-owned paged KV cache: pages [numPages, P, hkv, d]
// handed out in a shuffled order (plus two pages nobody uses), a page table
// per sequence and the lengths. Physical slot s = page*P + offset is row s of
// the pages seen as [numPages*P, hkv, d].
type pagedCache struct {
	P, hkv, d, numPages, maxPages int
	k, v                          []float32
	table                         []int32 // [B, maxPages]; entries past a sequence's pages are junk
	lens                          []int32
	pages                         [][]int // per sequence, in token order
}

func newPagedCache(r *rng, lens []int, P, hkv, d int) *pagedCache {
	c := &pagedCache{P: P, hkv: hkv, d: d, maxPages: 1}
	need := 0
	for _, l := range lens {
		n := (l + P - 1) / P
		need += n
		if n > c.maxPages {
			c.maxPages = n
		}
	}
	c.numPages = need + 2
	order := make([]int, c.numPages)
	for i := range order {
		order[i] = i
	}
	for i := len(order) - 1; i > 0; i-- {
		j := r.below(i + 1)
		order[i], order[j] = order[j], order[i]
	}
	next := 0
	for _, l := range lens {
		var ps []int
		for j := 0; j < (l+P-1)/P; j++ {
			ps = append(ps, order[next])
			next++
		}
		c.pages = append(c.pages, ps)
		c.lens = append(c.lens, int32(l))
		for j := 0; j < c.maxPages; j++ {
			entry := int32(-7)
			if j < len(ps) {
				entry = int32(ps[j])
			}
			c.table = append(c.table, entry)
		}
	}
	c.k = r.vec(c.numPages * P * hkv * d)
	c.v = r.vec(c.numPages * P * hkv * d)
	return c
}

func (c *pagedCache) slot(b, t int) int { return c.pages[b][t/c.P]*c.P + t%c.P }
func (c *pagedCache) numSlots() int     { return c.numPages * c.P }

// physical is the cache by physical slot.
func (c *pagedCache) physical() cache { return cache{k: c.k, v: c.v, hkv: c.hkv, d: c.d} }

// kv describes the cache to the library.
func (c *pagedCache) kv() *PagedKV {
	B := len(c.lens)
	return &PagedKV{
		K:         TensorF32(c.k, c.numPages, c.P, c.hkv, c.d),
		V:         TensorF32(c.v, c.numPages, c.P, c.hkv, c.d),
		PageTable: TensorI32(c.table, B, c.maxPages),
		SeqLens:   TensorI32(c.lens, B),
	}
}

// gather copies sequence b into a contiguous cache, row t = token t.
func (c *pagedCache) gather(b int) cache {
	n := int(c.lens[b])
	row := c.hkv * c.d
	g := cache{k: make([]float32, n*row), v: make([]float32, n*row), hkv: c.hkv, d: c.d}
	for t := 0; t < n; t++ {
		s := c.slot(b, t)
		copy(g.k[t*row:][:row], c.k[s*row:][:row])
		copy(g.v[t*row:][:row], c.v[s*row:][:row])
	}
	return g
}

// tokens are the physical slots of sequence b's tokens [0, n).
func (c *pagedCache) tokens(b, n int) []int {
	rows := make([]int, n)
	for t := range rows {
		rows[t] = c.slot(b, t)
	}
	return rows
}
