"""torch and cupy tensors pass without copies (skipped where those are not installed;
the CUDA cases also need a device and the plugin)."""
import unittest

import numpy as np

from common import ContextTest, normal, rng, sa
import reference as ref

try:
    import torch
except ImportError:
    torch = None
try:
    import cupy
except ImportError:
    cupy = None


def cuda_context():
    try:
        return sa.Context(threads=1, device="cuda")
    except sa.BackendUnavailable:
        raise unittest.SkipTest("no sparseattn CUDA plugin")


@unittest.skipIf(torch is None, "torch is not installed")
class TorchCpuTest(unittest.TestCase):
    def test_cpu_tensors_are_viewed_in_place(self):
        r = rng(80)
        q, k, v = (torch.from_numpy(normal(r, *s)) for s in ((2, 4, 16), (30, 2, 16), (30, 2, 16)))
        out = torch.zeros(2, 4, 16)
        with sa.Context(threads=1) as ctx:
            self.assertIs(ctx.attend(q, k, v, out=out), out)
            self.assertEqual(sa.Tensor(out).data_ptr, out.data_ptr())
        eo, _, _ = ref.attention(q.numpy(), k.numpy(), v.numpy())
        np.testing.assert_allclose(out.numpy(), eo, rtol=2e-5, atol=2e-5)


@unittest.skipIf(torch is None or not torch.cuda.is_available(), "no torch CUDA device")
class TorchCudaTest(ContextTest):
    make_context = staticmethod(cuda_context)

    def test_f16_and_bf16_attention_on_a_stream(self):
        r = rng(81)
        q, k, v = normal(r, 2, 8, 128), normal(r, 300, 2, 128), normal(r, 300, 2, 128)
        stream = torch.cuda.Stream()
        for dtype, torch_dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
            with self.subTest(dtype=dtype):
                tq, tk, tv = (torch.from_numpy(x).to("cuda", torch_dtype) for x in (q, k, v))
                out = torch.zeros(2, 8, 128, device="cuda")
                if dtype == "bf16":  # torch's __cuda_array_interface__ refuses bf16: pass the bits
                    tq, tk, tv = (sa.Tensor(t.view(torch.int16), dtype="bf16")
                                  for t in (tq, tk, tv))
                self.assertIs(self.ctx.attend(tq, tk, tv, out=out, cuda_stream=stream), out)
                stream.synchronize()
                exact = [x.to(torch.float64).cpu().numpy() for x in
                         (torch.from_numpy(q).to(torch_dtype), torch.from_numpy(k).to(torch_dtype),
                          torch.from_numpy(v).to(torch_dtype))]
                eo, _, _ = ref.attention(*exact)
                np.testing.assert_allclose(out.cpu().numpy(), eo, rtol=3e-3, atol=3e-3)
        with self.assertRaises(sa.DTypeError):
            sa.Tensor(torch.zeros(2, device="cuda", dtype=torch.bfloat16))

    def test_torch_caching_allocator_holds_the_plugins_memory(self):
        """Context(cuda_allocator=...) with PyTorch's caching allocator: every device buffer
        of the context and its index comes from torch (counted by torch), all of it goes back
        when they close, and the selection equals a context without the hook."""
        calls = {"alloc": 0, "free": 0, "live": 0}

        def alloc(n, dev, stream):
            calls["alloc"] += 1
            calls["live"] += n
            return torch.cuda.caching_allocator_alloc(n, dev, stream)

        def free(ptr, n, dev, stream):
            calls["free"] += 1
            calls["live"] -= n
            torch.cuda.caching_allocator_delete(ptr)

        r = rng(83)
        k = torch.from_numpy(normal(r, 5000, 2, 128)).to("cuda", torch.float16)
        q = torch.from_numpy(normal(r, 1, 8, 128)).to("cuda", torch.float16)
        width = 64 + 8 + 4
        got = torch.zeros(1, 2, width, dtype=torch.int32, device="cuda")
        want = torch.zeros_like(got)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        with sa.Context(threads=1, device="cuda", cuda_allocator=(alloc, free)) as ctx, \
                sa.Index(ctx, 2, 128, kind="page", dtype="f16", refine=0) as ix:
            ix.append(k)
            ix.select(q, top_k=64, window=8, sinks=4, out=got)
            torch.cuda.synchronize()
            self.assertGreater(calls["alloc"], 0)
            # The page bounds (313 pages x 2 heads x (2 x 128 int8 codes + an f32 scale and
            # magnitude)) at least, in torch's count.
            self.assertGreaterEqual(torch.cuda.memory_allocated() - before, 313 * 2 * (2 * 128 + 8))
            held = torch.cuda.memory_allocated() - before  # torch rounds blocks up to 512 bytes
            self.assertGreaterEqual(held, calls["live"])
            self.assertLessEqual(held, calls["live"] + 512 * calls["alloc"])
        torch.cuda.synchronize()
        self.assertEqual(calls["live"], 0)
        self.assertEqual(calls["free"], calls["alloc"])
        self.assertEqual(torch.cuda.memory_allocated(), before)
        with cuda_context() as plain, sa.Index(plain, 2, 128, kind="page", dtype="f16", refine=0) as ix:
            ix.append(k)
            ix.select(q, top_k=64, window=8, sinks=4, out=want)
            torch.cuda.synchronize()
        self.assertTrue(torch.equal(got, want))


@unittest.skipIf(cupy is None, "cupy is not installed")
class CupyTest(ContextTest):
    @classmethod
    def make_context(cls):
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception:
            raise unittest.SkipTest("no CUDA device for cupy")
        return cuda_context()

    def test_device_index_with_cupy_arrays(self):
        r = rng(82)
        k = normal(r, 400, 2, 64).astype(np.float16)
        q = normal(r, 1, 4, 64).astype(np.float16)
        with sa.Index(self.ctx, 2, 64) as dix, sa.Context(threads=1) as cpu, \
                sa.Index(cpu, 2, 64) as cix:
            dk = cupy.asarray(k)
            self.assertEqual(sa.Tensor(dk).data_ptr, dk.data.ptr)
            self.assertEqual(sa.Tensor(dk).device_id, dk.device.id)
            dix.append(dk)
            cix.append(k)
            out = cupy.zeros((1, 2, 4 + 8 + 16), cupy.int32)
            dix.select(cupy.asarray(q), top_k=16, window=8, sinks=4, out=out,
                       cuda_stream=cupy.cuda.get_current_stream())
            np.testing.assert_array_equal(cupy.asnumpy(out),
                                          cix.select(q, top_k=16, window=8, sinks=4))


if __name__ == "__main__":
    unittest.main()
