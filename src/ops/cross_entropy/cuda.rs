//! Launchers of kernels/cross_entropy.cu, and the chunked output layer + loss that uses
//! it: logits = hidden · weightᵀ are made a chunk of rows at a time, turned into their
//! gradient in place by the fused kernel, and consumed by the two backward GEMMs before
//! the next chunk, so one chunk of logits is all that ever exists.

use std::sync::Arc;

use bytemuck::Pod;

use super::lm_head::{LmHeadBackward, Problem};
use super::{CrossEntropyBackward, IGNORE_INDEX};
use crate::autograd::Input;
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype};
use crate::{Error, Result, Tensor};

const THREADS: u32 = 256;
/// Logits of one chunk of the output layer take at most this many bytes: 1 GiB is 3.5k
/// rows of Qwen2.5's 151,936-token vocabulary in bf16, large enough for full-speed GEMMs,
/// small next to the activations (the full logits of 16k tokens would be 4.6 GiB).
const LOGIT_CHUNK_BYTES: usize = 1 << 30;

/// Writes the per-row losses of `logits` ([rows, vocab]) against `targets` into `losses`
/// (IGNORE_INDEX: loss 0), and replaces the logits by `dloss/dlogits * grad_scale`.
pub fn cross_entropy_fused<'a, 't, 'l, T: GpuFloat + 'a>(
    gpu: &Gpu,
    logits: impl Into<GpuViewMut<'a, T>>,
    targets: impl Into<GpuView<'t, i32>>,
    losses: impl Into<GpuViewMut<'l, f32>>,
    vocab: usize,
    grad_scale: f32,
) -> Result<()> {
    let (logits, targets, losses) = (logits.into(), targets.into(), losses.into());
    let rows = targets.len();
    if logits.len() != rows * vocab {
        return Err(Error::shape(
            "cross_entropy",
            format!("{} logits for {rows} rows of {vocab}", logits.len()),
        ));
    }
    expect_len("cross_entropy", "the losses", &losses, rows)?;
    if rows == 0 {
        return Ok(());
    }
    let args = [
        KernelArg::output(logits),
        KernelArg::output(losses),
        KernelArg::input(targets),
        KernelArg::int(vocab)?,
        KernelArg::F32(grad_scale),
    ];
    let blocks = u32::try_from(rows).map_err(|_| Error::shape("cross_entropy", "too many rows"))?;
    let cfg = LaunchConfig::linear(blocks, THREADS, 0);
    // SAFETY: one block per row of `vocab` logits; every target is below vocab or
    // negative (checked by the callers through `device_targets`).
    unsafe { gpu.launch(&format!("cross_entropy_fused_{}", T::SUFFIX), cfg, &args) }
}

/// Targets as the kernel takes them (i32; ignored rows -100); fails on a target outside
/// the vocabulary.
pub fn device_targets(gpu: &Gpu, targets: &[i64], vocab: usize) -> Result<GpuBuffer<i32>> {
    let converted = targets
        .iter()
        .map(|&t| match t {
            IGNORE_INDEX => Ok(-100),
            t if (0..vocab as i64).contains(&t) => Ok(t as i32),
            t => Err(Error::shape(
                "cross_entropy",
                format!("target {t} is neither in the vocabulary of {vocab} nor {IGNORE_INDEX}"),
            )),
        })
        .collect::<Result<Vec<i32>>>()?;
    gpu.upload(&converted)
}

/// The tensors of [`output_layer_loss`]: the final hidden states ([rows, dim]), the
/// output weight ([vocab, dim]) and the targets (one per row, from [`device_targets`]).
pub struct OutputLayerInputs<'a, T: Pod> {
    pub hidden: GpuView<'a, T>,
    pub weight: GpuView<'a, T>,
    pub targets: &'a GpuBuffer<i32>,
}

/// Where [`output_layer_loss`] writes: each row's loss (0 for ignored rows), and, when
/// given, dhidden (hidden's shape, written) and the weight gradient (f32, added to).
pub struct OutputLayerGrads<'a, T: Pod> {
    pub losses: GpuViewMut<'a, f32>,
    pub dhidden: Option<GpuViewMut<'a, T>>,
    pub dweight: Option<GpuViewMut<'a, f32>>,
}

