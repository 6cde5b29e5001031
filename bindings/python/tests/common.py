"""Shared setup: import the package from this source tree, seeded data, contexts."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import sparseattn as sa  # noqa: E402


def rng(seed):
    return np.random.default_rng(seed)


def normal(r, *shape, dtype=np.float32):
    return r.standard_normal(shape).astype(dtype)


def context():
    """A single-threaded context: the CI machine has 2 loaded cores, and results do
    not depend on the thread count (the header's promise)."""
    return sa.Context(threads=1)


class ContextTest(unittest.TestCase):
    """Tests sharing one context, cls.ctx, made by make_context (which may raise
    unittest.SkipTest) and closed after the class."""

    @classmethod
    def make_context(cls):
        return context()

    @classmethod
    def setUpClass(cls):
        cls.ctx = cls.make_context()
        cls.addClassCleanup(cls.ctx.close)
