//! Token choice for decoding, on the logits' device: per row the argmax, or a draw from the
//! temperature-scaled softmax cut to its top-k and top-p, so that a GPU decoder copies one
//! id per sequence to the host instead of a row of logits (151,936 of them for Qwen2.5).
//!
//! The rule for one row, over the ids below `vocab_limit` only, is the same on the CPU
//! (cpu.rs, the reference) and on a GPU (kernels/sampling.cu); the two agree except where a
//! float rounding falls on a threshold or on the boundary between two ids of the draw:
//! 1. temperature 0: the argmax, the first index on ties (as torch.argmax). A NaN logit
//!    counts as -inf, so a row of NaN gives id 0. A row whose max is not finite (every
//!    logit NaN or -inf, or one +inf) is chosen this way at any temperature.
//! 2. Otherwise `p_i = exp((l_i - max) / T)` in f32, 0 for a NaN logit.
//! 3. top_k (0 < k < vocab_limit): keep `p_i >= t_k`, t_k the k-th largest p (every tie
//!    at t_k kept, so possibly more than k ids).
//! 4. top_p < 1: of the kept mass S, keep `p_i >= t_p`, t_p the largest value t among the
//!    kept p such that the kept `p_i >= t` sum to at least `top_p * S` (ties kept).
//! 5. Ids with `p_i = 0` are never kept. With `target = uniform * (kept mass)`, walk the
//!    kept ids in ascending order subtracting each p_i: the first id where `target < p_i`
//!    is chosen; if none is (rounding), the last kept id.

mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

use crate::tensor::Storage;
use crate::{Device, Error, Result, Tensor};

const OP: &str = "choose_tokens";

/// How one row's next token is chosen.
#[derive(Clone, Copy, Debug)]
pub struct TokenChoice {
    /// 0: greedy (the argmax); otherwise the softmax temperature.
    pub temperature: f32,
    /// Keep the k most likely ids (ties kept); 0 is off.
    pub top_k: usize,
    /// Keep the most likely ids holding this share of the mass, in (0, 1]; 1 is off.
    pub top_p: f32,
    /// The row's draw in [0, 1), from the sequence's own RNG (unused when greedy).
    pub uniform: f64,
}

impl TokenChoice {
    /// The argmax of the row.
    pub fn greedy() -> TokenChoice {
        TokenChoice {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            uniform: 0.0,
        }
    }

    /// Whether the row is drawn rather than its argmax taken.
    fn samples(&self) -> bool {
        self.temperature > 0.0
    }
}

/// The chosen id of each row of `logits` [rows, vocab] (on any device, f32 or bf16),
/// considering only ids < vocab_limit (columns at or past it are never chosen: padding rows
/// of a config vocabulary). Only the ids come back to the host.
pub fn choose_tokens(
    logits: &Tensor,
    choices: &[TokenChoice],
    vocab_limit: usize,
) -> Result<Vec<u32>> {
    let vocab = check(logits, choices, vocab_limit)?;
    if choices.is_empty() {
        return Ok(Vec::new());
    }
    match logits.device() {
        Device::Cpu => {
            let host = logits.read_host(OP)?;
            let (storage, range) = host.storage();
            Ok(match storage {
                Storage::F32(v) => cpu::choose_tokens(&v[range], vocab, choices, vocab_limit),
                Storage::BF16(v) => cpu::choose_tokens(&v[range], vocab, choices, vocab_limit),
                Storage::F16(v) => cpu::choose_tokens(&v[range], vocab, choices, vocab_limit),
            })
        }
        _ => cuda::choose_tokens(logits, choices, vocab_limit),
    }
}

/// Checks the shapes and every row's choice; returns the vocabulary (the logits' width).
fn check(logits: &Tensor, choices: &[TokenChoice], vocab_limit: usize) -> Result<usize> {
    super::expect_rank(OP, "logits", logits, 2)?;
    let (rows, vocab) = (logits.dims()[0], logits.dims()[1]);
    if choices.len() != rows {
        return Err(Error::shape(
            OP,
            format!(
                "logits {} hold {rows} rows but {} choices were given",
                logits.shape(),
                choices.len()
            ),
        ));
    }
    if vocab_limit == 0 || vocab_limit > vocab {
        return Err(Error::shape(
            OP,
            format!(
                "vocab_limit must be in 1..={vocab} (the logits' width, shape {}), got {vocab_limit}",
                logits.shape()
            ),
        ));
    }
    check_choices(choices)?;
    Ok(vocab)
}

/// Checks every row's temperature, top_p and uniform.
fn check_choices(choices: &[TokenChoice]) -> Result<()> {
    for (row, c) in choices.iter().enumerate() {
        let bad = if !(c.temperature >= 0.0 && c.temperature.is_finite()) {
            format!("temperature must be finite and >= 0, got {}", c.temperature)
        } else if !(c.top_p > 0.0 && c.top_p <= 1.0) {
            format!("top_p must be in (0, 1], got {}", c.top_p)
        } else if !(0.0..1.0).contains(&c.uniform) {
            format!("uniform must be in [0, 1), got {}", c.uniform)
        } else {
            continue;
        };
        return Err(Error::shape(OP, format!("row {row}: {bad}")));
    }
    Ok(())
}
