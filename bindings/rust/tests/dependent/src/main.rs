//! An engine-shaped program using the sparseattn crate as a dependency.
//!
//! `sparseattn-dependent [--expect-dir DIR]` owns a context and one index per
//! layer in one struct, selects and attends, checks the output against f64
//! attention, and with --expect-dir checks that the library it runs on was
//! loaded from DIR. It refuses to run with LD_LIBRARY_PATH set, which would
//! prove nothing about how the library is found.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sparseattn::{
    AttendOptions, Context, ContextOptions, DType, Index, IndexOptions, SelectOptions, Tensor,
    TensorMut,
};

const H_Q: usize = 4;
const H_KV: usize = 2;
const D: usize = 32;
const N: usize = 200;
const WIDTH: usize = 24;

/// What an engine keeps: its context beside its indexes, no lifetimes.
struct Engine {
    ctx: Context,
    layers: Vec<Index>,
}

impl Engine {
    fn new(layers: usize, keys: &[f32]) -> sparseattn::Result<Engine> {
        let ctx = Context::with_options(&ContextOptions {
            threads: 1,
            ..Default::default()
        })?;
        let opts = IndexOptions {
            num_kv_heads: H_KV as i32,
            head_dim: D as i32,
            dtype: DType::F32,
            ..Default::default()
        };
        let layers = (0..layers)
            .map(|_| {
                let mut ix = Index::new(&ctx, &opts)?;
                ix.append(&Tensor::f32(keys, &[N as i64, H_KV as i64, D as i64])?)?;
                Ok(ix)
            })
            .collect::<sparseattn::Result<Vec<Index>>>()?;
        Ok(Engine { ctx, layers })
    }

    /// Sparse attention of one query over `layer`'s selection.
    fn step(
        &self,
        layer: usize,
        q: &[f32],
        kv: &[f32],
    ) -> sparseattn::Result<(Vec<i32>, Vec<f32>)> {
        let sel = SelectOptions {
            top_k: 16,
            window: 6,
            sinks: 2,
            ..Default::default()
        };
        let q_t = Tensor::f32(q, &[1, H_Q as i64, D as i64])?;
        let mut idx = vec![0i32; H_KV * WIDTH];
        self.layers[layer].select(
            &q_t,
            &sel,
            &mut TensorMut::i32(&mut idx, &[1, H_KV as i64, WIDTH as i64])?,
        )?;
        let mut out = vec![0f32; H_Q * D];
        let kv_t = Tensor::f32(kv, &[N as i64, H_KV as i64, D as i64])?;
        self.ctx.attend(
            &q_t,
            &kv_t,
            &kv_t,
            Some(&Tensor::i32(&idx, &[1, H_KV as i64, WIDTH as i64])?),
            &AttendOptions::default(),
            &mut TensorMut::f32(&mut out, &[1, H_Q as i64, D as i64])?,
            None,
        )?;
        Ok((idx, out))
    }
}

/// f64 softmax attention of each query head over its KV head's listed rows
/// (keys and values are the same rows here).
fn reference(q: &[f32], kv: &[f32], idx: &[i32]) -> Vec<f64> {
    let mut out = vec![0f64; H_Q * D];
    for h in 0..H_Q {
        let kh = h / (H_Q / H_KV);
        let rows: Vec<usize> = idx[kh * WIDTH..][..WIDTH]
            .iter()
            .filter(|&&s| s >= 0)
            .map(|&s| s as usize)
            .collect();
        let row = |r: usize| &kv[(r * H_KV + kh) * D..][..D];
        let scores: Vec<f64> = rows
            .iter()
            .map(|&r| {
                q[h * D..][..D]
                    .iter()
                    .zip(row(r))
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    / (D as f64).sqrt()
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let denom: f64 = scores.iter().map(|s| (s - m).exp()).sum();
        for (&r, s) in rows.iter().zip(&scores) {
            for (c, x) in row(r).iter().enumerate() {
                out[h * D + c] += (s - m).exp() / denom * *x as f64;
            }
        }
    }
    out
}

/// The file libsparseattn was mapped from, as this process sees it.
fn mapped_library() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("libsparseattn.so"))
        })
        .map(PathBuf::from)
}

fn run() -> Result<(), String> {
    if std::env::var_os("LD_LIBRARY_PATH").is_some() {
        return Err(
            "LD_LIBRARY_PATH is set; run without it (that is what this program checks)".into(),
        );
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let expect_dir = match args.as_slice() {
        [] => None,
        [flag, dir] if flag == "--expect-dir" => Some(PathBuf::from(dir)),
        _ => return Err("usage: sparseattn-dependent [--expect-dir DIR]".into()),
    };

    let kv: Vec<f32> = (0..N * H_KV * D)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let q: Vec<f32> = (0..H_Q * D)
        .map(|i| ((i * 104729) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let engine = Engine::new(2, &kv).map_err(|e| e.to_string())?;
    for layer in 0..engine.layers.len() {
        let (idx, out) = engine.step(layer, &q, &kv).map_err(|e| e.to_string())?;
        let want = reference(&q, &kv, &idx);
        let err = out
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        if err > 1e-5 || idx.iter().filter(|&&s| s >= 0).count() != H_KV * WIDTH {
            return Err(format!(
                "layer {layer}: max error {err} against f64 attention; indices {idx:?}"
            ));
        }
    }

    let opened = sparseattn::library_path().map_err(|e| e.to_string())?;
    let mapped = mapped_library().ok_or("libsparseattn is not mapped into this process")?;
    println!(
        "sparseattn {} opened as {opened} (build.rs found {}), mapped from {}",
        sparseattn::version_string().map_err(|e| e.to_string())?,
        sparseattn::build_library_path().unwrap_or("nothing"),
        mapped.display()
    );
    if let Some(dir) = expect_dir {
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mapped_dir = mapped.parent().and_then(|p| p.canonicalize().ok());
        if mapped_dir.as_deref() != Some(dir.as_path()) {
            return Err(format!(
                "loaded {}, expected a library in {}",
                mapped.display(),
                dir.display()
            ));
        }
    }
    println!("ok: 2 layers selected and attended, within 1e-5 of f64 attention");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sparseattn-dependent: {message}");
            ExitCode::FAILURE
        }
    }
}
