//! Plain stochastic gradient descent: p ← p − lr·g, in place.

use crate::autograd::Gradients;
use crate::{Result, Tensor};

/// Applies one SGD step to every parameter that has a gradient; returns how many did.
pub fn sgd_step(params: &[Tensor], grads: &Gradients, lr: f32) -> Result<usize> {
    let mut updated = 0;
    for p in params {
        let Some(g) = grads.get(p) else { continue };
        let g = g.read_f32()?;
        let mut w = p.write_f32()?;
        for (w, g) in w.iter_mut().zip(g.iter()) {
            *w -= lr * g;
        }
        updated += 1;
    }
    Ok(updated)
}
