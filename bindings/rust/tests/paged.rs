//! Paged caches and batches: Context::attend_paged against contiguous
//! attention (the library's and f64), Index::select_batch against one
//! Index::select per sequence, slot_mass over physical slots, bad page tables.
mod common;

use common::{budget, max_rel_err, single_thread_context, Attention, Rng};
use sparseattn::{
    AttendOptions, Context, DType, Index, IndexOptions, PagedKv, SelectOptions, SlotMass, Status,
    Tensor, TensorMut,
};

const H_Q: usize = 4;
const H_KV: usize = 2;
const D: usize = 16;
const PAGE: usize = 4;
const NUM_PAGES: usize = 24;
const MAX_PAGES: usize = 10;
const ROW: usize = H_KV * D;

/// Three sequences of 9, 37 and 20 tokens in shuffled pages of a shared pool,
/// with 1, 2 and 2 queries.
struct Batch {
    k_pages: Vec<f32>,
    v_pages: Vec<f32>,
    page_table: Vec<i32>,
    lens: Vec<i32>,
    starts: Vec<i32>,
    q: Vec<f32>,
}

impl Batch {
    fn new() -> Batch {
        let mut rng = Rng(0xbeef);
        let lens = vec![9, 37, 20];
        let order = rng.permutation(NUM_PAGES);
        let mut page_table = vec![-7i32; lens.len() * MAX_PAGES]; // never read past a length
        let mut next = 0;
        for (b, &len) in lens.iter().enumerate() {
            for p in 0..(len as usize + PAGE - 1) / PAGE {
                page_table[b * MAX_PAGES + p] = order[next] as i32;
                next += 1;
            }
        }
        let starts = vec![0, 1, 3, 5];
        Batch {
            k_pages: rng.vec((NUM_PAGES * PAGE * ROW) as i64),
            v_pages: rng.vec((NUM_PAGES * PAGE * ROW) as i64),
            page_table,
            lens,
            starts,
            q: rng.vec((5 * H_Q * D) as i64),
        }
    }

    fn n_seqs(&self) -> usize {
        self.lens.len()
    }

    fn n_q(&self) -> usize {
        *self.starts.last().unwrap() as usize
    }

    /// The physical slot of token t of sequence b.
    fn slot(&self, b: usize, t: usize) -> usize {
        self.page_table[b * MAX_PAGES + t / PAGE] as usize * PAGE + t % PAGE
    }

    /// Sequence b's K or V gathered contiguously, `[len, H_kv, D]`.
    fn gather(&self, pages: &[f32], b: usize) -> Vec<f32> {
        (0..self.lens[b] as usize)
            .flat_map(|t| pages[self.slot(b, t) * ROW..][..ROW].to_vec())
            .collect()
    }

    fn queries(&self, b: usize) -> &[f32] {
        let (q0, q1) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        &self.q[q0 * H_Q * D..q1 * H_Q * D]
    }

    fn kv(&self) -> PagedKv<'_> {
        let shape = [NUM_PAGES as i64, PAGE as i64, H_KV as i64, D as i64];
        PagedKv::new(
            Tensor::f32(&self.k_pages, &shape).unwrap(),
            Tensor::f32(&self.v_pages, &shape).unwrap(),
            Tensor::i32(&self.page_table, &[self.n_seqs() as i64, MAX_PAGES as i64]).unwrap(),
            Tensor::i32(&self.lens, &[self.n_seqs() as i64]).unwrap(),
        )
    }

    fn q_tensor(&self) -> Tensor<'_> {
        Tensor::f32(&self.q, &[self.n_q() as i64, H_Q as i64, D as i64]).unwrap()
    }

    /// One exact f32 index per sequence over its gathered keys.
    fn indexes(&self, ctx: &Context) -> Vec<Index> {
        (0..self.n_seqs())
            .map(|b| {
                let mut ix = Index::new(
                    ctx,
                    &IndexOptions {
                        num_kv_heads: H_KV as i32,
                        head_dim: D as i32,
                        dtype: DType::F32,
                        ..Default::default()
                    },
                )
                .unwrap();
                let keys = self.gather(&self.k_pages, b);
                ix.append(
                    &Tensor::f32(&keys, &[self.lens[b] as i64, H_KV as i64, D as i64]).unwrap(),
                )
                .unwrap();
                ix
            })
            .collect()
    }
}

fn sel() -> SelectOptions<'static> {
    budget(6, 4, 2)
}
const WIDTH: usize = 12;

