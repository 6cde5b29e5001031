package sparseattn

// #include "shim.h"
import "C"

import "unsafe"

// EvictOptions are the settings of Context.Evict (sa_evict_options). Budget
// has no default; start from DefaultEvictOptions and set it. The zero values
// of the ranking fields rank raw scores with Window alone protected (the
// plain H2O rule), not the library's defaults.
type EvictOptions struct {
	Budget   int // slots the cache may hold after the incoming tokens (>= Sinks + Window + Incoming)
	Incoming int // tokens about to be inserted (0: compress a prompt to Budget slots)
	Sinks    int // positions [0, Sinks) are never freed
	Window   int // positions (max_pos - Window, max_pos] are never freed
	// ScoreMean (default true): scores are Attend's SlotMass, ranked per step
	// seen (divided by sum_{i < age} MassDecay^i, age = max_pos - position + 1);
	// false: as given (a host's own scores).
	ScoreMean bool
	// MassDecay: the decay SlotMass was accumulated with
	// (AttendOptions.MassDecay), in [0, 1]; default 0.99.
	MassDecay float32
	// HeadMax: [H, n_slots] scores rank a slot by its best row (KV head);
	// false (default): by their sum.
	HeadMax bool
	// RecentShare in [0, 1]: the most recent floor(RecentShare * (Budget -
	// Incoming - Sinks)) positions are protected too, when more than Window
	// (default 0.875; 0: Window alone; 1: StreamingLLM).
	RecentShare float32
	// ScorePool >= 0: a slot ranks by the best ranked score among the occupied
	// slots within ScorePool positions of its own (SnapKV's pooling); 0: its
	// own score (default 0).
	ScorePool int
}

func cBool(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

// DefaultEvictOptions are the library's defaults (sa_evict_options_default).
func DefaultEvictOptions() EvictOptions {
	o := C.sa_evict_options_default()
	return EvictOptions{Budget: int(o.budget), Incoming: int(o.incoming),
		Sinks: int(o.sinks), Window: int(o.window), ScoreMean: o.score_mean != 0,
		MassDecay: float32(o.mass_decay), HeadMax: o.head_max != 0,
		RecentShare: float32(o.recent_share), ScorePool: int(o.score_pool)}
}

// Evict chooses cache slots to free so that occupied + incoming <= budget
// (sa_cache_evict). scores: f32 [n_slots] or [H, n_slots], e.g. the SlotMass
// of Attend; positions: i64 [n_slots], -1 for an empty slot. The slots to
// free are written to the front of freed: first empty slots for the incoming
// tokens, then occupied ones, lowest score first. Evict returns their count.
// opts nil is refused: Budget has no default.
func (c *Context) Evict(opts *EvictOptions, scores, positions Tensor, freed []int32) (int, error) {
	if opts == nil {
		return 0, errorf(StatusNullPointer, "EvictOptions is nil; Budget has no default")
	}
	freedT := TensorI32(freed, len(freed))
	var b describer
	sd, pd := b.tensor(&scores, "scores"), b.tensor(&positions, "positions")
	fd := b.tensor(&freedT, "freed")
	if b.err != nil {
		return 0, b.err
	}
	o := C.sa_evict_options_default()
	o.struct_size = C.size_t(unsafe.Sizeof(o))
	var n narrower
	o.budget = C.int64_t(opts.Budget)
	o.incoming = C.int64_t(opts.Incoming)
	o.sinks = n.i32("EvictOptions.Sinks", opts.Sinks)
	o.window = n.i32("EvictOptions.Window", opts.Window)
	o.score_mean = cBool(opts.ScoreMean)
	o.mass_decay = C.float(opts.MassDecay) // outside [0, 1] or NaN: the library refuses it
	o.head_max = cBool(opts.HeadMax)
	o.recent_share = C.float(opts.RecentShare)
	o.score_pool = C.int64_t(opts.ScorePool) // negative: the library refuses it
	if n.err != nil {
		return 0, n.err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return 0, errClosed("context")
	}
	var nFreed C.int64_t
	var msg *C.char
	st := C.sago_cache_evict(c.ptr, &o, &sd, scores.data, &pd, positions.data, &fd, freedT.data, &nFreed, &msg)
	if err := check(st, msg); err != nil {
		return 0, err
	}
	if nFreed < 0 || int64(nFreed) > int64(len(freed)) {
		return 0, errorf(StatusInternal, "sa_cache_evict reported %d freed slots for a capacity of %d", nFreed, len(freed))
	}
	return int(nFreed), nil
}
