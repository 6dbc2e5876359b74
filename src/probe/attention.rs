//! Attention probabilities per head, for the `attn_probs` site and `scotd probe attention`:
//! softmax(q·kᵀ/√Dh) with the model's causal and packing mask, computed only when asked
//! (the attention op itself never materialises them).

use crate::{Error, Result, Tensor};

/// `[B, Hq, T, T]` probabilities from rotated q `[B, T, Hq, Dh]` and k `[B, T, Hkv, Dh]`;
/// masked entries are 0.
pub fn probabilities(q: &Tensor, k: &Tensor, segments: Option<&[u32]>) -> Result<Tensor> {
    let (qd, kd) = (q.dims(), k.dims());
    let grouped = qd.len() == 4 && kd.len() == 4 && kd[2] > 0 && qd[2] % kd[2] == 0;
    if !grouped || qd[..2] != kd[..2] || qd[3] != kd[3] {
        return Err(Error::shape(
            "attention probabilities",
            format!("q {qd:?}, k {kd:?}"),
        ));
    }
    let [b, t, hq, dh] = [qd[0], qd[1], qd[2], qd[3]];
    let hkv = kd[2];
    // On the host on every device: no kernel materialises the probabilities, and one
    // probed prompt's are small.
    let (q, k) = (q.to_vec_f32()?, k.to_vec_f32()?);
    let scale = 1.0 / (dh as f32).sqrt();
    let mut out = vec![0.0f32; b * hq * t * t];
    for (bh, rows) in out.chunks_mut(t * t).enumerate() {
        let (bi, h) = (bh / hq, bh % hq);
        let g = h / (hq / hkv);
        let q_row = |i: usize| &q[((bi * t + i) * hq + h) * dh..][..dh];
        let k_row = |j: usize| &k[((bi * t + j) * hkv + g) * dh..][..dh];
        let seen =
            |i: usize, j: usize| j <= i && segments.is_none_or(|s| s[bi * t + i] == s[bi * t + j]);
        for (i, row) in rows.chunks_mut(t).enumerate() {
            let scores: Vec<f32> = (0..t)
                .map(|j| {
                    let dot: f32 = q_row(i).iter().zip(k_row(j)).map(|(a, b)| a * b).sum();
                    if seen(i, j) {
                        dot * scale
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = scores.iter().map(|s| (s - max).exp()).sum();
            row.iter_mut()
                .zip(&scores)
                .for_each(|(p, s)| *p = (s - max).exp() / sum);
        }
    }
    Tensor::from_vec(out, vec![b, hq, t, t])
}
