//! The README's fixed-budget cache from Rust: each step evicts by accumulated
//! attention (slot_mass with decay), writes the new token into the freed slot,
//! updates the index, selects and attends. Every step is checked against
//! references computed here: the eviction choice by brute force, the
//! selection by brute-force top-K, the output and the mass in f64.
mod common;

use common::{brute_force_select, listed, single_thread_context, Attention, Rng, Rows};
use sparseattn::{
    AttendOptions, DType, EvictOptions, Index, IndexOptions, SelectOptions, SlotMass, Tensor,
    TensorMut,
};

const H_Q: usize = 4;
const H_KV: usize = 2;
const D: usize = 16;
const ROW: usize = H_KV * D;
const BUDGET: usize = 24;
const SINKS: i32 = 2;
const WINDOW: i32 = 4;
const TOP_K: i32 = 6;
const WIDTH: usize = (SINKS + WINDOW + TOP_K) as usize;
const DECAY: f32 = 0.9;
const STEPS: usize = 40;

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= tol * w.abs().max(1.0),
            "{what} [{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn evict_update_select_attend_keeps_a_fixed_budget_and_matches_the_references() {
    let mut rng = Rng(0xf1ed_b0d9e7);
    let ctx = single_thread_context();
    // The host's cache: slot s holds the token at positions[s].
    let mut k_cache = rng.vec((BUDGET * ROW) as i64);
    let mut v_cache = rng.vec((BUDGET * ROW) as i64);
    let mut positions: Vec<i64> = (0..BUDGET as i64).collect();
    let mut mass = vec![0f32; H_KV * BUDGET];
    let mut mass_ref = vec![0f64; H_KV * BUDGET];

    let mut index = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: H_KV as i32,
            head_dim: D as i32,
            dtype: DType::F32,
            capacity: BUDGET as i64,
            ..Default::default()
        },
    )
    .unwrap();
    index
        .append(&Tensor::f32(&k_cache, &[BUDGET as i64, H_KV as i64, D as i64]).unwrap())
        .unwrap();

    let sel = SelectOptions {
        top_k: TOP_K,
        window: WINDOW,
        sinks: SINKS,
        per_query_head: true,
        ..Default::default()
    };
    let evict = EvictOptions {
        budget: BUDGET as i64,
        incoming: 1,
        sinks: SINKS,
        window: WINDOW,
        // The brute force below ranks raw summed mass with the window alone protected.
        score_mean: false,
        recent_share: 0.0,
        ..Default::default()
    };
    let mut evicted_positions = Vec::new();

    for step in 0..STEPS {
        let p = (BUDGET + step) as i64;
        let key = rng.vec(ROW as i64);
        let value = rng.vec(ROW as i64);
        let q = rng.vec((H_Q * D) as i64);

        // 1. Free one slot, lowest accumulated mass first.
        let mut freed = [0i32; 4];
        let n = ctx
            .evict(
                &evict,
                &Tensor::f32(&mass, &[H_KV as i64, BUDGET as i64]).unwrap(),
                &Tensor::i64(&positions, &[BUDGET as i64]).unwrap(),
                &mut freed,
            )
            .unwrap();
        assert_eq!(n, 1, "a full cache frees one slot per token");
        let slot = freed[0] as usize;
        // Brute force: the lowest summed score outside sinks and window;
        // ties to the older position, then the lower slot.
        let max_pos = *positions.iter().max().unwrap();
        let want = (0..BUDGET)
            .filter(|&s| positions[s] >= SINKS as i64 && positions[s] <= max_pos - WINDOW as i64)
            .min_by(|&a, &b| {
                let score = |s: usize| mass[s] + mass[BUDGET + s];
                score(a)
                    .partial_cmp(&score(b))
                    .unwrap()
                    .then(positions[a].cmp(&positions[b]))
                    .then(a.cmp(&b))
            })
            .unwrap();
        assert_eq!(slot, want, "step {step}: evicted slot");
        evicted_positions.push(positions[slot]);

        // 2. The new token goes into the freed slot; its mass starts at 0.
        k_cache[slot * ROW..][..ROW].copy_from_slice(&key);
        v_cache[slot * ROW..][..ROW].copy_from_slice(&value);
        positions[slot] = p;
        for h in 0..H_KV {
            mass[h * BUDGET + slot] = 0.0;
            mass_ref[h * BUDGET + slot] = 0.0;
        }
        // 3. The index follows.
        index
            .update(
                &[slot as i32],
                &Tensor::f32(&key, &[1, H_KV as i64, D as i64]).unwrap(),
                Some(&[p]),
            )
            .unwrap();
        assert_eq!(index.len(), BUDGET);

        // 4. Select for the query at p (the largest position held).
        let mut idx = vec![0i32; H_Q * WIDTH];
        let q_t = Tensor::f32(&q, &[1, H_Q as i64, D as i64]).unwrap();
        index
            .select(
                &q_t,
                &sel,
                &mut TensorMut::i32(&mut idx, &[1, H_Q as i64, WIDTH as i64]).unwrap(),
            )
            .unwrap();
        let keys = Rows::new(&k_cache, H_KV, D);
        for h in 0..H_Q {
            let want = brute_force_select(
                &q[h * D..][..D],
                keys,
                h / (H_Q / H_KV),
                &positions,
                p,
                TOP_K as usize,
                WINDOW as i64,
                SINKS as i64,
            );
            assert_eq!(
                listed(&idx[h * WIDTH..][..WIDTH]),
                want,
                "step {step}, head {h}"
            );
        }

        // 5. Attend over the selection, adding to the decayed mass.
        let mut out = vec![0f32; H_Q * D];
        let kv_shape = [BUDGET as i64, H_KV as i64, D as i64];
        ctx.attend(
            &q_t,
            &Tensor::f32(&k_cache, &kv_shape).unwrap(),
            &Tensor::f32(&v_cache, &kv_shape).unwrap(),
            Some(&Tensor::i32(&idx, &[1, H_Q as i64, WIDTH as i64]).unwrap()),
            &AttendOptions {
                causal: true,
                key_positions: Some(&positions),
                slot_mass: Some(SlotMass::new(&mut mass, &[H_KV as i64, BUDGET as i64]).unwrap()),
                mass_decay: DECAY,
                ..Default::default()
            },
            &mut TensorMut::f32(&mut out, &[1, H_Q as i64, D as i64]).unwrap(),
            None,
        )
        .unwrap();
        let reference = Attention {
            q: Rows::new(&q, H_Q, D),
            k: keys,
            v: Rows::new(&v_cache, H_KV, D),
            indices: Some((&idx, H_Q, WIDTH)),
            causal: true,
            query_positions: None,
            key_positions: Some(&positions),
            scale: 0.0,
        }
        .run();
        assert_close(&out, &reference.out, 1e-5, "output");
        for (m, add) in mass_ref.iter_mut().zip(&reference.mass) {
            *m = *m * DECAY as f64 + add;
        }
        assert_close(&mass, &mass_ref, 1e-4, "slot mass");
    }
    // Sinks and the window were never evicted; older tokens were.
    assert!(evicted_positions.iter().all(|&p| p >= SINKS as i64));
    let kept: Vec<i64> = (0..SINKS as i64).collect();
    assert!(
        kept.iter().all(|p| positions.contains(p)),
        "sinks kept: {positions:?}"
    );
    let newest = (BUDGET + STEPS) as i64 - 1;
    assert!((newest - WINDOW as i64 + 1..=newest).all(|p| positions.contains(&p)));
}
