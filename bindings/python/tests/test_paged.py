"""attend_paged against contiguous attention, select_batch against per-sequence select."""
import unittest

import numpy as np

from common import ContextTest, normal, rng, sa
import reference as ref

H_KV, H_Q, D, PAGE = 2, 4, 16, 8
SEL = dict(top_k=10, window=5, sinks=2)


class PagedTest(ContextTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        r = rng(50)
        cls.lens = np.array([37, 0, 61], np.int32)
        cls.num_pages = 20
        cls.k_pages = normal(r, cls.num_pages, PAGE, H_KV, D)
        cls.v_pages = normal(r, cls.num_pages, PAGE, H_KV, D)
        order = r.permutation(cls.num_pages)  # pages in any order
        max_pages = 8
        cls.table = np.zeros((3, max_pages), np.int32)
        cls.table[0, :5] = order[:5]
        cls.table[2, :8] = order[5:13]
        cls.table[1] = 99  # never read: sequence 1 is empty
        cls.kv = sa.PagedKV(cls.k_pages, cls.v_pages, cls.table, cls.lens)

    def slots(self, b):
        """Physical slots of sequence b's tokens, in token order."""
        t = np.arange(self.lens[b])
        return self.table[b, t // PAGE] * PAGE + t % PAGE

    def contiguous(self, b):
        s = self.slots(b)
        flat_k = self.k_pages.reshape(-1, H_KV, D)
        flat_v = self.v_pages.reshape(-1, H_KV, D)
        return flat_k[s], flat_v[s]

    def test_paged_kv_describes_the_arrays(self):
        self.assertEqual((self.kv.page_size, self.kv.num_slots), (PAGE, 160))
        s = self.kv.struct()
        self.assertEqual(s.k.data, self.k_pages.ctypes.data)
        self.assertEqual(s.page_table.data, self.table.ctypes.data)
        self.assertEqual(s.slot_positions.rank, 0)  # absent

    def test_dense_one_query_per_sequence(self):
        q = normal(rng(51), 3, H_Q, D)
        out, lse = self.ctx.attend_paged(q, self.kv, lse=True)
        for b in (0, 2):
            k, v = self.contiguous(b)
            eo, el, _ = ref.attention(q[b:b + 1], k, v)
            np.testing.assert_allclose(out[b], eo[0], rtol=2e-5, atol=2e-5)
            np.testing.assert_allclose(lse[b], el[0], rtol=1e-5, atol=1e-5)
            # and the library's own contiguous attention
            np.testing.assert_allclose(out[b], self.ctx.attend(q[b:b + 1], k, v)[0], rtol=1e-5,
                                       atol=1e-6)
        self.assertTrue(np.all(out[1] == 0) and np.all(np.isneginf(lse[1])))  # empty sequence

    def test_query_starts_causal_and_slot_mass(self):
        q = normal(rng(52), 7, H_Q, D)
        starts = np.array([0, 3, 3, 7], np.int64)  # 3, 0 and 4 queries
        mass = np.zeros((H_KV, self.kv.num_slots), np.float32)
        out = self.ctx.attend_paged(q, self.kv, query_starts=starts, causal=True, slot_mass=mass)
        expected_mass = np.zeros_like(mass, dtype=np.float64)
        for b in (0, 2):
            k, v = self.contiguous(b)
            rows = slice(starts[b], starts[b + 1])
            eo, _, em = ref.attention(q[rows], k, v, causal=True)
            np.testing.assert_allclose(out[rows], eo, rtol=2e-5, atol=2e-5)
            expected_mass[:, self.slots(b)] += em
        np.testing.assert_allclose(mass, expected_mass, rtol=1e-5, atol=1e-6)

    def test_select_batch_equals_per_sequence_select(self):
        r = rng(53)
        q = normal(r, 3, H_Q, D)
        indexes = []
        for b in range(3):
            ix = sa.Index(self.ctx, H_KV, D, dtype="f32")
            self.addCleanup(ix.close)
            if self.lens[b]:
                ix.append(self.contiguous(b)[0])
            indexes.append(ix)
        for b in (0, 2):  # sequence 1 has no keys to select
            self.assertEqual(len(indexes[b]), self.lens[b])
        local = sa.select_batch([indexes[0], indexes[2]], q[[0, 2]], **SEL)
        physical = sa.select_batch(indexes, q, kv=self.kv, **SEL)
        self.assertEqual(physical.shape, (3, H_KV, 17))
        for j, b in enumerate((0, 2)):
            own = indexes[b].select(q[b:b + 1], **SEL)[0]
            np.testing.assert_array_equal(local[j], own)
            mapped = np.where(own >= 0, self.slots(b)[np.maximum(own, 0)], -1)
            np.testing.assert_array_equal(physical[b], mapped)
        self.assertTrue(np.all(physical[1] == -1))
        # The physical selection feeds attend_paged; compare with contiguous sparse attention.
        out = self.ctx.attend_paged(q, self.kv, physical)
        for b in (0, 2):
            k, v = self.contiguous(b)
            own = indexes[b].select(q[b:b + 1], **SEL)
            np.testing.assert_allclose(out[b], self.ctx.attend(q[b:b + 1], k, v, own)[0],
                                       rtol=1e-5, atol=1e-6)
            eo, _, _ = ref.attention(q[b:b + 1], k, v, own)
            np.testing.assert_allclose(out[b], eo[0], rtol=2e-5, atol=2e-5)

    def test_select_batch_with_several_queries_and_borrowed_keys(self):
        r = rng(54)
        q = normal(r, 5, H_Q, D)
        starts = np.array([0, 2, 2, 5], np.int32)
        qpos = np.array([20, 36, 40, 50, 60])
        indexes = []
        for b in range(3):
            ix = sa.Index(self.ctx, H_KV, D, dtype="f32", borrow_keys=True)
            self.addCleanup(ix.close)
            if self.lens[b]:
                ix.append(self.contiguous(b)[0])
            indexes.append(ix)
        out = sa.select_batch(indexes, q, starts, kv=self.kv, query_positions=qpos, **SEL)
        for b in (0, 2):
            rows = slice(starts[b], starts[b + 1])
            k = self.contiguous(b)[0]
            own = indexes[b].select(q[rows], query_positions=qpos[rows], keys=k, **SEL)
            mapped = np.where(own >= 0, self.slots(b)[np.maximum(own, 0)], -1)
            np.testing.assert_array_equal(out[rows], mapped)

    def test_slot_positions_and_cells(self):
        # llama.cpp's cells: k/v [n, H_kv, D], pages of one row; slot_positions give
        # each cell's position (-1 empty) and causal needs query positions.
        r = rng(55)
        n = 30
        k, v = normal(r, n, H_KV, D), normal(r, n, H_KV, D)
        positions = r.permutation(n).astype(np.int64)
        positions[[3, 11]] = -1
        table = r.permutation(n).astype(np.int32)[None, :]  # one sequence, cells in any order
        kv = sa.PagedKV(k, v, table, np.array([n], np.int64), positions)
        self.assertEqual((kv.page_size, kv.num_slots), (1, n))
        q = normal(r, 2, H_Q, D)
        qpos = np.array([12, 29])
        out = self.ctx.attend_paged(q, kv, query_starts=np.array([0, 2], np.int32), causal=True,
                                    query_positions=qpos)
        eo, _, _ = ref.attention(q, k, v, causal=True, query_positions=qpos,
                                 key_positions=positions)
        np.testing.assert_allclose(out, eo, rtol=2e-5, atol=2e-5)
        with self.assertRaises(sa.SparseAttnError):  # positions required with slot_positions
            self.ctx.attend_paged(q, kv, query_starts=np.array([0, 2], np.int32), causal=True)

    def test_refusals(self):
        q = normal(rng(56), 3, H_Q, D)
        out = np.full((3, H_Q, D), 4.0, np.float32)
        bad_table = self.table.copy()
        bad_table[0, 0] = self.num_pages
        long = self.lens.copy()
        long[0] = 8 * PAGE + 1
        cases = [
            (sa.OutOfRange, sa.PagedKV(self.k_pages, self.v_pages, bad_table, self.lens)),
            (sa.SparseAttnError, sa.PagedKV(self.k_pages, self.v_pages, self.table, long)),
            (sa.ShapeError, sa.PagedKV(self.k_pages, self.v_pages[:, :, :, :8], self.table,
                                       self.lens)),
        ]
        for exc, kv in cases:
            with self.subTest(kv=kv):
                with self.assertRaises(exc) as cm:
                    self.ctx.attend_paged(q, kv, out=out)
                self.assertTrue(cm.exception.message)
                self.assertTrue(np.all(out == 4.0))
        with self.assertRaises(sa.OutOfRange):
            self.ctx.attend_paged(q, self.kv, np.full((3, H_KV, 2), 160, np.int32), out=out)
        with self.assertRaises(sa.InvalidArgument):
            self.ctx.attend_paged(q, (self.k_pages, self.v_pages))
        with self.assertRaises(sa.InvalidArgument):
            sa.select_batch([], q)
        ix = sa.Index(self.ctx, H_KV, D)
        self.addCleanup(ix.close)
        with self.assertRaises(sa.ShapeError):  # 3 queries for 1 sequence
            sa.select_batch([ix], q)
        self.assertTrue(np.all(out == 4.0))


if __name__ == "__main__":
    unittest.main()
