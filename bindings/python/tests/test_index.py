"""Index lifecycle: append, update, size, truncate, clone, close, threads."""
import threading
import unittest

import numpy as np

from common import ContextTest, normal, rng, sa
import reference as ref

H_KV, H_Q, D = 2, 4, 16
SEL = dict(top_k=12, window=6, sinks=3)


class IndexTest(ContextTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        r = rng(40)
        cls.keys = normal(r, 400, H_KV, D)
        cls.q = normal(r, 2, H_Q, D)

    def build(self, *chunks, kind="exact", **opts):
        ix = sa.Index(self.ctx, H_KV, D, kind, "f32", **opts)
        for chunk in chunks:
            ix.append(chunk)
        self.addCleanup(ix.close)
        return ix

    def test_update_refills_slots_with_new_positions(self):
        ix = self.build(self.keys[:300])
        new = normal(rng(41), 3, H_KV, D)
        slots = [5, 17, 200]
        ix.update(slots, new, positions=[300, 301, 302])
        self.assertEqual(len(ix), 300)
        keys = self.keys[:300].copy()
        keys[slots] = new
        positions = np.arange(300)
        positions[slots] = [300, 301, 302]
        out = ix.select(self.q, **SEL)
        for i, head, exp in ref.select_rows(keys, positions, self.q, **SEL):
            ref.check_selection(self, out[i, head], exp, SEL["top_k"])
        # positions=None: the next positions in order (303, 304).
        ix.update([8, 9], new[:2])
        positions[[8, 9]] = [303, 304]
        keys[[8, 9]] = new[:2]
        out = ix.select(self.q, **SEL)
        for i, head, exp in ref.select_rows(keys, positions, self.q, **SEL):
            ref.check_selection(self, out[i, head], exp, SEL["top_k"])

    def test_update_refusals(self):
        ix = self.build(self.keys[:50])
        with self.assertRaises(sa.ShapeError):
            ix.update([1, 2], self.keys[:3])
        with self.assertRaises(sa.SparseAttnError) as cm:
            ix.update([1, 1], self.keys[:2])
        self.assertTrue(cm.exception.message)
        with self.assertRaises(sa.OutOfRange):
            ix.update([50], self.keys[:1])
        with self.assertRaises(sa.ShapeError):
            ix.update([1], self.keys[:1], positions=[1, 2])
        with self.assertRaises(sa.ShapeError):
            ix.append(self.keys[:4, :, :8])
        with self.assertRaises(sa.DTypeError):
            ix.append(self.keys[:4].astype(np.int32))
        self.assertEqual(len(ix), 50)

    def test_truncate_selects_like_an_index_built_without_the_dropped_slots(self):
        for kind, opts in (("exact", {}), ("page", dict(page_size=16, refine=0))):
            with self.subTest(kind=kind):
                a = self.build(self.keys[:200], self.keys[200:300], kind=kind, **opts)
                a.truncate(250)
                self.assertEqual(len(a), 250)
                b = self.build(self.keys[:200], self.keys[200:250], kind=kind, **opts)
                np.testing.assert_array_equal(a.select(self.q, **SEL), b.select(self.q, **SEL))
                a.truncate(1000)  # nothing held there: unchanged
                self.assertEqual(len(a), 250)
                a.append(self.keys[300:340])
                b.append(self.keys[300:340])
                np.testing.assert_array_equal(a.select(self.q, **SEL), b.select(self.q, **SEL))
        with self.assertRaises(sa.InvalidArgument):
            a.truncate(-1)
        with self.assertRaises(sa.InvalidArgument):
            a.truncate(1.5)
        borrowing = self.build(self.keys[:20], borrow_keys=True)
        with self.assertRaises(sa.Unsupported):
            borrowing.truncate(10)
        with self.assertRaises(sa.Unsupported):
            borrowing.clone()

    def test_clone_is_independent(self):
        a = self.build(self.keys[:300])
        c = a.clone()
        self.addCleanup(c.close)
        self.assertEqual((len(c), c.kind, c.num_kv_heads, c.head_dim, c.dtype),
                         (300, a.kind, H_KV, D, a.dtype))
        self.assertIs(c.context, a.context)
        np.testing.assert_array_equal(c.select(self.q, **SEL), a.select(self.q, **SEL))
        c.append(self.keys[300:400])
        a.update([0, 1], self.keys[390:392], positions=[300, 301])
        self.assertEqual((len(a), len(c)), (300, 400))
        fresh = self.build(self.keys[:400])
        np.testing.assert_array_equal(c.select(self.q, **SEL), fresh.select(self.q, **SEL))
        a.close()
        self.assertEqual(len(c), 400)  # the copy outlives the original

    def test_closed_index_refuses_calls(self):
        ix = sa.Index(self.ctx, H_KV, D)
        with ix:
            self.assertEqual(len(ix), 0)
        self.assertTrue(ix.closed)
        ix.close()
        for call in (lambda: len(ix), lambda: ix.append(self.keys[:2]),
                     lambda: ix.select(self.q), lambda: ix.clone(), lambda: ix.truncate(0)):
            with self.assertRaises(sa.InvalidArgument) as cm:
                call()
            self.assertIn("closed", cm.exception.message)

    def test_threads_share_an_index(self):
        ix = self.build(self.keys[:300])
        expected = ix.select(self.q, **SEL)
        results, errors = [], []

        def reader():
            try:
                for _ in range(10):
                    results.append(ix.select(self.q, **SEL))
            except Exception as e:  # reported below
                errors.append(e)

        def writer():
            try:
                for _ in range(5):
                    c = ix.clone()
                    c.append(self.keys[300:310])
                    c.close()
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        threads.append(threading.Thread(target=writer))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 30)
        for r in results:
            np.testing.assert_array_equal(r, expected)

    def test_append_waits_for_selections(self):
        ix = self.build(self.keys[:100])
        done = []

        def grow():
            for n in range(100, 400, 10):
                ix.append(self.keys[n:n + 10])
            done.append(True)

        t = threading.Thread(target=grow)
        t.start()
        while not done:
            out = ix.select(self.q, **SEL)  # never sees a half-appended index
            self.assertTrue(np.all(np.diff(np.where(out >= 0, out, 10 ** 6), axis=-1) > 0))
        t.join()
        self.assertEqual(len(ix), 400)


if __name__ == "__main__":
    unittest.main()
