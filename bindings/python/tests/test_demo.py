"""The demo's workload equals the C demo's (examples/demo_dlopen.c) byte for byte, and
the demo runs end to end on a small cache."""
import contextlib
import hashlib
import io
import unittest

import numpy as np

from common import sa
from sparseattn.demo import workload as wl
from sparseattn.demo.__main__ import main

# sha256 of what a C driver around examples/demo_dlopen.c's workload_init, make_token
# and make_query wrote for the sequence in test_workload_matches_the_c_demo: 1200 prompt
# tokens' K then V (f16), the warm-up query, then 3 steps of (K, V, query), then the
# topic of each of the 1210 tokens (i32).
C_DEMO_DIGEST = "8401ff940eed6919f43efd16567c4bc06dfae54b3036c362aed025c739eb14c5"


class DemoTest(unittest.TestCase):
    def test_splitmix64_first_outputs(self):
        # splitmix64 from the C demo's seed, computed here with Python integers.
        state, expected = 0x5A5A2024, []
        for _ in range(5):
            state = (state + 0x9E3779B97F4A7C15) % 2 ** 64
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2 ** 64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2 ** 64
            expected.append(z ^ (z >> 31))
        r = wl.SplitMix64()
        self.assertEqual([int(x) for x in r.u64(3)] + [r.integer(), r.integer()], expected)

    def test_workload_matches_the_c_demo(self):
        n_prefill, n_total = 1200, 1210
        w = wl.Workload(n_prefill, n_total)
        k = np.empty((n_total, wl.H_KV, wl.D), np.float16)
        v = np.empty_like(k)
        w.fill(0, n_prefill, k, v)
        h = hashlib.sha256()
        h.update(k[:n_prefill].tobytes())
        h.update(v[:n_prefill].tobytes())
        h.update(w.make_query(n_prefill - 1, 0).tobytes())
        for s in range(3):
            pos = n_prefill + s
            w.make_tokens(pos, pos + 1, k[pos:pos + 1], v[pos:pos + 1])
            h.update(k[pos].tobytes())
            h.update(v[pos].tobytes())
            h.update(w.make_query(pos, s * 7).tobytes())
        h.update(w.topic.astype("<i4").tobytes())
        self.assertEqual(h.hexdigest(), C_DEMO_DIGEST)

    def run_demo(self, *args):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(list(args))
        return rc, out.getvalue()

    def test_decode_mode_runs(self):
        # The library named first, as the C demo takes it (the one already loaded).
        rc, text = self.run_demo(sa.library_path(), "-n", "512", "-s", "2", "-k", "32", "-t", "1",
                                 "--selector", "exact")
        self.assertEqual(rc, 0, text)
        self.assertIn("decode: 2 steps, exact selector, top_k=32 window=64 sinks=4", text)
        mass = float(text.split("selected keys: mean ")[1].split(",")[0])
        self.assertGreater(mass, 0.5)

    def test_budget_mode_runs(self):
        rc, text = self.run_demo("--budget", "200", "-n", "400", "-s", "8", "-k", "16", "-t", "1")
        self.assertEqual(rc, 0, text)
        self.assertIn("compressed to 200 slots in one sa_cache_evict call (200 freed)", text)

    def test_bad_arguments_print_usage(self):
        for args in (["-n", "10"], ["--selector", "learned"], ["--budget", "0"], ["-x"],
                     ["-n", "many"], ["--budget", "5000", "-n", "1000"]):
            rc, text = self.run_demo(*args)
            self.assertEqual(rc, 2, args)
            self.assertIn("usage:", text)


if __name__ == "__main__":
    unittest.main()