/// The output layer and the loss, `chunk_rows` rows at a time: writes each row's loss
/// and, where asked, dhidden and (added into) dweight, the gradients of
/// `sum(losses) * grad_scale`. Nothing is read back to the host, so a training step can
/// queue it and go on.
pub fn output_layer_loss<T: GpuFloat>(
    gpu: &Gpu,
    inputs: OutputLayerInputs<'_, T>,
    grads: OutputLayerGrads<'_, T>,
    (dim, vocab): (usize, usize),
    grad_scale: f32,
    chunk_rows: usize,
) -> Result<()> {
    let OutputLayerInputs {
        hidden,
        weight,
        targets,
    } = inputs;
    let OutputLayerGrads {
        mut losses,
        mut dhidden,
        mut dweight,
    } = grads;
    let rows = targets.len();
    let what = "output_layer_loss";
    expect_len(what, "hidden", &hidden, rows * dim)?;
    expect_len(what, "the weight", &weight, vocab * dim)?;
    expect_len(what, "the losses", &losses, rows)?;
    if let Some(dh) = &dhidden {
        expect_len(what, "dhidden", dh, rows * dim)?;
    }
    if let Some(dw) = &dweight {
        expect_len(what, "the weight gradient", dw, vocab * dim)?;
    }
    let chunk_rows = chunk_rows.clamp(1, rows.max(1));
    let mut logits = gpu.alloc::<T>(chunk_rows * vocab)?;
    for start in (0..rows).step_by(chunk_rows) {
        let r = chunk_rows.min(rows - start);
        let (row_range, logit_range) = (start * dim..(start + r) * dim, 0..r * vocab);
        let h = hidden.sub(row_range.clone())?;
        gpu.gemm(
            logits.view_mut(logit_range.clone())?,
            h,
            false,
            weight,
            true,
            (r, vocab, dim),
            false,
        )?;
        cross_entropy_fused(
            gpu,
            logits.view_mut(logit_range.clone())?,
            targets.view(start..start + r)?,
            losses.sub_mut(start..start + r)?,
            vocab,
            grad_scale,
        )?;
        let chunk = logits.view(logit_range)?;
        if let Some(dh) = &mut dhidden {
            let dh = dh.sub_mut(row_range)?;
            gpu.gemm(dh, chunk, false, weight, false, (r, dim, vocab), false)?;
        }
        if let Some(dw) = &mut dweight {
            gpu.gemm(dw, chunk, true, h, false, (vocab, dim, r), true)?;
        }
    }
    Ok(())
}

/// `sum(losses) / divisor` as a one-element buffer, summed in f64 in a fixed order.
pub fn loss_sum<'l>(
    gpu: &Gpu,
    losses: impl Into<GpuView<'l, f32>>,
    divisor: f32,
) -> Result<GpuBuffer<f32>> {
    let losses = losses.into();
    let mut out = gpu.alloc::<f32>(1)?;
    let args = [
        KernelArg::output(&mut out),
        KernelArg::input(losses),
        KernelArg::int(losses.len())?,
        KernelArg::F32(divisor),
    ];
    // SAFETY: out holds one float, losses `n`.
    unsafe { gpu.launch("loss_sum", LaunchConfig::linear(1, THREADS, 0), &args)? };
    Ok(out)
}

/// `x * factor[0]` in a new buffer, the factor read on the device.
pub fn scale_by<'x, 'f, T: GpuFloat + 'x>(
    gpu: &Gpu,
    x: impl Into<GpuView<'x, T>>,
    factor: impl Into<GpuView<'f, f32>>,
) -> Result<GpuBuffer<T>> {
    let (x, factor) = (x.into(), factor.into());
    expect_len("scale_by", "the factor", &factor, 1)?;
    let mut y = gpu.alloc::<T>(x.len())?;
    let args = [
        KernelArg::output(&mut y),
        KernelArg::input(x),
        KernelArg::input(factor),
        KernelArg::int(x.len())?,
    ];
    let cfg = LaunchConfig::elementwise(x.len(), 1);
    // SAFETY: y and x hold n elements, the factor one float.
    unsafe { gpu.launch(&format!("scale_by_{}", T::SUFFIX), cfg, &args)? };
    Ok(y)
}

