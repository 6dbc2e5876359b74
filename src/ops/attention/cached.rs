//! Attention of new queries over a key/value cache, for generation (inference only, no
//! tape). Query i of a chunk sits at absolute position `start + i` and sees cache
//! entries 0..=start+i: the same causal rule as `attention`, with the cache holding one
//! sequence, so no segment mask is needed.

use rayon::prelude::*;

/// Sizes of one cached-attention call.
#[derive(Clone, Copy, Debug)]
pub struct CachedDims {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// `q` is [n, Hq, Dh] for positions start..start+n; `k_cache`/`v_cache` are
/// [len, Hkv, Dh] with len >= start + n. Returns [n, Hq, Dh].
pub fn attention_with_cache(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    start: usize,
    dims: CachedDims,
) -> Vec<f32> {
    let CachedDims {
        q_heads,
        kv_heads,
        head_dim: dh,
    } = dims;
    let n = q.len() / (q_heads * dh);
    let cached = k_cache.len() / (kv_heads * dh);
    assert!(
        start + n <= cached,
        "attention_with_cache: the cache must already hold the new keys"
    );
    let group = q_heads / kv_heads;
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let mut out = vec![0.0f32; q.len()];
    out.par_chunks_mut(dh)
        .enumerate()
        .for_each(|(row_head, o)| {
            let (i, h) = (row_head / q_heads, row_head % q_heads);
            let kv = h / group;
            let qv = &q[row_head * dh..(row_head + 1) * dh];
            let keys = start + i + 1;
            let key = |j: usize| &k_cache[(j * kv_heads + kv) * dh..][..dh];
            let scores: Vec<f32> = (0..keys)
                .map(|j| qv.iter().zip(key(j)).map(|(a, b)| a * b).sum::<f32>() * scale)
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let probs: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let inv_sum = (1.0 / probs.iter().map(|&p| p as f64).sum::<f64>()) as f32;
            for (j, p) in probs.iter().enumerate() {
                let w = p * inv_sum;
                let value = &v_cache[(j * kv_heads + kv) * dh..][..dh];
                o.iter_mut().zip(value).for_each(|(o, v)| *o += w * v);
            }
        });
    out
}
