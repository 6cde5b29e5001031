//! Real calls into libsparseattn through the safe API.
use sparseattn::{
    sys, AttendOptions, Context, ContextOptions, DType, EvictOptions, Index, IndexOptions,
    SelectOptions, SelectorKind, Status, Tensor, TensorMut,
};

/// Deterministic xorshift numbers in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: i64) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn bf16(x: f32) -> u16 {
    // Round to nearest even (finite inputs).
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Dense softmax attention, [n_q, h_q, d] x [n_kv, h_kv, d], not causal.
#[allow(clippy::too_many_arguments)]
fn reference_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_q: usize,
    h_q: usize,
    n_kv: usize,
    h_kv: usize,
    d: usize,
) -> (Vec<f32>, Vec<f32>) {
    let group = h_q / h_kv;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; n_q * h_q * d];
    let mut lse = vec![0f32; n_q * h_q];
    for i in 0..n_q {
        for h in 0..h_q {
            let kh = h / group;
            let qrow = &q[(i * h_q + h) * d..][..d];
            let scores: Vec<f64> = (0..n_kv)
                .map(|j| {
                    let krow = &k[(j * h_kv + kh) * d..][..d];
                    qrow.iter().zip(krow).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let denom: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for (j, s) in scores.iter().enumerate() {
                let p = (s - m).exp() / denom;
                let vrow = &v[(j * h_kv + kh) * d..][..d];
                for c in 0..d {
                    out[(i * h_q + h) * d + c] += (p * vrow[c] as f64) as f32;
                }
            }
            lse[i * h_q + h] = (m + denom.ln()) as f32;
        }
    }
    (out, lse)
}

fn single_thread_context() -> Context {
    Context::with_options(&ContextOptions {
        threads: 1,
        ..Default::default()
    })
    .expect("context")
}

#[test]
fn version_matches_header() {
    assert_eq!(sparseattn::version() >> 8, sys::SA_VERSION >> 8, "major.minor");
    assert_eq!(
        sparseattn::version_string(),
        format!(
            "{}.{}.{}",
            sparseattn::version() >> 16,
            (sparseattn::version() >> 8) & 0xff,
            sparseattn::version() & 0xff
        )
    );
    let api = unsafe { sys::sa_get_api(sys::SA_ABI_VERSION) };
    assert!(!api.is_null());
    let api = unsafe { &*api };
    assert!(api.struct_size >= std::mem::size_of::<sys::sa_api>());
    assert!(api.abi_version >= sys::SA_ABI_VERSION);
    assert_eq!(unsafe { (api.version.unwrap())() }, sparseattn::version());
}

#[test]
fn defaults_match_header_and_struct_sizes() {
    unsafe {
        let c = sys::sa_context_options_default();
        assert_eq!(c.struct_size, std::mem::size_of::<sys::sa_context_options>());
        assert_eq!((c.threads, c.isa), (0, sys::SA_ISA_AUTO));

        let i = sys::sa_index_options_default();
        assert_eq!(i.struct_size, std::mem::size_of::<sys::sa_index_options>());
        assert_eq!(i.kind, sys::SA_SELECTOR_EXACT);
        assert_eq!(i.dtype, sys::SA_DTYPE_F16);
        assert_eq!((i.page.page_size, i.page.refine), (16, 1));
        assert_eq!(
            (i.lsh.rounds, i.lsh.bits, i.lsh.probes, i.lsh.seed),
            (8, 0, 2, 0x5eed5eed)
        );
        assert_eq!((i.hnsw.m, i.hnsw.ef_construction, i.hnsw.ef_search), (8, 32, 192));
        assert_eq!(i.learned.rescore, 12);
        assert!(i.learned.weights_path.is_null());
        assert_eq!(i.borrow_keys, 0);

        let s = sys::sa_select_options_default();
        assert_eq!(s.struct_size, std::mem::size_of::<sys::sa_select_options>());
        assert_eq!((s.top_k, s.window, s.sinks, s.per_query_head), (64, 64, 4, 0));
        assert!(s.keys.is_null());

        let a = sys::sa_attend_options_default();
        assert_eq!(a.struct_size, std::mem::size_of::<sys::sa_attend_options>());
        assert_eq!((a.scale, a.causal), (0.0, 0));
        assert!(a.slot_mass.is_null());
        assert_eq!(a.mass_decay, 1.0);

        let e = sys::sa_evict_options_default();
        assert_eq!(e.struct_size, std::mem::size_of::<sys::sa_evict_options>());
        assert_eq!((e.budget, e.incoming, e.sinks, e.window), (0, 1, 4, 64));
    }
    // x86-64 / aarch64 layout of the header's structs.
    assert_eq!(std::mem::size_of::<sys::sa_tensor>(), 88);
    assert_eq!(std::mem::size_of::<sys::sa_index_options>(), 112);
    assert_eq!(std::mem::size_of::<sys::sa_select_options>(), 72);

    let sel = SelectOptions::default();
    assert_eq!((sel.top_k, sel.window, sel.sinks), (64, 64, 4));
    let ix = IndexOptions::default();
    assert_eq!((ix.kind, ix.dtype), (SelectorKind::Exact, DType::F16));
    assert_eq!(EvictOptions::default().incoming, 1);
    assert!(!AttendOptions::default().causal);
}

#[test]
fn context_reports_isa_and_threads() {
    let ctx = single_thread_context();
    assert_eq!(ctx.threads(), 1);
    assert!(!ctx.isa().name().is_empty());
    let ctx = Context::new().unwrap();
    assert!(ctx.threads() >= 1);
}

#[test]
fn dense_equals_sparse_with_all_indices() {
    let (n_q, h_q, h_kv, d, n_kv) = (3i64, 4i64, 2i64, 16i64, 37i64);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let q = rng.vec(n_q * h_q * d);
    let k = rng.vec(n_kv * h_kv * d);
    let v = rng.vec(n_kv * h_kv * d);
    let ctx = single_thread_context();
    let qt = Tensor::f32(&q, &[n_q, h_q, d]).unwrap();
    let kt = Tensor::f32(&k, &[n_kv, h_kv, d]).unwrap();
    let vt = Tensor::f32(&v, &[n_kv, h_kv, d]).unwrap();
    let opts = AttendOptions::default();

    let mut dense = vec![0f32; (n_q * h_q * d) as usize];
    let mut dense_lse = vec![0f32; (n_q * h_q) as usize];
    ctx.attend(
        &qt,
        &kt,
        &vt,
        None,
        &opts,
        &mut TensorMut::f32(&mut dense, &[n_q, h_q, d]).unwrap(),
        Some(&mut TensorMut::f32(&mut dense_lse, &[n_q, h_q]).unwrap()),
    )
    .expect("dense attend");

    let (ref_out, ref_lse) = reference_attention(
        &q, &k, &v, n_q as usize, h_q as usize, n_kv as usize, h_kv as usize, d as usize,
    );
    assert!(max_rel_err(&dense, &ref_out) < 1e-5, "dense vs reference");
    assert!(max_rel_err(&dense_lse, &ref_lse) < 1e-5, "lse vs reference");

    // One list per KV head holding every key.
    let all: Vec<i32> = (0..n_q * h_kv).flat_map(|_| 0..n_kv as i32).collect();
    let mut sparse = vec![0f32; dense.len()];
    let mut sparse_lse = vec![0f32; dense_lse.len()];
    ctx.attend(
        &qt,
        &kt,
        &vt,
        Some(&Tensor::i32(&all, &[n_q, h_kv, n_kv]).unwrap()),
        &opts,
        &mut TensorMut::f32(&mut sparse, &[n_q, h_q, d]).unwrap(),
        Some(&mut TensorMut::f32(&mut sparse_lse, &[n_q, h_q]).unwrap()),
    )
    .expect("sparse attend");
    assert!(max_rel_err(&sparse, &dense) < 1e-5, "sparse (per KV head) vs dense");
    assert!(max_rel_err(&sparse_lse, &dense_lse) < 1e-5);

    // One list per query head, reversed and padded with -1.
    let width = n_kv + 3;
    let per_head: Vec<i32> = (0..n_q * h_q)
        .flat_map(|_| (0..n_kv as i32).rev().chain([-1, -1, -1]))
        .collect();
    let mut sparse2 = vec![0f32; dense.len()];
    ctx.attend(
        &qt,
        &kt,
        &vt,
        Some(&Tensor::i32(&per_head, &[n_q, h_q, width]).unwrap()),
        &opts,
        &mut TensorMut::f32(&mut sparse2, &[n_q, h_q, d]).unwrap(),
        None,
    )
    .expect("sparse attend, per query head");
    assert!(max_rel_err(&sparse2, &dense) < 1e-5, "sparse (per query head) vs dense");
}

#[test]
fn strided_keys_equal_contiguous_keys() {
    let (n_q, h_q, h_kv, d, n_kv) = (2i64, 2i64, 2i64, 8i64, 19i64);
    let mut rng = Rng(42);
    let q = rng.vec(n_q * h_q * d);
    let k = rng.vec(n_kv * h_kv * d);
    let v = rng.vec(n_kv * h_kv * d);
    // The same keys stored head-major: [h_kv, n_kv, d].
    let mut k_hm = vec![0f32; k.len()];
    for t in 0..n_kv {
        for h in 0..h_kv {
            for c in 0..d {
                k_hm[((h * n_kv + t) * d + c) as usize] = k[((t * h_kv + h) * d + c) as usize];
            }
        }
    }
    let ctx = single_thread_context();
    let qt = Tensor::f32(&q, &[n_q, h_q, d]).unwrap();
    let vt = Tensor::f32(&v, &[n_kv, h_kv, d]).unwrap();
    let mut a = vec![0f32; (n_q * h_q * d) as usize];
    let mut b = a.clone();
    ctx.attend(
        &qt,
        &Tensor::f32(&k, &[n_kv, h_kv, d]).unwrap(),
        &vt,
        None,
        &AttendOptions::default(),
        &mut TensorMut::f32(&mut a, &[n_q, h_q, d]).unwrap(),
        None,
    )
    .unwrap();
    let k_strided =
        Tensor::new(&k_hm, DType::F32, &[n_kv, h_kv, d], Some(&[d, n_kv * d, 1])).unwrap();
    ctx.attend(
        &qt,
        &k_strided,
        &vt,
        None,
        &AttendOptions::default(),
        &mut TensorMut::f32(&mut b, &[n_q, h_q, d]).unwrap(),
        None,
    )
    .unwrap();
    assert!(max_rel_err(&b, &a) < 1e-6);
}

/// Keys near zero except one planted key per KV head aligned with the query.
fn planted_setup(
    n: i64,
    h_q: i64,
    h_kv: i64,
    d: i64,
    planted: &[i64],
) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng(7);
    let mut keys: Vec<f32> = rng.vec(n * h_kv * d).iter().map(|x| x * 0.05).collect();
    let group = h_q / h_kv;
    let mut query = vec![0f32; (h_q * d) as usize];
    for kh in 0..h_kv {
        let dir = rng.vec(d);
        for g in 0..group {
            let h = kh * group + g;
            query[(h * d) as usize..((h + 1) * d) as usize].copy_from_slice(&dir);
        }
        let slot = planted[kh as usize];
        for c in 0..d {
            keys[((slot * h_kv + kh) * d + c) as usize] = dir[c as usize] * 4.0;
        }
    }
    (keys, query)
}

