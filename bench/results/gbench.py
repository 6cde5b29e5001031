"""Runs a Google Benchmark binary and reads its JSON: one Result per benchmark."""
import json
import re
import subprocess
from dataclasses import dataclass, field

# Fields of a JSON benchmark entry that are not user counters.
_STANDARD = {
    "name", "family_index", "per_family_instance_index", "run_name", "run_type",
    "repetitions", "repetition_index", "threads", "iterations", "real_time", "cpu_time",
    "time_unit", "aggregate_name", "aggregate_unit", "label", "error_occurred",
    "error_message",
}
_TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
# Names are interpolated into a POSIX regex unescaped: allow only characters that are literal.
_NAME = re.compile(r"^[A-Za-z0-9_/:-]+$")


@dataclass
class Result:
    name: str
    ms: float = float("nan")  # real time per iteration (median over repetitions when present)
    cv: float = float("nan")  # coefficient of variation over repetitions, when reported
    counters: dict = field(default_factory=dict)
    error: str = ""


@dataclass
class Run:
    argv: list
    context: dict
    results: dict  # name without the "/real_time" suffix -> Result
    raw: str


def _key(name):
    return name[: -len("/real_time")] if name.endswith("/real_time") else name


def run(binary, names, min_time, repetitions, interleave=False, env=None):
    """Runs exactly `names` (benchmark names without /real_time) in one process; env: the
    process's environment (default: this one's)."""
    for n in names:
        if not _NAME.match(n):
            raise ValueError(f"benchmark name with regex characters: {n!r}")
    argv = [str(binary),
            "--benchmark_filter=^(" + "|".join(names) + ")(/real_time)?$",
            f"--benchmark_min_time={min_time}",
            f"--benchmark_repetitions={repetitions}",
            "--benchmark_report_aggregates_only=true",
            "--benchmark_format=json"]
    if interleave:  # repetitions of different benchmarks alternate: drift hits all of them
        argv.append("--benchmark_enable_random_interleaving=true")
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return parse(p.stdout, argv, names)


def parse(text, argv, names):
    """The JSON of --benchmark_format=json; every one of names gets a Result."""
    doc = json.loads(text)
    results = {}
    for b in doc.get("benchmarks", []):
        key = _key(b.get("run_name", b["name"]))
        r = results.setdefault(key, Result(key))
        if b.get("error_occurred"):
            r.error = b.get("error_message", "error")
            continue
        agg = b.get("aggregate_name")
        if b.get("run_type") == "aggregate" and agg not in ("median", "cv"):
            continue
        if agg == "cv":
            r.cv = float(b["real_time"])
            continue
        # A median wins over single iterations (repetitions=1 reports no aggregates).
        if agg == "median" or r.ms != r.ms:
            r.ms = float(b["real_time"]) * _TO_MS[b["time_unit"]]
            r.counters = {k: float(v) for k, v in b.items()
                          if k not in _STANDARD and isinstance(v, (int, float))}
    for n in names:
        results.setdefault(n, Result(n, error="not reported"))
    return Run(argv, doc.get("context", {}), results, text)
