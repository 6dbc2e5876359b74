//! CPU reference for add.

use rayon::prelude::*;

/// Elements per parallel task at least: a decode step's few rows are summed on the
/// calling thread, where waking another would cost more than the sum.
const MIN_ELEMS_PER_TASK: usize = 1 << 14;

pub fn add_forward(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.par_iter()
        .zip(b.par_iter())
        .with_min_len(MIN_ELEMS_PER_TASK)
        .map(|(x, y)| x + y)
        .collect()
}

/// `target += value`, elementwise.
pub fn add_assign(target: &mut [f32], value: &[f32]) {
    target
        .par_iter_mut()
        .zip(value.par_iter())
        .with_min_len(MIN_ELEMS_PER_TASK)
        .for_each(|(t, v)| *t += v);
}