fn check_selection(row: &[i32], planted: i64, n: i64, sel: &SelectOptions) {
    let chosen: Vec<i32> = row.iter().copied().filter(|&s| s >= 0).collect();
    assert!(chosen.windows(2).all(|w| w[0] < w[1]), "ascending: {row:?}");
    assert!(row[chosen.len()..].iter().all(|&s| s == -1), "-1 padding last: {row:?}");
    assert!(chosen.contains(&(planted as i32)), "planted slot {planted} in {row:?}");
    for s in 0..sel.sinks as i64 {
        assert!(chosen.contains(&(s as i32)), "sink {s} in {row:?}");
    }
    for s in n - sel.window as i64..n {
        assert!(chosen.contains(&(s as i32)), "window slot {s} in {row:?}");
    }
    assert!(chosen.len() <= (sel.sinks + sel.window + sel.top_k) as usize);
}

#[test]
fn exact_selector_finds_planted_key() {
    let (n, h_q, h_kv, d) = (512i64, 4i64, 2i64, 32i64);
    let planted = [300i64, 77];
    let (keys, query) = planted_setup(n, h_q, h_kv, d, &planted);
    let ctx = single_thread_context();
    let mut index = Index::new(
        &ctx,
        &IndexOptions {
            kind: SelectorKind::Exact,
            num_kv_heads: h_kv as i32,
            head_dim: d as i32,
            dtype: DType::F32,
            capacity: n,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(index.is_empty());
    // Two appends: slots continue where the first stopped.
    index.append(&Tensor::f32(&keys[..(200 * h_kv * d) as usize], &[200, h_kv, d]).unwrap()).unwrap();
    index.append(&Tensor::f32(&keys[(200 * h_kv * d) as usize..], &[n - 200, h_kv, d]).unwrap()).unwrap();
    assert_eq!(index.len(), n as usize);

    let sel = SelectOptions {
        top_k: 4,
        window: 8,
        sinks: 2,
        ..Default::default()
    };
    let width = 16i64;
    let mut idx = vec![0i32; (h_kv * width) as usize];
    index
        .select(
            &Tensor::f32(&query, &[1, h_q, d]).unwrap(),
            &sel,
            &mut TensorMut::i32(&mut idx, &[1, h_kv, width]).unwrap(),
        )
        .unwrap();
    for kh in 0..h_kv as usize {
        check_selection(&idx[kh * width as usize..][..width as usize], planted[kh], n, &sel);
    }

    // The same through bf16 storage and bf16 queries.
    let keys16: Vec<u16> = keys.iter().map(|&x| bf16(x)).collect();
    let query16: Vec<u16> = query.iter().map(|&x| bf16(x)).collect();
    let mut index16 = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: h_kv as i32,
            head_dim: d as i32,
            dtype: DType::BF16,
            ..Default::default()
        },
    )
    .unwrap();
    index16.append(&Tensor::bf16(&keys16, &[n, h_kv, d]).unwrap()).unwrap();
    let mut idx16 = vec![0i32; (h_kv * width) as usize];
    index16
        .select(
            &Tensor::bf16(&query16, &[1, h_q, d]).unwrap(),
            &sel,
            &mut TensorMut::i32(&mut idx16, &[1, h_kv, width]).unwrap(),
        )
        .unwrap();
    for kh in 0..h_kv as usize {
        check_selection(&idx16[kh * width as usize..][..width as usize], planted[kh], n, &sel);
    }
}

