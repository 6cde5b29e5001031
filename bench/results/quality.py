"""Runs quality_report --tsv and reads its rows by column name."""
import subprocess
from dataclasses import dataclass

# Columns the tables and plots use; a report without one of them is an error.
NEEDED = ("layer", "kind", "k", "status", "recall", "mass", "mass_minus_exact", "rel_err")


@dataclass
class Report:
    argv: list
    rows: list  # dicts keyed by the header's column names, numbers as float
    raw: str


def _value(text):
    try:
        return float(text)
    except ValueError:
        return text


def run(binary, data, ks, queries, repeat):
    argv = [str(binary), "--data", str(data), "--k", ",".join(map(str, ks)),
            "--queries", str(queries), "--repeat", str(repeat), "--threads", "1", "--tsv"]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return parse(p.stdout, argv)


def parse(text, argv):
    lines = [l for l in text.splitlines() if "\t" in l]
    header_at = next((i for i, l in enumerate(lines) if {"kind", "k"} <= set(l.split("\t"))), None)
    if header_at is None:
        raise RuntimeError(f"no TSV header in the output of {' '.join(argv)}")
    header = lines[header_at].split("\t")
    missing = [c for c in NEEDED if c not in header]
    if missing:
        raise RuntimeError(f"quality_report --tsv lacks columns {missing}; it has {header}")
    rows = []
    for line in lines[header_at + 1:]:
        cells = line.split("\t")
        row = {c: _value(v) for c, v in zip(header, cells)}
        row["kind"], row["status"] = str(row["kind"]), str(row.get("status", ""))
        rows.append(row)
    return Report(argv, rows, text)
