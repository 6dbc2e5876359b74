//! CPU reference for causal grouped-query attention with a packing (segment) mask.
//!
//! Work is split over (batch row, query head). Each task copies its head out of the
//! [B, T, H, Dh] layout into contiguous [T, Dh] buffers and runs the products as GEMMs
//! over blocks of query rows: rows [r0, r1) can only see keys [0, r1), so most of the
//! masked upper triangle of the score matrix is never computed.
//!
//! Saved for backward: the log-sum-exp of each score row, [B, Hq, T] (flash-attention
//! style). Backward recomputes the probabilities from it with one more GEMM instead of
//! keeping [B, Hq, T, T] probabilities alive from forward to backward.

use rayon::prelude::*;

use crate::backend::cpu::{matmul, Transpose};

/// Query rows per block: big enough for efficient GEMMs, small enough that the
/// skipped upper triangle is most of it.
pub const ROW_BLOCK: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct AttentionDims {
    pub batch: usize,
    pub seq: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionDims {
    /// HF's repeat_kv: consecutive query heads share a key/value head.
    fn kv_head_of(&self, q_head: usize) -> usize {
        q_head / (self.q_heads / self.kv_heads)
    }

    /// HF's `head_dim ** -0.5`, a double rounded to f32 when applied.
    fn scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }
}

/// The inputs of one (batch row, query head) task, as contiguous [T, Dh] buffers.
struct Head<'a> {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// This batch row's segment ids, when sequences are packed.
    segments: Option<&'a [u32]>,
}

impl<'a> Head<'a> {
    fn gather(
        (q, k, v): (&[f32], &[f32], &[f32]),
        segments: Option<&'a [u32]>,
        dims: AttentionDims,
        task: usize,
    ) -> Self {
        let (b, h) = (task / dims.q_heads, task % dims.q_heads);
        let (seq, g) = (dims.seq, dims.kv_head_of(h));
        Head {
            q: gather_head(q, b, h, dims.q_heads, dims),
            k: gather_head(k, b, g, dims.kv_heads, dims),
            v: gather_head(v, b, g, dims.kv_heads, dims),
            segments: segments.map(|s| &s[b * seq..(b + 1) * seq]),
        }
    }
}

/// Whether query position `query` may attend key position `key` (same batch row).
fn visible(segments: Option<&[u32]>, query: usize, key: usize) -> bool {
    key <= query && segments.is_none_or(|s| s[query] == s[key])
}

/// Forward: the output [B, T, Hq, Dh] and the log-sum-exp of each score row [B, Hq, T].
pub fn attention_forward(
    qkv: (&[f32], &[f32], &[f32]),
    segments: Option<&[u32]>,
    dims: AttentionDims,
    row_block: usize,
) -> (Vec<f32>, Vec<f32>) {
    let heads: Vec<(Vec<f32>, Vec<f32>)> = (0..dims.batch * dims.q_heads)
        .into_par_iter()
        .map(|task| head_forward(&Head::gather(qkv, segments, dims, task), dims, row_block))
        .collect();
    let out_heads: Vec<&[f32]> = heads.iter().map(|(out, _)| &out[..]).collect();
    let out = scatter_heads(&out_heads, dims.q_heads, dims);
    let lse = heads.into_iter().flat_map(|(_, lse)| lse).collect();
    (out, lse)
}

/// Backward: (dq, dk, dv) from the output gradient [B, T, Hq, Dh] and the saved
/// log-sum-exp. dk and dv sum over the query heads that share a key/value head.
pub fn attention_backward(
    qkv: (&[f32], &[f32], &[f32]),
    segments: Option<&[u32]>,
    dims: AttentionDims,
    lse: &[f32],
    grad_out: &[f32],
    row_block: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let seq = dims.seq;
    let heads: Vec<HeadGrads> = (0..dims.batch * dims.q_heads)
        .into_par_iter()
        .map(|task| {
            let head = Head::gather(qkv, segments, dims, task);
            let (b, h) = (task / dims.q_heads, task % dims.q_heads);
            let grad_out = gather_head(grad_out, b, h, dims.q_heads, dims);
            let lse = &lse[task * seq..(task + 1) * seq];
            head_backward(&head, &grad_out, lse, dims, row_block)
        })
        .collect();
    let dq: Vec<&[f32]> = heads.iter().map(|g| &g.dq[..]).collect();
    let dk = sum_over_groups(heads.iter().map(|g| &g.dk[..]).collect(), dims);
    let dv = sum_over_groups(heads.iter().map(|g| &g.dv[..]).collect(), dims);
    let dk: Vec<&[f32]> = dk.iter().map(|g| &g[..]).collect();
    let dv: Vec<&[f32]> = dv.iter().map(|g| &g[..]).collect();
    (
        scatter_heads(&dq, dims.q_heads, dims),
        scatter_heads(&dk, dims.kv_heads, dims),
        scatter_heads(&dv, dims.kv_heads, dims),
    )
}

