"""The C demo's synthetic workload (examples/demo_dlopen.c), bit for bit.

Keys cluster around a few "topic" directions per head, carry a RoPE-like
positional part that makes recent keys score higher, and a few "needle" keys
per head match each query strongly, so a few thousand keys hold nearly all the
attention mass. The C demo draws every number from one splitmix64 stream, one
call at a time; splitmix64's n-th output depends only on n, so the same
stream is computed here a block at a time with numpy, in the same order and
with the same float32 operations, and the keys, values and queries equal the
C demo's.
"""
import math

import numpy as np

H_KV, H_Q, D = 8, 32, 128
GROUP = H_Q // H_KV
TOPICS, NEEDLES, ROPE_PAIRS = 64, 8, 8

# Magnitudes, in units of the scaled logit q.k/sqrt(D) (float32, as in C).
NEEDLE_KEY = np.float32(10.0)
RECENCY = np.float32(8.0)
TOPIC = np.float32(6.5)
KEY_NOISE = np.float32(0.25)
QUERY_NOISE = np.float32(0.5)

_SEED = 0x5A5A2024
_GAMMA = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


class SplitMix64:
    """splitmix64 with the C demo's seed; draws come in numpy blocks."""

    def __init__(self, state=_SEED):
        self.state = state
        self._n = 0  # size of the buffers below, reused while blocks keep that size

    def _mixed(self, n):
        """The next n outputs, in buffers reused from call to call (the demo's hot loop:
        no temporaries, so no page faults for fresh memory). Valid until the next call."""
        if n != self._n:
            self._n = n
            with np.errstate(over="ignore"):
                self._steps = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GAMMA)
            self._z = np.empty(n, np.uint64)
            self._t = np.empty(n, np.uint64)
        z, t = self._z, self._t
        with np.errstate(over="ignore"):
            np.add(self._steps, np.uint64(self.state), out=z)  # wraps mod 2^64, as in C
            for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
                np.right_shift(z, np.uint64(shift), out=t)
                np.bitwise_xor(z, t, out=z)
                np.multiply(z, np.uint64(factor), out=z)
            np.right_shift(z, np.uint64(31), out=t)
            np.bitwise_xor(z, t, out=z)
        self.state = (self.state + n * _GAMMA) & _MASK
        return z

    def u64(self, n):
        return self._mixed(n).copy()

    def normals(self, n):
        """Approximately standard normal: the Irwin-Hall sum of 4 uniforms, added left to
        right in float32. A uniform is (u64 >> 40) * 2^-24; the power-of-two scale commutes
        with float32 rounding, so the 24-bit integers are summed first and scaled once."""
        z = self._mixed(4 * n)
        np.right_shift(z, np.uint64(40), out=z)
        u = z.astype(np.float32).reshape(n, 4)
        s = u[:, 0] + u[:, 1]
        s += u[:, 2]
        s += u[:, 3]
        s *= np.float32(1.0 / 16777216.0)
        s -= np.float32(2.0)
        s *= np.float32(1.7320508)
        return s

    def integer(self):
        return int(self.u64(1)[0])


