//! Launchers of kernels/rmsnorm.cu: forward (y and the per-row rstd kept for backward) and
//! backward (dx, and dW accumulated in f32 through per-block partial sums).

use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::Result;

const THREADS: u32 = 256;
const ROWS_PER_BLOCK: usize = (THREADS / 32) as usize;
/// Blocks of the backward pass at most: each writes one row of dW partials, so fewer
/// blocks mean less to reduce; a few per SM keep every SM busy.
const MAX_BACKWARD_BLOCKS: usize = 264;

/// `(y, rstd)` of RMSNorm over rows of width `dim`.
pub fn rmsnorm_forward<'w, T: GpuFloat + 'w>(
    gpu: &Gpu,
    x: &GpuBuffer<T>,
    weight: impl Into<GpuView<'w, T>>,
    dim: usize,
    eps: f32,
) -> Result<(GpuBuffer<T>, GpuBuffer<f32>)> {
    let weight = weight.into();
    let rows = rows_of(x, &weight, dim)?;
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
pub fn rmsnorm_backward<'w, 'd, T: GpuFloat + 'w>(
    gpu: &Gpu,
    grad: &GpuBuffer<T>,
    x: &GpuBuffer<T>,
    weight: impl Into<GpuView<'w, T>>,
    rstd: &GpuBuffer<f32>,
    dim: usize,
    dweight: impl Into<GpuViewMut<'d, f32>>,
    accumulate: bool,
) -> Result<GpuBuffer<T>> {
    let (weight, dweight) = (weight.into(), dweight.into());
    let rows = rows_of(x, &weight, dim)?;
    expect_len("rmsnorm_backward", "the gradient", grad, x.len())?;
    expect_len("rmsnorm_backward", "rstd", rstd, rows)?;
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
    let cfg = LaunchConfig::linear(blocks as u32, THREADS, dim * 4);
    // SAFETY: as in the forward; the partials hold blocks rows of dim, and the dynamic
    // shared memory dim floats.
    unsafe { gpu.launch(&format!("rmsnorm_backward_{}", T::SUFFIX), cfg, &args)? };
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

fn rows_of<T: GpuFloat>(x: &GpuBuffer<T>, weight: &GpuView<T>, dim: usize) -> Result<usize> {
    expect_len("rmsnorm", "the weight", weight, dim)?;
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(crate::Error::shape(
            "rmsnorm",
            format!("{} elements are not rows of width {dim}", x.len()),
        ));
    }
    Ok(x.len() / dim)
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
}
