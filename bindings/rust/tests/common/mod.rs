//! Shared by the integration tests: deterministic data and the independent
//! references (f64 attention, brute-force top-K) the library is checked
//! against. Each test file uses part of it.
#![allow(dead_code)]

use sparseattn::{
    Context, ContextOptions, DType, Index, IndexOptions, SelectOptions, SelectorKind, Tensor,
    TensorMut,
};

/// Deterministic xorshift numbers in [-1, 1).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: i64) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }

    /// A number in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next() + 1.0) * 0.5 * n as f32) as usize % n
    }

    /// A permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// f32 to bfloat16 bits, rounding to nearest even (finite inputs).
pub fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The largest |a - b| over the largest |b|.
pub fn max_rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - y).abs()))
        / scale
}

pub fn single_thread_context() -> Context {
    Context::with_options(&ContextOptions {
        threads: 1,
        ..Default::default()
    })
    .expect("context")
}

/// Select options with these budgets, the defaults elsewhere.
pub fn budget(top_k: i32, window: i32, sinks: i32) -> SelectOptions<'static> {
    SelectOptions {
        top_k,
        window,
        sinks,
        ..Default::default()
    }
}

/// Options of an index of `kind` over f32 keys `[n, heads, d]`.
pub fn f32_index(kind: SelectorKind, heads: usize, d: usize) -> IndexOptions {
    IndexOptions {
        kind,
        num_kv_heads: heads as i32,
        head_dim: d as i32,
        dtype: DType::F32,
        ..Default::default()
    }
}

/// `ix.select` for one query `[1, heads, d]`: the lists `[1, heads, width]`.
pub fn select_one(
    ix: &Index,
    q: &[f32],
    opts: &SelectOptions<'_>,
    heads: usize,
    d: usize,
    width: usize,
) -> Vec<i32> {
    let mut idx = vec![0i32; heads * width];
    ix.select(
        &Tensor::f32(q, &[1, heads as i64, d as i64]).unwrap(),
        opts,
        &mut TensorMut::i32(&mut idx, &[1, heads as i64, width as i64]).unwrap(),
    )
    .unwrap();
    idx
}

/// A contiguous token-major cache `[n, heads, d]`.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub heads: usize,
    pub d: usize,
}

impl<'a> Rows<'a> {
    pub fn new(data: &'a [f32], heads: usize, d: usize) -> Self {
        Rows { data, heads, d }
    }

