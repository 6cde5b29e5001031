//! Real calls into libsparseattn through the safe API: the basics (version,
//! defaults, dense and sparse attention, selection, eviction, errors).
mod common;

use common::{max_rel_err, single_thread_context, Attention, Rng};
use sparseattn::{
    sys, AttendOptions, Context, ContextOptions, CudaStream, DType, Device, EvictOptions, Index,
    IndexOptions, Isa, SelectOptions, SelectorKind, Status, Tensor, TensorMut,
};

fn bf16(x: f32) -> u16 {
    common::bf16(x)
}

#[test]
fn version_matches_header_and_library_is_the_one_built_against() {
    let version = sparseattn::version().unwrap();
    assert_eq!(version >> 8, sys::SA_VERSION >> 8, "major.minor");
    assert_eq!(
        sparseattn::version_string().unwrap(),
        format!(
            "{}.{}.{}",
            version >> 16,
            (version >> 8) & 0xff,
            version & 0xff
        )
    );
    // build.rs found the library (CI always sets SPARSEATTN_LIB_DIR or
    // pkg-config), and that is the file opened, unless SPARSEATTN_LIB says otherwise.
    let baked = sparseattn::build_library_path().expect("build.rs baked in a library path");
    assert!(baked.starts_with('/'), "absolute: {baked}");
    if std::env::var_os(sparseattn::LIBRARY_ENV).is_none() {
        assert_eq!(sparseattn::library_path().unwrap(), baked);
    }
}

#[test]
fn status_and_isa_names_equal_the_library_names() {
    let api = sys::api().unwrap();
    for code in 1..=12u32 {
        let status = Status::from_raw(code).unwrap();
        assert_eq!(status.code(), code);
        let theirs = unsafe { std::ffi::CStr::from_ptr((api.status_name)(code)) };
        assert_eq!(status.name(), theirs.to_str().unwrap());
    }
    assert_eq!(Status::from_raw(sys::SA_OK), None);
    for isa in [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512, Isa::Auto] {
        let theirs = unsafe { std::ffi::CStr::from_ptr((api.isa_name)(isa.raw())) };
        assert_eq!(isa.name(), theirs.to_str().unwrap());
        assert_eq!(Isa::from_raw(isa.raw()), isa);
    }
}

