//! Every selector and select option reaches the library: results against
//! brute-force top-K (query positions, segments, learned and indexer
//! weights written here), and out-of-range values refused with the
//! library's status.
mod common;

use std::path::PathBuf;

use common::{brute_force_select, f32_index, listed, select_one, single_thread_context, Rng, Rows};
use sparseattn::{
    Context, HnswOptions, Index, IndexOptions, LearnedOptions, LshOptions, PageOptions,
    SelectOptions, SelectorKind, Status, Tensor, TensorMut,
};

const H: usize = 2;
const D: usize = 8;
const ROW: usize = H * D;
const N: usize = 100;

fn options(kind: SelectorKind) -> IndexOptions {
    f32_index(kind, H, D)
}

fn select(ix: &Index, q: &[f32], opts: &SelectOptions<'_>, width: usize) -> Vec<i32> {
    select_one(ix, q, opts, H, D, width)
}

fn index_with(ctx: &Context, opts: &IndexOptions, keys: &[f32]) -> sparseattn::Result<Index> {
    let mut ix = Index::new(ctx, opts)?;
    ix.append(&Tensor::f32(keys, &[N as i64, H as i64, D as i64]).unwrap())?;
    Ok(ix)
}

/// The brute-force lists of a query at position p over slots at `positions`.
fn brute(
    q: &[f32],
    keys: &[f32],
    positions: &[i64],
    p: i64,
    sel: &SelectOptions<'_>,
) -> Vec<Vec<i32>> {
    let rows = Rows::new(keys, H, D);
    (0..H)
        .map(|h| {
            let (k, w, s) = (sel.top_k as usize, sel.window as i64, sel.sinks as i64);
            brute_force_select(&q[h * D..][..D], rows, h, positions, p, k, w, s)
        })
        .collect()
}

fn lists(idx: &[i32], width: usize) -> Vec<Vec<i32>> {
    idx.chunks(width).map(listed).collect()
}

#[test]
fn query_positions_and_segments_limit_what_a_query_sees() {
    let ctx = single_thread_context();
    let mut rng = Rng(21);
    let keys = rng.vec((N * ROW) as i64);
    let q = rng.vec(ROW as i64);
    let ix = index_with(&ctx, &options(SelectorKind::Exact), &keys).unwrap();
    let positions: Vec<i64> = (0..N as i64).collect();
    let base = SelectOptions {
        top_k: 5,
        window: 3,
        sinks: 2,
        ..Default::default()
    };
    let width = 10;

    let at = [40i64];
    let sel = SelectOptions {
        query_positions: Some(&at),
        ..base
    };
    assert_eq!(
        lists(&select(&ix, &q, &sel, width), width),
        brute(&q, &keys, &positions, 40, &sel)
    );

    // Two packed sequences: slots 0..60 and 60..100; the query is in the second.
    let key_segments: Vec<i32> = (0..N).map(|s| (s >= 60) as i32).collect();
    let query_segments = [1i32];
    let sel = SelectOptions {
        query_segments: Some(&query_segments),
        key_segments: Some(&key_segments),
        ..base
    };
    let visible: Vec<i64> = positions
        .iter()
        .map(|&p| if p >= 60 { p } else { -1 })
        .collect();
    assert_eq!(
        lists(&select(&ix, &q, &sel, width), width),
        brute(&q, &keys, &visible, 99, &sel)
    );

    // One list per query head: H_q = 2 * H_kv over a 1-head index.
    let one_head = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: 1,
            ..options(SelectorKind::Exact)
        },
    )
    .unwrap();
    let mut one_head = one_head;
    one_head
        .append(&Tensor::f32(&keys[..N * D], &[N as i64, 1, D as i64]).unwrap())
        .unwrap();
    let mut idx = vec![0i32; H * width];
    one_head
        .select(
            &Tensor::f32(&q, &[1, H as i64, D as i64]).unwrap(),
            &SelectOptions {
                per_query_head: true,
                ..base
            },
            &mut TensorMut::i32(&mut idx, &[1, H as i64, width as i64]).unwrap(),
        )
        .unwrap();
    let rows = Rows::new(&keys[..N * D], 1, D);
    for h in 0..H {
        let want = brute_force_select(&q[h * D..][..D], rows, 0, &positions, 99, 5, 3, 2);
        assert_eq!(listed(&idx[h * width..][..width]), want, "query head {h}");
    }

    // Lengths are checked before the call.
    let short = vec![0i32; N - 1];
    let sel = SelectOptions {
        query_segments: Some(&query_segments),
        key_segments: Some(&short),
        ..base
    };
    let mut idx = vec![0i32; H * width];
    let err = ix
        .select(
            &Tensor::f32(&q, &[1, H as i64, D as i64]).unwrap(),
            &sel,
            &mut TensorMut::i32(&mut idx, &[1, H as i64, width as i64]).unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::Shape);
    assert!(err.message().contains("key_segments"), "{err}");
}

