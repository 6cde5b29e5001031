#!/usr/bin/python3
"""Runs the repository's bench and quality tools once and writes docs/results/:
RESULTS.md (the tables, also printed), floor.png, quality.png and the tools' raw output.

    bench/results/run.py [--quick] [--build DIR] [--out DIR]

The decode table is issue 14's: the read loop, dense and sparse attention, the page bound
scan, each next to a loop reading the same bytes in the same order; the page decode step
against dense; exact, LSH and HNSW steps; 2 threads against 1; prefill selection per kind.
--quick (128K keys, fewer repetitions, no HNSW decode) takes about 2-3 minutes on 2 loaded
cores; the default adds 512K keys and the HNSW graph at 32K (at 128K its build alone takes
minutes) and repeats more. Run from anywhere: paths are taken from the repository root.
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
import gbench  # noqa: E402  (these modules sit beside this script)
import machine  # noqa: E402
import floor  # noqa: E402
import plots  # noqa: E402
import quality  # noqa: E402
import report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent

# Per mode: Google Benchmark repetitions and minimum time, graph sizes, quality queries.
# Per mode: Google Benchmark repetitions and minimum time, the N of the decode table (sizes),
# of the exact and LSH steps (step_sizes) and of the HNSW graph, quality queries.
PREFILL_KINDS = ("exact", "page", "page-norefine", "lsh", "hnsw")
MODES = {
    "quick": dict(attend_reps=3, attend_min=0.05, select_reps=1, select_min=0.05,
                  sizes=(131072,), step_sizes=(131072,), graph_sizes=(), queries=64, repeat=1),
    "full": dict(attend_reps=7, attend_min=0.2, select_reps=5, select_min=0.1,
                 sizes=(131072, 524288), step_sizes=(131072,), graph_sizes=(32768,), queries=256,
                 repeat=3),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~1 minute run")
    ap.add_argument("--build", default="build", help="Meson build directory (default build)")
    ap.add_argument("--out", default="docs/results", help="output directory (default docs/results)")
    ap.add_argument("--baseline-lib", metavar="DIR",
                    help="also time exact prefill selection with the libsparseattn.so.0 in DIR (another\n"
                         "build's src/, e.g. main's), in this run: the prefill rows then show each\n"
                         "kind against it")
    args = ap.parse_args()
    os.chdir(ROOT)  # relative paths in the recorded commands, tests/data found
    mode = "quick" if args.quick else "full"
    m = MODES[mode]
    bench = Path(args.build) / "bench"
    out = Path(args.out)
    (out / "raw").mkdir(parents=True, exist_ok=True)

    command = " ".join([os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)] + sys.argv[1:])
    start, load_before = time.time(), machine.load()
    commands = []

    def step(what, fn):
        print(f"[results] {what} ...", file=sys.stderr, flush=True)
        t0 = time.time()
        result = fn()
        commands.append(f"# {time.time() - t0:.0f} s, load after: "
                        + " ".join(f"{x:.2f}" for x in machine.load()))
        commands.append(" ".join(f"'{a}'" if "|" in a or "(" in a else a for a in result.argv))
        return result

    attend = step("bench_attend", lambda: gbench.run(
        bench / "bench_attend", floor.attend_names(m["sizes"], m["graph_sizes"]), m["attend_min"],
        m["attend_reps"], interleave=True))
    bounds = step("bench_bounds", lambda: gbench.run(
        bench / "bench_bounds", floor.bounds_names(m["sizes"]), m["attend_min"], m["attend_reps"],
        interleave=True))
    # Prefill entries are seconds each: one repetition of one iteration.
    select = step("bench_select", lambda: gbench.run(
        bench / "bench_select", floor.select_names(m["sizes"], m["step_sizes"], m["graph_sizes"], ()),
        m["select_min"], m["select_reps"]))
    prefill = step("bench_select (prefill)", lambda: gbench.run(
        bench / "bench_select", floor.select_names((), (), (), PREFILL_KINDS), 0.01, 1))
    qual = step("quality_report", lambda: quality.run(
        bench / "quality_report", "tests/data", (64, 128), m["queries"], m["repeat"]))
    load_after = machine.load()

    (out / "raw" / "bench_attend.json").write_text(attend.raw)
    (out / "raw" / "bench_bounds.json").write_text(bounds.raw)
    (out / "raw" / "bench_select.json").write_text(select.raw)
    (out / "raw" / "bench_select_prefill.json").write_text(prefill.raw)
    (out / "raw" / "quality_report.tsv").write_text(qual.raw)
    select.results.update(prefill.results)
    if args.baseline_lib:
        env = {**os.environ, "LD_LIBRARY_PATH": str(Path(args.baseline_lib).resolve())}
        base = step(f"bench_select (prefill, exact, library in {args.baseline_lib})", lambda: gbench.run(
            bench / "bench_select", floor.select_names((), (), (), ("exact",)), 0.01, 1, env=env))
        commands[-1] = f"LD_LIBRARY_PATH={args.baseline_lib} " + commands[-1]
        for name, r in base.results.items():
            select.results[name.replace("select/exact/", "select/baseline-exact/")] = r
    lines = floor.lines(attend, bounds, select, m["sizes"], m["step_sizes"], m["graph_sizes"], PREFILL_KINDS)
    meta = dict(command=command, date=machine.now(), elapsed_s=time.time() - start,
                cpu=machine.cpu_model(), cpus=attend.context.get("num_cpus", os.cpu_count()),
                version=attend.context.get("sparseattn", "?"),
                isa=attend.context.get("sparseattn_isa", "?"), commit=machine.commit(ROOT),
                load_before=load_before, load_after=load_after,
                mode=f"{mode} (bench_attend, bench_bounds: {m['attend_reps']} interleaved repetitions; "
                     f"bench_select: {m['select_reps']}, prefill 1; quality: {m['queries']} queries)")
    failures = {name: r.error for run in (attend, bounds, select) for name, r in run.results.items() if r.error}
    text = "\n\n".join([report.header(meta), report.floor_section(lines, failures),
                        report.quality_section(qual.rows, qual.argv),
                        report.commands_section(commands)]) + "\n"
    print(text)

    (out / "RESULTS.md").write_text(text)
    b, a = load_before, load_after
    subtitle = (f"{meta['cpu']}, {meta['isa']}, load {b[0]:.1f} → {a[0]:.1f}, "
                f"{meta['date']}")
    plots.floor(lines, subtitle, out / "floor.png")
    plots.quality(qual.rows, subtitle, out / "quality.png")
    print(f"[results] wrote {out}/RESULTS.md, floor.png, quality.png, raw/", file=sys.stderr)


if __name__ == "__main__":
    main()