/// Index::select on each sequence alone: `[n_q, H_kv, WIDTH]` of its own slots.
fn per_sequence_select(batch: &Batch, indexes: &[Index]) -> Vec<i32> {
    let mut all = Vec::new();
    for (b, ix) in indexes.iter().enumerate() {
        let n_b = (batch.starts[b + 1] - batch.starts[b]) as i64;
        let mut idx = vec![0i32; n_b as usize * H_KV * WIDTH];
        ix.select(
            &Tensor::f32(batch.queries(b), &[n_b, H_Q as i64, D as i64]).unwrap(),
            &sel(),
            &mut TensorMut::i32(&mut idx, &[n_b, H_KV as i64, WIDTH as i64]).unwrap(),
        )
        .unwrap();
        all.extend(idx);
    }
    all
}

/// The sequence each query row belongs to.
fn sequence_of(batch: &Batch, i: usize) -> usize {
    (0..batch.n_seqs())
        .find(|&b| (batch.starts[b] as usize..batch.starts[b + 1] as usize).contains(&i))
        .unwrap()
}

#[test]
fn select_batch_equals_one_select_per_sequence() {
    let batch = Batch::new();
    let ctx = single_thread_context();
    let indexes = batch.indexes(&ctx);
    let refs: Vec<&Index> = indexes.iter().collect();
    let expected = per_sequence_select(&batch, &indexes);
    let shape = [batch.n_q() as i64, H_KV as i64, WIDTH as i64];

    // Without kv: slots of each index.
    let mut got = vec![0i32; expected.len()];
    let starts = Tensor::i32(&batch.starts, &[batch.starts.len() as i64]).unwrap();
    Index::select_batch(
        &refs,
        &batch.q_tensor(),
        Some(&starts),
        &sel(),
        None,
        &mut TensorMut::i32(&mut got, &shape).unwrap(),
    )
    .unwrap();
    assert_eq!(got, expected);

    // With kv: the same slots mapped to physical slots; query_starts as i64.
    let starts64: Vec<i64> = batch.starts.iter().map(|&s| s as i64).collect();
    let mut physical = vec![0i32; expected.len()];
    Index::select_batch(
        &refs,
        &batch.q_tensor(),
        Some(&Tensor::i64(&starts64, &[starts64.len() as i64]).unwrap()),
        &sel(),
        Some(&batch.kv()),
        &mut TensorMut::i32(&mut physical, &shape).unwrap(),
    )
    .unwrap();
    for (e, (&logical, &phys)) in expected.iter().zip(&physical).enumerate() {
        let b = sequence_of(&batch, e / (H_KV * WIDTH));
        let want = if logical < 0 {
            -1
        } else {
            batch.slot(b, logical as usize) as i32
        };
        assert_eq!(phys, want, "entry {e}");
    }
    assert!(expected.iter().filter(|&&s| s >= 0).count() > batch.n_q() * H_KV * 4);
}

