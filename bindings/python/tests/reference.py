"""Independent float64 references for the tests: attention, exact top-K selection,
eviction, and the f16/bf16 roundings of the inputs (computed here from bits,
not by the library)."""
import math

import numpy as np


# ----------------------------------------------------------------- numbers
def to_bf16_bits(x):
    """float32 -> bfloat16 bits (uint16), round to nearest even; NaN stays NaN."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, 0x7FC0, rounded).astype(np.uint16)


def from_bf16_bits(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def rounded(x, dtype):
    """x as the library stores it in dtype ("f32", "f16", "bf16"), as float64."""
    if dtype == "f32":
        return np.asarray(x, dtype=np.float32).astype(np.float64)
    if dtype == "f16":
        return np.asarray(x, dtype=np.float16).astype(np.float64)
    return from_bf16_bits(to_bf16_bits(x)).astype(np.float64)


def stored(x, dtype):
    """x in the array type the binding takes for dtype (bf16: uint16 bits)."""
    if dtype == "f32":
        return np.asarray(x, dtype=np.float32)
    if dtype == "f16":
        return np.asarray(x, dtype=np.float16)
    return to_bf16_bits(x)


# --------------------------------------------------------------- attention
def attention(q, k, v, indices=None, scale=None, causal=False, query_positions=None,
              key_positions=None):
    """Softmax attention in float64. q [n_q, H_q, D], k/v [n_kv, H_kv, D];
    indices i32 [n_q, H_kv or H_q, w] (-1 skipped, duplicates count twice).
    Returns (out [n_q, H_q, D], lse [n_q, H_q], mass [H_kv, n_kv])."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    n_q, h_q, d = q.shape
    n_kv, h_kv, _ = k.shape
    group = h_q // h_kv
    scale = 1.0 / np.sqrt(d) if not scale else scale
    kpos = np.arange(n_kv) if key_positions is None else np.asarray(key_positions)
    if query_positions is None:
        top = n_kv - 1 if key_positions is None else int(kpos.max())
        qpos = top - n_q + 1 + np.arange(n_q)
    else:
        qpos = np.asarray(query_positions)
    out = np.zeros((n_q, h_q, d))
    lse = np.full((n_q, h_q), -np.inf)
    mass = np.zeros((h_kv, n_kv))
    for i in range(n_q):
        for h in range(h_q):
            hk = h // group
            if indices is None:
                rows = np.arange(n_kv)
            else:
                lists = np.asarray(indices)[i]
                rows = lists[h if lists.shape[0] == h_q else hk]
                rows = rows[rows >= 0]
            keep = kpos[rows] >= 0
            if causal:
                keep &= kpos[rows] <= qpos[i]
            rows = rows[keep]
            if rows.size == 0:
                continue
            s = scale * (k[rows, hk] @ q[i, h])
            m = s.max()
            p = np.exp(s - m)
            z = p.sum()
            out[i, h] = (p / z) @ v[rows, hk]
            lse[i, h] = m + np.log(z)
            np.add.at(mass[hk], rows, p / z)
    return out, lse, mass


