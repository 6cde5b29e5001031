#!/usr/bin/python3
"""Runs the repository's bench and quality tools once and writes docs/results/:
RESULTS.md (the tables, also printed), speed.png, quality.png and the tools' raw output.

    bench/results/run.py [--quick] [--build DIR] [--out DIR]

--quick takes about a minute on 2 loaded cores; the default (about 4) repeats more and adds
the HNSW graph at 32K (at 128K its build alone takes minutes). Run from anywhere: paths are taken from the repository root.
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
import gbench  # noqa: E402  (these modules sit beside this script)
import machine  # noqa: E402
import plots  # noqa: E402
import quality  # noqa: E402
import report  # noqa: E402
import speed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent

# Per mode: Google Benchmark repetitions and minimum time, graph sizes, quality queries.
MODES = {
    "quick": dict(attend_reps=3, attend_min=0.1, select_reps=1, select_min=0.1,
                  graph_sizes=(), queries=64, repeat=1),
    "full": dict(attend_reps=7, attend_min=0.3, select_reps=5, select_min=0.2,
                 graph_sizes=(32768,), queries=256, repeat=3),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~1 minute run")
    ap.add_argument("--build", default="build", help="Meson build directory (default build)")
    ap.add_argument("--out", default="docs/results", help="output directory (default docs/results)")
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
        bench / "bench_attend", speed.attend_names(), m["attend_min"], m["attend_reps"], interleave=True))
    select = step("bench_select", lambda: gbench.run(
        bench / "bench_select", speed.select_names(m["graph_sizes"]), m["select_min"], m["select_reps"]))
    qual = step("quality_report", lambda: quality.run(
        bench / "quality_report", "tests/data", (64, 128), m["queries"], m["repeat"]))
    load_after = machine.load()

    rows = speed.rows(attend, select)
    kinds = list(speed.SELECT) + list(speed.GRAPH)
    meta = dict(command=command, date=machine.now(), elapsed_s=time.time() - start,
                cpu=machine.cpu_model(), cpus=attend.context.get("num_cpus", os.cpu_count()),
                version=attend.context.get("sparseattn", "?"),
                isa=attend.context.get("sparseattn_isa", "?"), commit=machine.commit(ROOT),
                load_before=load_before, load_after=load_after,
                mode=f"{mode} (bench_attend: {m['attend_reps']} interleaved repetitions; "
                     f"bench_select: {m['select_reps']}; quality: {m['queries']} queries)")
    failures = speed.errors(attend, select)
    text = "\n\n".join([report.header(meta), report.speed_section(rows, kinds, failures),
                        report.quality_section(qual.rows, qual.argv),
                        report.commands_section(commands)]) + "\n"
    print(text)

    (out / "RESULTS.md").write_text(text)
    (out / "raw" / "bench_attend.json").write_text(attend.raw)
    (out / "raw" / "bench_select.json").write_text(select.raw)
    (out / "raw" / "quality_report.tsv").write_text(qual.raw)
    b, a = load_before, load_after
    subtitle = (f"{meta['cpu']}, {meta['isa']}, load {b[0]:.1f} → {a[0]:.1f}, "
                f"{meta['date']}")
    plots.speed(rows, subtitle, out / "speed.png")
    plots.quality(qual.rows, subtitle, out / "quality.png")
    print(f"[results] wrote {out}/RESULTS.md, speed.png, quality.png, raw/", file=sys.stderr)


if __name__ == "__main__":
    main()
