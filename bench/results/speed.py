"""The decode-speed measurement: which benchmarks run, and the ratios derived from them.

Everything a row compares comes from the same run of the same binary (bench_attend), or
from bench_select run right after it, because this machine's bandwidth moves with its
neighbours: only ratios measured together mean anything.
"""
from dataclasses import dataclass, field

NAN = float("nan")
SIZES = (32768, 131072)
THREADS = (1, 2)
# bench_select entries per selector (cache-cold: each iteration uses the next layer's index),
# and the graph kind, which only bench_select's per-kind family has (one index, one layer).
SELECT = {"exact": "select_exact", "page": "select_page", "page-norefine": "select_page_norefine",
          "lsh": "select_lsh"}
GRAPH = {"hnsw": "select/hnsw/decode"}


def attend_names():
    names = [f"membw/threads:{t}" for t in THREADS]
    for n in SIZES:
        for t in THREADS:
            names += [f"attend_dense/f16/N:{n}/threads:{t}", f"attend_sparse/f16/N:{n}/threads:{t}"]
    return names


def select_names(graph_sizes):
    """graph_sizes: the N at which to run the graph kinds (their index build takes minutes)."""
    names = []
    for n in SIZES:
        for t in THREADS:
            names += [f"{b}/f16/N:{n}/threads:{t}" for b in SELECT.values()]
            names.append(f"decode_step/f16/N:{n}/threads:{t}")
            if n in graph_sizes:
                names += [f"{b}/f16/N:{n}/threads:{t}" for b in GRAPH.values()]
    return names


@dataclass
class Row:
    n: int
    threads: int
    membw_gbps: float = NAN      # the plain read loop (sum of a 1 GiB buffer)
    dense_ms: float = NAN        # sa_attend over all n keys
    dense_gbps: float = NAN      # K/V bytes dense must read, per second
    sparse_ms: float = NAN       # sa_attend over 2048 random keys per KV head
    select_ms: dict = field(default_factory=dict)  # kind -> one decode query's selection
    exact_step_ms: float = NAN   # decode_step: exact select then attend, measured as one

    @property
    def page_step_ms(self):  # page select, then attend over what it chose
        return self.select_ms.get("page", NAN) + self.sparse_ms

    @property
    def exact_sum_ms(self):  # the same sum for exact, to check it against exact_step_ms
        return self.select_ms.get("exact", NAN) + self.sparse_ms

    @property
    def read_pct(self):  # dense attention's K/V read rate as a share of the read loop's
        return 100.0 * self.dense_gbps / self.membw_gbps

    @property
    def read_loop_ms(self):  # the read loop's time for dense's K/V bytes
        return self.dense_ms * self.dense_gbps / self.membw_gbps

    @property
    def speedup(self):
        return self.dense_ms / self.page_step_ms


def rows(attend, select):
    """attend, select: gbench.Run of attend_names() and select_names()."""
    def ms(run, name):
        r = run.results.get(name)
        return r.ms if r and not r.error else NAN

    def gbps(run, name):
        r = run.results.get(name)
        return r.counters.get("GB/s", NAN) if r and not r.error else NAN

    out = []
    for n in SIZES:
        for t in THREADS:
            tail = f"/f16/N:{n}/threads:{t}"
            row = Row(n, t,
                      membw_gbps=gbps(attend, f"membw/threads:{t}"),
                      dense_ms=ms(attend, "attend_dense" + tail),
                      dense_gbps=gbps(attend, "attend_dense" + tail),
                      sparse_ms=ms(attend, "attend_sparse" + tail),
                      exact_step_ms=ms(select, "decode_step" + tail))
            for kind, b in {**SELECT, **GRAPH}.items():
                row.select_ms[kind] = ms(select, b + tail)
            out.append(row)
    return out


def errors(*runs):
    """name -> message for every benchmark that failed or was not reported."""
    return {name: r.error for run in runs for name, r in run.results.items() if r.error}