#[test]
fn select_and_attend_concurrently_on_shared_handles() {
    let (n, h_q, h_kv, d) = (256i64, 4i64, 2i64, 16i64);
    let planted = [100i64, 200];
    let (keys, query) = planted_setup(n, h_q, h_kv, d, &planted);
    let values = Rng(9).vec(n * h_kv * d);
    let ctx = single_thread_context();
    let mut index = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: h_kv as i32,
            head_dim: d as i32,
            dtype: DType::F32,
            ..Default::default()
        },
    )
    .unwrap();
    index.append(&Tensor::f32(&keys, &[n, h_kv, d]).unwrap()).unwrap();
    let sel = SelectOptions {
        top_k: 8,
        window: 4,
        sinks: 1,
        ..Default::default()
    };
    let width = 13i64;
    let run = || {
        let q = Tensor::f32(&query, &[1, h_q, d]).unwrap();
        let mut idx = vec![0i32; (h_kv * width) as usize];
        index
            .select(&q, &sel, &mut TensorMut::i32(&mut idx, &[1, h_kv, width]).unwrap())
            .unwrap();
        let mut out = vec![0f32; (h_q * d) as usize];
        ctx.attend(
            &q,
            &Tensor::f32(&keys, &[n, h_kv, d]).unwrap(),
            &Tensor::f32(&values, &[n, h_kv, d]).unwrap(),
            Some(&Tensor::i32(&idx, &[1, h_kv, width]).unwrap()),
            &AttendOptions::default(),
            &mut TensorMut::f32(&mut out, &[1, h_q, d]).unwrap(),
            None,
        )
        .unwrap();
        (idx, out)
    };
    let expected = run();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(run)).collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), expected);
        }
    });
}