/// One head's output [T, Dh] and row log-sum-exps [T].
fn head_forward(head: &Head, dims: AttentionDims, row_block: usize) -> (Vec<f32>, Vec<f32>) {
    let (seq, dh, scale) = (dims.seq, dims.head_dim, dims.scale());
    let mut out = vec![0.0; seq * dh];
    let mut lse = vec![0.0; seq];
    let mut scores = vec![0.0; row_block.min(seq) * seq];
    for r0 in (0..seq).step_by(row_block) {
        let r1 = (r0 + row_block).min(seq);
        let (rows, keys) = (r1 - r0, r1);
        let probs = &mut scores[..rows * keys];
        let q_block = &head.q[r0 * dh..r1 * dh];
        matmul(
            probs,
            q_block,
            Transpose::No,
            &head.k[..keys * dh],
            Transpose::Yes,
            (rows, keys, dh),
            false,
        );
        for (i, row) in probs.chunks_mut(keys).enumerate() {
            lse[r0 + i] = softmax_row(row, r0 + i, head.segments, scale);
        }
        matmul(
            &mut out[r0 * dh..r1 * dh],
            probs,
            Transpose::No,
            &head.v[..keys * dh],
            Transpose::No,
            (rows, dh, keys),
            false,
        );
    }
    (out, lse)
}

/// Turns one row of raw scores q·k into probabilities in place (zero where masked);
/// returns the log-sum-exp of the scaled visible scores.
fn softmax_row(row: &mut [f32], query: usize, segments: Option<&[u32]>, scale: f32) -> f32 {
    let max = (0..row.len())
        .filter(|&j| visible(segments, query, j))
        .map(|j| row[j] * scale)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for (j, s) in row.iter_mut().enumerate() {
        *s = if visible(segments, query, j) {
            let p = (*s * scale - max).exp();
            sum += p as f64;
            p
        } else {
            0.0
        };
    }
    // The diagonal is always visible, so sum >= 1.
    let inv_sum = (1.0 / sum) as f32;
    row.iter_mut().for_each(|p| *p *= inv_sum);
    (max as f64 + sum.ln()) as f32
}