#[test]
fn defaults_equal_the_library_defaults_and_struct_sizes() {
    let api = sys::api().unwrap();
    let (c, i, s, a, e) = unsafe {
        (
            (api.context_options_default)(),
            (api.index_options_default)(),
            (api.select_options_default)(),
            (api.attend_options_default)(),
            (api.evict_options_default)(),
        )
    };
    assert_eq!(
        c.struct_size,
        std::mem::size_of::<sys::sa_context_options>()
    );
    assert_eq!(i.struct_size, std::mem::size_of::<sys::sa_index_options>());
    assert_eq!(s.struct_size, std::mem::size_of::<sys::sa_select_options>());
    assert_eq!(a.struct_size, std::mem::size_of::<sys::sa_attend_options>());
    assert_eq!(e.struct_size, std::mem::size_of::<sys::sa_evict_options>());

    let rc = ContextOptions::default();
    assert_eq!((rc.threads, rc.isa.raw()), (c.threads, c.isa));
    assert!(c.cuda_plugin_path.is_null() && rc.cuda_plugin_path.is_none());
    assert_eq!(rc.device.raw(), (c.device, c.device_id));
    assert_eq!(rc.cuda_stream.as_raw(), c.cuda_stream);

    let ri = IndexOptions::default();
    assert_eq!(ri.kind.raw(), i.kind);
    assert_eq!(
        (ri.num_kv_heads, ri.head_dim, ri.capacity),
        (i.num_kv_heads, i.head_dim, i.capacity)
    );
    assert_eq!(ri.dtype.raw(), i.dtype);
    assert_eq!(
        (ri.page.page_size, ri.page.refine as i32),
        (i.page.page_size, i.page.refine)
    );
    assert_eq!(
        (ri.lsh.rounds, ri.lsh.bits, ri.lsh.probes, ri.lsh.seed),
        (i.lsh.rounds, i.lsh.bits, i.lsh.probes, i.lsh.seed)
    );
    assert_eq!(
        (ri.hnsw.m, ri.hnsw.ef_construction, ri.hnsw.ef_search),
        (i.hnsw.m, i.hnsw.ef_construction, i.hnsw.ef_search)
    );
    assert!(i.learned.weights_path.is_null() && ri.learned.weights_path.is_none());
    assert_eq!(
        (ri.learned.layer, ri.learned.rescore),
        (i.learned.layer, i.learned.rescore)
    );
    assert_eq!(ri.borrow_keys as i32, i.borrow_keys);

    let rs = SelectOptions::default();
    assert_eq!(
        (
            rs.top_k,
            rs.window,
            rs.sinks,
            rs.per_query_head as i32,
            rs.mass_target,
            rs.scale
        ),
        (
            s.top_k,
            s.window,
            s.sinks,
            s.per_query_head,
            s.mass_target,
            s.scale
        )
    );
    assert!(s.query_positions.is_null() && s.query_segments.is_null() && s.key_segments.is_null());
    assert!(s.cuda_stream.is_null() && s.keys.is_null() && rs.keys.is_none());
    assert_eq!(rs.cuda_stream, CudaStream::NONE);

    let ra = AttendOptions::default();
    assert_eq!(
        (ra.scale, ra.causal as i32, ra.mass_decay),
        (a.scale, a.causal, a.mass_decay)
    );
    assert!(a.query_positions.is_null() && a.key_positions.is_null() && a.cuda_stream.is_null());
    assert!(a.slot_mass.is_null() && ra.slot_mass.is_none());

    let re = EvictOptions::default();
    assert_eq!(
        (re.budget, re.incoming, re.sinks, re.window),
        (e.budget, e.incoming, e.sinks, e.window)
    );
    assert_eq!(
        (
            re.score_mean as i32,
            re.mass_decay,
            re.head_max as i32,
            re.recent_share,
            re.score_pool
        ),
        (e.score_mean, e.mass_decay, e.head_max, e.recent_share, e.score_pool)
    );
    // Eviction assumes the decay attention accumulates with by default.
    assert_eq!(re.mass_decay, ra.mass_decay);

    // x86-64 / aarch64 layout of the header's structs.
    assert_eq!(std::mem::size_of::<sys::sa_tensor>(), 88);
    assert_eq!(std::mem::size_of::<sys::sa_context_options>(), 64);
    assert_eq!(std::mem::size_of::<sys::sa_index_options>(), 112);
    assert_eq!(std::mem::size_of::<sys::sa_select_options>(), 72);
    assert_eq!(std::mem::size_of::<sys::sa_attend_options>(), 64);
    assert_eq!(std::mem::size_of::<sys::sa_evict_options>(), 64);
    assert_eq!(std::mem::size_of::<sys::sa_paged_kv>(), 8 + 5 * 88);
    assert_eq!(Device::default(), Device::Cpu);
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

    let (hq, hkv, dd) = (h_q as usize, h_kv as usize, d as usize);
    let reference = Attention::gqa(&q, &k, &v, hq, hkv, dd).run();
    assert!(
        max_rel_err(&dense, &reference.out) < 1e-5,
        "dense vs reference"
    );
    assert!(
        max_rel_err(&dense_lse, &reference.lse) < 1e-5,
        "lse vs reference"
    );

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
    assert!(
        max_rel_err(&sparse, &reference.out) < 1e-5,
        "sparse (per KV head) vs reference"
    );
    assert!(max_rel_err(&sparse_lse, &reference.lse) < 1e-5);

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
    assert!(
        max_rel_err(&sparse2, &reference.out) < 1e-5,
        "sparse (per query head) vs reference"
    );
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
    let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    assert!(max_rel_err(&b, &a64) < 1e-6);
}

