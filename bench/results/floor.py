"""Issue 14's decode-step table: every measurement next to the loop it is held against.

All numbers come from one run of bench_attend (interleaved repetitions: the read loop, dense
and sparse attention and the loops reading the same bytes in the same order), bench_bounds
(the page bound scan and a plain loop over the same bytes) and bench_select (selection, the
decode steps measured as one call each, prefill selection per kind), with the caches flushed
before every timed call. A ratio is only formed between numbers of the same binary's run.
"""
from dataclasses import dataclass

NAN = float("nan")
THREADS = (1, 2)
PREFILL_N = 4096  # 4096 queries over the same 4096 keys, K = 128
# Goals of issue 14 (ratios; see DESIGN.md section 8).
GOAL_FLOOR_PCT = 80.0
GOAL_STEP = {131072: 30.0, 524288: 80.0}
GOAL_SCALING = 1.8
GOAL_PREFILL = 3.0


def attend_names(sizes, step_only_sizes=()):
    """sizes: every pattern; step_only_sizes: dense and sparse attention only (HNSW's step)."""
    names = [f"membw/threads:{t}" for t in THREADS]
    for n in sizes:
        for t in THREADS:
            names += [f"{b}/f16/N:{n}/threads:{t}"
                      for b in ("attend_dense", "walkbw", "attend_sparse", "gatherbw")]
    for n in step_only_sizes:
        for t in THREADS:
            names += [f"{b}/f16/N:{n}/threads:{t}" for b in ("attend_dense", "attend_sparse")]
    return list(dict.fromkeys(names))


def bounds_names(sizes):
    return [f"{b}/f16/N:{n}/threads:{t}" for n in sizes for t in THREADS
            for b in ("bounds_scan", "bounds_read")]


def select_names(sizes, step_sizes, graph_sizes, prefill_kinds):
    """sizes: page step and select; step_sizes: also exact and LSH steps; graph_sizes: HNSW."""
    names = []
    for n in sizes:
        for t in THREADS:
            names += [f"select_page/f16/N:{n}/threads:{t}", f"decode_step_page/f16/N:{n}/threads:{t}"]
            if n in step_sizes:
                names += [f"{b}/f16/N:{n}/threads:{t}" for b in
                          ("select_exact", "select_page_norefine", "select_lsh", "decode_step", "decode_step_lsh")]
    for n in graph_sizes:
        for t in THREADS:
            names.append(f"select/hnsw/decode/f16/N:{n}/threads:{t}")
    for kind in prefill_kinds:
        for t in THREADS:
            names.append(f"select/{kind}/prefill4k_k128/f16/N:{PREFILL_N}/threads:{t}")
    return names


@dataclass
class Line:
    what: str        # the measurement
    n: str           # N it was measured at
    values: dict     # threads -> (shown value, ratio or NaN)
    unit: str        # of the shown value
    against: str     # what the ratio is against
    goal: str        # the goal for the ratio


def _get(run, name, key="ms"):
    r = run.results.get(name) if run else None
    if not r or r.error:
        return NAN
    return r.ms if key == "ms" else r.counters.get(key, NAN)


def kib(n):
    return f"{n // 1024}K"


def lines(attend, bounds, select, sizes, step_sizes, graph_sizes, prefill_kinds):
    """The table's lines, in the order the issue lists them."""
    out = []
    tail = lambda n, t: f"/f16/N:{n}/threads:{t}"  # noqa: E731
    out.append(Line("streaming read loop (`membw`, 1 GiB)", "—",
                    {t: (_get(attend, f"membw/threads:{t}", "GB/s"), NAN) for t in THREADS}, "GB/s", "", ""))

    def against_loop(what, run, measured, loop, against):
        """Per N: the measured time and the loop's time as a share of it."""
        for n in sizes:
            v = {t: (_get(run, measured + tail(n, t)), 100 * _get(run, loop + tail(n, t)) / _get(run, measured + tail(n, t)))
                 for t in THREADS}
            out.append(Line(what, kib(n), v, "ms", f"% of `{loop}` ({against})", f"≥ {GOAL_FLOOR_PCT:.0f} %"))

    against_loop("`sa_attend` dense", attend, "attend_dense", "walkbw", "same token-major rows, same order")
    for n in sizes:
        v, s = {}, {}
        for t in THREADS:
            step, dense = _get(select, "decode_step_page" + tail(n, t)), _get(attend, "attend_dense" + tail(n, t))
            v[t] = (step, dense / step)
            s[t] = (_get(select, "select_page" + tail(n, t)), NAN)
        goal = GOAL_STEP.get(n)
        out.append(Line("decode step: page select + sparse attend", kib(n), v, "ms",
                        "dense / step (× faster than dense)", f"≥ {goal:.0f}×" if goal else ""))
        out.append(Line("page select alone", kib(n), s, "ms", "", ""))
    against_loop("sparse attend alone (2048 random rows per KV head)", attend, "attend_sparse", "gatherbw",
                 "the same rows")
    against_loop("page bound scan (H_kv × N/16 rows of 2D int8 codes)", bounds, "bounds_scan", "bounds_read",
                 "the same bytes")
    for n in step_sizes:
        for label, name in (("exact step (select + attend)", "decode_step"),
                            ("LSH step (select + attend)", "decode_step_lsh")):
            v = {}
            for t in THREADS:
                step = _get(select, name + tail(n, t))
                v[t] = (step, _get(attend, "attend_dense" + tail(n, t)) / step)
            out.append(Line(label, kib(n), v, "ms", "dense / step", ""))
    for n in graph_sizes:
        v = {}
        for t in THREADS:
            sel = _get(select, "select/hnsw/decode" + tail(n, t))
            sparse = _get(attend, "attend_sparse" + tail(n, t))
            v[t] = (sel + sparse, _get(attend, "attend_dense" + tail(n, t)) / (sel + sparse))
        out.append(Line("HNSW step (select + sparse attend, summed)", kib(n), v, "ms", "dense / step", ""))
    for n in sizes:
        for label, run, name in (("thread scaling, page step", select, "decode_step_page"),
                                 ("thread scaling, dense", attend, "attend_dense")):
            one, two = _get(run, name + tail(n, 1)), _get(run, name + tail(n, 2))
            out.append(Line(label, kib(n), {1: (one, NAN), 2: (two, one / two)}, "ms",
                            "1 thread / 2 threads", f"≥ {GOAL_SCALING}×"))
    # Against the exact kind of another build (--baseline-lib) when given, else this build's.
    prefill = lambda kind, t: _get(select, f"select/{kind}/prefill4k_k128/f16/N:{PREFILL_N}/threads:{t}")  # noqa: E731
    base = {t: prefill("baseline-exact", t) for t in THREADS}
    has_base = any(x == x for x in base.values())
    if has_base:
        out.append(Line("prefill selection, exact of the baseline build (4096 queries, K = 128)", kib(PREFILL_N),
                        {t: (base[t], NAN) for t in THREADS}, "ms", "", ""))
    else:
        base = {t: prefill("exact", t) for t in THREADS}
    for kind in prefill_kinds:
        v = {t: (prefill(kind, t), base[t] / prefill(kind, t)) for t in THREADS}
        out.append(Line(f"prefill selection, {kind} (4096 queries, K = 128)", kib(PREFILL_N), v, "ms",
                        "baseline build's exact / this kind" if has_base else "exact / this kind (same run)",
                        f"≥ {GOAL_PREFILL:.0f}×" if has_base else ""))
    return out
