//! CPU reference for rotary position embeddings, in Hugging Face's half-split
//! ("rotate_half") convention: dimension i is paired with dimension i + Dh/2.

use rayon::prelude::*;

/// Elements per parallel task at least: a decode step's few tokens are rotated on the
/// calling thread, where waking another would cost more than the rotation.
const MIN_ELEMS_PER_TASK: usize = 1 << 14;

/// cos and sin of every angle one call needs: a row of Dh/2 entries per distinct
/// position (in training the batch rows share positions, so this is far smaller than
/// one row per token), and the row each token uses.
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    row_of_token: Vec<usize>,
    /// The table's copy on each GPU it was used on, made once for every layer.
    pub(super) on_devices: super::cuda::DeviceTables,
}

impl RopeTable {
    pub fn head_dim(&self) -> usize {
        2 * self.half
    }

    /// The cos and sin rows ([distinct positions, head_dim / 2]) and each token's row,
    /// for a device to rotate by exactly these factors.
    pub fn parts(&self) -> (&[f32], &[f32], &[usize]) {
        (&self.cos, &self.sin, &self.row_of_token)
    }

    /// Number of tokens (positions) the table was built for.
    pub fn tokens(&self) -> usize {
        self.row_of_token.len()
    }

    pub fn new(positions: &[u32], head_dim: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        let inv_freq = inverse_frequencies(head_dim, theta);
        let mut distinct = positions.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let mut cos = Vec::with_capacity(distinct.len() * half);
        let mut sin = Vec::with_capacity(distinct.len() * half);
        for &position in &distinct {
            for &freq in &inv_freq {
                // As HF: the angle is an f32 product; its cos/sin are rounded to f32
                // from f64 so they are the correctly rounded values of that angle.
                let angle = position as f32 * freq;
                cos.push((angle as f64).cos() as f32);
                sin.push((angle as f64).sin() as f32);
            }
        }
        let row_of_token = positions
            .iter()
            .map(|p| distinct.partition_point(|d| d < p))
            .collect();
        RopeTable {
            half,
            cos,
            sin,
            row_of_token,
            on_devices: Default::default(),
        }
    }
}

/// HF's `1.0 / (base ** (arange(0, dim, 2).float() / dim))`: exponent and reciprocal in
/// f32. torch's f32 power lands on the correctly rounded value (bar a rare ulp); the
/// power is taken in f64 and rounded to get that value whatever the platform's libm
/// does for f32, since an ulp of a frequency is a visible error at large positions.
fn inverse_frequencies(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let power = (theta as f64).powf(exponent as f64) as f32;
            1.0 / power
        })
        .collect()
}

/// Rotation by +angle (the forward) or by -angle (its inverse, which is also its
/// transpose: the backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    Forward,
    Inverse,
}

/// Rotates `x`, laid out as [tokens, heads, 2 * table.half], token by token.
pub fn rotate(x: &[f32], table: &RopeTable, heads: usize, rotation: Rotation) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let head_dim = 2 * table.half;
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(heads * head_dim)
        .zip(x.par_chunks(heads * head_dim))
        .zip(table.row_of_token.par_iter())
        .with_min_len(MIN_ELEMS_PER_TASK.div_ceil(heads * head_dim))
        .for_each(|((out_token, x_token), &row)| {
            let cos = &table.cos[row * table.half..(row + 1) * table.half];
            let sin = &table.sin[row * table.half..(row + 1) * table.half];
            for (out_head, x_head) in out_token.chunks_mut(head_dim).zip(x_token.chunks(head_dim)) {
                rotate_head(out_head, x_head, cos, sin, rotation);
            }
        });
    out
}

fn rotate_head(out: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32], rotation: Rotation) {
    let half = cos.len();
    let (x1, x2) = x.split_at(half);
    let (out1, out2) = out.split_at_mut(half);
    for i in 0..half {
        // Same operations, in the same order, as HF's `x * cos + rotate_half(x) * sin`.
        let s = match rotation {
            Rotation::Forward => sin[i],
            Rotation::Inverse => -sin[i],
        };
        out1[i] = x1[i] * cos[i] - x2[i] * s;
        out2[i] = x2[i] * cos[i] + x1[i] * s;
    }
}
