//! Fused cross-entropy over the vocabulary, the training loss: log-softmax, the pick of
//! the target logit and the reduction in one op, so the tape never holds a probability
//! tensor. Prompt tokens carry IGNORE_INDEX and are left out of the loss.

mod cpu;
pub mod cuda;
mod lm_head;

pub use lm_head::lm_head_loss;

use crate::autograd::{Backward, Input};
use crate::tensor::Storage;
use crate::{Error, Result, Shape, Tensor};

/// The target of a row that is not supervised (prompt tokens, padding), as in PyTorch.
pub const IGNORE_INDEX: i64 = -100;

/// How the per-token losses of one call become the scalar loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduction {
    /// Mean over this call's supervised tokens (0 when there are none).
    Mean,
    /// Sum of the per-token losses.
    Sum,
    /// The sum divided by a count the caller gives: with the number of supervised tokens
    /// of a whole optimizer step, the micro-batch losses (and gradients) add up to the
    /// mean over every supervised token of the step, not a mean of per-micro-batch means.
    MeanOver(f32),
}

/// Cross-entropy of `logits` [..., V] against `targets` (one per row, the rows being
/// the product of the leading dimensions), reduced to a scalar f32 (shape []) on the
/// logits' device.
pub fn cross_entropy(logits: &Tensor, targets: &[i64], reduction: Reduction) -> Result<Tensor> {
    let vocab = check_shapes(logits, targets)?;
    check_targets(targets, vocab)?;
    let normaliser = normaliser(targets, reduction)?;
    if logits.device().is_gpu() {
        return cuda::cross_entropy(logits, targets, vocab, normaliser);
    }
    super::expect_f32("cross_entropy", &[logits])?;
    let (loss_sum, row_lse) = cpu::forward(&logits.read_f32()?, targets, vocab);
    let loss = (loss_sum / normaliser) as f32;
    Ok(Tensor::from_op(
        Storage::F32(vec![loss]),
        Shape::from(()),
        &[logits],
        CrossEntropyBackward::Cpu {
            logits: logits.clone(),
            targets: targets.to_vec(),
            row_lse,
            vocab,
            normaliser,
        },
    ))
}

/// Checks that there is one target per row; returns the vocabulary size V.
fn check_shapes(logits: &Tensor, targets: &[i64]) -> Result<usize> {
    if logits.shape().rank() == 0 {
        return Err(Error::shape(
            "cross_entropy",
            "logits must have shape [..., vocab], got a scalar",
        ));
    }
    let rows = logits.shape().rows();
    if rows != targets.len() {
        return Err(Error::shape(
            "cross_entropy",
            format!(
                "logits {} hold {rows} rows but {} targets were given",
                logits.shape(),
                targets.len()
            ),
        ));
    }
    Ok(logits.shape().dim(-1))
}

fn check_targets(targets: &[i64], vocab: usize) -> Result<()> {
    let out_of_range = targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t != IGNORE_INDEX && !(0..vocab as i64).contains(&t));
    match out_of_range {
        None => Ok(()),
        Some((position, target)) => Err(Error::shape(
            "cross_entropy",
            format!(
                "target at position {position} is {target}, outside [0, {vocab}) and not IGNORE_INDEX ({IGNORE_INDEX})"
            ),
        )),
    }
}

/// What the summed loss is divided by.
fn normaliser(targets: &[i64], reduction: Reduction) -> Result<f64> {
    match reduction {
        // With nothing supervised the sum is 0; dividing by 1 keeps it (and its
        // gradient) 0 instead of NaN.
        Reduction::Mean => Ok(targets
            .iter()
            .filter(|&&t| t != IGNORE_INDEX)
            .count()
            .max(1) as f64),
        Reduction::Sum => Ok(1.0),
        Reduction::MeanOver(count) if count.is_finite() && count > 0.0 => Ok(count as f64),
        Reduction::MeanOver(count) => Err(Error::shape(
            "cross_entropy",
            format!("MeanOver needs a positive, finite token count, got {count}"),
        )),
    }
}

/// What the backward needs: on the CPU the logits, targets and one log-sum-exp per row
/// (the softmax is recomputed); on a GPU the gradient itself, which the fused kernel
/// computed with the loss, to be scaled by the loss's gradient.
pub(super) enum CrossEntropyBackward {
    Cpu {
        logits: Tensor,
        targets: Vec<i64>,
        row_lse: Vec<f64>,
        vocab: usize,
        normaliser: f64,
    },
    Gpu {
        dlogits: Tensor,
    },
}

impl Backward for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, grad_output: &Tensor, _: &[Input]) -> Result<Vec<Option<Tensor>>> {
        match self {
            CrossEntropyBackward::Cpu {
                logits,
                targets,
                row_lse,
                vocab,
                normaliser,
            } => {
                let scale = (grad_output.to_scalar()? as f64 / normaliser) as f32;
                let grad = cpu::backward(&logits.read_f32()?, targets, row_lse, *vocab, scale);
                Ok(vec![Some(Tensor::from_vec(grad, logits.shape().clone())?)])
            }
            CrossEntropyBackward::Gpu { dlogits } => {
                Ok(vec![Some(cuda::scaled(dlogits, grad_output)?)])
            }
        }
    }
}

#[cfg(test)]
mod tests;
