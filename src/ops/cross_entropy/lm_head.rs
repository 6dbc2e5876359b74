//! The output layer and the loss as one coarse op: `cross_entropy(hidden · weightᵀ)`
//! computed a chunk of rows at a time, so that only one chunk of logits ever exists (full
//! f32 logits of 16k tokens at Qwen's 151,936-token vocabulary are 10 GB). Each chunk's
//! gradients are taken while its logits exist: with recording on, the forward also
//! computes dhidden and dweight (for the loss as returned) and the backward only scales
//! them by the loss's gradient, so the backward never rebuilds logits. Under `no_grad`
//! (evaluation) only the loss is computed.

use super::{check_targets, cpu, cuda, normaliser, Reduction};
use crate::autograd::{is_grad_enabled, Backward, Input};
use crate::backend::cpu::{matmul, Transpose, WeightRows};
use crate::ops::linear::cpu::linears_forward;
use crate::tensor::Storage;
use crate::{Error, Result, Shape, Tensor};

/// Logits of one chunk on the CPU take at most this many bytes.
const CPU_CHUNK_BYTES: usize = 64 << 20;

/// The cross-entropy of `hidden` [n, D] (any leading dims, n rows) · `weight`ᵀ ([V, D]:
/// the LM head, or the tied embedding) against `targets` (one per row, IGNORE_INDEX for
/// unsupervised rows), reduced as `reduction` says: the same value as
/// `cross_entropy(&linear(hidden, weight, None)?, targets, reduction)` without the logits.
pub fn lm_head_loss(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[i64],
    reduction: Reduction,
) -> Result<Tensor> {
    lm_head_loss_in_chunks(hidden, weight, targets, reduction, None)
}

/// [`lm_head_loss`] with the logits made `chunk_rows` rows at a time (by default as many
/// as fit the device's chunk budget: 64 MB of f32 logits on the CPU, 1 GiB on a GPU).
pub(crate) fn lm_head_loss_in_chunks(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[i64],
    reduction: Reduction,
    chunk_rows: Option<usize>,
) -> Result<Tensor> {
    let (rows, dim, vocab) = check_shapes(hidden, weight, targets)?;
    check_targets(targets, vocab)?;
    let normaliser = normaliser(targets, reduction)?;
    let wants = Wants {
        dhidden: is_grad_enabled() && hidden.requires_grad(),
        dweight: is_grad_enabled() && weight.requires_grad(),
    };
    let problem = Problem {
        rows,
        dim,
        vocab,
        targets,
        normaliser,
        wants,
        chunk_rows,
    };
    let (loss, grads) = if crate::ops::device_of("lm_head_loss", &[hidden, weight])?.is_gpu() {
        cuda::lm_head_loss(hidden, weight, &problem)?
    } else {
        cpu_forward(hidden, weight, &problem)?
    };
    Ok(loss.with_op(&[hidden, weight], grads))
}

/// Which gradients the forward computes.
#[derive(Clone, Copy)]
pub(super) struct Wants {
    pub dhidden: bool,
    pub dweight: bool,
}

/// One call's sizes and targets.
pub(super) struct Problem<'a> {
    pub rows: usize,
    pub dim: usize,
    pub vocab: usize,
    pub targets: &'a [i64],
    pub normaliser: f64,
    pub wants: Wants,
    /// Rows of logits made at a time; `None`: the device's default.
    pub chunk_rows: Option<usize>,
}

fn check_shapes(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &[i64],
) -> Result<(usize, usize, usize)> {
    crate::ops::expect_rank("lm_head_loss", "weight [vocab, hidden]", weight, 2)?;
    let (vocab, dim) = (weight.dims()[0], weight.dims()[1]);
    if hidden.shape().rank() == 0 || hidden.shape().dim(-1) != dim {
        return Err(Error::shape(
            "lm_head_loss",
            format!(
                "hidden {} must be rows of the weight's width {dim} (weight {})",
                hidden.shape(),
                weight.shape()
            ),
        ));
    }
    let rows = hidden.shape().rows();
    if rows != targets.len() {
        return Err(Error::shape(
            "lm_head_loss",
            format!(
                "hidden {} holds {rows} rows but {} targets were given",
                hidden.shape(),
                targets.len()
            ),
        ));
    }
    Ok((rows, dim, vocab))
}

