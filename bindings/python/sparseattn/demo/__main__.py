"""python3 -m sparseattn.demo [LIBRARY] [-n KEYS] [-s STEPS] [-k TOP_K] [-t THREADS] [-v]
                          [--selector exact|page|lsh|hnsw] [--budget SLOTS]

The C demo examples/demo_dlopen.c through the Python binding: the same
synthetic workload (bit for bit), options, defaults and printed figures. A
decode loop over a long cache (default 128K keys, H_q=32, H_kv=8, D=128, f16)
compares sparse attention (selection + gathered attention) with dense
attention over every key.
  LIBRARY: path of libsparseattn.so.0; default $SPARSEATTN_LIB, else the
           package's own search (next to the package, then the loader's).
  --selector: how keys are chosen; default page (Quest-style page bounds),
           exact is the top-K oracle.
  --budget: a fixed-budget cache of SLOTS entries instead: the KEYS-token
           prompt (KEYS >= SLOTS) is compressed to SLOTS in one call, then
           STEPS decode steps (default 4096) each evict one slot by accumulated
           attention and refill it; memory is printed as it goes.
"""
import sys

import sparseattn as sa

from .budget import run_budget
from .decode import run_decode

SELECTORS = ("exact", "page", "lsh", "hnsw")  # the kinds that need no weights file
USAGE = ("usage: python3 -m sparseattn.demo [LIBRARY] [-n KEYS] [-s STEPS] [-k TOP_K] "
         "[-t THREADS] [-v]\n          [--selector exact|page|lsh|hnsw] [--budget SLOTS]")


def usage():
    print(USAGE, file=sys.stderr)
    return 2


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    n_prefill, budget, steps, top_k, threads, verbose = 131072, 0, -1, -1, 0, False
    window, sinks = 64, 4
    selector, lib_path = "page", None
    i = 0
    try:
        while i < len(argv):
            a = argv[i]
            if not a.startswith("-") and lib_path is None:
                lib_path = a
            elif a == "-v":
                verbose = True
            elif a == "--selector" and i + 1 < len(argv):
                i += 1
                if argv[i] not in SELECTORS:
                    return usage()
                selector = argv[i]
            elif a in ("--budget", "-n", "-s", "-k", "-t") and i + 1 < len(argv):
                i += 1
                value = int(argv[i])
                if a == "--budget" and value < 1:
                    return usage()
                if a == "--budget":
                    budget = value
                elif a == "-n":
                    n_prefill = value
                elif a == "-s":
                    steps = value
                elif a == "-k":
                    top_k = value
                else:
                    threads = value
            else:
                return usage()
            i += 1
    except ValueError:
        return usage()
    if steps < 0:
        steps = 4096 if budget else 32
    if top_k < 0:
        top_k = 256 if budget else 2048
    if (n_prefill < 256 or steps < 1 or top_k < 1 or threads < 0 or
            (budget and (budget < sinks + window + 1 or budget > n_prefill))):
        return usage()

    try:
        if lib_path is not None:
            sa.load_library(lib_path)
        with sa.Context(threads=threads) as ctx:
            print(f"sparseattn {sa.version_string()} ({sa.library_path()}), isa "
                  f"{sa.isa_name(ctx.isa)}, {ctx.threads} thread(s)")
            if budget:
                run_budget(ctx, selector, n_prefill, steps, budget, top_k, window, sinks, verbose)
            else:
                run_decode(ctx, selector, n_prefill, steps, top_k, window, sinks, verbose)
    except sa.SparseAttnError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
