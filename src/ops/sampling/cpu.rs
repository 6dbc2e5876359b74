//! CPU reference of token choice (the rule in mod.rs): the probabilities in f32 as the
//! kernel computes them, so both keep the same ids; the masses summed in f64; rows in
//! parallel.

use rayon::prelude::*;

use super::TokenChoice;

/// The chosen id of each row of `logits` (rows of `vocab`, one choice a row), among the
/// first `vocab_limit` columns.
pub fn choose_tokens<T: Copy + Into<f32> + Sync>(
    logits: &[T],
    vocab: usize,
    choices: &[TokenChoice],
    vocab_limit: usize,
) -> Vec<u32> {
    logits
        .par_chunks(vocab)
        .zip(choices.par_iter())
        .map(|(row, choice)| {
            let row: Vec<f32> = row[..vocab_limit].iter().map(|&l| l.into()).collect();
            choose_row(&row, choice)
        })
        .collect()
}

/// The chosen id among all of `logits`.
pub fn choose_row(logits: &[f32], choice: &TokenChoice) -> u32 {
    let (best, max) = first_argmax(logits);
    if !choice.samples() || !max.is_finite() {
        return best as u32;
    }
    let p: Vec<f32> = logits
        .iter()
        .map(|&l| {
            if l.is_nan() {
                0.0
            } else {
                ((l - max) / choice.temperature).exp()
            }
        })
        .collect();
    draw(&p, threshold(&p, choice), choice.uniform) as u32
}

/// The index and value of the largest logit, the first index on ties; NaN counts as -inf,
/// so a row of NaN and -inf gives (0, -inf).
fn first_argmax(logits: &[f32]) -> (usize, f32) {
    let (mut best, mut max) = (0, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > max {
            (best, max) = (i, l);
        }
    }
    (best, max)
}

/// The smallest p kept by top-k and then top-p (0 when neither cuts).
fn threshold(p: &[f32], choice: &TokenChoice) -> f32 {
    let cuts_k = choice.top_k > 0 && choice.top_k < p.len();
    let cuts_p = choice.top_p < 1.0;
    if !cuts_k && !cuts_p {
        return 0.0;
    }
    // Zeros are never kept; with fewer than k positive p, the k-th largest is 0.
    let mut descending: Vec<f32> = p.iter().copied().filter(|&x| x > 0.0).collect();
    descending.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut threshold = 0.0;
    if cuts_k && choice.top_k <= descending.len() {
        threshold = descending[choice.top_k - 1];
    }
    if cuts_p {
        let kept = &descending[..descending.partition_point(|&x| x >= threshold)];
        let needed = choice.top_p as f64 * kept.iter().map(|&x| x as f64).sum::<f64>();
        // The first value, largest first, whose ties complete the needed mass. The whole
        // kept mass is summed in the same order, so the loop stops by the last value.
        let mut mass = 0.0;
        for (i, &x) in kept.iter().enumerate() {
            mass += x as f64;
            if kept.get(i + 1) != Some(&x) && mass >= needed {
                threshold = x;
                break;
            }
        }
    }
    threshold
}

/// The id at `uniform` of the mass of the p that are positive and at least `threshold`,
/// in ascending id order; the last such id when rounding runs past the end.
fn draw(p: &[f32], threshold: f32, uniform: f64) -> usize {
    let kept = |x: f32| x > 0.0 && x >= threshold;
    let mass: f64 = p.iter().filter(|&&x| kept(x)).map(|&x| x as f64).sum();
    let mut target = uniform * mass;
    let mut last_kept = 0;
    for (i, &x) in p.iter().enumerate().filter(|&(_, &x)| kept(x)) {
        if target < x as f64 {
            return i;
        }
        target -= x as f64;
        last_kept = i;
    }
    last_kept
}
