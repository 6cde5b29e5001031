#!/usr/bin/env bash
# The Python binding's checks, run by scripts/ci_bindings.sh against the staged library:
#   1. the unit tests (python3 -m unittest, Debian's python3-numpy);
#   2. the demo on a small cache, both modes; with C_DEMO (examples/demo_dlopen) given,
#      its figures must equal the C demo's for the same arguments;
#   3. the README snippet, examples/readme.py.
# Usage: bindings/python/ci.sh [LIBRARY [C_DEMO]]   LIBRARY defaults to $SPARSEATTN_LIB.
# Leaves nothing behind in the work tree (no __pycache__).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lib=${1:-${SPARSEATTN_LIB:-}}
c_demo=${2:-}
python=${PYTHON:-python3}
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
  echo "bindings/python/ci.sh: pass the library (libsparseattn.so.0) or set SPARSEATTN_LIB" >&2
  exit 1
fi
"$python" -c 'import numpy' 2> /dev/null \
  || { echo "bindings/python/ci.sh: $python has no numpy (apt-get install python3-numpy)" >&2; exit 1; }
export SPARSEATTN_LIB
SPARSEATTN_LIB=$(realpath "$lib")
export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1
echo "python: $("$python" --version) numpy $("$python" -c 'import numpy; print(numpy.__version__)'); library: $SPARSEATTN_LIB"

echo "-- unit tests"
"$python" -m unittest discover -s "$here/tests" -v

# The demo's figures (without -v) less its timings, memory and library path, to compare with C's.
figures() {
  grep -E '^(decode:|attention mass|relative error|budget mode:|prompt:|sparse vs dense)|^ +[0-9]+ +[0-9]+ ' \
    | sed -E 's/ in [0-9]+ ms$//' \
    | awk '/^ +[0-9]/ { print $1, $2, $5, $6, $7; next } { print }'
}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sparseattn-python.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for args in "-n 2048 -s 4 -k 128 -t 2" "--budget 256 -n 1024 -s 32 -k 32 -t 2 --selector exact"; do
  echo "-- python3 -m sparseattn.demo $args"
  # shellcheck disable=SC2086
  "$python" -m sparseattn.demo $args | tee "$tmp/py.out"
  if [ -n "$c_demo" ]; then
    # shellcheck disable=SC2086
    "$c_demo" "$SPARSEATTN_LIB" $args > "$tmp/c.out"
    figures < "$tmp/c.out" > "$tmp/c.figures"
    figures < "$tmp/py.out" > "$tmp/py.figures"
    if [ "$(wc -l < "$tmp/c.figures")" -lt 3 ] || ! diff "$tmp/c.figures" "$tmp/py.figures"; then
      echo "bindings/python/ci.sh: the Python demo's figures differ from $c_demo's" >&2
      exit 1
    fi
    echo "ok:   the same $(wc -l < "$tmp/c.figures") lines of figures as $c_demo $args"
  fi
done

echo "-- examples/readme.py"
"$python" "$here/examples/readme.py"
echo "ok:   bindings/python"
