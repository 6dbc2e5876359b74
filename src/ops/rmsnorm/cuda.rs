//! Launchers of kernels/rmsnorm.cu: forward (y and the per-row rstd kept for backward) and
//! backward (dx, and dW accumulated in f32 through per-block partial sums, in a fixed
//! order: the same bits on every run).

use super::RmsNormBackward;
use crate::autograd::Input;
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype, weight_grad_on_gpu};
use crate::{Result, Tensor};

const THREADS: u32 = 256;
const ROWS_PER_BLOCK: usize = (THREADS / 32) as usize;
/// Blocks of the backward pass at most: each writes one row of dW partials, so fewer
/// blocks mean less to reduce; a few per SM keep every SM busy.
const MAX_BACKWARD_BLOCKS: usize = 264;

/// `(y, rstd)` of RMSNorm over rows of width `dim`.
pub fn rmsnorm_forward<'x, 'w, T: GpuFloat + 'x + 'w>(
    gpu: &Gpu,
    x: impl Into<GpuView<'x, T>>,
    weight: impl Into<GpuView<'w, T>>,
    dim: usize,
    eps: f32,
) -> Result<(GpuBuffer<T>, GpuBuffer<f32>)> {
    let (x, weight) = (x.into(), weight.into());
    let rows = rows_of(&x, &weight, dim)?;
    let mut y = gpu.alloc::<T>(x.len())?;
    let mut rstd = gpu.alloc::<f32>(rows)?;
    let blocks = rows.div_ceil(ROWS_PER_BLOCK).max(1);
    let args = [
        KernelArg::output(&mut y),
        KernelArg::output(&mut rstd),
        KernelArg::input(x),
        KernelArg::input(weight),
        KernelArg::int(rows)?,
        KernelArg::int(dim)?,
        KernelArg::F32(eps),
    ];
    let cfg = LaunchConfig::linear(blocks as u32, THREADS, 0);
    // SAFETY: the arguments match rmsnorm_forward_<T>'s parameters and every buffer was
    // sized from rows and dim above.
    unsafe { gpu.launch(&format!("rmsnorm_forward_{}", T::SUFFIX), cfg, &args)? };
    Ok((y, rstd))
}

/// `dx`; the weight gradient is written to `dweight` (f32, length `dim`), or added to it
/// when `accumulate` is set.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward<'g, 'x, 'w, 'r, 'd, T: GpuFloat + 'g + 'x + 'w>(
    gpu: &Gpu,
    grad: impl Into<GpuView<'g, T>>,
    x: impl Into<GpuView<'x, T>>,
    weight: impl Into<GpuView<'w, T>>,
    rstd: impl Into<GpuView<'r, f32>>,
    dim: usize,
    dweight: impl Into<GpuViewMut<'d, f32>>,
    accumulate: bool,
) -> Result<GpuBuffer<T>> {
    let (grad, x, weight, rstd) = (grad.into(), x.into(), weight.into(), rstd.into());
    let dweight = dweight.into();
    let rows = rows_of(&x, &weight, dim)?;
    expect_len("rmsnorm_backward", "the gradient", &grad, x.len())?;
    expect_len("rmsnorm_backward", "rstd", &rstd, rows)?;
    expect_len("rmsnorm_backward", "the weight gradient", &dweight, dim)?;
    let blocks = rows.div_ceil(ROWS_PER_BLOCK).clamp(1, MAX_BACKWARD_BLOCKS);
    let mut dx = gpu.alloc::<T>(x.len())?;
    let mut partial = gpu.alloc::<f32>(blocks * dim)?;
    let args = [
        KernelArg::output(&mut dx),
        KernelArg::output(&mut partial),
        KernelArg::input(grad),
        KernelArg::input(x),
        KernelArg::input(weight),
        KernelArg::input(rstd),
        KernelArg::int(rows)?,
        KernelArg::int(dim)?,
    ];
    let kernel = format!("rmsnorm_backward_{}", T::SUFFIX);
    // The block's dW row, past the default 48 KB from d of about 12K.
    let shared = dim * 4;
    gpu.allow_dynamic_shared(&kernel, shared)?;
    let cfg = LaunchConfig::linear(blocks as u32, THREADS, shared);
    // SAFETY: as in the forward; the partials hold blocks rows of dim, and the dynamic
    // shared memory dim floats.
    unsafe { gpu.launch(&kernel, cfg, &args)? };
    let args = [
        KernelArg::output(dweight),
        KernelArg::input(&partial),
        KernelArg::int(blocks)?,
        KernelArg::int(dim)?,
        KernelArg::I32(accumulate as i32),
    ];
    let cfg = LaunchConfig::linear(dim.div_ceil(THREADS as usize) as u32, THREADS, 0);
    // SAFETY: dweight holds dim floats, the partials blocks * dim.
    unsafe { gpu.launch("rmsnorm_dw_reduce", cfg, &args)? };
    Ok(dx)
}

