"""Loading, versions, names, and the ctypes structs against the library's own sizes."""
import ctypes
import unittest

import numpy as np

from common import sa
from sparseattn import _abi


class LibraryTest(unittest.TestCase):
    def test_version_matches_the_mirrored_header(self):
        v = sa.version()
        self.assertEqual(v >> 16, _abi.VERSION_MAJOR)
        self.assertEqual(sa.version_string(), "%d.%d.%d" % sa.version_info())
        self.assertEqual(sa.library().api.abi_version >= sa.ABI_VERSION, True)

    def test_status_and_isa_names(self):
        for status in sa.Status:
            self.assertEqual(sa.status_name(status), "SA_" + status.name)
        self.assertEqual(sa.isa_name("scalar"), "scalar")
        self.assertEqual(sa.isa_name(sa.Isa.AVX2), "avx2")
        self.assertEqual(sa.isa_name("auto"), "auto")
        with self.assertRaises(sa.InvalidArgument):
            sa.isa_name("sse9")

    def test_struct_sizes_equal_the_library_struct_size(self):
        api = sa.library().api
        self.assertEqual(api.struct_size, ctypes.sizeof(_abi.SaApi))
        for name, struct in _abi.OPTION_STRUCTS.items():
            self.assertEqual(getattr(api, name)().struct_size, ctypes.sizeof(struct), name)
        self.assertEqual(ctypes.sizeof(_abi.SaTensor), 8 + 4 * 4 + 8 * 8)

    def test_defaults_are_the_header_init_values(self):
        # Field offsets: values read through the ctypes layout equal the *_INIT macros.
        self.assertEqual(sa.defaults("context"),
                         {"struct_size": 64, "threads": 0, "isa": 100, "cuda_plugin_path": None,
                          "device": 0, "device_id": 0, "cuda_stream": None,
                          "cuda_allocator": {"alloc": None, "free": None, "user": None}})
        ix = sa.defaults("index")
        self.assertEqual((ix["kind"], ix["dtype"], ix["capacity"], ix["borrow_keys"]), (0, 1, 0, 0))
        self.assertEqual(ix["page"], {"page_size": 16, "refine": 1})
        self.assertEqual(ix["lsh"], {"rounds": 8, "bits": 0, "probes": 2, "seed": 0x5EED5EED})
        self.assertEqual(ix["hnsw"], {"m": 12, "ef_construction": 48, "ef_search": 256})
        self.assertEqual(ix["learned"], {"weights_path": None, "layer": 0, "rescore": 12})
        sel = sa.defaults("select")
        self.assertEqual([sel[f] for f in ("top_k", "window", "sinks", "per_query_head",
                                           "mass_target", "scale", "keys")],
                         [64, 64, 4, 0, 0.0, 0.0, None])
        att = sa.defaults("attend")
        self.assertEqual((att["scale"], att["causal"], att["slot_mass"], att["mass_decay"]),
                         (0.0, 0, None, np.float32(0.99)))
        # The structs grew (evict from 32 to 48 to 56 to 64 bytes, attend from 56 to 64): a smaller
        # ctypes struct returned by value would be overrun by sa_*_options_default().
        self.assertEqual(ctypes.sizeof(_abi.SaEvictOptions), 64)
        self.assertEqual(ctypes.sizeof(_abi.SaAttendOptions), 64)
        self.assertEqual(att["head_key_positions"], None)
        self.assertEqual(sa.defaults("evict"), {"struct_size": 64, "budget": 0, "incoming": 1,
                                                "sinks": 4, "window": 64, "score_mean": 1,
                                                "mass_decay": np.float32(0.99), "head_max": 0,
                                                "recent_share": 0.875, "per_head": 0, "score_pool": 0})
        with self.assertRaises(sa.InvalidArgument):
            sa.defaults("nothing")

    def test_last_error_is_the_raised_message(self):
        with sa.Context(threads=1) as ctx:
            with self.assertRaises(sa.InvalidArgument) as cm:
                sa.Index(ctx, num_kv_heads=0, head_dim=8)
            self.assertTrue(cm.exception.message)
            self.assertEqual(sa.last_error(), cm.exception.message)
            self.assertEqual(cm.exception.status, sa.Status.ERR_INVALID_ARGUMENT)
            self.assertEqual(cm.exception.status_name, "SA_ERR_INVALID_ARGUMENT")

    def test_exception_classes_mirror_every_status(self):
        from sparseattn.errors import BY_STATUS, error_for
        self.assertEqual(set(BY_STATUS), set(sa.Status) - {sa.Status.OK})
        for status, cls in BY_STATUS.items():
            e = error_for(status, "why")
            self.assertIsInstance(e, cls)
            self.assertIsInstance(e, sa.SparseAttnError)
            self.assertEqual((e.status, e.message), (status, "why"))
        self.assertTrue(issubclass(sa.ShapeError, ValueError))
        self.assertTrue(issubclass(sa.DTypeError, TypeError))
        self.assertTrue(issubclass(sa.OutOfMemory, MemoryError))

    def test_a_missing_library_is_reported(self):
        from sparseattn._library import Library
        with self.assertRaises(sa.BackendUnavailable) as cm:
            Library("/nonexistent/libsparseattn.so.0")
        self.assertIn("/nonexistent", cm.exception.message)


