"""Descriptors over caller memory: zero copies, strides in elements, dtypes, the
array interfaces, and what is refused."""
import ctypes
import unittest

import numpy as np

from common import context, normal, rng, sa
import reference as ref


class CtypesArray:
    """Memory numpy did not allocate, exposed only through __array_interface__."""

    def __init__(self, shape, typestr="<f4", ctype=ctypes.c_float, readonly=False):
        n = int(np.prod(shape))
        self.buffer = (ctype * n)()
        self.__array_interface__ = {"version": 3, "shape": tuple(shape), "typestr": typestr,
                                    "data": (ctypes.addressof(self.buffer), readonly),
                                    "strides": None}

    def values(self):
        return np.ctypeslib.as_array(self.buffer).reshape(self.__array_interface__["shape"])


class FakeCuda:
    """A __cuda_array_interface__ object; the memory is never touched."""

    def __init__(self, shape, typestr="<f2", strides=None, device=None):
        self.__cuda_array_interface__ = {"version": 3, "shape": shape, "typestr": typestr,
                                         "data": (0x7F0000001000, False), "strides": strides,
                                         "stream": None}
        if device is not None:
            self.device = device


class TensorTest(unittest.TestCase):
    def test_descriptor_points_at_the_array(self):
        a = normal(rng(1), 5, 3, 8)
        t = sa.Tensor(a)
        self.assertEqual(t.data_ptr, a.ctypes.data)
        self.assertEqual(t.struct.data, a.ctypes.data)
        self.assertEqual((t.dtype, t.device, t.struct.rank), (sa.DType.F32, sa.Device.CPU, 3))
        self.assertEqual(list(t.struct.shape), [5, 3, 8, 0])
        self.assertEqual(t.struct.dtype, sa.DType.F32)
        self.assertEqual(list(t.struct.strides), [0, 0, 0, 0])  # C-contiguous: the zero strides
        t = sa.Tensor(a[:, 1:])
        self.assertEqual(list(t.struct.strides), [24, 8, 1, 0])

    def test_strides_are_converted_to_elements(self):
        base = np.zeros((4, 6, 10), np.float16)
        view = base[::2, 1:5, 2:8]
        t = sa.Tensor(view)
        self.assertEqual(t.data_ptr, view.ctypes.data)
        self.assertEqual(t.strides, (120, 10, 1))
        t = sa.Tensor(np.zeros((3, 4), np.int64).T)
        self.assertEqual((t.dtype, t.strides), (sa.DType.I64, (1, 4)))

    def test_dtypes(self):
        for np_type, dt in ((np.float32, sa.DType.F32), (np.float16, sa.DType.F16),
                            (np.int32, sa.DType.I32), (np.int64, sa.DType.I64)):
            self.assertEqual(sa.Tensor(np.zeros(3, np_type)).dtype, dt)
        bits = np.zeros((2, 3), np.uint16)
        self.assertEqual(sa.bf16(bits).dtype, sa.DType.BF16)
        self.assertEqual(sa.Tensor(bits.view(np.int16), dtype="bf16").dtype, sa.DType.BF16)
        with self.assertRaises(sa.DTypeError):
            sa.Tensor(np.zeros(3, np.float64))
        with self.assertRaises(sa.DTypeError):
            sa.Tensor(np.zeros(3, np.uint16))  # bf16 bits need dtype="bf16"
        with self.assertRaises(sa.DTypeError):
            sa.Tensor(np.zeros(3, np.float32), dtype="bf16")  # 4-byte elements
        with self.assertRaises(sa.DTypeError):
            sa.Tensor(np.zeros(3, ">f4"))

    def test_refusals(self):
        with self.assertRaises(sa.InvalidArgument) as cm:
            sa.Tensor([1.0, 2.0])
        self.assertIn("list", cm.exception.message)
        with self.assertRaises(sa.ShapeError):
            sa.Tensor(np.zeros((1, 1, 1, 1, 1), np.float32))
        with self.assertRaises(sa.ShapeError):
            sa.Tensor(np.float32(1.0).reshape(()))
        with self.assertRaises(sa.ShapeError) as cm:
            sa.Tensor(np.zeros((4, 4), np.float32)[::-1])
        self.assertIn("negative stride", cm.exception.message)
        with self.assertRaises(sa.ShapeError) as cm:
            sa.Tensor(np.broadcast_to(np.float32(1), (3, 4)))  # would read as contiguous
        self.assertIn("broadcast", cm.exception.message)
        # A partly broadcast input is a valid strided view (stride 0 on one axis).
        self.assertEqual(sa.Tensor(np.broadcast_to(np.zeros((1, 4), np.float32), (3, 4))).strides,
                         (0, 1))

    def test_size_one_dimensions_never_make_all_strides_zero(self):
        class OneElement:  # strides 0 on extents of 1 (numpy makes these when broadcasting)
            __array_interface__ = {"version": 3, "shape": (1, 1), "typestr": "<f4",
                                   "data": (np.zeros(1, np.float32).ctypes.data, False),
                                   "strides": (0, 0)}
        self.assertEqual(sa.Tensor(OneElement()).strides, (1, 1))

    def test_read_only_outputs_are_refused_and_untouched(self):
        r = rng(2)
        q = normal(r, 1, 2, 8)
        k = normal(r, 6, 2, 8)
        out = np.full((1, 2, 8), 7.0, np.float32)
        out.flags.writeable = False
        with context() as ctx:
            with self.assertRaises(sa.InvalidArgument) as cm:
                ctx.attend(q, k, k, out=out)
        self.assertIn("read-only", cm.exception.message)
        self.assertTrue(np.all(out == 7.0))

    def test_array_interface_objects_that_are_not_numpy(self):
        r = rng(3)
        q, k, v = normal(r, 2, 4, 8), normal(r, 9, 2, 8), normal(r, 9, 2, 8)
        qi, ki, vi = (CtypesArray(a.shape) for a in (q, k, v))
        for src, dst in ((q, qi), (k, ki), (v, vi)):
            dst.values()[...] = src
        out = CtypesArray((2, 4, 8))
        with context() as ctx:
            result = ctx.attend(qi, ki, vi, out=out)
            self.assertIs(result, out)
            expected, _, _ = ref.attention(q, k, v)
            np.testing.assert_allclose(out.values(), expected, rtol=1e-5, atol=1e-6)
            self.assertEqual(sa.Tensor(out).data_ptr, ctypes.addressof(out.buffer))
            with self.assertRaises(sa.InvalidArgument):
                ctx.attend(qi, ki, vi, out=CtypesArray((2, 4, 8), readonly=True))

    def test_buffer_data_and_offset(self):
        raw = bytearray(4 * 16)
        np.frombuffer(raw, np.float32)[:] = np.arange(16)

        class Buffered:
            __array_interface__ = {"version": 3, "shape": (2, 3), "typestr": "<f4",
                                   "data": raw, "offset": 8}
        t = sa.Tensor(Buffered())
        view = np.frombuffer(raw, np.float32)
        self.assertEqual(t.data_ptr, view.ctypes.data + 8)
        self.assertEqual(t.shape, (2, 3))

    def test_cuda_array_interface(self):
        t = sa.Tensor(FakeCuda((3, 2, 64), strides=(512, 256, 2)), device_id=1)
        self.assertEqual((t.device, t.device_id, t.dtype), (sa.Device.CUDA, 1, sa.DType.F16))
        self.assertEqual((t.struct.device, t.struct.device_id), (1, 1))
        self.assertEqual(t.strides, (256, 128, 1))
        self.assertEqual(t.data_ptr, 0x7F0000001000)

        class Dev:
            index = 2  # torch's device.index
        self.assertEqual(sa.Tensor(FakeCuda((4,), device=Dev())).device_id, 2)
        t = sa.Tensor(FakeCuda((4, 2), typestr="<i2"), dtype="bf16")
        self.assertEqual(t.dtype, sa.DType.BF16)

    def test_cuda_interface_errors_become_dtype_errors(self):
        class TorchBf16:
            @property
            def __cuda_array_interface__(self):
                raise TypeError("dtype torch.bfloat16 is not supported")
        with self.assertRaises(sa.DTypeError) as cm:
            sa.Tensor(TorchBf16())
        self.assertIn("bf16", cm.exception.message)

    def test_array_protocol_fallback(self):
        class OnlyArray:
            def __init__(self, a):
                self.a = a

            def __array__(self, dtype=None):
                return self.a
        a = np.arange(6, dtype=np.int32)
        t = sa.Tensor(OnlyArray(a))
        self.assertEqual(t.data_ptr, a.ctypes.data)

        class Refusing:  # as torch's __array__ does for bf16
            def __array__(self, dtype=None):
                raise TypeError("Got unsupported ScalarType BFloat16")
        with self.assertRaises(sa.InvalidArgument) as cm:
            sa.Tensor(Refusing())
        self.assertIn("bf16", cm.exception.message)

        class Copying:  # __array__ that hands out a fresh copy: never an output
            def __array__(self, dtype=None):
                return np.zeros((1, 2, 8), np.float32)
        x = np.ones((1, 2, 8), np.float32)
        with context() as ctx:
            self.assertEqual(ctx.attend(OnlyArray(x), x, x).shape, (1, 2, 8))  # input: fine
            with self.assertRaises(sa.InvalidArgument) as cm:
                ctx.attend(x, x, x, out=Copying())
        self.assertIn("copy", cm.exception.message)


if __name__ == "__main__":
    unittest.main()
