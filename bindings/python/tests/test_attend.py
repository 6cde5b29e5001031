"""Context.attend against float64 numpy attention."""
import unittest

import numpy as np

from common import ContextTest, normal, rng, sa
import reference as ref

TOL = {"f32": 2e-5, "f16": 2e-4, "bf16": 2e-4}  # f32 accumulation against float64


class AttendTest(ContextTest):
    def data(self, seed, n_q=3, h_q=8, h_kv=2, d=32, n_kv=70, dtype="f32"):
        r = rng(seed)
        q, k, v = normal(r, n_q, h_q, d), normal(r, n_kv, h_kv, d), normal(r, n_kv, h_kv, d)
        # Inputs as stored in dtype, and their exact values for the reference.
        return ([ref.stored(x, dtype) for x in (q, k, v)],
                [ref.rounded(x, dtype) for x in (q, k, v)])

    def as_input(self, x, dtype):
        return sa.bf16(x) if dtype == "bf16" else x

    def test_dense_gqa_each_dtype_with_lse(self):
        for dtype in ("f32", "f16", "bf16"):
            with self.subTest(dtype=dtype):
                (q, k, v), (qr, kr, vr) = self.data(10, dtype=dtype)
                out, lse = self.ctx.attend(*(self.as_input(x, dtype) for x in (q, k, v)), lse=True)
                eo, el, _ = ref.attention(qr, kr, vr)
                self.assertEqual((out.dtype, out.shape, lse.shape),
                                 (np.float32, (3, 8, 32), (3, 8)))
                np.testing.assert_allclose(out, eo, rtol=TOL[dtype], atol=TOL[dtype])
                np.testing.assert_allclose(lse, el, rtol=1e-5, atol=1e-5)

    def test_f32_queries_over_half_keys_and_half_outputs(self):
        (_, k, v), (qr, kr, vr) = self.data(11, dtype="f16")
        q32 = qr.astype(np.float32)
        eo, _, _ = ref.attention(qr, kr, vr)
        out = self.ctx.attend(q32, k, v)
        np.testing.assert_allclose(out, eo, rtol=2e-4, atol=2e-4)
        (q, k, v), (qr, kr, vr) = self.data(12, dtype="f16")
        out16 = self.ctx.attend(q, k, v, out_dtype="f16")
        self.assertEqual(out16.dtype, np.float16)
        eo, _, _ = ref.attention(qr, kr, vr)
        np.testing.assert_allclose(out16.astype(np.float64), eo, rtol=2e-3, atol=2e-3)
        (q, k, v), (qr, kr, vr) = self.data(13, dtype="bf16")
        bits = self.ctx.attend(sa.bf16(q), sa.bf16(k), sa.bf16(v), out_dtype="bf16")
        self.assertEqual(bits.dtype, np.uint16)
        eo, _, _ = ref.attention(qr, kr, vr)
        np.testing.assert_allclose(ref.from_bf16_bits(bits), eo, rtol=1e-2, atol=1e-2)

    def test_sparse_per_kv_head_and_per_query_head(self):
        (q, k, v), (qr, kr, vr) = self.data(14)
        r = rng(15)
        for heads in (2, 8):
            with self.subTest(heads=heads):
                idx = r.integers(-1, 70, size=(3, heads, 20)).astype(np.int32)
                idx[0, 0, :3] = 5  # a row listed three times counts three times
                out, lse = self.ctx.attend(q, k, v, idx, lse=True)
                eo, el, _ = ref.attention(qr, kr, vr, idx)
                np.testing.assert_allclose(out, eo, rtol=2e-5, atol=2e-5)
                np.testing.assert_allclose(lse, el, rtol=1e-5, atol=1e-5)

    def test_causal_with_default_and_given_positions(self):
        (q, k, v), (qr, kr, vr) = self.data(16, n_q=5, n_kv=40)
        out = self.ctx.attend(q, k, v, causal=True)
        eo, _, _ = ref.attention(qr, kr, vr, causal=True)
        np.testing.assert_allclose(out, eo, rtol=2e-5, atol=2e-5)
        qpos = np.array([0, 3, 10, 39, 20])
        kpos = rng(17).permutation(40)
        kpos[7] = -1  # an empty row: never attended
        out, lse = self.ctx.attend(q, k, v, causal=True, query_positions=qpos,
                                   key_positions=kpos, scale=0.3, lse=True)
        eo, el, _ = ref.attention(qr, kr, vr, causal=True, query_positions=qpos,
                                  key_positions=kpos, scale=0.3)
        np.testing.assert_allclose(out, eo, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(lse, el, rtol=1e-5, atol=1e-5)

    def test_a_query_that_sees_nothing_gets_zero_and_minus_inf(self):
        (q, k, v), _ = self.data(18, n_q=1)
        idx = np.full((1, 2, 4), -1, np.int32)
        out, lse = self.ctx.attend(q, k, v, idx, lse=True)
        self.assertTrue(np.all(out == 0))
        self.assertTrue(np.all(np.isneginf(lse)))

    def test_strided_views_are_read_in_place(self):
        r = rng(19)
        big_k = normal(r, 2, 50, 64)       # head-major [H_kv, n, 2D]
        big_v = normal(r, 50, 2, 64)
        big_q = normal(r, 6, 8, 32)
        k = big_k.transpose(1, 0, 2)[:, :, 10:42]   # [n, H_kv, D], D contiguous, heads far apart
        v = big_v[:, :, ::2]                        # every other element
        q = big_q[::2]                              # every other query
        out_buf = np.full((3, 8, 64), 9.0, np.float32)
        out = out_buf[:, :, 1::2]                   # a strided output
        res = self.ctx.attend(q, k, v, out=out, lse=True)
        self.assertIs(res[0], out)
        eo, el, _ = ref.attention(q, k, v)
        np.testing.assert_allclose(out, eo, rtol=2e-5, atol=2e-5)
        self.assertTrue(np.all(out_buf[:, :, 0::2] == 9.0))  # written only where out points
        self.assertEqual(sa.Tensor(out).data_ptr, out_buf.ctypes.data + 4)

    def test_slot_mass_and_decay(self):
        (q, k, v), (qr, kr, vr) = self.data(20)
        idx = rng(21).integers(-1, 70, size=(3, 2, 16)).astype(np.int32)
        mass = np.zeros((2, 70), np.float32)
        self.ctx.attend(q, k, v, idx, slot_mass=mass)
        _, _, em = ref.attention(qr, kr, vr, idx)
        np.testing.assert_allclose(mass, em, rtol=1e-5, atol=1e-6)
        self.ctx.attend(q, k, v, idx, slot_mass=mass, mass_decay=0.5)
        np.testing.assert_allclose(mass, 1.5 * em, rtol=1e-5, atol=1e-6)
        total = np.zeros(70, np.float32)  # [n_kv]: summed over all heads
        self.ctx.attend(q, k, v, slot_mass=total, mass_decay=0.0)
        _, _, em = ref.attention(qr, kr, vr)
        np.testing.assert_allclose(total, em.sum(axis=0), rtol=1e-5, atol=1e-6)

    def test_bad_input_raises_and_leaves_outputs(self):
        (q, k, v), _ = self.data(22)
        out = np.full((3, 8, 32), 5.0, np.float32)
        lse = np.full((3, 8), 5.0, np.float32)
        cases = [
            (sa.ShapeError, dict(q=q[:, :3])),                              # heads not a multiple
            (sa.ShapeError, dict(v=v[:, :, :16])),                          # D differs
            (sa.DTypeError, dict(k=k.astype(np.float16))),                  # k and v differ
            (sa.DTypeError, dict(k=k.astype(np.float64))),                  # refused by the binding
            (sa.OutOfRange, dict(indices=np.full((3, 2, 4), 70, np.int32))),
            (sa.ShapeError, dict(indices=np.zeros((3, 3, 4), np.int32))),
            (sa.DTypeError, dict(indices=np.zeros((3, 2, 4), np.int64))),
            (sa.ShapeError, dict(query_positions=[1, 2])),                  # n_q values expected
            (sa.ShapeError, dict(lse=np.zeros((3, 7), np.float32))),
            (sa.InvalidArgument, dict(mass_decay=2.0, slot_mass=np.zeros(70, np.float32))),
        ]
        for exc, change in cases:
            with self.subTest(change=sorted(change)):
                args = dict(q=q, k=k, v=v, indices=None, out=out, lse=lse)
                args.update(change)
                with self.assertRaises(exc) as cm:
                    self.ctx.attend(args.pop("q"), args.pop("k"), args.pop("v"), **args)
                self.assertTrue(cm.exception.message)
                self.assertTrue(np.all(out == 5.0) and np.all(lse == 5.0))


if __name__ == "__main__":
    unittest.main()