/// `y += x * factor[0]`, the factor read on the device.
pub fn add_scaled<'y, 'x, 'f>(
    gpu: &Gpu,
    y: impl Into<GpuViewMut<'y, f32>>,
    x: impl Into<GpuView<'x, f32>>,
    factor: impl Into<GpuView<'f, f32>>,
) -> Result<()> {
    let (mut y, x, factor) = (y.into(), x.into(), factor.into());
    expect_len("add_scaled", "x", &x, y.len())?;
    expect_len("add_scaled", "the factor", &factor, 1)?;
    let n = y.len();
    let args = [
        KernelArg::output(&mut y),
        KernelArg::input(x),
        KernelArg::input(factor),
        KernelArg::int(n)?,
    ];
    let cfg = LaunchConfig::elementwise(n, 1);
    // SAFETY: y and x hold n floats, the factor one.
    unsafe { gpu.launch("add_scaled", cfg, &args) }
}

/// A saved gradient times the loss's gradient (a one-element f32 tensor), on the GPU.
pub(super) fn scaled(saved: &Tensor, grad_output: &Tensor) -> Result<Tensor> {
    const OP: &str = "loss backward";
    on_gpu_dtype!(OP, saved.dtype(), T => {
        let (rs, rg) = (saved.read_gpu(OP)?, grad_output.read_gpu(OP)?);
        let gpu = rs.gpu().clone();
        let y = scale_by::<T>(&gpu, rs.view(OP)?, rg.view::<f32>(OP)?)?;
        Ok(Tensor::from_gpu((rs.device(), &gpu), y, saved.shape().clone()))
    })
}

/// [`super::cross_entropy`] of GPU logits: the fused kernel on a copy of the logits gives
/// the loss and, in the copy, the gradient the backward scales.
pub(super) fn cross_entropy(
    logits: &Tensor,
    targets: &[i64],
    vocab: usize,
    normaliser: f64,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[logits])?, T => {
        let rl = logits.read_gpu(OP)?;
        let gpu = rl.gpu().clone();
        let on = (rl.device(), &gpu);
        let mut dlogits = gpu.copy_of(rl.view::<T>(OP)?)?;
        let mut losses = gpu.alloc::<f32>(targets.len())?;
        let t = device_targets(&gpu, targets, vocab)?;
        let scale = (1.0 / normaliser) as f32;
        cross_entropy_fused(&gpu, &mut dlogits, &t, &mut losses, vocab, scale)?;
        let loss = loss_sum(&gpu, &losses, normaliser as f32)?;
        let dlogits = Tensor::from_gpu(on, dlogits, logits.shape().clone());
        let backward = CrossEntropyBackward::Gpu { dlogits };
        Ok(Tensor::from_gpu_op(on, loss, [], &[logits], backward))
    })
}

/// The forward of [`super::lm_head_loss`] on a GPU: the loss and the wanted gradients.
pub(super) fn lm_head_loss(
    hidden: &Tensor,
    weight: &Tensor,
    problem: &Problem,
) -> Result<(Tensor, LmHeadBackward)> {
    const OP: &str = "lm_head_loss";
    let &Problem {
        rows,
        dim,
        vocab,
        targets,
        normaliser,
        wants,
        chunk_rows,
    } = problem;
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[hidden, weight])?, T => {
        let (rh, rw) = (hidden.read_gpu(OP)?, weight.read_gpu(OP)?);
        let gpu = rh.gpu().clone();
        let on = (rh.device(), &gpu);
        let targets = device_targets(&gpu, targets, vocab)?;
        let mut losses = gpu.alloc::<f32>(rows)?;
        let mut dhidden = wants.dhidden.then(|| gpu.alloc::<T>(rows * dim)).transpose()?;
        let mut dweight = wants.dweight.then(|| gpu.zeros::<f32>(vocab * dim)).transpose()?;
        let inputs = OutputLayerInputs {
            hidden: rh.view(OP)?,
            weight: rw.view(OP)?,
            targets: &targets,
        };
        let outputs = OutputLayerGrads {
            losses: (&mut losses).into(),
            dhidden: dhidden.as_mut().map(GpuViewMut::from),
            dweight: dweight.as_mut().map(GpuViewMut::from),
        };
        let chunk_rows = chunk_rows
            .unwrap_or(LOGIT_CHUNK_BYTES / (vocab.max(1) * std::mem::size_of::<T>()))
            .max(1);
        let scale = (1.0 / normaliser) as f32;
        output_layer_loss(&gpu, inputs, outputs, (dim, vocab), scale, chunk_rows)?;
        let loss = Tensor::from_gpu(on, loss_sum(&gpu, &losses, normaliser as f32)?, []);
        let grads = LmHeadBackward {
            dhidden: dhidden.map(|b| Tensor::from_gpu(on, b, hidden.shape().clone())),
            dweight: dweight.map(|b| Tensor::from_gpu(on, b, weight.shape().clone())),
        };
        Ok((loss, grads))
    })
}

