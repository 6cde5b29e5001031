#!/usr/bin/env bash
# Checks the public ABI of a built libsparseattn.so against include/sparseattn.h:
#   1. the exported dynamic symbols are exactly the SA_API functions the header
#      declares (no C++ symbols, no symbols of dependencies, nothing missing);
#   2. the soname is libsparseattn.so.0;
#   3. the header compiles on its own as strict C99 (C89-style declarations)
#      and as C++11, including the *_INIT macros.
# Usage: tools/abi_check.sh [path/to/libsparseattn.so] [path/to/sparseattn.h]
# Exit status: 0 when every check passes, 1 otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lib=${1:-$root/build/src/libsparseattn.so}
header=${2:-$root/include/sparseattn.h}
expected_soname=libsparseattn.so.0
CC=${CC:-cc}
CXX=${CXX:-c++}

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

[[ -f $lib ]] || { echo "abi_check: no library at $lib (build first)"; exit 1; }
[[ -f $header ]] || { echo "abi_check: no header at $header"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- 1. exported symbols ------------------------------------------------------
# Documented list: every function declared with SA_API (the name is the last
# identifier before the first '(' on the SA_API line).
grep -E '^[[:space:]]*SA_API[[:space:]]' "$header" \
  | sed -E 's/^[^(]*[^A-Za-z0-9_](sa_[A-Za-z0-9_]+)[[:space:]]*\(.*/\1/' \
  | sort -u > "$tmp/documented"
if ! grep -qvE '^sa_[A-Za-z0-9_]+$' "$tmp/documented" && [[ -s $tmp/documented ]]; then
  pass "header declares $(wc -l < "$tmp/documented") SA_API functions"
else
  fail "could not parse the SA_API declarations of $header:"
  sed 's/^/      /' "$tmp/documented"
fi

# Exported: defined dynamic symbols. Version-script node names (absolute
# symbols such as SPARSEATTN_0) are not symbols a host can call; they are
# listed separately.
nm -D --defined-only "$lib" > "$tmp/nm"
awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' "$tmp/nm" | sort -u > "$tmp/exported"
awk '$2 == "A" { print $3 }' "$tmp/nm" | sort -u > "$tmp/version_nodes"
awk '$2 != "A" && $2 != "T" { print $2, $3 }' "$tmp/nm" > "$tmp/non_text"

if cmp -s "$tmp/documented" "$tmp/exported"; then
  pass "exported symbols == documented functions ($(wc -l < "$tmp/exported"))"
else
  fail "exported symbols differ from the header's SA_API functions"
  comm -23 "$tmp/documented" "$tmp/exported" | sed 's/^/      missing (declared, not exported): /'
  comm -13 "$tmp/documented" "$tmp/exported" | head -50 | sed 's/^/      leaked (exported, not declared): /'
  n_leak=$(comm -13 "$tmp/documented" "$tmp/exported" | wc -l)
  (( n_leak > 50 )) && echo "      ... and $((n_leak - 50)) more leaked"
fi
if [[ -s $tmp/non_text ]]; then
  fail "exported symbols that are not functions:"
  sed 's/^/      /' "$tmp/non_text"
else
  pass "every exported symbol is a function"
fi
if grep -q '^_Z' "$tmp/exported"; then
  fail "C++ (mangled) symbols are exported"
else
  pass "no C++ symbols exported"
fi
if [[ -s $tmp/version_nodes ]]; then
  unversioned=$(awk '$2 != "A" && $3 !~ /@@/ { print $3 }' "$tmp/nm")
  if [[ -n $unversioned ]]; then
    fail "symbols outside the version node(s) $(tr '\n' ' ' < "$tmp/version_nodes"): $unversioned"
  else
    pass "all symbols in version node(s): $(tr '\n' ' ' < "$tmp/version_nodes")"
  fi
fi

# --- 2. soname ----------------------------------------------------------------
soname=$(readelf -d "$lib" | sed -nE 's/.*\(SONAME\).*\[(.*)\].*/\1/p')
if [[ $soname == "$expected_soname" ]]; then
  pass "soname $soname"
else
  fail "soname is '${soname:-<none>}', expected $expected_soname"
fi

# --- 3. the header compiles alone ------------------------------------------------
cat > "$tmp/use_header.c" <<'CEOF'
#include "sparseattn.h"

int sa_abi_check_use(void);
int sa_abi_check_use(void)
{
    sa_context_options c = SA_CONTEXT_OPTIONS_INIT;
    sa_index_options i = SA_INDEX_OPTIONS_INIT;
    sa_select_options s = SA_SELECT_OPTIONS_INIT;
    sa_attend_options a = SA_ATTEND_OPTIONS_INIT;
    sa_evict_options e = SA_EVICT_OPTIONS_INIT;
    sa_tensor t;
    sa_get_api_fn getter = sa_get_api;
    t.rank = SA_MAX_RANK;
    return (int)(c.struct_size + i.struct_size + s.struct_size + a.struct_size +
                 e.struct_size) + t.rank + (getter != 0) + (int)SA_VERSION + SA_ABI_VERSION;
}
CEOF
cp "$tmp/use_header.c" "$tmp/use_header.cpp"
hdr_dir=$(dirname "$header")
c_flags=(-std=c99 -pedantic -Werror -Wall -Wextra -Wdeclaration-after-statement
         -Wstrict-prototypes -Wmissing-prototypes)
if "$CC" "${c_flags[@]}" -I"$hdr_dir" -c "$tmp/use_header.c" -o "$tmp/c.o" 2> "$tmp/c.err"; then
  pass "header compiles as C99: $CC ${c_flags[*]}"
else
  fail "header does not compile as C99 ($CC ${c_flags[*]}):"
  sed 's/^/      /' "$tmp/c.err"
fi
cxx_flags=(-std=c++11 -pedantic -Werror -Wall -Wextra)
if "$CXX" "${cxx_flags[@]}" -I"$hdr_dir" -c "$tmp/use_header.cpp" -o "$tmp/cxx.o" 2> "$tmp/cxx.err"; then
  pass "header compiles as C++11: $CXX ${cxx_flags[*]}"
else
  fail "header does not compile as C++11 ($CXX ${cxx_flags[*]}):"
  sed 's/^/      /' "$tmp/cxx.err"
fi

if (( failures > 0 )); then
  echo "abi_check: $failures check(s) failed for $lib"
  exit 1
fi
echo "abi_check: all checks passed for $lib"
