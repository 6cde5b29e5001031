"""CUDA tensors through the plugin: skipped without a CUDA device, a driver or
the plugin (CI has none). Device results are compared with the CPU path and
the float64 reference."""
import unittest

import numpy as np

from common import ContextTest, normal, rng, sa
import cuda_memory
import reference as ref


class CudaTest(ContextTest):
    @classmethod
    def make_context(cls):
        """A context on CUDA device 0, or a skip when that is impossible here."""
        try:
            if cuda_memory.driver() is not None:
                return sa.Context(threads=1, device="cuda", device_id=0)
        except sa.BackendUnavailable:
            pass
        raise unittest.SkipTest("no CUDA device, driver or sparseattn CUDA plugin")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cpu = sa.Context(threads=1)
        cls.addClassCleanup(cls.cpu.close)
        r = rng(70)
        cls.h_kv, cls.h_q, cls.d, cls.n = 2, 8, 64, 500
        cls.q = normal(r, 1, cls.h_q, cls.d).astype(np.float16)
        cls.k = normal(r, cls.n, cls.h_kv, cls.d).astype(np.float16)
        cls.v = normal(r, cls.n, cls.h_kv, cls.d).astype(np.float16)

    def test_descriptors_name_the_device(self):
        dk = cuda_memory.DeviceArray(self.k)
        t = sa.Tensor(dk)
        self.assertEqual((t.device, t.device_id, t.data_ptr), (sa.Device.CUDA, 0, dk.ptr.value))

    def test_dense_and_sparse_attention_on_the_device(self):
        dq, dk, dv = (cuda_memory.DeviceArray(x) for x in (self.q, self.k, self.v))
        dout = cuda_memory.DeviceArray(np.zeros((1, self.h_q, self.d), np.float32))
        self.ctx.attend(dq, dk, dv, out=dout)
        eo, _, _ = ref.attention(self.q, self.k, self.v)
        np.testing.assert_allclose(dout.to_host(), eo, rtol=2e-3, atol=2e-3)
        idx = rng(71).integers(-1, self.n, size=(1, self.h_kv, 40)).astype(np.int32)
        didx = cuda_memory.DeviceArray(idx)
        self.ctx.attend(dq, dk, dv, didx, out=dout)
        eo, _, _ = ref.attention(self.q, self.k, self.v, idx)
        np.testing.assert_allclose(dout.to_host(), eo, rtol=2e-3, atol=2e-3)
        with self.assertRaises(sa.Unsupported):  # the binding allocates host arrays only
            self.ctx.attend(dq, dk, dv)

    def test_device_index_selects_like_the_cpu_index(self):
        with sa.Index(self.ctx, self.h_kv, self.d) as dix, \
                sa.Index(self.cpu, self.h_kv, self.d) as cix:
            dix.append(cuda_memory.DeviceArray(self.k))
            cix.append(self.k)
            self.assertEqual(len(dix), self.n)
            dout = cuda_memory.DeviceArray(np.zeros((1, self.h_kv, 4 + 16 + 32), np.int32))
            dix.select(cuda_memory.DeviceArray(self.q), top_k=32, window=16, sinks=4, out=dout)
            expected = cix.select(self.q, top_k=32, window=16, sinks=4)
            np.testing.assert_array_equal(dout.to_host(), expected)
            with self.assertRaises(sa.Unsupported):  # mass_target: CPU indexes only
                dix.select(cuda_memory.DeviceArray(self.q), top_k=32, window=16, sinks=4,
                           mass_target=0.5, out=dout)


if __name__ == "__main__":
    unittest.main()
