"""Context.cache_evict against the documented rule, and a fixed-budget decode loop."""
import unittest

import numpy as np

from common import ContextTest, normal, rng, sa
import reference as ref


class EvictTest(ContextTest):
    def test_lowest_scores_go_first_never_sinks_or_window(self):
        r = rng(60)
        n = 100
        scores = r.permutation(n).astype(np.float32)  # distinct
        positions = np.arange(n, dtype=np.int64)
        freed = self.ctx.cache_evict(scores, positions, budget=90, sinks=4, window=10)
        expected = ref.evict(scores, positions, 90, 1, 4, 10)
        self.assertEqual(freed.tolist(), expected)
        self.assertEqual(len(freed), 11)  # 100 occupied + 1 incoming - 90
        self.assertFalse(set(freed.tolist()) & (set(range(4)) | set(range(90, 100))))

    def test_empty_slots_first_then_per_head_scores_and_ties(self):
        r = rng(61)
        n = 60
        scores = np.round(r.random((2, n)) * 4).astype(np.float32)  # many ties
        positions = r.permutation(n).astype(np.int64)
        positions[[7, 20, 33]] = -1
        for incoming, budget in ((1, 50), (2, 40), (0, 30), (3, 70)):
            with self.subTest(incoming=incoming, budget=budget):
                freed = self.ctx.cache_evict(scores, positions, budget, incoming=incoming,
                                             sinks=2, window=5)
                self.assertEqual(freed.tolist(),
                                 ref.evict(scores, positions, budget, incoming, 2, 5))

    def test_library_defaults_and_out(self):
        n = 200
        scores = np.arange(n, dtype=np.float32)[::-1].copy()
        positions = np.arange(n, dtype=np.int64)
        out = np.full(16, -7, np.int32)
        freed = self.ctx.cache_evict(scores, positions, 190, out=out)  # sinks 4, window 64
        self.assertEqual(freed.tolist(), ref.evict(scores, positions, 190))
        self.assertTrue(np.shares_memory(freed, out))
        self.assertTrue(np.all(out[len(freed):] == -7))  # nothing written past n_freed

    def test_refusals(self):
        scores = np.ones(50, np.float32)
        positions = np.arange(50, dtype=np.int64)
        out = np.full(50, -7, np.int32)
        nan = scores.copy()
        nan[3] = np.nan
        bad_pos = positions.copy()
        bad_pos[0] = -2
        cases = [
            (sa.InvalidArgument, dict(budget=10)),             # < sinks + window + incoming
            (sa.InvalidArgument, dict(scores=nan)),
            (sa.InvalidArgument, dict(positions=bad_pos)),
            (sa.ShapeError, dict(positions=positions[:40])),
            (sa.ShapeError, dict(out=np.zeros(5, np.int32), budget=30, window=10)),  # 21 to free
            (sa.DTypeError, dict(positions=positions.astype(np.int32))),
        ]
        for exc, change in cases:
            with self.subTest(change=sorted(change)):
                args = dict(scores=scores, positions=positions, budget=70, out=out)
                args.update(change)
                with self.assertRaises(exc) as cm:
                    self.ctx.cache_evict(args.pop("scores"), args.pop("positions"),
                                         args.pop("budget"), **args)
                self.assertTrue(cm.exception.message)
                self.assertTrue(np.all(out == -7))

    def test_ranking_options_each_change_the_choice_as_documented(self):
        # Decayed mass over 2 heads, so each option moves the result: checked against the
        # reference with the same option, and against the default's choice.
        r = rng(63)
        n = 120
        scores = (r.random((2, n)) * 3).astype(np.float32)
        positions = r.permutation(n).astype(np.int64)
        base = dict(budget=100, sinks=4, window=8)
        default = self.ctx.cache_evict(scores, positions, **base).tolist()
        self.assertEqual(default, ref.evict(scores, positions, 100, 1, 4, 8))
        for change in (dict(score_mean=False), dict(mass_decay=1.0), dict(mass_decay=0.0),
                       dict(mass_decay=0.9), dict(head_max=True), dict(recent_share=0.0),
                       dict(recent_share=1.0), dict(recent_share=0.2),
                       dict(score_mean=False, recent_share=0.0, head_max=True), dict(score_pool=3),
                       dict(score_pool=2, recent_share=0.0)):
            with self.subTest(**change):
                freed = self.ctx.cache_evict(scores, positions, **base, **change).tolist()
                self.assertEqual(freed, ref.evict(scores, positions, 100, 1, 4, 8, **change))
                self.assertNotEqual(freed, default)

    def test_recent_share_one_is_streaming_llm(self):
        # recent_share 1 protects everything but sinks within the budget: the oldest go.
        n = 40
        scores = np.linspace(5, 0, n).astype(np.float32)  # the newest have the least mass
        positions = np.arange(n, dtype=np.int64)
        freed = self.ctx.cache_evict(scores, positions, 30, sinks=2, window=4, recent_share=1.0)
        self.assertEqual(sorted(freed.tolist()), list(range(2, 13)))  # 40 + 1 - 30 = 11 oldest past the sinks

    def test_negative_score_pool_is_refused(self):
        out = np.full(50, -7, np.int32)
        with self.assertRaises(sa.InvalidArgument) as cm:
            self.ctx.cache_evict(np.ones(50, np.float32), np.arange(50, dtype=np.int64), 49, out=out,
                                 score_pool=-1)
        self.assertIn("score_pool", cm.exception.message)
        self.assertTrue(np.all(out == -7))

    def test_ranking_option_refusals(self):
        scores = np.ones(50, np.float32)
        positions = np.arange(50, dtype=np.int64)
        out = np.full(50, -7, np.int32)
        for field in ("mass_decay", "recent_share"):
            for value in (-0.01, 1.5, float("nan"), float("inf")):
                with self.subTest(field=field, value=value):
                    with self.assertRaises(sa.InvalidArgument) as cm:
                        self.ctx.cache_evict(scores, positions, 49, out=out, **{field: value})
                    self.assertIn(field, cm.exception.message)
                    self.assertEqual(cm.exception.status, sa.Status.ERR_INVALID_ARGUMENT)
                    self.assertTrue(np.all(out == -7))

    def test_fixed_budget_decode_keeps_the_cache_consistent(self):
        # The README's loop: attend with slot_mass, evict one slot, refill it, select.
        r = rng(62)
        budget, h_kv, h_q, d = 48, 2, 4, 16
        keys = normal(r, budget, h_kv, d)
        values = normal(r, budget, h_kv, d)
        positions = np.arange(budget, dtype=np.int64)
        mass = np.zeros((h_kv, budget), np.float32)
        with sa.Index(self.ctx, h_kv, d, dtype="f32") as ix:
            ix.append(keys)
            for step in range(20):
                q = normal(r, 1, h_q, d)
                idx = ix.select(q, top_k=8, window=8, sinks=2)
                self.ctx.attend(q, keys, values, idx, key_positions=positions, slot_mass=mass,
                                mass_decay=0.9)
                freed = self.ctx.cache_evict(mass, positions, budget, sinks=2, window=8)
                self.assertEqual(freed.tolist(), ref.evict(mass, positions, budget, 1, 2, 8))
                slot = int(freed[0])
                p = budget + step
                keys[slot], values[slot] = normal(r, h_kv, d), normal(r, h_kv, d)
                positions[slot] = p
                mass[:, slot] = 0
                ix.update([slot], keys[slot:slot + 1], positions=[p])
            q = normal(r, 1, h_q, d)
            idx = ix.select(q, top_k=8, window=8, sinks=2)
            for i, head, exp in ref.select_rows(keys, positions, q, 8, 8, 2):
                ref.check_selection(self, idx[i, head], exp, 8)
            out = self.ctx.attend(q, keys, values, idx, key_positions=positions, causal=True)
            eo, _, _ = ref.attention(q, keys, values, idx, key_positions=positions, causal=True)
            np.testing.assert_allclose(out, eo, rtol=2e-5, atol=2e-5)


if __name__ == "__main__":
    unittest.main()