fn rows_of<T: GpuFloat>(x: &GpuView<T>, weight: &GpuView<T>, dim: usize) -> Result<usize> {
    expect_len("rmsnorm", "the weight", weight, dim)?;
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(crate::Error::shape(
            "rmsnorm",
            format!("{} elements are not rows of width {dim}", x.len()),
        ));
    }
    Ok(x.len() / dim)
}

/// [`super::rmsnorm`] of GPU tensors of one dtype.
pub(super) fn rmsnorm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    const OP: &str = "rmsnorm";
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[x, weight])?, T => {
        let (rx, rw) = (x.read_gpu(OP)?, weight.read_gpu(OP)?);
        let gpu = rx.gpu().clone();
        let on = (rx.device(), &gpu);
        let dim = weight.elem_count();
        let (y, rstd) = rmsnorm_forward::<T>(&gpu, rx.view(OP)?, rw.view(OP)?, dim, eps)?;
        let rows = rstd.len();
        let backward = RmsNormBackward {
            x: x.clone(),
            weight: weight.clone(),
            rstd: Tensor::from_gpu(on, rstd, [rows]),
        };
        Ok(Tensor::from_gpu_op(on, y, x.shape().clone(), &[x, weight], backward))
    })
}

/// The backward of [`rmsnorm`]: dx in x's dtype, dW in f32.
pub(super) fn rmsnorm_backward_on_gpu(
    saved: &RmsNormBackward,
    grad: &Tensor,
    inputs: &[Input],
) -> Result<Vec<Option<Tensor>>> {
    const OP: &str = "rmsnorm backward";
    let (x, weight) = (&saved.x, &saved.weight);
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[grad, x, weight])?, T => {
        let (rg, rx, rw) = (grad.read_gpu(OP)?, x.read_gpu(OP)?, weight.read_gpu(OP)?);
        let rr = saved.rstd.read_gpu(OP)?;
        let gpu = rx.gpu().clone();
        let on = (rx.device(), &gpu);
        let dim = weight.elem_count();
        let (dx, dweight) = weight_grad_on_gpu(OP, &inputs[1], on, |dw, accumulate| {
            let views = (rg.view::<T>(OP)?, rx.view::<T>(OP)?, rw.view::<T>(OP)?);
            rmsnorm_backward(&gpu, views.0, views.1, views.2, rr.view(OP)?, dim, dw, accumulate)
        })?;
        let dx = inputs[0]
            .requires_grad()
            .then(|| Tensor::from_gpu(on, dx, x.shape().clone()));
        Ok(vec![dx, dweight])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::ops::test_util::assert_close_abs;
    use crate::rng::Rng;
    use half::bf16;

    /// Odd sizes: rows that do not fill a block, widths that are not multiples of 32.
    const SHAPES: &[(usize, usize)] = &[(1, 7), (5, 33), (13, 96), (70, 200)];

    #[test]
    fn f32_kernels_match_the_cpu_reference() {
        for gpu in test_gpus() {
            f32_kernels_match_on(&gpu);
        }
    }

    fn f32_kernels_match_on(gpu: &Gpu) {
        let mut rng = Rng::new(1);
        for &(rows, dim) in SHAPES {
            let x = rng.normal_vec(rows * dim, 1.0);
            let w = rng.normal_vec(dim, 1.0);
            let dy = rng.normal_vec(rows * dim, 1.0);
            let (y, rstd) = rmsnorm_forward(
                gpu,
                &gpu.upload(&x).unwrap(),
                &gpu.upload(&w).unwrap(),
                dim,
                1e-6,
            )
            .unwrap();
            let (y_ref, rstd_ref) = super::super::cpu::rmsnorm_forward(&x, &w, 1e-6);
            assert_close_abs(&gpu.download(&y).unwrap(), &y_ref, 1e-5);
            assert_close_abs(&gpu.download(&rstd).unwrap(), &rstd_ref, 1e-5);

            let mut dw = gpu.upload(&vec![0.5f32; dim]).unwrap();
            let dx = rmsnorm_backward(
                gpu,
                &gpu.upload(&dy).unwrap(),
                &gpu.upload(&x).unwrap(),
                &gpu.upload(&w).unwrap(),
                &rstd,
                dim,
                &mut dw,
                true,
            )
            .unwrap();
            let dx_ref = super::super::cpu::rmsnorm_input_grad(&x, &w, &rstd_ref, &dy);
            let dw_ref: Vec<f32> = super::super::cpu::rmsnorm_weight_grad(&x, &rstd_ref, &dy, dim)
                .iter()
                .map(|g| g + 0.5)
                .collect();
            assert_close_abs(&gpu.download(&dx).unwrap(), &dx_ref, 1e-4);
            assert_close_abs(&gpu.download(&dw).unwrap(), &dw_ref, 1e-3);
        }
    }

    #[test]
    fn bf16_kernels_match_the_cpu_reference_within_bf16_rounding() {
        for gpu in test_gpus() {
            bf16_kernels_match_on(&gpu);
        }
    }

    fn bf16_kernels_match_on(gpu: &Gpu) {
        let mut rng = Rng::new(2);
        let (rows, dim) = (37, 150);
        let round = |v: Vec<f32>| -> Vec<bf16> { v.into_iter().map(bf16::from_f32).collect() };
        let widen = |v: &[bf16]| -> Vec<f32> { v.iter().map(|h| h.to_f32()).collect() };
        let x = round(rng.normal_vec(rows * dim, 1.0));
        let w = round(rng.normal_vec(dim, 1.0));
        let dy = round(rng.normal_vec(rows * dim, 1.0));
        let (y, rstd) = rmsnorm_forward(
            gpu,
            &gpu.upload(&x).unwrap(),
            &gpu.upload(&w).unwrap(),
            dim,
            1e-6,
        )
        .unwrap();
        let (y_ref, rstd_ref) = super::super::cpu::rmsnorm_forward(&widen(&x), &widen(&w), 1e-6);
        // Liger-Kernel's bf16 RMSNorm tolerance: atol 0.2 with rtol 0.02; ours is tighter
        // since only the output is rounded.
        let y = widen(&gpu.download(&y).unwrap());
        for (a, b) in y.iter().zip(&y_ref) {
            assert!((a - b).abs() <= 1e-2 * b.abs() + 1e-3, "{a} vs {b}");
        }
        let mut dw = gpu.zeros::<f32>(dim).unwrap();
        let dx = rmsnorm_backward(
            gpu,
            &gpu.upload(&dy).unwrap(),
            &gpu.upload(&x).unwrap(),
            &gpu.upload(&w).unwrap(),
            &rstd,
            dim,
            &mut dw,
            false,
        )
        .unwrap();
        let dx_ref =
            super::super::cpu::rmsnorm_input_grad(&widen(&x), &widen(&w), &rstd_ref, &widen(&dy));
        let dw_ref =
            super::super::cpu::rmsnorm_weight_grad(&widen(&x), &rstd_ref, &widen(&dy), dim);
        for (a, b) in widen(&gpu.download(&dx).unwrap()).iter().zip(&dx_ref) {
            assert!((a - b).abs() <= 1e-2 * b.abs() + 1e-3, "{a} vs {b}");
        }
        assert_close_abs(&gpu.download(&dw).unwrap(), &dw_ref, 1e-3);
    }

    /// Inputs whose weight gradient sums contributions of many magnitudes, so that the
    /// float sum of a column depends on the order of its adds; more rows than the blocks
    /// take in one round, so each block sums several rows of each of its warps.
    fn order_sensitive_inputs() -> (Vec<f32>, Vec<f32>, Vec<f32>, usize) {
        let mut rng = Rng::new(9);
        let (rows, dim) = (MAX_BACKWARD_BLOCKS * ROWS_PER_BLOCK * 3 + 5, 40);
        let x = rng.normal_vec(rows * dim, 1.0);
        let w = rng.normal_vec(dim, 1.0);
        let dy = (0..rows * dim)
            .map(|_| rng.normal_vec(1, 1.0)[0] * 10f32.powi(rng.below(13) as i32 - 6))
            .collect();
        (x, w, dy, dim)
    }

    fn weight_grad_bits(gpu: &Gpu) -> Vec<u32> {
        let (x, w, dy, dim) = order_sensitive_inputs();
        let (x, w, dy) = (
            gpu.upload(&x).unwrap(),
            gpu.upload(&w).unwrap(),
            gpu.upload(&dy).unwrap(),
        );
        let (_, rstd) = rmsnorm_forward(gpu, &x, &w, dim, 1e-6).unwrap();
        let mut dw = gpu.alloc::<f32>(dim).unwrap();
        rmsnorm_backward(gpu, &dy, &x, &w, &rstd, dim, &mut dw, false).unwrap();
        gpu.download(&dw)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn weight_grad_is_the_same_bits_whatever_order_threads_run_in() {
        let in_thread_order = weight_grad_bits(&Gpu::emulated().unwrap());
        for schedule in [1, 2, 3] {
            let shuffled = Gpu::emulated_shuffled(schedule).unwrap();
            assert_eq!(
                weight_grad_bits(&shuffled),
                in_thread_order,
                "{}",
                shuffled.describe()
            );
        }
        // A device runs its warps in whatever order: the bits must not change between runs.
        for gpu in test_gpus() {
            let first = weight_grad_bits(&gpu);
            assert_eq!(weight_grad_bits(&gpu), first, "{}", gpu.describe());
        }
    }

    #[test]
    fn the_order_sensitive_inputs_sum_to_other_bits_in_another_order() {
        // What lets the test above fail: a column's contributions, summed in f32 in row
        // order and in reverse, give other bits in most columns.
        let (x, _, dy, dim) = order_sensitive_inputs();
        let (_, rstd) = super::super::cpu::rmsnorm_forward(&x, &vec![1.0; dim], 1e-6);
        let differing = (0..dim)
            .filter(|&j| {
                let terms: Vec<f32> = (0..rstd.len())
                    .map(|r| dy[r * dim + j] * x[r * dim + j] * rstd[r])
                    .collect();
                let forwards: f32 = terms.iter().sum();
                let backwards: f32 = terms.iter().rev().sum();
                forwards.to_bits() != backwards.to_bits()
            })
            .count();
        assert!(differing > dim / 2, "{differing} of {dim} columns");
    }

    #[test]
    fn llama_widths_match_the_cpu_reference_with_an_opt_in_past_48_kb() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(4);
            // 4096: Llama-7B; 8192: Llama-70B; 16384: a dW row of 64 KB, past 48 KB.
            for dim in [4096, 8192, 16384] {
                let rows = 3;
                let x = rng.normal_vec(rows * dim, 1.0);
                let w = rng.normal_vec(dim, 1.0);
                let dy = rng.normal_vec(rows * dim, 1.0);
                let (xg, wg) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap());
                let (_, rstd) = rmsnorm_forward(&gpu, &xg, &wg, dim, 1e-6).unwrap();
                let mut dw = gpu.alloc::<f32>(dim).unwrap();
                let dyg = gpu.upload(&dy).unwrap();
                let dx =
                    rmsnorm_backward(&gpu, &dyg, &xg, &wg, &rstd, dim, &mut dw, false).unwrap();
                let (_, rstd_ref) = super::super::cpu::rmsnorm_forward(&x, &w, 1e-6);
                let dx_ref = super::super::cpu::rmsnorm_input_grad(&x, &w, &rstd_ref, &dy);
                let dw_ref = super::super::cpu::rmsnorm_weight_grad(&x, &rstd_ref, &dy, dim);
                assert_close_abs(&gpu.download(&dx).unwrap(), &dx_ref, 1e-4);
                assert_close_abs(&gpu.download(&dw).unwrap(), &dw_ref, 1e-4);
            }
        }
    }
}