#[test]
fn mass_target_and_scale_shape_the_selection() {
    let ctx = single_thread_context();
    let mut rng = Rng(22);
    let keys = rng.vec((N * ROW) as i64);
    // A sharp query: a few keys take most of the attention.
    let q: Vec<f32> = rng.vec(ROW as i64).iter().map(|x| x * 8.0).collect();
    let ix = index_with(&ctx, &options(SelectorKind::Exact), &keys).unwrap();
    let base = SelectOptions {
        top_k: 40,
        window: 0,
        sinks: 0,
        ..Default::default()
    };
    let width = 40;
    let count = |sel: &SelectOptions<'_>| {
        select(&ix, &q, sel, width)
            .iter()
            .filter(|&&s| s >= 0)
            .count()
    };
    let all = count(&base);
    let targeted = SelectOptions {
        mass_target: 0.5,
        ..base
    };
    let half = count(&targeted);
    // A flatter softmax (smaller scale) needs more keys for the same mass.
    let flat = count(&SelectOptions {
        scale: 0.02,
        ..targeted
    });
    assert_eq!(all, H * 40);
    assert!(half < all, "mass_target stops early: {half} of {all}");
    assert!(flat > half, "scale reaches the estimate: {flat} vs {half}");
    // The stopped lists are prefixes of the full ranking: subsets of it.
    let full = select(&ix, &q, &base, width);
    let part = select(&ix, &q, &targeted, width);
    for h in 0..H {
        let full_h = listed(&full[h * width..][..width]);
        assert!(listed(&part[h * width..][..width])
            .iter()
            .all(|s| full_h.contains(s)));
    }
}

#[test]
fn out_of_range_selector_options_are_refused_by_the_library() {
    let ctx = single_thread_context();
    let keys = Rng(23).vec((N * ROW) as i64);
    let cases: Vec<(&str, IndexOptions)> = vec![
        (
            "page_size",
            IndexOptions {
                page: PageOptions {
                    page_size: 0,
                    refine: true,
                },
                ..options(SelectorKind::Page)
            },
        ),
        (
            "rounds",
            IndexOptions {
                lsh: LshOptions {
                    rounds: 65,
                    ..IndexOptions::default().lsh
                },
                ..options(SelectorKind::Lsh)
            },
        ),
        (
            "bits",
            IndexOptions {
                lsh: LshOptions {
                    bits: 25,
                    ..IndexOptions::default().lsh
                },
                ..options(SelectorKind::Lsh)
            },
        ),
        (
            "probes",
            IndexOptions {
                lsh: LshOptions {
                    probes: 65,
                    ..IndexOptions::default().lsh
                },
                ..options(SelectorKind::Lsh)
            },
        ),
        (
            "hnsw.m",
            IndexOptions {
                hnsw: HnswOptions {
                    m: 1,
                    ..IndexOptions::default().hnsw
                },
                ..options(SelectorKind::Hnsw)
            },
        ),
        (
            "ef_construction",
            IndexOptions {
                hnsw: HnswOptions {
                    ef_construction: 65537,
                    ..IndexOptions::default().hnsw
                },
                ..options(SelectorKind::Hnsw)
            },
        ),
        (
            "ef_search",
            IndexOptions {
                hnsw: HnswOptions {
                    ef_search: 0,
                    ..IndexOptions::default().hnsw
                },
                ..options(SelectorKind::Hnsw)
            },
        ),
        (
            "weights_path",
            IndexOptions {
                learned: LearnedOptions {
                    weights_path: Some(PathBuf::from(
                        "/nonexistent/sparseattn-weights.safetensors",
                    )),
                    ..IndexOptions::default().learned
                },
                ..options(SelectorKind::Learned)
            },
        ),
    ];
    for (field, opts) in cases {
        let err = Index::new(&ctx, &opts).unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument, "{field}: {err}");
        assert!(!err.message().is_empty());
    }
    // The valid neighbours of those values work, and every kind selects.
    for kind in [SelectorKind::Page, SelectorKind::Lsh, SelectorKind::Hnsw] {
        let opts = IndexOptions {
            page: PageOptions {
                page_size: 8,
                refine: false,
            },
            lsh: LshOptions {
                rounds: 64,
                bits: 4,
                probes: 64,
                seed: 7,
            },
            hnsw: HnswOptions {
                m: 2,
                ef_construction: 8,
                ef_search: 16,
            },
            ..options(kind)
        };
        let ix = index_with(&ctx, &opts, &keys).unwrap();
        let q = Rng(24).vec(ROW as i64);
        let got = select(
            &ix,
            &q,
            &SelectOptions {
                top_k: 8,
                window: 2,
                sinks: 1,
                ..Default::default()
            },
            16,
        );
        assert!(
            got.iter().filter(|&&s| s >= 0).count() >= H * 3,
            "{kind:?}: {got:?}"
        );
    }
    // A NUL byte in a path is refused before the library.
    let err = Index::new(
        &ctx,
        &IndexOptions {
            learned: LearnedOptions {
                weights_path: Some(PathBuf::from("bad\0path")),
                ..IndexOptions::default().learned
            },
            ..options(SelectorKind::Learned)
        },
    )
    .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
}

