//! CPU reference for linear: every product goes through a GEMM primitive, with the
//! weight's transpose expressed as strides; the bias gradient is a deterministic f64
//! column sum.

use rayon::prelude::*;

use crate::backend::cpu::{matmul, skinny_matmuls, SkinnyProduct, Transpose, WeightRows};

/// Columns summed by one task of `bias_grad`: contiguous enough per row to stream
/// well, small enough to spread a hidden-size bias over the cores.
const BIAS_COLUMNS_PER_TASK: usize = 128;

/// Up to this many rows of x (a decode step's tokens), the forward runs straight over
/// the stored f32 weight (`skinny_matmul`); above, the `gemm` crate's packing of the
/// weight pays for itself (measured on Zen 4 at SmolLM2's shapes: level at 32 rows, the
/// gemm crate 10-30 % ahead at 64).
const SKINNY_MAX_ROWS_F32: usize = 32;

/// The same for bf16 weights, which the `gemm` crate needs widened to f32 first: writing
/// that copy costs more than the skinny kernel's extra passes up to 64 rows (the LM head
/// at 32 rows: 15 ms skinny, 49 ms widened + gemm).
const SKINNY_MAX_ROWS_BF16: usize = 64;

/// `y_i = x · W_iᵀ (+ b_i)` for each weight: x is rows×k, W_i is m_i×k (out × in) with
/// m_i = `out_features[i]`, y_i is rows×m_i.
pub fn linears_forward(
    x: &[f32],
    weights: &[WeightRows],
    biases: &[Option<&[f32]>],
    out_features: &[usize],
    (rows, k): (usize, usize),
) -> Vec<Vec<f32>> {
    let all_bf16 = weights.iter().all(|w| matches!(w, WeightRows::Bf16(_)));
    let skinny_max = if all_bf16 {
        SKINNY_MAX_ROWS_BF16
    } else {
        SKINNY_MAX_ROWS_F32
    };
    if rows > skinny_max {
        return weights
            .iter()
            .zip(biases)
            .zip(out_features)
            .map(|((&w, &b), &m)| gemm_forward(x, w, b, (rows, k, m)))
            .collect();
    }
    let mut ys: Vec<Vec<f32>> = out_features.iter().map(|&m| vec![0.0; rows * m]).collect();
    let mut products: Vec<SkinnyProduct> = weights
        .iter()
        .zip(ys.iter_mut())
        .map(|(&w, y)| SkinnyProduct { w, y })
        .collect();
    skinny_matmuls(x, (rows, k), &mut products);
    for ((y, bias), &m) in ys.iter_mut().zip(biases).zip(out_features) {
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(m.max(1)) {
                row.iter_mut().zip(*b).for_each(|(y, b)| *y += b);
            }
        }
    }
    ys
}

/// `y = x · Wᵀ (+ b)` through the `gemm` crate (a bf16 W widened first).
fn gemm_forward(
    x: &[f32],
    weight: WeightRows,
    bias: Option<&[f32]>,
    (rows, k, m): (usize, usize, usize),
) -> Vec<f32> {
    let mut y = vec![0.0; rows * m];
    // Starting from the broadcast bias lets the GEMM add the product in its own pass.
    if let Some(b) = bias {
        y.par_chunks_mut(m.max(1))
            .for_each(|row| row.copy_from_slice(b));
    }
    matmul(
        &mut y,
        x,
        Transpose::No,
        &weight.to_f32(),
        Transpose::Yes,
        (rows, m, k),
        bias.is_some(),
    );
    y
}

/// `dx = dy · W`: rows×k.
pub fn input_grad(dy: &[f32], weight: &[f32], (rows, k, m): (usize, usize, usize)) -> Vec<f32> {
    let mut dx = vec![0.0; rows * k];
    matmul(
        &mut dx,
        dy,
        Transpose::No,
        weight,
        Transpose::No,
        (rows, k, m),
        false,
    );
    dx
}

/// `dW = dyᵀ · x`: m×k, summed over every row.
pub fn weight_grad(dy: &[f32], x: &[f32], (rows, k, m): (usize, usize, usize)) -> Vec<f32> {
    let mut dw = vec![0.0; m * k];
    matmul(
        &mut dw,
        dy,
        Transpose::Yes,
        x,
        Transpose::No,
        (m, k, rows),
        false,
    );
    dw
}

/// `db = Σ_rows dy`: each task owns a block of columns and sums the rows in order, in
/// f64, so the result does not depend on scheduling.
pub fn bias_grad(dy: &[f32], rows: usize, m: usize) -> Vec<f32> {
    let mut db = vec![0.0; m];
    db.par_chunks_mut(BIAS_COLUMNS_PER_TASK)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * BIAS_COLUMNS_PER_TASK;
            let mut acc = vec![0.0f64; out.len()];
            for r in 0..rows {
                let row = &dy[r * m + first..r * m + first + out.len()];
                acc.iter_mut().zip(row).for_each(|(a, &g)| *a += g as f64);
            }
            out.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        });
    db
}