#[test]
fn paged_attention_equals_contiguous_attention_dense_and_sparse() {
    let batch = Batch::new();
    let ctx = single_thread_context();
    let indexes = batch.indexes(&ctx);
    let refs: Vec<&Index> = indexes.iter().collect();
    let (n_q, out_len) = (batch.n_q(), batch.n_q() * H_Q * D);
    let starts = Tensor::i32(&batch.starts, &[batch.starts.len() as i64]).unwrap();
    let out_shape = [n_q as i64, H_Q as i64, D as i64];
    let causal = AttendOptions {
        causal: true,
        ..Default::default()
    };

    let mut physical = vec![0i32; n_q * H_KV * WIDTH];
    let idx_shape = [n_q as i64, H_KV as i64, WIDTH as i64];
    Index::select_batch(
        &refs,
        &batch.q_tensor(),
        Some(&starts),
        &sel(),
        Some(&batch.kv()),
        &mut TensorMut::i32(&mut physical, &idx_shape).unwrap(),
    )
    .unwrap();
    let logical = per_sequence_select(&batch, &indexes);

    for sparse in [false, true] {
        let mut out = vec![0f32; out_len];
        let mut lse = vec![0f32; n_q * H_Q];
        let idx_t = Tensor::i32(&physical, &idx_shape).unwrap();
        ctx.attend_paged(
            &batch.q_tensor(),
            Some(&starts),
            &batch.kv(),
            if sparse { Some(&idx_t) } else { None },
            &causal,
            &mut TensorMut::f32(&mut out, &out_shape).unwrap(),
            Some(&mut TensorMut::f32(&mut lse, &[n_q as i64, H_Q as i64]).unwrap()),
        )
        .unwrap();

        for b in 0..batch.n_seqs() {
            let (q0, q1) = (batch.starts[b] as usize, batch.starts[b + 1] as usize);
            let len = batch.lens[b] as usize;
            let k = batch.gather(&batch.k_pages, b);
            let v = batch.gather(&batch.v_pages, b);
            let lists = &logical[q0 * H_KV * WIDTH..q1 * H_KV * WIDTH];
            // The library's contiguous attention over the same sequence.
            let mut contiguous = vec![0f32; (q1 - q0) * H_Q * D];
            let shape_kv = [len as i64, H_KV as i64, D as i64];
            let lists_t =
                Tensor::i32(lists, &[(q1 - q0) as i64, H_KV as i64, WIDTH as i64]).unwrap();
            ctx.attend(
                &Tensor::f32(batch.queries(b), &[(q1 - q0) as i64, H_Q as i64, D as i64]).unwrap(),
                &Tensor::f32(&k, &shape_kv).unwrap(),
                &Tensor::f32(&v, &shape_kv).unwrap(),
                if sparse { Some(&lists_t) } else { None },
                &causal,
                &mut TensorMut::f32(&mut contiguous, &[(q1 - q0) as i64, H_Q as i64, D as i64])
                    .unwrap(),
                None,
            )
            .unwrap();
            let paged_rows = &out[q0 * H_Q * D..q1 * H_Q * D];
            let c64: Vec<f64> = contiguous.iter().map(|&x| x as f64).collect();
            assert!(
                max_rel_err(paged_rows, &c64) < 1e-6,
                "sequence {b}, sparse {sparse}"
            );

            // And f64 attention computed here.
            let mut reference = Attention::gqa(batch.queries(b), &k, &v, H_Q, H_KV, D);
            reference.causal = true;
            if sparse {
                reference.indices = Some((lists, H_KV, WIDTH));
            }
            let want = reference.run();
            assert!(
                max_rel_err(paged_rows, &want.out) < 1e-5,
                "sequence {b} vs f64"
            );
            assert!(max_rel_err(&lse[q0 * H_Q..q1 * H_Q], &want.lse) < 1e-5);
        }
    }
}

#[test]
fn one_contiguous_sequence_as_a_paged_cache_equals_attend() {
    let mut rng = Rng(5);
    let (n, n_q) = (23usize, 2usize);
    let k = rng.vec((n * ROW) as i64);
    let v = rng.vec((n * ROW) as i64);
    let q = rng.vec((n_q * H_Q * D) as i64);
    let ctx = single_thread_context();
    let kv_shape = [n as i64, H_KV as i64, D as i64];
    let q_t = Tensor::f32(&q, &[n_q as i64, H_Q as i64, D as i64]).unwrap();
    let kv = PagedKv::contiguous(
        Tensor::f32(&k, &kv_shape).unwrap(),
        Tensor::f32(&v, &kv_shape).unwrap(),
    );
    let mut paged = vec![0f32; n_q * H_Q * D];
    // Two queries of one sequence: query_starts [0, 2].
    let starts = [0i64, n_q as i64];
    ctx.attend_paged(
        &q_t,
        Some(&Tensor::i64(&starts, &[2]).unwrap()),
        &kv,
        None,
        &AttendOptions::default(),
        &mut TensorMut::f32(&mut paged, &[n_q as i64, H_Q as i64, D as i64]).unwrap(),
        None,
    )
    .unwrap();
    let want = Attention::gqa(&q, &k, &v, H_Q, H_KV, D).run();
    assert!(max_rel_err(&paged, &want.out) < 1e-5);
}