class ContextTest(unittest.TestCase):
    def test_threads_and_isa(self):
        with sa.Context(threads=2, isa="scalar") as ctx:
            self.assertEqual(ctx.threads, 2)
            self.assertEqual(ctx.isa, sa.Isa.SCALAR)
        with sa.Context(threads=1) as ctx:
            self.assertEqual(ctx.threads, 1)
            self.assertIn(ctx.isa, set(sa.Isa) - {sa.Isa.AUTO})

    def test_bad_options_raise(self):
        with self.assertRaises(sa.InvalidArgument):
            sa.Context(threads=-1)
        with self.assertRaises(sa.InvalidArgument):
            sa.Context(threads=2 ** 40)  # would wrap in a 32-bit field
        with self.assertRaises(sa.InvalidArgument):
            sa.Context(isa="mmx")

    def test_cuda_allocator_takes_a_pair_of_callables(self):
        calls = []
        pair = (lambda n, d, s: calls.append("alloc") or 0, lambda p, n, d, s: calls.append("free"))
        # A CPU context takes it and never calls it.
        with sa.Context(threads=1, cuda_allocator=pair) as ctx:
            q = np.ones((1, 2, 4), np.float32)
            kv = np.ones((3, 1, 4), np.float32)
            ctx.attend(q, kv, kv)
        self.assertEqual(calls, [])
        for bad in (1, (len,), (len, 1)):
            with self.assertRaises(TypeError):
                sa.Context(cuda_allocator=bad)

    def test_a_cuda_context_without_a_plugin_is_backend_unavailable(self):
        with self.assertRaises(sa.BackendUnavailable) as cm:
            sa.Context(device="cuda", cuda_plugin_path="/nonexistent/libsparseattn_cuda.so")
        self.assertTrue(cm.exception.message)

    def test_close_is_idempotent_and_later_calls_raise(self):
        import numpy as np
        ctx = sa.Context(threads=1)
        ctx.close()
        ctx.close()
        self.assertTrue(ctx.closed)
        x = np.zeros((1, 1, 4), np.float32)
        with self.assertRaises(sa.InvalidArgument):
            ctx.attend(x, x, x)
        with self.assertRaises(sa.InvalidArgument):
            ctx.threads

    def test_an_index_keeps_its_context_alive(self):
        import numpy as np
        ctx = sa.Context(threads=1)
        ix = sa.Index(ctx, 1, 4, dtype="f32")
        ctx.close()  # ends the Context's own use; the index still needs the C context
        self.assertTrue(ctx.closed)
        ix.append(np.ones((3, 1, 4), np.float32))
        self.assertEqual(ix.select(np.ones((1, 1, 4), np.float32), top_k=1, window=1,
                                   sinks=0).shape, (1, 1, 2))
        ix.close()
        self.assertFalse(ix._handle.context.ptr.value)  # destroyed with its last index
        with self.assertRaises(sa.InvalidArgument):
            sa.Index(ctx, 1, 4)


if __name__ == "__main__":
    unittest.main()
