"""The demo's default mode: decode steps over a growing cache, sparse against dense."""
import time

import numpy as np

import sparseattn as sa

from .metrics import head_errors
from .workload import D, H_KV, H_Q, Workload


def run_decode(ctx, selector, n_prefill, steps, top_k, window, sinks, verbose):
    n_total = n_prefill + steps
    width = sinks + window + top_k
    kc = np.empty((n_total, H_KV, D), np.float16)  # the host's KV cache
    vc = np.empty((n_total, H_KV, D), np.float16)
    with sa.Index(ctx, H_KV, D, selector, "f16", capacity=n_total) as ix:
        # Prefill: the host's cache holds n_prefill tokens; the index gets their keys.
        t0 = time.perf_counter()
        w = Workload(n_prefill, n_total)
        w.fill(0, n_prefill, kc, vc)
        t1 = time.perf_counter()
        ix.append(kc[:n_prefill])
        t2 = time.perf_counter()
        print(f"workload: {n_prefill} prefill keys, H_q={H_Q} H_kv={H_KV} D={D} f16; generated in "
              f"{(t1 - t0) * 1e3:.0f} ms, indexed in {(t2 - t1) * 1e3:.1f} ms")
        print(f"decode: {steps} steps, {selector} selector, top_k={top_k} window={window} "
              f"sinks={sinks} ({width} indices per KV head)\n")

        idx = np.empty((1, H_KV, width), np.int32)
        out_sparse = np.empty((1, H_Q, D), np.float32)
        out_dense = np.empty((1, H_Q, D), np.float32)
        lse_sparse = np.empty((1, H_Q), np.float32)
        lse_dense = np.empty((1, H_Q), np.float32)
        sum_select = sum_sparse = sum_dense = sum_mass = sum_err = 0.0
        min_mass, max_err = 1.0, 0.0
        if verbose:
            print("step  position   mass    rel err  select ms  attend ms  dense ms")
        for step in range(-1, steps):  # step -1: untimed warm-up
            n_kv = n_prefill + (0 if step < 0 else step + 1)
            pos = n_kv - 1  # the query's position: the newest token
            if step >= 0:  # the new token joins the cache and the index
                w.make_tokens(pos, pos + 1, kc[pos:pos + 1], vc[pos:pos + 1])
                ix.append(kc[pos:pos + 1])
            q = w.make_query(pos, max(step, 0))
            k, v = kc[:n_kv], vc[:n_kv]  # views: nothing is copied

            a = time.perf_counter()
            ix.select(q, top_k=top_k, window=window, sinks=sinks, out=idx)
            b = time.perf_counter()
            ctx.attend(q, k, v, idx, out=out_sparse, lse=lse_sparse)
            c = time.perf_counter()
            ctx.attend(q, k, v, out=out_dense, lse=lse_dense)
            d = time.perf_counter()
            if step < 0:
                continue
            # Mass captured: the selected keys' share of the softmax denominator.
            mass = np.exp(lse_sparse.astype(np.float64) - lse_dense.astype(np.float64))[0]
            errs = head_errors(out_sparse, out_dense)
            min_mass = min(min_mass, float(mass.min()))
            max_err = max(max_err, float(errs.max()))
            sum_select += b - a
            sum_sparse += c - a
            sum_dense += d - c
            sum_mass += float(mass.mean())
            sum_err += float(errs.mean())
            if verbose:
                print(f"{step:4d} {pos:9d} {mass.mean():6.4f} {errs.mean():10.2e} "
                      f"{(b - a) * 1e3:10.3f} {(c - b) * 1e3:10.3f} {(d - c) * 1e3:9.3f}")
        if verbose:
            print()
    ms = 1e3 / steps
    print(f"attention mass captured by the selected keys: mean {sum_mass / steps:.4f}, "
          f"worst head {min_mass:.4f}")
    print(f"relative error of sparse vs dense output:    mean {sum_err / steps:.2e}, "
          f"worst head {max_err:.2e}")
    print(f"time per decode step (all {H_Q} heads): sparse {sum_sparse * ms:.3f} ms (select "
          f"{sum_select * ms:.3f} + attend {(sum_sparse - sum_select) * ms:.3f}), dense "
          f"{sum_dense * ms:.3f} ms")
    print(f"speedup of sparse over dense: {sum_dense / sum_sparse:.1f}x")
