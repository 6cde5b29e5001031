"""Index.select against brute-force top-K (the union of top_k, window and sinks),
every selector kind, borrowed keys, and the refusals."""
import os
import tempfile
import unittest

import numpy as np

from common import ContextTest, normal, rng, sa
import reference as ref
from weights import write_safetensors

N, H_KV, H_Q, D = 300, 2, 4, 16


class SelectTest(ContextTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        r = rng(30)
        cls.keys = normal(r, N, H_KV, D)
        cls.q = normal(r, 3, H_Q, D)

    def index(self, kind="exact", dtype="f32", keys=None, **opts):
        try:
            ix = sa.Index(self.ctx, H_KV, D, kind, dtype, **opts)
        except sa.Unsupported as e:
            # Only a kind the library says its build left out may be skipped (the lean build,
            # -Dhnswlib=disabled); any other refusal fails the test.
            if "this build of sparseattn has no" not in e.message:
                raise
            self.skipTest(e.message)
        ix.append(self.keys if keys is None else keys)
        self.addCleanup(ix.close)
        return ix

    def check_all(self, out, keys, q, top_k, window, sinks, **kw):
        mass_target = kw.pop("mass_target", 0.0)
        positions = kw.pop("positions", np.arange(keys.shape[0]))
        for i, head, exp in ref.select_rows(keys, positions, q, top_k, window, sinks, **kw):
            ref.check_selection(self, out[i, head], exp, top_k, mass_target=mass_target)

    def test_exact_is_the_brute_force_top_k_with_window_and_sinks(self):
        for dtype in ("f32", "f16", "bf16"):
            with self.subTest(dtype=dtype):
                ix = self.index(dtype=dtype)
                self.assertEqual(len(ix), N)
                out = ix.select(self.q, top_k=16, window=8, sinks=4)
                self.assertEqual((out.dtype, out.shape), (np.int32, (3, H_KV, 28)))
                self.check_all(out, ref.rounded(self.keys, dtype), self.q, 16, 8, 4)

    def test_library_defaults_apply(self):
        out = self.index().select(self.q)
        self.assertEqual(out.shape, (3, H_KV, 4 + 64 + 64))  # sinks 4, window 64, top_k 64
        self.check_all(out, self.keys, self.q, 64, 64, 4)

    def test_f16_and_bf16_queries(self):
        ix = self.index()
        for dtype in ("f16", "bf16"):
            q = ref.stored(self.q, dtype)
            out = ix.select(sa.bf16(q) if dtype == "bf16" else q, top_k=8, window=4, sinks=2)
            self.check_all(out, self.keys, ref.rounded(self.q, dtype), 8, 4, 2)

    def test_query_positions_per_query_head_and_scale(self):
        qpos = np.array([50, 120, 299])
        out = self.index().select(self.q, top_k=10, window=5, sinks=3, per_query_head=True,
                                  query_positions=qpos, scale=0.7)
        self.assertEqual(out.shape, (3, H_Q, 18))
        self.check_all(out, self.keys, self.q, 10, 5, 3, per_query_head=True, scale=0.7,
                       query_positions=qpos)

    def test_segments(self):
        key_seg = (np.arange(N) // 100).astype(np.int32)  # three packed sequences
        q_seg = np.array([0, 2, 1], np.int32)
        qpos = np.array([99, 299, 199])
        out = self.index().select(self.q, top_k=12, window=4, sinks=2, query_positions=qpos,
                                  query_segments=q_seg, key_segments=key_seg)
        self.check_all(out, self.keys, self.q, 12, 4, 2, query_positions=qpos,
                       query_segments=q_seg, key_segments=key_seg)
        for i in range(3):
            chosen = out[i][out[i] >= 0]
            self.assertTrue(np.all(key_seg[chosen] == q_seg[i]))

    def test_mass_target_stops_at_the_target(self):
        target = 0.5
        out = self.index().select(self.q, top_k=200, window=2, sinks=1, mass_target=target)
        for i, head, exp in ref.select_rows(self.keys, np.arange(N), self.q, 200, 2, 1):
            chosen = ref.check_selection(self, out[i, head], exp, 200, mass_target=target)
            scored = sorted(chosen - exp["forced"], key=lambda s: exp["score"][s])
            mass = sum(exp["score"][s] for s in chosen) / exp["group"]
            self.assertGreaterEqual(mass, target - 1e-4)
            self.assertLess(len(scored), 200)
            # Minimal: without its lowest-scoring slot the set would fall short.
            self.assertLess(mass - exp["score"][scored[0]] / exp["group"], target + 1e-4)

    def test_wider_out_is_padded(self):
        out = np.full((3, H_KV, 40), 77, np.int32)
        res = self.index().select(self.q, top_k=5, window=3, sinks=1, out=out)
        self.assertIs(res, out)
        self.assertTrue(np.all(out[:, :, 9:] == -1))
        self.check_all(out, self.keys, self.q, 5, 3, 1)

    def test_page_and_hnsw_are_exact_on_small_caches(self):
        # Page with refine rescores the best pages holding top_k + 2048 keys: all of them
        # here. HNSW scores every key when a query sees at most 2 * ef_search of them.
        exact = self.index().select(self.q, top_k=16, window=8, sinks=4)
        for kind, opts in (("page", dict(page_size=8)), ("hnsw", dict(hnsw_m=6, ef_search=200))):
            with self.subTest(kind=kind):
                out = self.index(kind, **opts).select(self.q, top_k=16, window=8, sinks=4)
                np.testing.assert_array_equal(out, exact)

    def test_approximate_selectors_give_valid_lists(self):
        for kind, opts in (("page", dict(page_size=8, refine=0)),
                           ("lsh", dict(lsh_rounds=4, lsh_bits=6, lsh_probes=1, lsh_seed=7)),
                           ("hnsw", dict(hnsw_m=4, ef_construction=16, ef_search=8))):
            with self.subTest(kind=kind):
                ix = self.index(kind, capacity=N, **opts)
                self.assertEqual(ix.kind, sa.SelectorKind[kind.upper()])
                out = ix.select(self.q, top_k=16, window=8, sinks=4)
                for i, head, exp in ref.select_rows(self.keys, np.arange(N), self.q, 16, 8, 4):
                    row = out[i, head]
                    chosen = set(row[row >= 0].tolist())
                    self.assertTrue(exp["forced"] <= chosen <= exp["visible"])
                    self.assertLessEqual(len(chosen - exp["forced"]), 16)
                    self.assertTrue(np.all(np.diff(row[row >= 0]) > 0))

    def test_borrowed_keys_select_like_an_owning_index(self):
        owning = self.index()
        borrowing = self.index(borrow_keys=True)
        self.assertTrue(borrowing.borrow_keys)
        expected = owning.select(self.q, top_k=16, window=8, sinks=4)
        got = borrowing.select(self.q, top_k=16, window=8, sinks=4, keys=self.keys)
        np.testing.assert_array_equal(got, expected)
        # A head-major cache, read in place through its strides.
        head_major = np.ascontiguousarray(self.keys.transpose(1, 0, 2))
        got = borrowing.select(self.q, top_k=16, window=8, sinks=4,
                               keys=head_major.transpose(1, 0, 2))
        np.testing.assert_array_equal(got, expected)
        with self.assertRaises(sa.NullPointer) as cm:
            borrowing.select(self.q, top_k=16)
        self.assertIn("keys", cm.exception.message)
        with self.assertRaises(sa.ShapeError):
            borrowing.select(self.q, top_k=16, keys=self.keys[:10])

    def test_learned_selector_against_projected_scores(self):
        r = rng(31)
        d_search = 8
        wq = normal(r, H_KV, d_search, D)   # one query projection per KV head
        wk = normal(r, d_search, D)         # one shared key projection
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "learned.safetensors")
            write_safetensors(path, {"layers.1.q_proj": wq, "layers.1.k_proj": wk})
            ix = self.index("learned", weights_path=path, layer=1, rescore=0)
        out = ix.select(self.q, top_k=12, window=4, sinks=2)
        group = H_Q // H_KV
        pq = np.einsum("hsd,ihd->ihs", wq[np.arange(H_Q) // group].astype(np.float64),
                       self.q.astype(np.float64))
        pk = np.einsum("sd,nhd->nhs", wk.astype(np.float64), self.keys.astype(np.float64))
        self.check_all(out, pk, pq, 12, 4, 2, scale=1 / np.sqrt(D))

    def test_indexer_selector_against_its_formula(self):
        r = rng(32)
        n_heads, d_index = 3, 8
        qp = normal(r, n_heads, d_index, H_Q * D)
        hw = normal(r, n_heads, H_Q * D)
        kp = normal(r, d_index, H_KV * D)
        bias = normal(r, n_heads)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "indexer.safetensors")
            write_safetensors(path, {"layers.0.indexer.q_proj": qp,
                                     "layers.0.indexer.head_weights": hw,
                                     "layers.0.indexer.k_proj": kp,
                                     "layers.0.indexer.head_bias": bias})
            # rescore 0: the one-stage list, which the formula below ranks (the default second
            # stage rescores the best 12 x top_k exactly, per KV head)
            ix = self.index("indexer", weights_path=path, rescore=0)
        out = ix.select(self.q, top_k=10, window=4, sinks=2)
        x = self.q.reshape(3, -1).astype(np.float64)
        z = self.keys.reshape(N, -1).astype(np.float64) @ kp.astype(np.float64).T  # [N, d_index]
        u = np.einsum("jed,td->tje", qp.astype(np.float64), x)                      # [t, j, e]
        w = x @ hw.astype(np.float64).T + bias                                       # [t, j]
        score = np.einsum("tj,tjs->ts", w, np.maximum(0, np.einsum("tje,se->tjs", u, z)))
        for i in range(3):
            p = N - 3 + i
            exp = {"visible": set(range(p + 1)),
                   "forced": set(range(2)) | set(range(p - 3, p + 1)),
                   "score": np.where(np.arange(N) <= p, score[i], -np.inf)}
            for head in range(H_KV):  # one list per query, in every row
                ref.check_selection(self, out[i, head], exp, 10)
            np.testing.assert_array_equal(out[i, 0], out[i, 1])

    def test_weights_errors(self):
        with self.assertRaises(sa.InvalidArgument):
            sa.Index(self.ctx, H_KV, D, "learned", weights_path="/nonexistent.safetensors")
        with self.assertRaises(sa.NullPointer):
            sa.Index(self.ctx, H_KV, D, "learned")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bad.safetensors")
            with open(path, "wb") as f:
                f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
            with self.assertRaises(sa.FormatError) as cm:
                sa.Index(self.ctx, H_KV, D, "learned", weights_path=path)
            self.assertTrue(cm.exception.message)

    def test_refusals_leave_out_untouched(self):
        ix = self.index()
        out = np.full((3, H_KV, 28), 3, np.int32)
        cases = [
            (sa.InvalidArgument, dict(top_k=0)),
            (sa.InvalidArgument, dict(top_k=2 ** 31)),             # does not fit int32
            (sa.ShapeError, dict(queries=self.q[:, :3])),
            (sa.ShapeError, dict(queries=self.q[:, :, :8])),
            (sa.ShapeError, dict(out=np.zeros((3, H_KV, 27), np.int32))),
            (sa.DTypeError, dict(out=np.zeros((3, H_KV, 28), np.int64))),
            (sa.DTypeError, dict(queries=self.q.astype(np.int32))),
            (sa.ShapeError, dict(query_positions=[1, 2, 3, 4])),
            (sa.DTypeError, dict(query_positions=[1.5, 2, 3])),
            (sa.InvalidArgument, dict(query_segments=[0, 0, 0])),
            (sa.ShapeError, dict(query_segments=[0, 0, 0], key_segments=[0] * 5)),
        ]
        for exc, change in cases:
            with self.subTest(change=sorted(change)):
                args = dict(queries=self.q, top_k=16, window=8, sinks=4, out=out)
                args.update(change)
                with self.assertRaises(exc) as cm:
                    ix.select(args.pop("queries"), **args)
                self.assertTrue(cm.exception.message)
                self.assertTrue(np.all(out == 3))
        with self.assertRaises(sa.InvalidArgument):
            sa.Index(self.ctx, H_KV, D, "bogus")
        with self.assertRaises(sa.DTypeError):
            sa.Index(self.ctx, H_KV, D, dtype="i32")
        with self.assertRaises(sa.InvalidArgument):
            sa.Index(self.ctx, H_KV, D, "lsh", lsh_rounds=0)


if __name__ == "__main__":
    unittest.main()
