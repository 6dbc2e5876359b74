//! Launchers of kernels/cross_entropy.cu, and the chunked output layer + loss that uses
//! it: logits = hidden · weightᵀ are made a chunk of rows at a time, turned into their
//! gradient in place by the fused kernel, and consumed by the two backward GEMMs before
//! the next chunk, so one chunk of logits is all that ever exists.

use super::IGNORE_INDEX;
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::{Error, Result};

const THREADS: u32 = 256;

/// Per-row losses of `logits` ([rows, vocab]) against `targets` (IGNORE_INDEX: loss 0),
/// and the logits replaced by `dloss/dlogits * grad_scale`.
pub fn cross_entropy_fused<'a, T: GpuFloat + 'a>(
    gpu: &Gpu,
    logits: impl Into<GpuViewMut<'a, T>>,
    targets: &GpuBuffer<i32>,
    vocab: usize,
    grad_scale: f32,
) -> Result<GpuBuffer<f32>> {
    let mut logits = logits.into();
    let rows = targets.len();
    if logits.len() != rows * vocab {
        return Err(Error::shape(
            "cross_entropy",
            format!("{} logits for {rows} rows of {vocab}", logits.len()),
        ));
    }
    let mut losses = gpu.zeros::<f32>(rows)?;
    if rows == 0 {
        return Ok(losses);
    }
    let args = [
        KernelArg::output_view(&mut logits),
        KernelArg::output(&mut losses),
        KernelArg::input(targets),
        KernelArg::int(vocab)?,
        KernelArg::F32(grad_scale),
    ];
    let blocks = u32::try_from(rows).map_err(|_| Error::shape("cross_entropy", "too many rows"))?;
    let cfg = LaunchConfig::linear(blocks, THREADS, 0);
    // SAFETY: one block per row of `vocab` logits; every target is below vocab or
    // negative (checked by the callers through `device_targets`).
    unsafe { gpu.launch(&format!("cross_entropy_fused_{}", T::SUFFIX), cfg, &args)? };
    Ok(losses)
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

/// The output layer and the loss: for hidden ([rows, dim]) and weight ([vocab, dim]),
/// returns the sum of the supervised rows' losses, writes dhidden (same shape as
/// hidden) and adds into dweight (f32) the gradients of `loss_sum * grad_scale`, working
/// `chunk_rows` rows at a time.
#[allow(clippy::too_many_arguments)]
pub fn output_layer_loss<T: GpuFloat>(
    gpu: &Gpu,
    hidden: &GpuBuffer<T>,
    weight: &GpuBuffer<T>,
    targets: &[i64],
    (dim, vocab): (usize, usize),
    grad_scale: f32,
    chunk_rows: usize,
    dhidden: &mut GpuBuffer<T>,
    dweight: &mut GpuBuffer<f32>,
) -> Result<f64> {
    let rows = targets.len();
    expect_len("output_layer_loss", "hidden", hidden, rows * dim)?;
    expect_len("output_layer_loss", "dhidden", dhidden, rows * dim)?;
    expect_len("output_layer_loss", "the weight", weight, vocab * dim)?;
    expect_len(
        "output_layer_loss",
        "the weight gradient",
        dweight,
        vocab * dim,
    )?;
    let chunk_rows = chunk_rows.clamp(1, rows.max(1));
    let mut logits = gpu.zeros::<T>(chunk_rows * vocab)?;
    let mut loss_sum = 0.0f64;
    for start in (0..rows).step_by(chunk_rows) {
        let r = chunk_rows.min(rows - start);
        let h = hidden.view(start * dim..(start + r) * dim)?;
        let chunk_logits = logits.view_mut(0..r * vocab)?;
        gpu.gemm(chunk_logits, h, false, weight, true, (r, vocab, dim), false)?;
        let chunk_targets = device_targets(gpu, &targets[start..start + r], vocab)?;
        let mut chunk = if r == chunk_rows {
            std::mem::replace(&mut logits, gpu.zeros::<T>(0)?)
        } else {
            shrink(gpu, &logits, r * vocab)?
        };
        let losses = cross_entropy_fused(gpu, &mut chunk, &chunk_targets, vocab, grad_scale)?;
        loss_sum += gpu
            .download(&losses)?
            .iter()
            .map(|&l| l as f64)
            .sum::<f64>();
        let dh = dhidden.view_mut(start * dim..(start + r) * dim)?;
        gpu.gemm(dh, &chunk, false, weight, false, (r, dim, vocab), false)?;
        let h = hidden.view(start * dim..(start + r) * dim)?;
        gpu.gemm(&mut *dweight, &chunk, true, h, false, (vocab, dim, r), true)?;
        if r == chunk_rows {
            logits = chunk;
        }
    }
    Ok(loss_sum)
}

/// The first `len` elements of `buffer` as a buffer of their own (the last, shorter
/// chunk), copied through a GEMM-free path: download and upload are exact.
fn shrink<T: GpuFloat>(gpu: &Gpu, buffer: &GpuBuffer<T>, len: usize) -> Result<GpuBuffer<T>> {
    let data = gpu.download(buffer)?;
    gpu.upload(&data[..len])
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
                let loss = output_layer_loss(
                    &gpu,
                    &gpu.upload(&h).unwrap(),
                    &gpu.upload(&w).unwrap(),
                    &targets,
                    (dim, vocab),
                    scale,
                    chunk_rows,
                    &mut dh,
                    &mut dw,
                )
                .unwrap();
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
            let losses = cross_entropy_fused(&gpu, &mut logits, &targets, vocab, 1.0).unwrap();
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
            let losses = cross_entropy_fused(&gpu, &mut buffer, &t, vocab, 0.25).unwrap();
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