# --------------------------------------------------------------- selection
def select_rows(keys, positions, q, top_k, window, sinks, per_query_head=False, scale=None,
                query_positions=None, query_segments=None, key_segments=None):
    """Brute-force exact selection. keys [N, H_kv, D] as the index stores them,
    positions [N]. Yields, per (query i, output head), a dict with 'forced' (set),
    'score' (array over slots, -inf where not visible) and 'visible' (set)."""
    keys = np.asarray(keys, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    positions = np.asarray(positions)
    n_slots, h_kv, d = keys.shape
    n_q, h_q, _ = q.shape
    group = h_q // h_kv
    scale = 1.0 / np.sqrt(d) if not scale else scale
    qpos = (positions.max() - n_q + 1 + np.arange(n_q)) if query_positions is None \
        else np.asarray(query_positions)
    heads = h_q if per_query_head else h_kv
    for i in range(n_q):
        visible = (positions >= 0) & (positions <= qpos[i])
        if query_segments is not None:
            visible &= np.asarray(key_segments) == query_segments[i]
        forced = visible & ((positions < sinks) | (positions > qpos[i] - window))
        for head in range(heads):
            members = [head] if per_query_head else range(head * group, (head + 1) * group)
            hk = head // group if per_query_head else head
            score = np.zeros(n_slots)
            for g in members:
                logit = np.full(n_slots, -np.inf)
                logit[visible] = scale * (keys[visible, hk] @ q[i, g])
                if visible.any():
                    p = np.exp(logit - logit[visible].max())
                    score += p / p.sum()
            score[~visible] = -np.inf
            yield i, head, {"visible": set(np.flatnonzero(visible)),
                            "forced": set(np.flatnonzero(forced)), "score": score,
                            "group": len(members)}


def check_selection(testcase, row, exp, top_k, width=None, tie_rel=1e-4, mass_target=0.0):
    """Asserts that one output row is a valid selection for the expectation `exp`:
    ascending slots then -1 padding, only visible slots, every forced slot, and
    a top set by score (ties within tie_rel may swap). Returns the chosen set."""
    row = np.asarray(row)
    used = int(np.sum(row >= 0))
    testcase.assertTrue(np.all(row[used:] == -1), f"padding after the slots: {row}")
    chosen = row[:used]
    testcase.assertTrue(np.all(np.diff(chosen) > 0), f"ascending distinct slots: {chosen}")
    chosen = set(int(s) for s in chosen)
    testcase.assertTrue(chosen <= exp["visible"], "only visible slots")
    testcase.assertTrue(exp["forced"] <= chosen, "every sink and window slot")
    scored = chosen - exp["forced"]
    rest = sorted(exp["visible"] - exp["forced"] - scored, key=lambda s: -exp["score"][s])
    candidates = len(exp["visible"] - exp["forced"])
    if mass_target <= 0:
        testcase.assertEqual(len(scored), min(top_k, candidates), "top_k scored slots")
    if scored and rest:
        worst_in = min(exp["score"][s] for s in scored)
        best_out = exp["score"][rest[0]]
        testcase.assertGreaterEqual(worst_in, best_out - tie_rel * abs(best_out) - 1e-12,
                                    "every chosen slot scores at least every left-out one")
    return chosen


# ---------------------------------------------------------------- eviction
def evict(scores, positions, budget, incoming=1, sinks=4, window=64, score_mean=True,
          mass_decay=0.99, head_max=False, recent_share=0.875, score_pool=0):
    """The documented sa_cache_evict rule, from scratch (defaults: the header's).
    Scores combine in f32 as C does, so ties come out the same."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim == 1:
        scores = scores[None]
    combined = scores[0].copy()
    for row in scores[1:]:
        combined = np.maximum(combined, row) if head_max else np.float32(combined + row)
    positions = np.asarray(positions)
    empty = [int(s) for s in np.flatnonzero(positions == -1)][:incoming]
    occupied = np.flatnonzero(positions >= 0)
    n_evict = max(0, len(occupied) + incoming - budget)
    max_pos = int(positions.max())
    window = max(window, int(np.float64(np.float32(recent_share)) * (budget - incoming - sinks)))

    def rank(s):
        if not score_mean:
            return float(combined[s])
        age = max_pos - int(positions[s]) + 1
        decay = float(np.float32(mass_decay))
        seen = age if decay >= 1 else 1.0 if decay <= 0 else -math.expm1(age * math.log(decay)) / (1 - decay)
        return float(np.float32(float(combined[s]) / seen))

    ranked = {int(s): rank(s) for s in occupied}
    if score_pool > 0:  # the best ranked score within score_pool positions
        ranked = {s: max(ranked[o] for o in ranked if abs(int(positions[o]) - int(positions[s])) <= score_pool)
                  for s in ranked}
    free = [s for s in occupied if not (positions[s] < sinks or positions[s] > max_pos - window)]
    free.sort(key=lambda s: (ranked[int(s)], positions[s], s))
    return empty + [int(s) for s in free[:n_evict]]