struct HeadGrads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// One head's gradients, each [T, Dh]; dk and dv are this query head's share.
fn head_backward(
    head: &Head,
    grad_out: &[f32],
    lse: &[f32],
    dims: AttentionDims,
    row_block: usize,
) -> HeadGrads {
    let (seq, dh, scale) = (dims.seq, dims.head_dim, dims.scale());
    let mut grads = HeadGrads {
        dq: vec![0.0; seq * dh],
        dk: vec![0.0; seq * dh],
        dv: vec![0.0; seq * dh],
    };
    let block_len = row_block.min(seq) * seq;
    let (mut probs_buf, mut dscores_buf) = (vec![0.0; block_len], vec![0.0; block_len]);
    for r0 in (0..seq).step_by(row_block) {
        let r1 = (r0 + row_block).min(seq);
        let (rows, keys) = (r1 - r0, r1);
        let (q_block, go_block) = (&head.q[r0 * dh..r1 * dh], &grad_out[r0 * dh..r1 * dh]);
        let (k_seen, v_seen) = (&head.k[..keys * dh], &head.v[..keys * dh]);
        let probs = &mut probs_buf[..rows * keys];
        matmul(
            probs,
            q_block,
            Transpose::No,
            k_seen,
            Transpose::Yes,
            (rows, keys, dh),
            false,
        );
        for (i, row) in probs.chunks_mut(keys).enumerate() {
            recompute_probs(row, r0 + i, head.segments, scale, lse[r0 + i]);
        }
        // dP = dO·Vᵀ, then dS (scaled, so it is the gradient of the raw q·k) in place.
        let dscores = &mut dscores_buf[..rows * keys];
        matmul(
            dscores,
            go_block,
            Transpose::No,
            v_seen,
            Transpose::Yes,
            (rows, keys, dh),
            false,
        );
        for (p_row, ds_row) in probs.chunks(keys).zip(dscores.chunks_mut(keys)) {
            softmax_backward_row(p_row, ds_row, scale);
        }
        let dv_seen = &mut grads.dv[..keys * dh];
        matmul(
            dv_seen,
            probs,
            Transpose::Yes,
            go_block,
            Transpose::No,
            (keys, dh, rows),
            true,
        );
        let dq_block = &mut grads.dq[r0 * dh..r1 * dh];
        matmul(
            dq_block,
            dscores,
            Transpose::No,
            k_seen,
            Transpose::No,
            (rows, dh, keys),
            false,
        );
        let dk_seen = &mut grads.dk[..keys * dh];
        matmul(
            dk_seen,
            dscores,
            Transpose::Yes,
            q_block,
            Transpose::No,
            (keys, dh, rows),
            true,
        );
    }
    grads
}

/// Raw scores q·k back to the forward's probabilities, from the saved log-sum-exp.
fn recompute_probs(row: &mut [f32], query: usize, segments: Option<&[u32]>, scale: f32, lse: f32) {
    for (j, s) in row.iter_mut().enumerate() {
        *s = if visible(segments, query, j) {
            (*s * scale - lse).exp()
        } else {
            0.0
        };
    }
}

/// dP → dS = P ⊙ (dP − Σⱼ Pⱼ dPⱼ), times `scale` (the chain rule through s·scale).
fn softmax_backward_row(probs: &[f32], dprobs: &mut [f32], scale: f32) {
    let dot: f64 = probs
        .iter()
        .zip(dprobs.iter())
        .map(|(&p, &dp)| p as f64 * dp as f64)
        .sum();
    let dot = dot as f32;
    for (&p, dp) in probs.iter().zip(dprobs.iter_mut()) {
        *dp = p * (*dp - dot) * scale;
    }
}

/// Head `h` of batch row `b` of a [B, T, n_heads, Dh] tensor, as a contiguous [T, Dh].
fn gather_head(x: &[f32], b: usize, h: usize, n_heads: usize, dims: AttentionDims) -> Vec<f32> {
    let dh = dims.head_dim;
    (0..dims.seq)
        .flat_map(|t| {
            let start = ((b * dims.seq + t) * n_heads + h) * dh;
            x[start..start + dh].iter().copied()
        })
        .collect()
}

/// The inverse of gather_head: per-(b, h) [T, Dh] buffers, in (b, h) order, laid out
/// as one [B, T, n_heads, Dh] tensor.
fn scatter_heads(heads: &[&[f32]], n_heads: usize, dims: AttentionDims) -> Vec<f32> {
    let (seq, dh) = (dims.seq, dims.head_dim);
    let mut out = vec![0.0; dims.batch * seq * n_heads * dh];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(n_heads * dh)
        .enumerate()
        .for_each(|(token, dst)| {
            let (b, t) = (token / seq, token % seq);
            for (h, dst_head) in dst.chunks_mut(dh).enumerate() {
                dst_head.copy_from_slice(&heads[b * n_heads + h][t * dh..(t + 1) * dh]);
            }
        });
    out
}

/// Per-query-head key/value gradients, in (b, h) order, summed over the query heads
/// that share each key/value head: the result is in (b, kv head) order.
fn sum_over_groups(per_q_head: Vec<&[f32]>, dims: AttentionDims) -> Vec<Vec<f32>> {
    let group = dims.q_heads / dims.kv_heads;
    per_q_head
        .par_chunks(group)
        .map(|shared| {
            let mut sum = shared[0].to_vec();
            for other in &shared[1..] {
                sum.iter_mut().zip(other.iter()).for_each(|(s, o)| *s += o);
            }
            sum
        })
        .collect()
}
