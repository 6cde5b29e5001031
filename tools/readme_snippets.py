#!/usr/bin/env python3
"""Checks that the code README.md shows is code the tests build and run.

In README.md a fenced block right after a line `<!-- snippet: PATH -->` must equal the lines of
PATH between a line containing `README: begin` and one containing `README: end` (the whole
file when it has no such markers), with their common indentation removed. CI runs this; the
files themselves are compiled and run by their own tests (examples/minimal.c, the bindings'
README examples).

Usage: tools/readme_snippets.py [README]   (from the repository root)
"""
import re
import sys
import textwrap
from pathlib import Path


def region(path: Path) -> str:
    lines = path.read_text().splitlines()
    begin = [i for i, line in enumerate(lines) if "README: begin" in line]
    end = [i for i, line in enumerate(lines) if "README: end" in line]
    if begin and end:
        lines = lines[begin[0] + 1:end[0]]
    return textwrap.dedent("\n".join(lines)).strip("\n")


def main() -> int:
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    text = readme.read_text()
    pattern = re.compile(r"<!-- snippet: (\S+) -->\n```[a-z]*\n(.*?)\n```", re.S)
    found = 0
    failed = 0
    for match in pattern.finditer(text):
        found += 1
        path = readme.parent / match.group(1)
        if not path.is_file():
            print(f"{readme}: snippet source {path} does not exist")
            failed += 1
            continue
        want = region(path)
        if match.group(2).strip("\n") != want:
            print(f"{readme}: the block after <!-- snippet: {match.group(1)} --> differs from the file; it should read:")
            print(want)
            failed += 1
        else:
            print(f"ok: {match.group(1)}")
    if found == 0:
        print(f"{readme}: no <!-- snippet: PATH --> blocks")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