/// A safetensors file of F32 tensors (8-byte header length, JSON, data).
fn write_safetensors(name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (tname, shape, values)) in tensors.iter().enumerate() {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header += &format!(
            "{}\"{tname}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{start},{}]}}",
            if i > 0 { "," } else { "" },
            dims.join(","),
            data.len()
        );
    }
    header += "}";
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    let path = std::env::temp_dir().join(format!(
        "sparseattn-rust-{}-{name}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn identity(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|i| (i % (n + 1) == 0) as u8 as f32)
        .collect()
}

#[test]
fn learned_selector_with_identity_projections_selects_the_brute_force_top_k() {
    let ctx = single_thread_context();
    let mut rng = Rng(25);
    let keys = rng.vec((N * ROW) as i64);
    let q = rng.vec(ROW as i64);
    // Layer 3: shared [d_search, D] projections, the identity (d_search = D).
    let path = write_safetensors(
        "learned",
        &[
            ("layers.3.q_proj", vec![D, D], identity(D)),
            ("layers.3.k_proj", vec![D, D], identity(D)),
        ],
    );
    let sel = SelectOptions {
        top_k: 6,
        window: 3,
        sinks: 1,
        ..Default::default()
    };
    let positions: Vec<i64> = (0..N as i64).collect();
    for rescore in [0i64, 2] {
        let opts = IndexOptions {
            learned: LearnedOptions {
                weights_path: Some(path.clone()),
                layer: 3,
                rescore,
            },
            ..options(SelectorKind::Learned)
        };
        let ix = index_with(&ctx, &opts, &keys).unwrap();
        assert_eq!(
            lists(&select(&ix, &q, &sel, 10), 10),
            brute(&q, &keys, &positions, 99, &sel),
            "rescore {rescore}"
        );
    }
    // Another layer is not in the file; a negative rescore is out of range.
    let missing = IndexOptions {
        learned: LearnedOptions {
            weights_path: Some(path.clone()),
            layer: 4,
            rescore: 0,
        },
        ..options(SelectorKind::Learned)
    };
    assert_eq!(
        Index::new(&ctx, &missing).unwrap_err().status(),
        Status::Format
    );
    let negative = IndexOptions {
        learned: LearnedOptions {
            weights_path: Some(path.clone()),
            layer: 3,
            rescore: -1,
        },
        ..options(SelectorKind::Learned)
    };
    assert_eq!(
        Index::new(&ctx, &negative).unwrap_err().status(),
        Status::InvalidArgument
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn indexer_selector_scores_relu_q_dot_k_from_its_weights() {
    let ctx = single_thread_context();
    let mut rng = Rng(26);
    // One KV head and one query head, so the indexer key is the key itself.
    let keys = rng.vec((N * D) as i64);
    let q = rng.vec(D as i64);
    // One indexer head: u = q, z = k, weight = 0 . x + bias 1: score relu(q . k).
    let path = write_safetensors(
        "indexer",
        &[
            ("layers.0.indexer.q_proj", vec![1, D, D], identity(D)),
            ("layers.0.indexer.head_weights", vec![1, D], vec![0.0; D]),
            ("layers.0.indexer.k_proj", vec![D, D], identity(D)),
            ("layers.0.indexer.head_bias", vec![1], vec![1.0]),
        ],
    );
    let mut ix = Index::new(
        &ctx,
        &IndexOptions {
            num_kv_heads: 1,
            learned: LearnedOptions {
                weights_path: Some(path.clone()),
                layer: 0,
                rescore: 0,
            },
            ..options(SelectorKind::Indexer)
        },
    )
    .unwrap();
    ix.append(&Tensor::f32(&keys, &[N as i64, 1, D as i64]).unwrap())
        .unwrap();
    let sel = SelectOptions {
        top_k: 5,
        window: 2,
        sinks: 1,
        ..Default::default()
    };
    let mut idx = vec![0i32; 8];
    let q_t = Tensor::f32(&q, &[1, 1, D as i64]).unwrap();
    ix.select(
        &q_t,
        &sel,
        &mut TensorMut::i32(&mut idx, &[1, 1, 8]).unwrap(),
    )
    .unwrap();
    let positions: Vec<i64> = (0..N as i64).collect();
    let rows = Rows::new(&keys, 1, D);
    let positive = (0..N - 2)
        .filter(|&s| common::dot(&q, rows.row(s, 0)) > 0.0)
        .count();
    assert!(
        positive >= 5,
        "the top 5 have positive scores, where relu keeps the order"
    );
    assert_eq!(
        listed(&idx),
        brute_force_select(&q, rows, 0, &positions, 99, 5, 2, 1)
    );
    // Indexer scores are not masses.
    let err = ix
        .select(
            &q_t,
            &SelectOptions {
                mass_target: 0.5,
                ..sel
            },
            &mut TensorMut::i32(&mut idx, &[1, 1, 8]).unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::Unsupported, "{err}");
    std::fs::remove_file(path).unwrap();
}
