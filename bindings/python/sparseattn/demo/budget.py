"""The demo's --budget mode: a cache of a fixed number of slots that never grows.

The prompt's tokens are scored by the attention of its last `window` queries
(attend's slot_mass) and compressed to the budget by one cache_evict call
(SnapKV). Each decode step then frees one slot by the accumulated attention
(H2O: attend adds every step's probabilities to slot_mass), writes the new
token there, refills the index slot with Index.update, selects and attends.
Checked against dense attention over the retained slots (every step) and over
the whole history (at each report; the history is kept here for that only)."""
import time

import numpy as np

import sparseattn as sa

from .memory import malloc_in_use_mib, rss_mib
from .metrics import relative_error
from .workload import D, H_KV, H_Q, Workload


def run_budget(ctx, selector, n_prefill, steps, budget, top_k, window, sinks, verbose):
    n_total = n_prefill + steps
    observe = window  # prompt queries that score the prompt
    decay = 0.99
    # The whole token stream (the workload's source, and the full-history reference),
    # written now so that the resident set stays flat.
    hk = np.empty((n_total, H_KV, D), np.float16)
    hv = np.empty((n_total, H_KV, D), np.float16)
    hk.fill(0)
    hv.fill(0)
    w = Workload(n_prefill, n_total)
    w.fill(0, n_prefill, hk, hv)

    # 1. Score the prompt by its last queries, compress it to the budget in one call.
    t0 = time.perf_counter()
    q = np.concatenate([w.make_query(n_prefill - observe + i, 0) for i in range(observe)])
    prompt_mass = np.empty((H_KV, n_prefill), np.float32)
    ctx.attend(q, hk[:n_prefill], hv[:n_prefill], causal=True, slot_mass=prompt_mass,
               mass_decay=0.0)  # this call's mass only
    prompt_pos = np.arange(n_prefill, dtype=np.int64)
    freed = ctx.cache_evict(prompt_mass, prompt_pos, budget, incoming=0, sinks=sinks,
                            window=window)
    # Compact the survivors into the budget's slots, in position order, with their mass.
    keep = np.ones(n_prefill, bool)
    keep[freed] = False
    kept_pos = np.flatnonzero(keep)
    kept = len(kept_pos)
    kc = np.zeros((budget, H_KV, D), np.float16)
    vc = np.zeros((budget, H_KV, D), np.float16)
    kc[:kept], vc[:kept] = hk[kept_pos], hv[kept_pos]
    pos = np.zeros(budget, np.int64)
    pos[:kept] = kept_pos
    mass = np.zeros((H_KV, budget), np.float32)
    mass[:, :kept] = prompt_mass[:, kept_pos]
    with sa.Index(ctx, H_KV, D, selector, "f16", capacity=budget) as ix:
        # The index holds the kept keys at their positions: append, then set the positions.
        ix.append(kc)
        ix.update(np.arange(kept), kc[:kept], positions=pos[:kept])
        t1 = time.perf_counter()
        print(f"budget mode: a cache of {budget} slots; {selector} selector, sinks {sinks}, "
              f"window {window}, top_k {top_k}; eviction by accumulated attention (slot_mass, "
              f"decay {decay:.2f})")
        print(f"prompt: {n_prefill} tokens scored by its last {observe} queries and compressed "
              f"to {kept} slots in one sa_cache_evict call ({len(freed)} freed) in "
              f"{(t1 - t0) * 1e3:.0f} ms\n")

        # 2. Decode.
        width = sinks + window + top_k
        idx = np.empty((1, H_KV, width), np.int32)
        out = np.empty((1, H_Q, D), np.float32)
        out_retained = np.empty((1, H_Q, D), np.float32)
        out_full = np.empty((1, H_Q, D), np.float32)
        lse_retained = np.empty((1, H_Q), np.float32)
        lse_full = np.empty((1, H_Q), np.float32)
        slot_out = np.empty(1, np.int32)
        every = steps // 8 if steps >= 8 else 1
        err_sum = err_max = step_s = 0.0
        print("   step  position  malloc MiB  RSS MiB  sparse vs dense(retained)  "
              "retained/full mass  retained vs full")
        for step in range(steps):
            qpos = n_prefill + step
            w.make_tokens(qpos, qpos + 1, hk[qpos:qpos + 1], hv[qpos:qpos + 1])
            q = w.make_query(qpos, step)
            a = time.perf_counter()
            slot = int(ctx.cache_evict(mass, pos, budget, incoming=1, sinks=sinks,
                                       window=window, out=slot_out)[0])
            kc[slot], vc[slot] = hk[qpos], hv[qpos]
            pos[slot] = qpos
            mass[:, slot] = 0.0
            ix.update([slot], kc[slot:slot + 1], positions=[qpos])
            ix.select(q, top_k=top_k, window=window, sinks=sinks, query_positions=[qpos], out=idx)
            ctx.attend(q, kc, vc, idx, causal=True, query_positions=[qpos], key_positions=pos,
                       slot_mass=mass, mass_decay=decay, out=out)
            step_s += time.perf_counter() - a

            # Dense over the retained slots: what the selection should reproduce.
            ctx.attend(q, kc, vc, causal=True, query_positions=[qpos], key_positions=pos,
                       out=out_retained, lse=lse_retained)
            err = relative_error(out, out_retained)
            err_sum += err
            err_max = max(err_max, err)
            if (step + 1) % every == 0 or verbose:
                # Dense over the whole history: what eviction gave up.
                ctx.attend(q, hk[:qpos + 1], hv[:qpos + 1], out=out_full, lse=lse_full)
                kept_mass = float(np.mean(np.exp(lse_retained.astype(np.float64) -
                                                 lse_full.astype(np.float64))))
                print(f"{step + 1:7d} {qpos:9d} {malloc_in_use_mib():11.1f} {rss_mib():8.1f} "
                      f"{err:26.2e} {kept_mass:19.4f} "
                      f"{relative_error(out_retained, out_full):17.2e}")
    print(f"\nsparse vs dense attention over the retained cache: mean {err_sum / steps:.2e}, "
          f"worst step {err_max:.2e}")
    print(f"time per decode step (evict + update + select + attend): "
          f"{step_s * 1e3 / steps:.3f} ms")