/// Keys near zero except one planted key per KV head aligned with the query.
fn planted_setup(n: i64, h_q: i64, h_kv: i64, d: i64, planted: &[i64]) -> (Vec<f32>, Vec<f32>) {
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
    assert!(
        row[chosen.len()..].iter().all(|&s| s == -1),
        "-1 padding last: {row:?}"
    );
    assert!(
        chosen.contains(&(planted as i32)),
        "planted slot {planted} in {row:?}"
    );
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
    index
        .append(&Tensor::f32(&keys[..(200 * h_kv * d) as usize], &[200, h_kv, d]).unwrap())
        .unwrap();
    index
        .append(&Tensor::f32(&keys[(200 * h_kv * d) as usize..], &[n - 200, h_kv, d]).unwrap())
        .unwrap();
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
        check_selection(
            &idx[kh * width as usize..][..width as usize],
            planted[kh],
            n,
            &sel,
        );
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
    index16
        .append(&Tensor::bf16(&keys16, &[n, h_kv, d]).unwrap())
        .unwrap();
    let mut idx16 = vec![0i32; (h_kv * width) as usize];
    index16
        .select(
            &Tensor::bf16(&query16, &[1, h_q, d]).unwrap(),
            &sel,
            &mut TensorMut::i32(&mut idx16, &[1, h_kv, width]).unwrap(),
        )
        .unwrap();
    for kh in 0..h_kv as usize {
        check_selection(
            &idx16[kh * width as usize..][..width as usize],
            planted[kh],
            n,
            &sel,
        );
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
    index
        .append(&Tensor::f32(&keys, &[n, h_kv, d]).unwrap())
        .unwrap();
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
            .select(
                &q,
                &sel,
                &mut TensorMut::i32(&mut idx, &[1, h_kv, width]).unwrap(),
            )
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
    // Raw scores, the window alone protected: the brute-force rule below.
    let opts = EvictOptions {
        budget: 8,
        incoming: 1,
        sinks: 1,
        window: 2,
        score_mean: false,
        recent_share: 0.0,
        ..Default::default()
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
    assert!(
        freed[..n].contains(&5) && freed[..n].contains(&1),
        "{:?}",
        &freed[..n]
    );

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
    index
        .append(&Tensor::f32(&keys, &[10, h_kv, d]).unwrap())
        .unwrap();
    let slots = [5i32, 1, 4];
    let fresh = Rng(4).vec(3 * h_kv * d);
    index
        .update(
            &slots,
            &Tensor::f32(&fresh, &[3, h_kv, d]).unwrap(),
            Some(&[10, 11, 12]),
        )
        .unwrap();
    assert_eq!(index.len(), 10);
    // Mismatched positions are caught before the call.
    let err = index
        .update(
            &slots,
            &Tensor::f32(&fresh, &[3, h_kv, d]).unwrap(),
            Some(&[10, 11]),
        )
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

#[test]
fn eviction_ranking_options_and_their_refusals() {
    let ctx = single_thread_context();
    let positions: Vec<i64> = (0..10).collect();
    // Head 1 lifts slot 4 in the sum (6.5) but not in the max (4.5).
    let mut per_head = vec![9.0f32, 1.0, 5.0, 6.0, 2.0, 0.5, 7.0, 8.0, 3.0, 4.0];
    per_head.extend([0.0, 0.0, 0.0, 0.0, 4.5, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let raw = EvictOptions {
        budget: 8,
        incoming: 1,
        sinks: 1,
        window: 2,
        score_mean: false,
        recent_share: 0.0,
        ..Default::default()
    };
    let run = |opts: &EvictOptions| -> sparseattn::Result<Vec<i32>> {
        let mut freed = [-7i32; 10];
        let n = ctx.evict(
            opts,
            &Tensor::f32(&per_head, &[2, 10]).unwrap(),
            &Tensor::i64(&positions, &[10]).unwrap(),
            &mut freed,
        )?;
        assert!(freed[n..].iter().all(|&s| s == -7));
        Ok(freed[..n].to_vec())
    };
    assert_eq!(run(&raw).unwrap(), [5, 1, 2]);
    let head_max = EvictOptions { head_max: true, ..raw };
    assert_eq!(run(&head_max).unwrap(), [5, 1, 4]);
    // recent_share 1: positions > 9 - floor(1 * (8 - 1 - 1)) are protected; 1, 2, 3 remain.
    let recent = EvictOptions { recent_share: 1.0, ..raw };
    assert_eq!(run(&recent).unwrap(), [1, 2, 3]);

    for (name, opts) in [
        ("mass_decay", EvictOptions { mass_decay: 1.5, ..raw }),
        ("mass_decay", EvictOptions { mass_decay: f32::NAN, ..raw }),
        ("recent_share", EvictOptions { recent_share: -0.1, ..raw }),
        ("recent_share", EvictOptions { recent_share: f32::NAN, ..raw }),
    ] {
        let err = run(&opts).unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument, "{err}");
        assert!(err.message().contains(name), "{err}");
    }
}