#[test]
fn eviction_frees_lowest_scores_and_slots_are_refilled() {
    let ctx = single_thread_context();
    let scores = [9.0f32, 1.0, 5.0, 6.0, 2.0, 0.5, 7.0, 8.0, 3.0, 4.0];
    let positions: Vec<i64> = (0..10).collect();
    let opts = EvictOptions {
        budget: 8,
        incoming: 1,
        sinks: 1,
        window: 2,
    };
    let mut freed = [0i32; 10];
    // 10 occupied + 1 incoming <= 8: free 3, never slot 0 (sink) nor 8, 9 (window).
    let n = ctx
        .evict(
            &opts,
            &Tensor::f32(&scores, &[10]).unwrap(),
            &Tensor::i64(&positions, &[10]).unwrap(),
            &mut freed,
        )
        .unwrap();
    assert_eq!(&freed[..n], &[5, 1, 4]);

    // Scores per head ([H, n_slots], summed): head 1 makes slot 5 the most useful.
    let mut per_head = scores.to_vec();
    per_head.extend([0.0, 0.0, 0.0, 0.0, 0.0, 100.0, 0.0, 0.0, 0.0, 0.0]);
    let n = ctx
        .evict(
            &opts,
            &Tensor::f32(&per_head, &[2, 10]).unwrap(),
            &Tensor::i64(&positions, &[10]).unwrap(),
            &mut freed,
        )
        .unwrap();
    assert_eq!(&freed[..n], &[1, 4, 2]);

    // An empty slot is returned first.
    let mut with_empty = positions.clone();
    with_empty[3] = -1;
    let n = ctx
        .evict(
            &opts,
            &Tensor::f32(&scores, &[10]).unwrap(),
            &Tensor::i64(&with_empty, &[10]).unwrap(),
            &mut freed,
        )
        .unwrap();
    assert!(n >= 3, "{:?}", &freed[..n]);
    assert_eq!(freed[0], 3, "{:?}", &freed[..n]);
    assert!(freed[..n].contains(&5) && freed[..n].contains(&1), "{:?}", &freed[..n]);

    // Too small an output is an error, not a partial write.
    let mut tiny = [0i32; 1];
    let err = ctx
        .evict(
            &opts,
            &Tensor::f32(&scores, &[10]).unwrap(),
            &Tensor::i64(&positions, &[10]).unwrap(),
            &mut tiny,
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::Shape, "{err}");

    // The host refills the freed slots; the index follows with update().
    let (h_kv, d) = (1i64, 8i64);
    let mut index = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: h_kv as i32,
            head_dim: d as i32,
            dtype: DType::F32,
            ..Default::default()
        },
    )
    .unwrap();
    let keys = Rng(3).vec(10 * h_kv * d);
    index.append(&Tensor::f32(&keys, &[10, h_kv, d]).unwrap()).unwrap();
    let slots = [5i32, 1, 4];
    let fresh = Rng(4).vec(3 * h_kv * d);
    index
        .update(&slots, &Tensor::f32(&fresh, &[3, h_kv, d]).unwrap(), Some(&[10, 11, 12]))
        .unwrap();
    assert_eq!(index.len(), 10);
    // Mismatched positions are caught before the call.
    let err = index
        .update(&slots, &Tensor::f32(&fresh, &[3, h_kv, d]).unwrap(), Some(&[10, 11]))
        .unwrap_err();
    assert_eq!(err.status(), Status::Shape);
}

