//! Launchers of kernels/cross_entropy.cu, and the chunked output layer + loss that uses
//! it: logits = hidden · weightᵀ are made a chunk of rows at a time, turned into their
//! gradient in place by the fused kernel, and consumed by the two backward GEMMs before
//! the next chunk, so one chunk of logits is all that ever exists.

use super::IGNORE_INDEX;
use bytemuck::Pod;

use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::{Error, Result};

const THREADS: u32 = 256;

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
    pub hidden: &'a GpuBuffer<T>,
    pub weight: GpuView<'a, T>,
    pub targets: &'a GpuBuffer<i32>,
}

/// Where [`output_layer_loss`] writes: dhidden (hidden's shape), the weight gradient
/// (f32, added to) and each row's loss (0 for ignored rows).
pub struct OutputLayerGrads<'a, T: Pod> {
    pub dhidden: &'a mut GpuBuffer<T>,
    pub dweight: GpuViewMut<'a, f32>,
    pub losses: &'a mut GpuBuffer<f32>,
}

/// The output layer and the loss, `chunk_rows` rows at a time: writes each row's loss,
/// dhidden, and adds into dweight the gradients of `sum(losses) * grad_scale`. Nothing
/// is read back to the host, so a training step can queue it and go on.
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
        dhidden,
        mut dweight,
        losses,
    } = grads;
    let rows = targets.len();
    let what = "output_layer_loss";
    expect_len(what, "hidden", hidden, rows * dim)?;
    expect_len(what, "dhidden", dhidden, rows * dim)?;
    expect_len(what, "the weight", &weight, vocab * dim)?;
    expect_len(what, "the weight gradient", &dweight, vocab * dim)?;
    expect_len(what, "the losses", losses, rows)?;
    let chunk_rows = chunk_rows.clamp(1, rows.max(1));
    let mut logits = gpu.alloc::<T>(chunk_rows * vocab)?;
    for start in (0..rows).step_by(chunk_rows) {
        let r = chunk_rows.min(rows - start);
        let (row_range, logit_range) = (start * dim..(start + r) * dim, 0..r * vocab);
        let h = hidden.view(row_range.clone())?;
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
            losses.view_mut(start..start + r)?,
            vocab,
            grad_scale,
        )?;
        let chunk = logits.view(logit_range)?;
        let dh = dhidden.view_mut(row_range)?;
        gpu.gemm(dh, chunk, false, weight, false, (r, dim, vocab), false)?;
        gpu.gemm(&mut dweight, chunk, true, h, false, (vocab, dim, r), true)?;
    }
    Ok(())
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
                let inputs = OutputLayerInputs {
                    hidden: &h_gpu,
                    weight: (&w_gpu).into(),
                    targets: &device_targets(&gpu, &targets, vocab).unwrap(),
                };
                let grads = OutputLayerGrads {
                    dhidden: &mut dh,
                    dweight: (&mut dw).into(),
                    losses: &mut losses,
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