class Workload:
    """The C demo's workload for n_prefill prompt tokens and n_total tokens in all."""

    def __init__(self, n_prefill, n_total):
        self.rng = rng = SplitMix64()
        self.topic_dir = np.zeros((H_KV, TOPICS, D), np.float32)
        self.topic_val = np.zeros((H_KV, TOPICS, D), np.float32)
        self.value_mean = np.zeros((H_KV, D), np.float32)
        self.needle_dir = np.zeros((H_KV, NEEDLES, D), np.float32)
        self.needle_val = np.zeros((H_KV, NEEDLES, D), np.float32)
        self.needle_pos = np.zeros((H_KV, NEEDLES), np.int64)
        for h in range(H_KV):
            for c in range(TOPICS):
                self.topic_dir[h, c] = self._random_unit()
                self.topic_val[h, c] = rng.normals(D)
            self.value_mean[h] = np.float32(0.5) * rng.normals(D)
            for i in range(NEEDLES):
                self.needle_dir[h, i] = self._random_unit()
                self.needle_val[h, i] = np.float32(2.0) * rng.normals(D)
                # Anywhere in the prefill, away from the sinks and the window.
                lo = 16
                hi = n_prefill - 1000 if n_prefill > 1100 else lo + 1
                self.needle_pos[h, i] = lo + rng.integer() % (hi - lo)
        # Topics come in runs of 64..511 tokens; decode steps continue the last one.
        self.topic = np.zeros(n_total, np.int32)
        t = 0
        while t < n_total:
            c = rng.integer() % TOPICS
            run = 64 + rng.integer() % 448
            end = min(t + run, n_total)
            self.topic[t:end] = c
            t = end
        self.topic[n_prefill:] = self.topic[n_prefill - 1]
        self.rope_freq = np.array([math.pow(1.0 / 512.0, f / (ROPE_PAIRS - 1))
                                   for f in range(ROPE_PAIRS)])

    def _random_unit(self):
        v = self.rng.normals(D)
        wide = v.astype(np.float64)
        norm = np.cumsum(wide * wide)[-1]  # summed in order, as the C loop does
        return (wide / math.sqrt(norm)).astype(np.float32)

    def _position(self, positions, gain):
        """The RoPE-like part of rows at `positions`, times gain: [n, 2 * ROPE_PAIRS]."""
        a = self.rope_freq[None, :] * np.asarray(positions, np.float64)[:, None]
        root = math.sqrt(ROPE_PAIRS)
        part = np.empty((a.shape[0], 2 * ROPE_PAIRS), np.float32)
        part[:, 0::2] = (np.cos(a) / root).astype(np.float32)
        part[:, 1::2] = (np.sin(a) / root).astype(np.float32)
        return gain * part

    def make_tokens(self, t0, t1, k_out, v_out):
        """Key and value rows of tokens t0 .. t1-1 into k_out, v_out ([t1 - t0, H_KV, D] f16)."""
        n = t1 - t0
        noise = self.rng.normals(n * H_KV * D * 2).reshape(n, H_KV, D, 2)
        c = self.topic[t0:t1]
        heads = np.arange(H_KV)[None, :]
        k = TOPIC * self.topic_dir[heads, c[:, None]] + KEY_NOISE * noise[..., 0]
        v = (self.value_mean[None] + self.topic_val[heads, c[:, None]]) + \
            np.float32(0.5) * noise[..., 1]
        k[:, :, :2 * ROPE_PAIRS] += self._position(np.arange(t0, t1), RECENCY)[:, None, :]
        for h in range(H_KV):
            for i in range(NEEDLES):
                t = int(self.needle_pos[h, i])
                if t0 <= t < t1:
                    k[t - t0, h] += NEEDLE_KEY * self.needle_dir[h, i]
                    v[t - t0, h] = self.needle_val[h, i]
        k_out[...] = k.astype(np.float16)
        v_out[...] = v.astype(np.float16)

    def fill(self, t0, t1, k_cache, v_cache, chunk=16):
        """make_tokens for t0 .. t1-1 straight into the caches' rows, a chunk at a time
        (16 tokens: the random draws of a chunk stay in cache)."""
        for a in range(t0, t1, chunk):
            b = min(a + chunk, t1)
            self.make_tokens(a, b, k_cache[a:b], v_cache[a:b])

    def make_query(self, pos, step):
        """The query of decode step `step`, at position pos: [1, H_Q, D] f32. Each query head
        looks for two of its KV head's needles (which ones drifts over the steps), for its
        current topic and for recent tokens."""
        noise = self.rng.normals(H_Q * D).reshape(H_Q, D)
        hq = np.arange(H_Q)
        h, g = hq // GROUP, hq % GROUP
        n1 = (g + step // 8) % NEEDLES
        n2 = (3 * g + 5 + step // 4) % NEEDLES
        b1 = np.float32(1.2) + np.float32(0.2) * g.astype(np.float32)
        b2 = np.float32(1.0) + np.float32(0.1) * ((step + g) % 5).astype(np.float32)
        s = np.sqrt(np.float32(D))
        c = self.topic[pos]
        q = s * ((self.topic_dir[h, c] + b1[:, None] * self.needle_dir[h, n1]) +
                 b2[:, None] * self.needle_dir[h, n2]) + QUERY_NOISE * noise
        q[:, :2 * ROPE_PAIRS] += self._position([pos], s)
        return q[None].astype(np.float32)
