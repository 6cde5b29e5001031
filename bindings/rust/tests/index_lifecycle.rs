//! An index through an engine's life: owned alongside its context,
//! truncated (rejected drafts), cloned (forks), borrowing the host's keys.
mod common;

use common::{
    brute_force_select, budget, f32_index, listed, select_one, single_thread_context, Rng, Rows,
};
use sparseattn::{
    Context, Index, IndexOptions, SelectOptions, SelectorKind, Status, Tensor, TensorMut,
};

const H: usize = 2; // H_q = H_kv: each list ranks by q . k
const D: usize = 16;
const ROW: usize = H * D;
const WIDTH: usize = 14;
fn sel() -> SelectOptions<'static> {
    budget(8, 4, 2)
}

fn options(kind: SelectorKind) -> IndexOptions {
    f32_index(kind, H, D)
}

fn keys_tensor(keys: &[f32]) -> Tensor<'_> {
    Tensor::f32(keys, &[(keys.len() / ROW) as i64, H as i64, D as i64]).unwrap()
}

/// An index with `keys` appended in chunks of `chunk` rows.
fn build(ctx: &Context, kind: SelectorKind, keys: &[f32], chunk: usize) -> Index {
    let mut ix = Index::new(ctx, &options(kind)).unwrap();
    for part in keys.chunks(chunk * ROW) {
        ix.append(&keys_tensor(part)).unwrap();
    }
    ix
}

fn select(ix: &Index, q: &[f32], opts: &SelectOptions<'_>) -> Vec<i32> {
    select_one(ix, q, opts, H, D, WIDTH)
}

/// An engine that owns its context and one index per layer: what the
/// lifetime-free Index allows.
struct Engine {
    ctx: Context,
    layers: Vec<Index>,
}

#[test]
fn an_engine_owns_its_context_and_indexes_and_moves_between_threads() {
    let keys = Rng(1).vec((30 * ROW) as i64);
    let q = Rng(2).vec(ROW as i64);
    let engine = {
        let ctx = single_thread_context();
        let layers = (0..3)
            .map(|_| build(&ctx, SelectorKind::Exact, &keys, 30))
            .collect();
        Engine { ctx, layers }
    };
    assert!(engine
        .layers
        .iter()
        .all(|ix| ix.context().same(&engine.ctx)));
    let expected = select(&engine.layers[0], &q, &sel());
    let engine = std::thread::spawn(move || {
        for ix in &engine.layers {
            assert_eq!(select(ix, &q, &sel()), expected);
        }
        engine
    })
    .join()
    .unwrap();
    // An index keeps its context alive after every other handle is gone.
    let Engine { ctx, mut layers } = engine;
    drop(ctx);
    let last = layers.pop().unwrap();
    drop(layers);
    assert_eq!(last.len(), 30);
    assert!(last.context().threads() >= 1);
    // Arc<Context> works too, for engines that share one context widely.
    let shared = std::sync::Arc::new(single_thread_context());
    let ix = Index::new(&shared, &options(SelectorKind::Exact)).unwrap();
    drop(shared);
    assert!(ix.is_empty());
}

#[test]
fn truncate_selects_like_an_index_built_without_the_dropped_slots() {
    let ctx = single_thread_context();
    let mut rng = Rng(3);
    let keys = rng.vec((70 * ROW) as i64);
    let q = rng.vec(ROW as i64);
    for kind in [SelectorKind::Exact, SelectorKind::Page, SelectorKind::Lsh] {
        // 40 + 30 appended; drafts from position 55 on are rejected.
        let mut ix = build(&ctx, kind, &keys, 40);
        let original = select(&ix, &q, &sel());
        ix.truncate(55).unwrap();
        assert_eq!(ix.len(), 55, "{kind:?}");
        let direct = build(&ctx, kind, &keys[..55 * ROW], 40);
        assert_eq!(
            select(&ix, &q, &sel()),
            select(&direct, &q, &sel()),
            "{kind:?}"
        );
        if kind == SelectorKind::Exact {
            let rows = Rows::new(&keys, H, D);
            let positions: Vec<i64> = (0..55).collect();
            for h in 0..H {
                let want = brute_force_select(&q[h * D..][..D], rows, h, &positions, 54, 8, 4, 2);
                assert_eq!(listed(&select(&ix, &q, &sel())[h * WIDTH..][..WIDTH]), want);
            }
        }
        // Nothing held at or after 80: no change. A negative position: refused.
        ix.truncate(80).unwrap();
        assert_eq!(ix.len(), 55);
        let err = ix.truncate(-1).unwrap_err();
        assert_eq!(err.status(), Status::InvalidArgument, "{err}");
        assert_eq!(ix.len(), 55);
        // Appending the accepted tokens again restores the original.
        ix.append(&keys_tensor(&keys[55 * ROW..])).unwrap();
        assert_eq!(ix.len(), 70);
        if kind == SelectorKind::Exact {
            assert_eq!(select(&ix, &q, &sel()), original);
        }
    }
}

