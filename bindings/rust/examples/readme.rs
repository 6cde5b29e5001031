//! The snippet in bindings/README.md, compiled and run by scripts/ci_bindings.sh
//! (`cargo run --example readme`): 256 cached keys of 2 KV heads, one query of
//! 4 heads, the default top-K + window + sinks selection, sparse attention.
use sparseattn::{
    AttendOptions, Context, DType, Index, IndexOptions, SelectOptions, Tensor, TensorMut,
};

#[rustfmt::skip] // kept as compact as the README shows it
fn main() -> sparseattn::Result<()> {
    // README: begin (README.md shows these lines; tools/readme_snippets.py checks they match)
    let (kv, q): (Vec<f32>, Vec<f32>) = ((0..256 * 128).map(|i| (i as f32).sin()).collect(), vec![0.1; 256]);
    let ctx = Context::new()?;
    let mut index = Index::new(&ctx, &IndexOptions { num_kv_heads: 2, head_dim: 64, dtype: DType::F32, ..Default::default() })?;
    index.append(&Tensor::f32(&kv, &[256, 2, 64])?)?;
    let (mut idx, mut out) = (vec![0i32; 2 * 132], vec![0f32; 256]); // width 132 = top_k 64 + window 64 + sinks 4
    index.select(&Tensor::f32(&q, &[1, 4, 64])?, &SelectOptions::default(), &mut TensorMut::i32(&mut idx, &[1, 2, 132])?)?;
    ctx.attend(&Tensor::f32(&q, &[1, 4, 64])?, &Tensor::f32(&kv, &[256, 2, 64])?, &Tensor::f32(&kv, &[256, 2, 64])?,
               Some(&Tensor::i32(&idx, &[1, 2, 132])?), &AttendOptions::default(), &mut TensorMut::f32(&mut out, &[1, 4, 64])?, None)?;
    println!("each KV head attended {} of 256 keys; out[0] = {:.4}", idx[..132].iter().filter(|&&s| s >= 0).count(), out[0]);
    // README: end
    Ok(())
}
