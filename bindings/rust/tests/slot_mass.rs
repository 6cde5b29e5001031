//! AttendOptions::slot_mass and mass_decay against the softmax mass computed
//! here in f64: per KV head and summed, dense and sparse, causal with
//! scrambled key positions, strided buffers.
mod common;

use common::{single_thread_context, Attention, Rng};
use sparseattn::{AttendOptions, SlotMass, Status, Tensor, TensorMut};

const N_Q: usize = 3;
const H_Q: usize = 4;
const H_KV: usize = 2;
const D: usize = 16;
const N_KV: usize = 50;

struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn data(seed: u64) -> Data {
    let mut rng = Rng(seed);
    Data {
        q: rng.vec((N_Q * H_Q * D) as i64),
        k: rng.vec((N_KV * H_KV * D) as i64),
        v: rng.vec((N_KV * H_KV * D) as i64),
    }
}

fn reference<'a>(x: &'a Data) -> Attention<'a> {
    Attention::gqa(&x.q, &x.k, &x.v, H_Q, H_KV, D)
}

/// One sa_attend with `opts`, the mass buffer given in `opts`.
fn attend(x: &Data, indices: Option<(&[i32], usize, usize)>, opts: &AttendOptions<'_>) {
    let ctx = single_thread_context();
    let mut out = vec![0f32; N_Q * H_Q * D];
    let idx = indices.map(|(data, lists, width)| {
        Tensor::i32(data, &[N_Q as i64, lists as i64, width as i64]).unwrap()
    });
    ctx.attend(
        &Tensor::f32(&x.q, &[N_Q as i64, H_Q as i64, D as i64]).unwrap(),
        &Tensor::f32(&x.k, &[N_KV as i64, H_KV as i64, D as i64]).unwrap(),
        &Tensor::f32(&x.v, &[N_KV as i64, H_KV as i64, D as i64]).unwrap(),
        idx.as_ref(),
        opts,
        &mut TensorMut::f32(&mut out, &[N_Q as i64, H_Q as i64, D as i64]).unwrap(),
        None,
    )
    .unwrap();
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}: [{i}] {g} vs {w}"
        );
    }
}

#[test]
fn dense_per_kv_head_mass_is_the_softmax_mass_added_to_the_decayed_buffer() {
    let x = data(11);
    let before: Vec<f32> = (0..H_KV * N_KV).map(|i| (i % 7) as f32 * 0.25).collect();
    let decay = 0.5f32;
    let mut mass = before.clone();
    attend(
        &x,
        None,
        &AttendOptions {
            slot_mass: Some(SlotMass::new(&mut mass, &[H_KV as i64, N_KV as i64]).unwrap()),
            mass_decay: decay,
            ..Default::default()
        },
    );
    let probs = reference(&x).run().mass;
    let want: Vec<f64> = before
        .iter()
        .zip(&probs)
        .map(|(b, p)| *b as f64 * decay as f64 + p)
        .collect();
    assert_close(&mass, &want, "mass [H_kv, n_kv]");
    // Every query head's probabilities sum to 1: the total is n_q * H_q.
    let added: f64 = probs.iter().sum();
    assert!((added - (N_Q * H_Q) as f64).abs() < 1e-9);
}

#[test]
fn summed_mass_accumulates_over_calls_with_a_decay_of_one() {
    let x = data(12);
    let mut mass = vec![0f32; N_KV];
    for _ in 0..3 {
        attend(
            &x,
            None,
            &AttendOptions {
                slot_mass: Some(SlotMass::new(&mut mass, &[N_KV as i64]).unwrap()),
                mass_decay: 1.0, // the default is 0.99
                ..Default::default()
            },
        );
    }
    let probs = reference(&x).run().mass;
    let want: Vec<f64> = (0..N_KV)
        .map(|r| 3.0 * (0..H_KV).map(|h| probs[h * N_KV + r]).sum::<f64>())
        .collect();
    assert_close(&mass, &want, "mass [n_kv], three calls");
}