/// The gradients of the loss as returned (for a loss gradient of 1), computed by the
/// forward; `None` where not wanted.
pub(super) struct LmHeadBackward {
    pub dhidden: Option<Tensor>,
    pub dweight: Option<Tensor>,
}

impl Backward for LmHeadBackward {
    fn name(&self) -> &'static str {
        "lm_head_loss"
    }

    fn backward(&self, grad_output: &Tensor, inputs: &[Input]) -> Result<Vec<Option<Tensor>>> {
        if grad_output.device().is_gpu() {
            return cuda::lm_head_backward(self, grad_output, inputs);
        }
        let g = grad_output.to_scalar()?;
        let scaled = |t: &Option<Tensor>| -> Result<Option<Tensor>> {
            match t {
                Some(t) if g != 1.0 => {
                    let v: Vec<f32> = t.read_f32()?.iter().map(|x| x * g).collect();
                    Ok(Some(Tensor::from_vec(v, t.shape().clone())?))
                }
                other => Ok(other.clone()),
            }
        };
        Ok(vec![scaled(&self.dhidden)?, scaled(&self.dweight)?])
    }
}

/// The forward on the CPU: the loss (shape [], f32) and the gradients `problem` wants.
fn cpu_forward(
    hidden: &Tensor,
    weight: &Tensor,
    problem: &Problem,
) -> Result<(Tensor, LmHeadBackward)> {
    crate::ops::expect_f32("lm_head_loss", &[hidden])?;
    let &Problem {
        rows,
        dim,
        vocab,
        targets,
        normaliser,
        wants,
        chunk_rows,
    } = problem;
    let h = hidden.read_f32()?;
    let stored = weight.read_host("lm_head_loss")?;
    let w = crate::ops::weight_rows("lm_head_loss", stored.storage())?;
    let w_f32 = (wants.dhidden || wants.dweight).then(|| w.to_f32());
    let mut dh = wants.dhidden.then(|| vec![0.0f32; rows * dim]);
    let mut dw = wants.dweight.then(|| vec![0.0f32; vocab * dim]);
    let chunk = chunk_rows
        .unwrap_or(CPU_CHUNK_BYTES / (4 * vocab.max(1)))
        .max(1);
    let scale = (1.0 / normaliser) as f32;
    let mut loss_sum = 0.0f64;
    for start in (0..rows).step_by(chunk) {
        let r = chunk.min(rows - start);
        let h_chunk = &h[start * dim..(start + r) * dim];
        let logits = chunk_logits(h_chunk, w, (r, dim, vocab));
        let t = &targets[start..start + r];
        let (sum, lse) = cpu::forward(&logits, t, vocab);
        loss_sum += sum;
        let Some(w_f32) = &w_f32 else { continue };
        let dlogits = cpu::backward(&logits, t, &lse, vocab, scale);
        if let Some(dh) = &mut dh {
            let out = &mut dh[start * dim..(start + r) * dim];
            matmul(
                out,
                &dlogits,
                Transpose::No,
                w_f32,
                Transpose::No,
                (r, dim, vocab),
                false,
            );
        }
        if let Some(dw) = &mut dw {
            matmul(
                dw,
                &dlogits,
                Transpose::Yes,
                h_chunk,
                Transpose::No,
                (vocab, dim, r),
                true,
            );
        }
    }
    let loss = Tensor::from_storage(
        Storage::F32(vec![(loss_sum / normaliser) as f32]),
        Shape::from(()),
    )?;
    let grads = LmHeadBackward {
        dhidden: dh
            .map(|v| Tensor::from_vec(v, hidden.shape().clone()))
            .transpose()?,
        dweight: dw
            .map(|v| Tensor::from_vec(v, weight.shape().clone()))
            .transpose()?,
    };
    Ok((loss, grads))
}

/// One chunk's logits [r, vocab], as the linear layer computes them.
fn chunk_logits(h: &[f32], w: WeightRows, (r, dim, vocab): (usize, usize, usize)) -> Vec<f32> {
    linears_forward(h, &[w], &[None], &[vocab], (r, dim))
        .pop()
        .expect("one output for one weight")
}