#[test]
fn a_clone_selects_like_the_original_and_changes_independently() {
    let ctx = single_thread_context();
    let mut rng = Rng(4);
    let keys = rng.vec((60 * ROW) as i64);
    let more = rng.vec((5 * ROW) as i64);
    let q = rng.vec(ROW as i64);
    for kind in [SelectorKind::Exact, SelectorKind::Page, SelectorKind::Hnsw] {
        let original = build(&ctx, kind, &keys, 60);
        let before = select(&original, &q, &sel());
        let mut fork = original.try_clone().unwrap();
        assert!(fork.context().same(original.context()));
        assert_eq!(select(&fork, &q, &sel()), before, "{kind:?}");
        fork.append(&keys_tensor(&more)).unwrap();
        assert_eq!((original.len(), fork.len()), (60, 65));
        assert_eq!(
            select(&original, &q, &sel()),
            before,
            "{kind:?}: the original is unchanged"
        );
        // The same change on a second clone gives the same selection.
        let mut twin = original.try_clone().unwrap();
        twin.append(&keys_tensor(&more)).unwrap();
        assert_eq!(
            select(&twin, &q, &sel()),
            select(&fork, &q, &sel()),
            "{kind:?}"
        );
        drop(original);
        assert_eq!(fork.len(), 65);
    }
}

#[test]
fn a_borrowing_index_selects_like_an_owning_one_from_the_hosts_keys() {
    let ctx = single_thread_context();
    let mut rng = Rng(5);
    let keys = rng.vec((50 * ROW) as i64);
    let q = rng.vec(ROW as i64);
    for kind in [SelectorKind::Exact, SelectorKind::Page] {
        let owning = build(&ctx, kind, &keys, 50);
        let mut borrowing = Index::new(
            &ctx,
            &IndexOptions {
                borrow_keys: true,
                ..options(kind)
            },
        )
        .unwrap();
        borrowing.append(&keys_tensor(&keys)).unwrap();
        let with_keys = SelectOptions {
            keys: Some(keys_tensor(&keys)),
            ..sel()
        };
        assert_eq!(
            select(&borrowing, &q, &with_keys),
            select(&owning, &q, &sel()),
            "{kind:?}"
        );

        // Without the host's keys, or with too few rows: errors, not reads.
        let mut idx = vec![0i32; H * WIDTH];
        let q_t = Tensor::f32(&q, &[1, H as i64, D as i64]).unwrap();
        let idx_shape = [1, H as i64, WIDTH as i64];
        let err = borrowing
            .select(
                &q_t,
                &sel(),
                &mut TensorMut::i32(&mut idx, &idx_shape).unwrap(),
            )
            .unwrap_err();
        assert_eq!(err.status(), Status::NullPointer, "{err}");
        assert!(err.message().contains("keys"), "{err}");
        let short = SelectOptions {
            keys: Some(keys_tensor(&keys[..49 * ROW])),
            ..sel()
        };
        let err = borrowing
            .select(
                &q_t,
                &short,
                &mut TensorMut::i32(&mut idx, &idx_shape).unwrap(),
            )
            .unwrap_err();
        assert_eq!(err.status(), Status::Shape, "{err}");

        // Not yet supported for borrowing indexes.
        assert_eq!(
            borrowing.try_clone().unwrap_err().status(),
            Status::Unsupported
        );
        assert_eq!(
            borrowing.truncate(10).unwrap_err().status(),
            Status::Unsupported
        );
        assert_eq!(borrowing.len(), 50);
    }
}