#[test]
fn bad_shape_is_an_error_with_status_and_message() {
    let ctx = single_thread_context();
    let mut index = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: 2,
            head_dim: 16,
            dtype: DType::F32,
            ..Default::default()
        },
    )
    .unwrap();
    // head_dim 8 instead of 16: the library refuses it.
    let keys = vec![0f32; 4 * 2 * 8];
    let err = index
        .append(&Tensor::f32(&keys, &[4, 2, 8]).unwrap())
        .unwrap_err();
    assert_eq!(err.status(), Status::Shape);
    assert_eq!(err.status().code(), sys::SA_ERR_SHAPE);
    assert!(!err.message().is_empty(), "sa_last_error message");
    assert!(err.to_string().starts_with("SA_ERR_SHAPE: "), "{err}");
    assert_eq!(index.len(), 0, "nothing appended on failure");

    // A slice shorter than its shape never reaches the library.
    let err = Tensor::f32(&keys, &[4, 2, 16]).unwrap_err();
    assert_eq!(err.status(), Status::Shape);
    assert!(err.message().contains("needs 128 elements"), "{err}");
    let err = Tensor::new(&keys, DType::F32, &[4, 2, 16], Some(&[32, 16, 1])).unwrap_err();
    assert_eq!(err.status(), Status::Shape);
    let err = Tensor::new(&keys, DType::I32, &[4], None).unwrap_err();
    assert_eq!(err.status(), Status::DType);

    // Other statuses come through too.
    let err = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: 0,
            head_dim: 16,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument, "{err}");
}
