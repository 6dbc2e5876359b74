//! CPU reference for the fused cross-entropy: one stable log-sum-exp per row (max
//! subtraction, f64 accumulation of the exp-sum), rows in parallel. Backward recomputes
//! the softmax from the saved per-row log-sum-exp instead of keeping probabilities.

use rayon::prelude::*;

use super::IGNORE_INDEX;

/// `log Σ_j exp(row_j)`, stable for any magnitude of logits.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&z| (z - max).exp() as f64).sum();
    max as f64 + sum.ln()
}

/// Per-row losses summed (in row order, so the result is deterministic) and each
/// supervised row's log-sum-exp (0 for ignored rows, which backward skips).
pub fn forward(logits: &[f32], targets: &[i64], vocab: usize) -> (f64, Vec<f64>) {
    let per_row: Vec<(f64, f64)> = logits
        .par_chunks(vocab.max(1))
        .zip(targets.par_iter())
        .map(|(row, &target)| {
            if target == IGNORE_INDEX {
                return (0.0, 0.0);
            }
            let lse = log_sum_exp(row);
            (lse - row[target as usize] as f64, lse)
        })
        .collect();
    let loss_sum = per_row.iter().map(|&(loss, _)| loss).sum();
    (loss_sum, per_row.into_iter().map(|(_, lse)| lse).collect())
}

/// `dlogits = (softmax − onehot(target)) · scale` on supervised rows, 0 on ignored ones.
pub fn backward(
    logits: &[f32],
    targets: &[i64],
    row_lse: &[f64],
    vocab: usize,
    scale: f32,
) -> Vec<f32> {
    let mut grad = vec![0.0f32; logits.len()];
    grad.par_chunks_mut(vocab.max(1))
        .zip(logits.par_chunks(vocab.max(1)))
        .zip(targets.par_iter().zip(row_lse.par_iter()))
        .for_each(|((g, row), (&target, &lse))| {
            if target == IGNORE_INDEX {
                return;
            }
            for (gj, &z) in g.iter_mut().zip(row) {
                // The difference is taken in f64: lse may be ~1e4 where f32 keeps
                // only ~3 decimals.
                *gj = ((z as f64 - lse) as f32).exp() * scale;
            }
            g[target as usize] -= scale;
        });
    grad
}