/// The backward of [`lm_head_loss`]: the saved gradients times the loss's gradient; the
/// weight's added into its gradient buffer when it has one.
pub(super) fn lm_head_backward(
    saved: &LmHeadBackward,
    grad_output: &Tensor,
    inputs: &[Input],
) -> Result<Vec<Option<Tensor>>> {
    const OP: &str = "lm_head_loss backward";
    let dhidden = saved
        .dhidden
        .as_ref()
        .map(|d| scaled(d, grad_output))
        .transpose()?;
    let dweight = match (&saved.dweight, inputs[1].grad_buffer()) {
        (None, _) => None,
        (Some(d), None) => Some(scaled(d, grad_output)?),
        (Some(d), Some(buffer)) => {
            let (rd, rg) = (d.read_gpu(OP)?, grad_output.read_gpu(OP)?);
            let mut target = buffer.write_gpu(OP)?;
            let gpu: Arc<Gpu> = target.gpu();
            add_scaled(
                &gpu,
                target.view_mut::<f32>(OP)?,
                rd.view::<f32>(OP)?,
                rg.view::<f32>(OP)?,
            )?;
            None
        }
    };
    Ok(vec![dhidden, dweight])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{matmul, Transpose};
    use crate::backend::cuda::test_gpus;
    use crate::ops::test_util::assert_close_abs;
    use crate::rng::Rng;

    /// The CPU composition: logits, the reference loss and its gradient, the two GEMMs.
    fn reference(
        h: &[f32],
        w: &[f32],
        targets: &[i64],
        dim: usize,
        vocab: usize,
        scale: f32,
    ) -> (f64, Vec<f32>, Vec<f32>) {
        let rows = targets.len();
        let mut logits = vec![0.0; rows * vocab];
        matmul(
            &mut logits,
            h,
            Transpose::No,
            w,
            Transpose::Yes,
            (rows, vocab, dim),
            false,
        );
        let (loss, lse) = super::super::cpu::forward(&logits, targets, vocab);
        let dlogits = super::super::cpu::backward(&logits, targets, &lse, vocab, scale);
        let mut dh = vec![0.0; rows * dim];
        matmul(
            &mut dh,
            &dlogits,
            Transpose::No,
            w,
            Transpose::No,
            (rows, dim, vocab),
            false,
        );
        let mut dw = vec![0.0; vocab * dim];
        matmul(
            &mut dw,
            &dlogits,
            Transpose::Yes,
            h,
            Transpose::No,
            (vocab, dim, rows),
            false,
        );
        (loss, dh, dw)
    }

    #[test]
    fn chunked_loss_matches_the_cpu_reference_with_ignored_rows() {
        let (rows, dim, vocab) = (11, 24, 301);
        let mut rng = Rng::new(5);
        let h = rng.normal_vec(rows * dim, 1.0);
        let w = rng.normal_vec(vocab * dim, 0.5);
        let targets: Vec<i64> = (0..rows)
            .map(|r| {
                if r % 4 == 1 {
                    IGNORE_INDEX
                } else {
                    rng.below(vocab) as i64
                }
            })
            .collect();
        let supervised = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let scale = 1.0 / supervised as f32;
        let (loss_ref, dh_ref, dw_ref) = reference(&h, &w, &targets, dim, vocab, scale);
        for gpu in test_gpus() {
            // Chunks of 4 rows: two full chunks and a short one.
            for chunk_rows in [4, rows] {
                let mut dh = gpu.zeros::<f32>(rows * dim).unwrap();
                let mut dw = gpu.zeros::<f32>(vocab * dim).unwrap();
                let mut losses = gpu.zeros::<f32>(rows).unwrap();
                let (h_gpu, w_gpu) = (gpu.upload(&h).unwrap(), gpu.upload(&w).unwrap());
                let targets_gpu = device_targets(&gpu, &targets, vocab).unwrap();
                let inputs = OutputLayerInputs {
                    hidden: (&h_gpu).into(),
                    weight: (&w_gpu).into(),
                    targets: &targets_gpu,
                };
                let grads = OutputLayerGrads {
                    losses: (&mut losses).into(),
                    dhidden: Some((&mut dh).into()),
                    dweight: Some((&mut dw).into()),
                };
                output_layer_loss(&gpu, inputs, grads, (dim, vocab), scale, chunk_rows).unwrap();
                let loss: f64 = gpu
                    .download(&losses)
                    .unwrap()
                    .iter()
                    .map(|&l| l as f64)
                    .sum();
                assert!(
                    (loss - loss_ref).abs() < 1e-4 * loss_ref.abs(),
                    "{loss} vs {loss_ref}"
                );
                assert_close_abs(&gpu.download(&dh).unwrap(), &dh_ref, 1e-5);
                assert_close_abs(&gpu.download(&dw).unwrap(), &dw_ref, 1e-5);
            }
        }
    }

    #[test]
    fn all_ignored_rows_give_zero_loss_and_gradient() {
        let (rows, vocab) = (3, 50);
        let mut rng = Rng::new(6);
        for gpu in test_gpus() {
            let mut logits = gpu.upload(&rng.normal_vec(rows * vocab, 3.0)).unwrap();
            let targets = device_targets(&gpu, &[IGNORE_INDEX; 3], vocab).unwrap();
            let mut losses = gpu.upload(&[7.0f32; 3]).unwrap();
            cross_entropy_fused(&gpu, &mut logits, &targets, &mut losses, vocab, 1.0).unwrap();
            assert_eq!(gpu.download(&losses).unwrap(), vec![0.0; rows]);
            assert!(gpu.download(&logits).unwrap().iter().all(|&g| g == 0.0));
        }
    }

    #[test]
    fn bf16_logits_match_within_rounding() {
        let (rows, vocab) = (5, 1000);
        let mut rng = Rng::new(7);
        let logits: Vec<half::bf16> = rng
            .normal_vec(rows * vocab, 4.0)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect();
        let wide: Vec<f32> = logits.iter().map(|h| h.to_f32()).collect();
        let targets: Vec<i64> = vec![3, 999, 0, IGNORE_INDEX, 500];
        let (loss_ref, lse) = super::super::cpu::forward(&wide, &targets, vocab);
        let grad_ref = super::super::cpu::backward(&wide, &targets, &lse, vocab, 0.25);
        for gpu in test_gpus() {
            let mut buffer = gpu.upload(&logits).unwrap();
            let t = device_targets(&gpu, &targets, vocab).unwrap();
            let mut losses = gpu.zeros::<f32>(rows).unwrap();
            cross_entropy_fused(&gpu, &mut buffer, &t, &mut losses, vocab, 0.25).unwrap();
            let loss: f64 = gpu
                .download(&losses)
                .unwrap()
                .iter()
                .map(|&l| l as f64)
                .sum();
            assert!(
                (loss - loss_ref).abs() < 1e-5 * loss_ref,
                "{loss} vs {loss_ref}"
            );
            let grad: Vec<f32> = gpu
                .download(&buffer)
                .unwrap()
                .iter()
                .map(|h| h.to_f32())
                .collect();
            for (g, r) in grad.iter().zip(&grad_ref) {
                assert!((g - r).abs() <= 1e-2 * r.abs() + 1e-6, "{g} vs {r}");
            }
        }
    }

    #[test]
    fn targets_outside_the_vocabulary_are_errors() {
        let gpu = Gpu::emulated().unwrap();
        let err = device_targets(&gpu, &[0, 7], 7).unwrap_err();
        assert!(err.to_string().contains("target 7"), "{err}");
    }
}
