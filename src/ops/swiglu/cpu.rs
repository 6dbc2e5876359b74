//! CPU reference for swiglu, elementwise in f32.

use rayon::prelude::*;

/// The logistic function without overflow: `exp` only ever sees a non-positive
/// argument, so neither branch can produce inf/inf for large |g|.
fn sigmoid(g: f32) -> f32 {
    if g >= 0.0 {
        1.0 / (1.0 + (-g).exp())
    } else {
        let e = g.exp();
        e / (1.0 + e)
    }
}

fn silu(g: f32) -> f32 {
    g * sigmoid(g)
}

/// `silu(gate) * up`, in Hugging Face's order (the activation first).
pub fn swiglu_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.par_iter()
        .zip(up.par_iter())
        .map(|(&g, &u)| silu(g) * u)
        .collect()
}

/// `d/dgate = grad * up * silu'(gate)`, with `silu'(g) = s * (1 + g * (1 - s))` and
/// `s = sigmoid(g)`: both factors stay finite for any finite g.
pub fn swiglu_gate_grad(gate: &[f32], up: &[f32], grad: &[f32]) -> Vec<f32> {
    gate.par_iter()
        .zip(up.par_iter())
        .zip(grad.par_iter())
        .map(|((&g, &u), &dy)| {
            let s = sigmoid(g);
            dy * u * (s * (1.0 + g * (1.0 - s)))
        })
        .collect()
}

/// `d/dup = grad * silu(gate)`.
pub fn swiglu_up_grad(gate: &[f32], grad: &[f32]) -> Vec<f32> {
    gate.par_iter()
        .zip(grad.par_iter())
        .map(|(&g, &dy)| dy * silu(g))
        .collect()
}