    pub fn row(&self, t: usize, h: usize) -> &'a [f32] {
        &self.data[(t * self.heads + h) * self.d..][..self.d]
    }

    pub fn len(&self) -> usize {
        self.data.len() / (self.heads * self.d)
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// What `sa_attend` computes, in f64: the arguments.
pub struct Attention<'a> {
    pub q: Rows<'a>,
    pub k: Rows<'a>,
    pub v: Rows<'a>,
    /// Index lists `[n_q, lists, width]` (lists = H_kv or H_q), -1 skipped;
    /// None: every key row.
    pub indices: Option<(&'a [i32], usize, usize)>,
    pub causal: bool,
    pub query_positions: Option<&'a [i64]>,
    /// Position of each key row (-1: empty); None: row r is at r.
    pub key_positions: Option<&'a [i64]>,
    /// 0: 1/sqrt(D).
    pub scale: f64,
}

/// What `sa_attend` returns, in f64.
pub struct Attended {
    /// `[n_q, H_q, D]`.
    pub out: Vec<f64>,
    /// `[n_q, H_q]`; -inf for a query that sees no key.
    pub lse: Vec<f64>,
    /// `[H_kv, n_kv]`: the probability each key row received, summed over
    /// queries and each KV head's query group (a row listed twice, twice).
    pub mass: Vec<f64>,
}

impl<'a> Attention<'a> {
    pub fn dense(q: Rows<'a>, k: Rows<'a>, v: Rows<'a>) -> Self {
        Attention {
            q,
            k,
            v,
            indices: None,
            causal: false,
            query_positions: None,
            key_positions: None,
            scale: 0.0,
        }
    }

    /// Dense attention over contiguous `q [n_q, h_q, d]`, `k`, `v [n_kv, h_kv, d]`.
    pub fn gqa(
        q: &'a [f32],
        k: &'a [f32],
        v: &'a [f32],
        h_q: usize,
        h_kv: usize,
        d: usize,
    ) -> Self {
        Self::dense(
            Rows::new(q, h_q, d),
            Rows::new(k, h_kv, d),
            Rows::new(v, h_kv, d),
        )
    }

    pub fn run(&self) -> Attended {
        let (n_q, h_q, d) = (self.q.len(), self.q.heads, self.q.d);
        let (n_kv, h_kv) = (self.k.len(), self.k.heads);
        let group = h_q / h_kv;
        let scale = if self.scale > 0.0 {
            self.scale
        } else {
            1.0 / (d as f64).sqrt()
        };
        let key_pos = |r: usize| self.key_positions.map_or(r as i64, |p| p[r]);
        let max_pos = (0..n_kv).map(key_pos).max().unwrap_or(-1);
        let mut res = Attended {
            out: vec![0.0; n_q * h_q * d],
            lse: vec![f64::NEG_INFINITY; n_q * h_q],
            mass: vec![0.0; h_kv * n_kv],
        };
        for i in 0..n_q {
            let p = self
                .query_positions
                .map_or(max_pos - n_q as i64 + 1 + i as i64, |qp| qp[i]);
            for h in 0..h_q {
                let kh = h / group;
                let rows: Vec<usize> = match self.indices {
                    None => (0..n_kv).collect(),
                    Some((idx, lists, width)) => {
                        let l = if lists == h_q { h } else { kh };
                        idx[(i * lists + l) * width..][..width]
                            .iter()
                            .filter(|&&s| s >= 0)
                            .map(|&s| s as usize)
                            .collect()
                    }
                };
                let rows: Vec<usize> = rows
                    .into_iter()
                    .filter(|&r| key_pos(r) >= 0 && (!self.causal || key_pos(r) <= p))
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let qrow = self.q.row(i, h);
                let scores: Vec<f64> = rows
                    .iter()
                    .map(|&r| dot(qrow, self.k.row(r, kh)) * scale)
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let denom: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                for (&r, s) in rows.iter().zip(&scores) {
                    let prob = (s - m).exp() / denom;
                    res.mass[kh * n_kv + r] += prob;
                    for (c, x) in self.v.row(r, kh).iter().enumerate() {
                        res.out[(i * h_q + h) * d + c] += prob * *x as f64;
                    }
                }
                res.lse[i * h_q + h] = m + denom.ln();
            }
        }
        res
    }
}

/// The exact selector's choice for one query head, by brute force: the
/// slots at visible positions (<= p) that are sinks (< sinks) or in the
/// window (> p - window), and the top_k best `q . k` of the others;
/// ascending. `positions[s]`: the position slot s holds.
#[allow(clippy::too_many_arguments)]
pub fn brute_force_select(
    q: &[f32],
    keys: Rows<'_>,
    kv_head: usize,
    positions: &[i64],
    p: i64,
    top_k: usize,
    window: i64,
    sinks: i64,
) -> Vec<i32> {
    let mut chosen = Vec::new();
    let mut scored = Vec::new();
    for (s, &pos) in positions.iter().enumerate() {
        if pos < 0 || pos > p {
            continue;
        }
        if pos < sinks || pos > p - window {
            chosen.push(s as i32);
        } else {
            scored.push((dot(q, keys.row(s, kv_head)), s as i32));
        }
    }
    scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    chosen.extend(scored.iter().take(top_k).map(|&(_, s)| s));
    chosen.sort_unstable();
    chosen
}

/// The non-negative entries of an index list.
pub fn listed(row: &[i32]) -> Vec<i32> {
    row.iter().copied().filter(|&s| s >= 0).collect()
}