#[test]
fn sparse_causal_mass_with_scrambled_positions_and_a_strided_buffer() {
    let x = data(13);
    let mut rng = Rng(99);
    // One list per query head, with -1 entries and a duplicate.
    let width = 12;
    let mut lists = vec![-1i32; N_Q * H_Q * width];
    for row in lists.chunks_mut(width) {
        for e in row.iter_mut().take(width - 2) {
            *e = rng.below(N_KV) as i32;
        }
        row[width - 2] = row[0];
    }
    let key_positions: Vec<i64> = (0..N_KV as i64)
        .map(|r| (r * 37) % N_KV as i64 * 2)
        .collect();
    let query_positions: Vec<i64> = vec![30, 61, 99];
    // The buffer head-major in a wider array: [H_kv, n_kv] with row stride N_KV + 5.
    let stride = N_KV + 5;
    let mut buffer = vec![0f32; H_KV * stride];
    attend(
        &x,
        Some((&lists, H_Q, width)),
        &AttendOptions {
            causal: true,
            query_positions: Some(&query_positions),
            key_positions: Some(&key_positions),
            slot_mass: Some(
                SlotMass::with_strides(
                    &mut buffer,
                    &[H_KV as i64, N_KV as i64],
                    Some(&[stride as i64, 1]),
                )
                .unwrap(),
            ),
            mass_decay: 0.0,
            ..Default::default()
        },
    );
    let mut reference = reference(&x);
    reference.indices = Some((&lists, H_Q, width));
    reference.causal = true;
    reference.query_positions = Some(&query_positions);
    reference.key_positions = Some(&key_positions);
    let want = reference.run().mass;
    let got: Vec<f32> = (0..H_KV)
        .flat_map(|h| buffer[h * stride..][..N_KV].to_vec())
        .collect();
    assert_close(&got, &want, "sparse causal mass");
    assert!(
        buffer[N_KV..stride].iter().all(|&x| x == 0.0),
        "gap untouched"
    );
    assert!(want.contains(&0.0), "some keys were masked");
}

#[test]
fn bad_mass_buffers_are_errors_and_leave_the_buffer_unwritten() {
    let x = data(14);
    let ctx = single_thread_context();
    let mut out = vec![0f32; N_Q * H_Q * D];
    let run = |mass: &mut [f32], shape: &[i64], decay: f32, out: &mut [f32]| {
        ctx.attend(
            &Tensor::f32(&x.q, &[N_Q as i64, H_Q as i64, D as i64]).unwrap(),
            &Tensor::f32(&x.k, &[N_KV as i64, H_KV as i64, D as i64]).unwrap(),
            &Tensor::f32(&x.v, &[N_KV as i64, H_KV as i64, D as i64]).unwrap(),
            None,
            &AttendOptions {
                slot_mass: Some(SlotMass::new(mass, shape).unwrap()),
                mass_decay: decay,
                ..Default::default()
            },
            &mut TensorMut::f32(out, &[N_Q as i64, H_Q as i64, D as i64]).unwrap(),
            None,
        )
    };
    let mut mass = vec![7f32; N_KV - 1];
    let err = run(&mut mass, &[N_KV as i64 - 1], 1.0, &mut out).unwrap_err();
    assert_eq!(err.status(), Status::Shape, "{err}");
    assert!(err.message().contains("slot_mass"), "{err}");
    assert!(mass.iter().all(|&m| m == 7.0));

    let mut mass = vec![7f32; N_KV];
    let err = run(&mut mass, &[N_KV as i64], 1.5, &mut out).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
    assert!(err.message().contains("mass_decay"), "{err}");
    assert!(mass.iter().all(|&m| m == 7.0));

    // A slice too short for its shape never reaches the library.
    let mut short = vec![0f32; 3];
    let err = SlotMass::new(&mut short, &[H_KV as i64, N_KV as i64]).unwrap_err();
    assert_eq!(err.status(), Status::Shape);
}
