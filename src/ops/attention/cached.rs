//! Attention of new queries over a key/value cache, for generation (inference only, no
//! tape). Query i of a chunk sits at absolute position `start + i` and sees cache
//! entries 0..=start+i: the same causal rule as `attention`, with each cache holding one
//! sequence, so no segment mask is needed.

use rayon::prelude::*;

use crate::ops::{device_of, gpu_dtype_of, on_gpu_dtype};
use crate::{Device, Error, Result, Tensor};

/// Attention of one sequence's new queries `q` [n, Hq, Dh] at positions start..start+n
/// over its cache `k_cache`, `v_cache` [len, Hkv, Dh] (the new keys already in it, len >=
/// start + n): [n, Hq·Dh] on their device. Inference only: nothing is recorded.
pub fn attention_cached(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    start: usize,
) -> Result<Tensor> {
    let dims = cached_dims(q, k_cache, v_cache, start)?;
    let n = q.dims()[0];
    let width = dims.q_heads * dims.head_dim;
    match device_of("attention_cached", &[q, k_cache, v_cache])? {
        Device::Cpu => {
            let (k, v) = (k_cache.read_f32()?, v_cache.read_f32()?);
            let queries = CachedQueries {
                q: &q.read_f32()?,
                k_cache: &k,
                v_cache: &v,
                start,
            };
            Tensor::from_vec(attention_with_caches(&[queries], dims), [n, width])
        }
        _ => {
            const OP: &str = "attention_cached";
            on_gpu_dtype!(OP, gpu_dtype_of(OP, &[q, k_cache, v_cache])?, T => {
                let (rq, rk, rv) = (q.read_gpu(OP)?, k_cache.read_gpu(OP)?, v_cache.read_gpu(OP)?);
                let gpu = rq.gpu().clone();
                let views = (rq.view::<T>(OP)?, rk.view::<T>(OP)?, rv.view::<T>(OP)?);
                let out = super::cuda::cached_attention_forward(&gpu, views.0, views.1, views.2, start, dims)?;
                Ok(Tensor::from_gpu((rq.device(), &gpu), out, [n, width]))
            })
        }
    }
}

fn cached_dims(q: &Tensor, k: &Tensor, v: &Tensor, start: usize) -> Result<CachedDims> {
    let fail = |msg: String| Err(Error::shape("attention_cached", msg));
    if q.shape().rank() != 3 || k.shape().rank() != 3 || k.shape() != v.shape() {
        return fail(format!(
            "q must be [n, Hq, Dh] and k, v the same [len, Hkv, Dh], got q {}, k {}, v {}",
            q.shape(),
            k.shape(),
            v.shape()
        ));
    }
    let dims = CachedDims {
        q_heads: q.dims()[1],
        kv_heads: k.dims()[1],
        head_dim: q.dims()[2],
    };
    if k.dims()[2] != dims.head_dim
        || dims.kv_heads == 0
        || !dims.q_heads.is_multiple_of(dims.kv_heads)
    {
        return fail(format!(
            "q {} and the cache {} must share Dh, with Hq a multiple of Hkv",
            q.shape(),
            k.shape()
        ));
    }
    if start + q.dims()[0] > k.dims()[0] {
        return fail(format!(
            "the cache of {} rows does not hold the new keys at {start}..{}",
            k.dims()[0],
            start + q.dims()[0]
        ));
    }
    Ok(dims)
}

/// Sizes of one cached-attention call.
#[derive(Clone, Copy, Debug)]
pub struct CachedDims {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One sequence's part of a cached-attention call: its new queries `q` [n, Hq, Dh] at
/// positions start..start+n, and its cache `k_cache`/`v_cache` [len, Hkv, Dh], which
/// already holds the new keys (len >= start + n).
#[derive(Clone, Copy, Debug)]
pub struct CachedQueries<'a> {
    pub q: &'a [f32],
    pub k_cache: &'a [f32],
    pub v_cache: &'a [f32],
    pub start: usize,
}

/// Attention of several sequences' new queries over their own caches, in one parallel
/// pass over every (query, head) pair of the batch. Returns the outputs [n, Hq, Dh] of
/// the sequences, concatenated in order.
pub fn attention_with_caches(seqs: &[CachedQueries], dims: CachedDims) -> Vec<f32> {
    let row_width = dims.q_heads * dims.head_dim;
    let mut first_row = Vec::with_capacity(seqs.len() + 1);
    first_row.push(0);
    for s in seqs {
        let n = s.q.len() / row_width;
        let cached = s.k_cache.len() / (dims.kv_heads * dims.head_dim);
        assert!(
            s.start + n <= cached,
            "attention_with_caches: the cache must already hold the new keys"
        );
        first_row.push(first_row.last().unwrap() + n);
    }
    let mut out = vec![0.0f32; first_row.last().unwrap() * row_width];
    if dims.head_dim == 0 {
        return out;
    }
    out.par_chunks_mut(dims.head_dim)
        .enumerate()
        .for_each(|(unit, o)| {
            let (row, head) = (unit / dims.q_heads, unit % dims.q_heads);
            let s = first_row.partition_point(|&f| f <= row) - 1;
            let i = row - first_row[s];
            attend(o, &seqs[s], i, head, dims);
        });
    out
}

/// Output `o` of query row `i`, head `head` of one sequence.
fn attend(o: &mut [f32], seq: &CachedQueries, i: usize, head: usize, dims: CachedDims) {
    let dh = dims.head_dim;
    let kv = head / (dims.q_heads / dims.kv_heads);
    let qv = &seq.q[(i * dims.q_heads + head) * dh..][..dh];
    let keys = seq.start + i + 1;
    let offset = |j: usize| (j * dims.kv_heads + kv) * dh;
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let scores: Vec<f32> = (0..keys)
        .map(|j| dot(qv, &seq.k_cache[offset(j)..][..dh]) * scale)
        .collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let inv_sum = (1.0 / probs.iter().map(|&p| p as f64).sum::<f64>()) as f32;
    for (j, p) in probs.iter().enumerate() {
        let w = p * inv_sum;
        let value = &seq.v_cache[offset(j)..][..dh];
        o.iter_mut().zip(value).for_each(|(o, v)| *o += w * v);
    }
}

/// Independent partial sums per dot product, so the compiler can keep them in one
/// vector register instead of a serial chain of adds.
const DOT_LANES: usize = 8;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; DOT_LANES];
    let (ca, cb) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}