#[test]
fn paged_slot_mass_is_over_physical_slots() {
    let batch = Batch::new();
    let ctx = single_thread_context();
    let n_q = batch.n_q();
    let starts = Tensor::i32(&batch.starts, &[batch.starts.len() as i64]).unwrap();
    let n_slots = NUM_PAGES * PAGE;
    let mut mass = vec![0f32; H_KV * n_slots];
    let mut out = vec![0f32; n_q * H_Q * D];
    ctx.attend_paged(
        &batch.q_tensor(),
        Some(&starts),
        &batch.kv(),
        None,
        &AttendOptions {
            causal: true,
            slot_mass: Some(SlotMass::new(&mut mass, &[H_KV as i64, n_slots as i64]).unwrap()),
            ..Default::default()
        },
        &mut TensorMut::f32(&mut out, &[n_q as i64, H_Q as i64, D as i64]).unwrap(),
        None,
    )
    .unwrap();
    let mut want = vec![0f64; H_KV * n_slots];
    for b in 0..batch.n_seqs() {
        let k = batch.gather(&batch.k_pages, b);
        let v = batch.gather(&batch.v_pages, b);
        let mut reference = Attention::gqa(batch.queries(b), &k, &v, H_Q, H_KV, D);
        reference.causal = true;
        let m = reference.run().mass;
        let len = batch.lens[b] as usize;
        for h in 0..H_KV {
            for t in 0..len {
                want[h * n_slots + batch.slot(b, t)] += m[h * len + t];
            }
        }
    }
    for (i, (g, w)) in mass.iter().zip(&want).enumerate() {
        assert!(
            (*g as f64 - w).abs() < 1e-5,
            "physical slot mass [{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn bad_page_tables_and_options_are_errors() {
    let batch = Batch::new();
    let ctx = single_thread_context();
    let n_q = batch.n_q();
    let starts = Tensor::i32(&batch.starts, &[batch.starts.len() as i64]).unwrap();
    let mut out = vec![0f32; n_q * H_Q * D];
    let out_shape = [n_q as i64, H_Q as i64, D as i64];
    let run = |kv: &PagedKv<'_>, opts: &AttendOptions<'_>, out: &mut [f32]| {
        ctx.attend_paged(
            &batch.q_tensor(),
            Some(&starts),
            kv,
            None,
            opts,
            &mut TensorMut::f32(out, &out_shape).unwrap(),
            None,
        )
    };

    // A page outside the pool.
    let mut table = batch.page_table.clone();
    table[MAX_PAGES] = NUM_PAGES as i32;
    let mut kv = batch.kv();
    kv.page_table = Some(Tensor::i32(&table, &[3, MAX_PAGES as i64]).unwrap());
    let err = run(&kv, &AttendOptions::default(), &mut out).unwrap_err();
    assert_eq!(err.status(), Status::OutOfRange, "{err}");
    assert!(out.iter().all(|&x| x == 0.0), "nothing written");

    // A length beyond the page table.
    let lens = [9i32, (MAX_PAGES * PAGE + 1) as i32, 20];
    let mut kv = batch.kv();
    kv.seq_lens = Some(Tensor::i32(&lens, &[3]).unwrap());
    let err = run(&kv, &AttendOptions::default(), &mut out).unwrap_err();
    assert!(
        matches!(err.status(), Status::Shape | Status::OutOfRange),
        "{err}"
    );

    // key_positions: slot_positions replace them in a paged cache.
    let positions = vec![0i64; NUM_PAGES * PAGE];
    let opts = AttendOptions {
        key_positions: Some(&positions),
        ..Default::default()
    };
    let err = run(&batch.kv(), &opts, &mut out).unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
    assert!(err.message().contains("key_positions"), "{err}");

    // query_positions shorter than the queries never reach the library.
    let short = [1i64];
    let opts = AttendOptions {
        query_positions: Some(&short),
        ..Default::default()
    };
    let err = run(&batch.kv(), &opts, &mut out).unwrap_err();
    assert_eq!(err.status(), Status::Shape, "{err}");

    // select_batch: segments are refused; a kv of other batch size too.
    let indexes = batch.indexes(&ctx);
    let refs: Vec<&Index> = indexes.iter().collect();
    let mut idx = vec![0i32; n_q * H_KV * WIDTH];
    let idx_shape = [n_q as i64, H_KV as i64, WIDTH as i64];
    let segments = vec![0i32; 64];
    let key_segmented = SelectOptions {
        key_segments: Some(&segments),
        ..sel()
    };
    let query_segmented = SelectOptions {
        query_segments: Some(&segments),
        ..sel()
    };
    for (field, segmented) in [
        ("key_segments", key_segmented),
        ("query_segments", query_segmented),
    ] {
        let err = Index::select_batch(
            &refs,
            &batch.q_tensor(),
            Some(&starts),
            &segmented,
            None,
            &mut TensorMut::i32(&mut idx, &idx_shape).unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument, "{err}");
        assert!(err.message().contains(field), "{err}");
    }
    // The first two sequences' three queries, against a cache of three.
    let err = Index::select_batch(
        &refs[..2],
        &Tensor::f32(&batch.q[..3 * H_Q * D], &[3, H_Q as i64, D as i64]).unwrap(),
        Some(&Tensor::i32(&batch.starts[..3], &[3]).unwrap()),
        &sel(),
        Some(&batch.kv()),
        &mut TensorMut::i32(
            &mut idx[..3 * H_KV * WIDTH],
            &[3, H_KV as i64, WIDTH as i64],
        )
        .unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.status(), Status::Shape, "{err}");
    assert!(err.message().contains("sequences"), "{err}");
}

#[test]
fn slot_positions_mark_empty_slots_and_set_causal_positions() {
    let batch = Batch::new();
    let ctx = single_thread_context();
    let n_q = batch.n_q();
    // Token t of each sequence at position t, but every fifth token's slot empty.
    let mut slot_positions = vec![-1i64; NUM_PAGES * PAGE];
    for b in 0..batch.n_seqs() {
        for t in 0..batch.lens[b] as usize {
            slot_positions[batch.slot(b, t)] = if t % 5 == 3 { -1 } else { t as i64 };
        }
    }
    // With slot_positions and causal, the queries' positions are given: each
    // sequence's last n_b tokens, the first one a step further back.
    let mut query_positions = Vec::new();
    for b in 0..batch.n_seqs() {
        let n_b = (batch.starts[b + 1] - batch.starts[b]) as i64;
        let len = batch.lens[b] as i64;
        query_positions.extend((0..n_b).map(|i| len - n_b + i - (i == 0) as i64));
    }
    let kv = batch
        .kv()
        .with_slot_positions(Tensor::i64(&slot_positions, &[slot_positions.len() as i64]).unwrap());
    let mut out = vec![0f32; n_q * H_Q * D];
    let starts = Tensor::i32(&batch.starts, &[batch.starts.len() as i64]).unwrap();
    ctx.attend_paged(
        &batch.q_tensor(),
        Some(&starts),
        &kv,
        None,
        &AttendOptions {
            causal: true,
            query_positions: Some(&query_positions),
            ..Default::default()
        },
        &mut TensorMut::f32(&mut out, &[n_q as i64, H_Q as i64, D as i64]).unwrap(),
        None,
    )
    .unwrap();
    for b in 0..batch.n_seqs() {
        let (q0, q1) = (batch.starts[b] as usize, batch.starts[b + 1] as usize);
        let k = batch.gather(&batch.k_pages, b);
        let v = batch.gather(&batch.v_pages, b);
        let key_positions: Vec<i64> = (0..batch.lens[b] as usize)
            .map(|t| slot_positions[batch.slot(b, t)])
            .collect();
        let mut reference = Attention::gqa(batch.queries(b), &k, &v, H_Q, H_KV, D);
        reference.causal = true;
        reference.key_positions = Some(&key_positions);
        reference.query_positions = Some(&query_positions[q0..q1]);
        let want = reference.run();
        assert!(
            max_rel_err(&out[q0 * H_Q * D..q1 * H_Q * D], &want.out) < 1e-5,
            "sequence {b}"
        );
    }
    // Without query positions, causal with slot_positions is refused.
    let err = ctx
        .attend_paged(
            &batch.q_tensor(),
            Some(&starts),
            &kv,
            None,
            &AttendOptions {
                causal: true,
                ..Default::default()
            },
            &mut TensorMut::f32(&mut out, &[n_q as i64, H_Q as i64, D as i64]).unwrap(),
            None,
        )
        .unwrap_err();
    assert!(err.message().contains("query_positions"), "{err}");
}

#[test]
fn select_batch_reads_borrowing_indexes_keys_from_the_paged_cache() {
    let batch = Batch::new();
    let ctx = single_thread_context();
    let owning = batch.indexes(&ctx);
    let borrowing: Vec<Index> = (0..batch.n_seqs())
        .map(|b| {
            let mut ix = Index::new(
                &ctx,
                &IndexOptions {
                    num_kv_heads: H_KV as i32,
                    head_dim: D as i32,
                    dtype: DType::F32,
                    borrow_keys: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let keys = batch.gather(&batch.k_pages, b);
            ix.append(&Tensor::f32(&keys, &[batch.lens[b] as i64, H_KV as i64, D as i64]).unwrap())
                .unwrap();
            ix
        })
        .collect();
    let shape = [batch.n_q() as i64, H_KV as i64, WIDTH as i64];
    let starts = Tensor::i32(&batch.starts, &[batch.starts.len() as i64]).unwrap();
    let run = |indexes: &[Index], kv: Option<&PagedKv<'_>>| {
        let refs: Vec<&Index> = indexes.iter().collect();
        let mut idx = vec![0i32; batch.n_q() * H_KV * WIDTH];
        Index::select_batch(
            &refs,
            &batch.q_tensor(),
            Some(&starts),
            &sel(),
            kv,
            &mut TensorMut::i32(&mut idx, &shape).unwrap(),
        )
        .map(|()| idx)
    };
    let kv = batch.kv();
    assert_eq!(
        run(&borrowing, Some(&kv)).unwrap(),
        run(&owning, Some(&kv)).unwrap()
    );
    // Without the cache, a borrowing index has no keys to read.
    let err = run(&borrowing, None).unwrap_err();
    assert_eq!(err.status(), Status::NullPointer, "{err}");
}
