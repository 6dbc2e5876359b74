//! CPU reference for add.

use rayon::prelude::*;

pub fn add_forward(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.par_iter().zip(b.par_iter()).map(|(x, y)| x + y).collect()
}
