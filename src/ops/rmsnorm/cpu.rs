//! CPU reference for rmsnorm: f32 data, row sums in f64, rows in parallel.

use rayon::prelude::*;

/// Rows per partial sum of the weight gradient. Fixed (not derived from the thread
/// count) so the summation order, and hence every bit of the result, is the same on
/// any machine.
const WEIGHT_GRAD_BLOCK_ROWS: usize = 64;

/// Elements per parallel task of the forward at least: a decode step's few rows are
/// normalised on the calling thread, where waking another would cost more.
const MIN_ELEMS_PER_TASK: usize = 1 << 14;

/// `(y, rstd)`: per row of `x` (length `weight.len()`, nonzero),
/// `rstd = 1 / sqrt(mean(x²) + eps)` and `y = weight * (x * rstd)`, multiplied in
/// that order as Hugging Face does.
pub fn rmsnorm_forward(x: &[f32], weight: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let dim = weight.len();
    let mut y = vec![0.0; x.len()];
    let mut rstd = vec![0.0; x.len() / dim];
    y.par_chunks_mut(dim)
        .zip(rstd.par_iter_mut())
        .zip(x.par_chunks(dim))
        .with_min_len(MIN_ELEMS_PER_TASK.div_ceil(dim))
        .for_each(|((y_row, row_rstd), x_row)| {
            *row_rstd = reciprocal_rms(x_row, eps);
            for ((y, &x), &w) in y_row.iter_mut().zip(x_row).zip(weight) {
                *y = w * (x * *row_rstd);
            }
        });
    (y, rstd)
}

fn reciprocal_rms(row: &[f32], eps: f32) -> f32 {
    let sum_sq: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
    let mean_sq = sum_sq / row.len() as f64;
    (1.0 / (mean_sq + eps as f64).sqrt()) as f32
}

/// Gradient with respect to `x`. With `r` the row's rstd and `D` its length,
/// `dx = r * (g * w) - x * r³ * Σ(g * w * x) / D`: the first term through the scaling,
/// the second through `r`'s dependence on every element of the row.
pub fn rmsnorm_input_grad(x: &[f32], weight: &[f32], rstd: &[f32], grad: &[f32]) -> Vec<f32> {
    let dim = weight.len();
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .zip(grad.par_chunks(dim))
        .zip(rstd.par_iter())
        .for_each(|(((dx_row, x_row), g_row), &r)| {
            let r = r as f64;
            let dot: f64 = (0..dim)
                .map(|j| g_row[j] as f64 * weight[j] as f64 * x_row[j] as f64)
                .sum();
            let coeff = r * r * r * dot / dim as f64;
            for j in 0..dim {
                let scaled = r * (g_row[j] as f64 * weight[j] as f64);
                dx_row[j] = (scaled - coeff * x_row[j] as f64) as f32;
            }
        });
    dx
}

/// Gradient with respect to `weight`: `Σ over rows of g * x * rstd`, in f64. Blocks of
/// rows are summed in parallel, then the block sums in block order.
pub fn rmsnorm_weight_grad(x: &[f32], rstd: &[f32], grad: &[f32], dim: usize) -> Vec<f32> {
    let block = WEIGHT_GRAD_BLOCK_ROWS * dim;
    let block_sums: Vec<Vec<f64>> = x
        .par_chunks(block)
        .zip(grad.par_chunks(block))
        .zip(rstd.par_chunks(WEIGHT_GRAD_BLOCK_ROWS))
        .map(|((x_block, g_block), r_block)| {
            let mut sum = vec![0.0f64; dim];
            let rows = x_block.chunks(dim).zip(g_block.chunks(dim)).zip(r_block);
            for ((x_row, g_row), &r) in rows {
                for ((s, &x), &g) in sum.iter_mut().zip(x_row).zip(g_row) {
                    *s += g as f64 * x as f64 * r as f64;
                }
            }
            sum
        })
        .collect();
    let mut total = vec![0.0f64; dim];
    for sum in &block_sums {
        for (t, s) in total.iter_mut().zip(sum) {
            *t += s;
        }
    }
    total.into_iter().map(|t| t as f32).collect()
}
