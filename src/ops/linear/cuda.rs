//! The linear layer on the GPU: forward and backward as GEMMs plus our kernels of
//! kernels/add.cu for the bias, its broadcast before the forward GEMM adds into it and
//! its gradient `db = Σ_rows dy` in f32 through per-block partial sums, never one atomic
//! per element.

use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::{Error, Result};

/// Columns and row lanes of a bias_grad_partial block (kernels/add.cu's BIAS_COLUMNS
/// and BIAS_ROW_LANES).
const COLUMNS: usize = 32;
const ROW_LANES: usize = 8;
/// Blocks of the partial-sum kernel to aim for: two waves or so of an H100 (132 SMs, 8
/// such blocks each), so that a last partial wave costs little; each block row adds a row
/// of partials to reduce.
const TARGET_BLOCKS: usize = 2048;
/// Rows each thread sums at least: fewer would make the partials (and the reduce, one
/// thread per column looping over them) a large share of the traffic for a narrow bias
/// (k and v: 128 columns, 4 column blocks).
const MIN_ROWS_PER_THREAD: usize = 32;
const REDUCE_THREADS: u32 = 256;

/// `y = x · Wᵀ (+ b)` for x [rows, k] and W [m, k] (Hugging Face's [out, in]).
pub fn linear_forward<'w, T: GpuFloat + 'w>(
    gpu: &Gpu,
    x: &GpuBuffer<T>,
    weight: impl Into<GpuView<'w, T>>,
    bias: Option<GpuView<'_, T>>,
    (rows, k, m): (usize, usize, usize),
) -> Result<GpuBuffer<T>> {
    let mut y = gpu.alloc::<T>(rows * m)?;
    if let Some(bias) = bias {
        expect_len("linear", "the bias", &bias, m)?;
        let args = [
            KernelArg::output(&mut y),
            KernelArg::input(bias),
            KernelArg::int(rows)?,
            KernelArg::int(m)?,
        ];
        let cfg = LaunchConfig::elementwise(rows * m, 1);
        // SAFETY: y holds rows * m elements, the bias m.
        unsafe { gpu.launch(&format!("bias_broadcast_{}", T::SUFFIX), cfg, &args)? };
    }
    gpu.gemm(&mut y, x, false, weight, true, (rows, m, k), bias.is_some())?;
    Ok(y)
}

/// The gradients of [`linear_forward`] for the output gradient `dy`: returns dx, and
/// adds (or writes, unless `accumulate`) the weight gradient into `dweight` and the bias
/// gradient into `dbias` (both f32).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<'w, 'd, T: GpuFloat + 'w>(
    gpu: &Gpu,
    dy: &GpuBuffer<T>,
    x: &GpuBuffer<T>,
    weight: impl Into<GpuView<'w, T>>,
    (rows, k, m): (usize, usize, usize),
    dweight: impl Into<GpuViewMut<'d, f32>>,
    dbias: Option<GpuViewMut<'_, f32>>,
    accumulate: bool,
) -> Result<GpuBuffer<T>> {
    let mut dx = gpu.alloc::<T>(rows * k)?;
    gpu.gemm(&mut dx, dy, false, weight, false, (rows, k, m), false)?;
    gpu.gemm(dweight, dy, true, x, false, (m, k, rows), accumulate)?;
    if let Some(db) = dbias {
        bias_grad(gpu, dy, m, db, accumulate)?;
    }
    Ok(dx)
}

/// The bias gradient of a linear layer with `m` outputs: `dy` holds rows of `m`; the
/// column sums are written to `db` (f32, length `m`), or added to it when `accumulate`
/// is set (gradient accumulation over micro-batches).
pub fn bias_grad<'d, T: GpuFloat>(
    gpu: &Gpu,
    dy: &GpuBuffer<T>,
    m: usize,
    db: impl Into<GpuViewMut<'d, f32>>,
    accumulate: bool,
) -> Result<()> {
    let db = db.into();
    if m == 0 || !dy.len().is_multiple_of(m) {
        return Err(Error::shape(
            "linear bias_grad",
            format!(
                "the output gradient's {} elements are not rows of {m}",
                dy.len()
            ),
        ));
    }
    expect_len("linear bias_grad", "the bias gradient", &db, m)?;
    let rows = dy.len() / m;
    let column_blocks = m.div_ceil(COLUMNS);
    let row_blocks = (TARGET_BLOCKS / column_blocks)
        .min(rows.div_ceil(ROW_LANES * MIN_ROWS_PER_THREAD))
        .max(1);
    let mut partial = gpu.alloc::<f32>(row_blocks * m)?;
    let args = [
        KernelArg::output(&mut partial),
        KernelArg::input(dy),
        KernelArg::int(rows)?,
        KernelArg::int(m)?,
    ];
    let cfg = LaunchConfig {
        grid: [column_blocks as u32, row_blocks as u32, 1],
        block: [COLUMNS as u32, ROW_LANES as u32, 1],
        shared_bytes: 0,
    };
    // SAFETY: the arguments match bias_grad_partial_<T>'s parameters; dy holds rows * m
    // elements and the partials gridDim.y rows of m.
    unsafe { gpu.launch(&format!("bias_grad_partial_{}", T::SUFFIX), cfg, &args)? };
    let args = [
        KernelArg::output(db),
        KernelArg::input(&partial),
        KernelArg::int(row_blocks)?,
        KernelArg::int(m)?,
        KernelArg::I32(accumulate as i32),
    ];
    let cfg = LaunchConfig::linear(
        m.div_ceil(REDUCE_THREADS as usize) as u32,
        REDUCE_THREADS,
        0,
    );
    // SAFETY: db holds m floats, the partials row_blocks * m.
    unsafe { gpu.launch("bias_grad_reduce", cfg, &args) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::ops::test_util::{assert_close_abs, assert_close_rel};
    use crate::rng::Rng;
    use half::bf16;

    #[test]
    fn forward_and_backward_match_the_cpu_reference() {
        let (rows, k, m) = (7, 19, 13);
        let mut rng = Rng::new(11);
        let x = rng.normal_vec(rows * k, 1.0);
        let w = rng.normal_vec(m * k, 1.0);
        let b = rng.normal_vec(m, 1.0);
        let dy = rng.normal_vec(rows * m, 1.0);
        let cpu = |x: &[f32],
                   w: crate::backend::cpu::WeightRows,
                   b: Option<&[f32]>,
                   dims: (usize, usize, usize)| {
            let (rows, k, m) = dims;
            super::super::cpu::linears_forward(x, &[w], &[b], &[m], (rows, k)).remove(0)
        };
        for gpu in test_gpus() {
            let (gx, gw, gb) = (
                gpu.upload(&x).unwrap(),
                gpu.upload(&w).unwrap(),
                gpu.upload(&b).unwrap(),
            );
            for bias in [None, Some(&gb)] {
                let y =
                    linear_forward(&gpu, &gx, &gw, bias.map(GpuView::from), (rows, k, m)).unwrap();
                let y_ref = cpu(
                    &x,
                    crate::backend::cpu::WeightRows::F32(&w),
                    bias.map(|_| &b[..]),
                    (rows, k, m),
                );
                assert_close_abs(&gpu.download(&y).unwrap(), &y_ref, 1e-5);
            }
            let mut dw = gpu.upload(&vec![1.0f32; m * k]).unwrap();
            let mut db = gpu.upload(&vec![2.0f32; m]).unwrap();
            let dx = linear_backward(
                &gpu,
                &gpu.upload(&dy).unwrap(),
                &gx,
                &gw,
                (rows, k, m),
                &mut dw,
                Some((&mut db).into()),
                true,
            )
            .unwrap();
            let dx_ref = super::super::cpu::input_grad(&dy, &w, (rows, k, m));
            let dw_ref: Vec<f32> = super::super::cpu::weight_grad(&dy, &x, (rows, k, m))
                .iter()
                .map(|g| g + 1.0)
                .collect();
            let db_ref: Vec<f32> = super::super::cpu::bias_grad(&dy, rows, m)
                .iter()
                .map(|g| g + 2.0)
                .collect();
            assert_close_abs(&gpu.download(&dx).unwrap(), &dx_ref, 1e-5);
            assert_close_abs(&gpu.download(&dw).unwrap(), &dw_ref, 1e-5);
            assert_close_abs(&gpu.download(&db).unwrap(), &db_ref, 1e-5);
        }
    }

    /// (rows, m): widths that are not multiples of the 32-column block, row counts that
    /// do not fill the 8 row lanes, and enough rows (2000) that lanes loop.
    const SHAPES: &[(usize, usize)] = &[(1, 7), (5, 33), (37, 129), (2000, 45), (301, 200)];

    #[test]
    fn f32_matches_the_cpu_reference() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(21);
            for &(rows, m) in SHAPES {
                let dy = rng.normal_vec(rows * m, 1.0);
                let want = super::super::cpu::bias_grad(&dy, rows, m);
                let dy_gpu = gpu.upload(&dy).unwrap();
                let mut db = gpu.upload(&vec![f32::NAN; m]).unwrap();
                bias_grad(&gpu, &dy_gpu, m, &mut db, false).unwrap();
                // f32 partial sums against the reference's f64: a few ulp of the row count.
                assert_close_rel(&gpu.download(&db).unwrap(), &want, 1e-5, "db");

                let mut db = gpu.upload(&vec![0.5f32; m]).unwrap();
                bias_grad(&gpu, &dy_gpu, m, &mut db, true).unwrap();
                let want: Vec<f32> = want.iter().map(|g| g + 0.5).collect();
                assert_close_rel(&gpu.download(&db).unwrap(), &want, 1e-5, "db accumulated");
            }
        }
    }

    #[test]
    fn bf16_gradients_sum_in_f32() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(22);
            let (rows, m) = (517, 131);
            let dy: Vec<bf16> = rng
                .normal_vec(rows * m, 1.0)
                .into_iter()
                .map(bf16::from_f32)
                .collect();
            let widened: Vec<f32> = dy.iter().map(|h| h.to_f32()).collect();
            let want = super::super::cpu::bias_grad(&widened, rows, m);
            let mut db = gpu.zeros::<f32>(m).unwrap();
            bias_grad(&gpu, &gpu.upload(&dy).unwrap(), m, &mut db, false).unwrap();
            // The inputs are exact in f32: only the f32 summation differs.
            assert_close_rel(&gpu.download(&db).unwrap(), &want, 1e-5, "db");
        }
    }

    #[test]
    fn the_sum_is_the_same_bits_every_time() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(23);
            let (rows, m) = (3001, 40);
            let dy = gpu.upload(&rng.normal_vec(rows * m, 1.0)).unwrap();
            let run = || {
                let mut db = gpu.zeros::<f32>(m).unwrap();
                bias_grad(&gpu, &dy, m, &mut db, false).unwrap();
                gpu.download(&db).unwrap()
            };
            assert_eq!(run(), run());
        }
    }

    #[test]
    fn mismatched_lengths_are_errors() {
        for gpu in test_gpus() {
            let dy = gpu.zeros::<f32>(10).unwrap();
            let mut db = gpu.zeros::<f32>(3).unwrap();
            let err = bias_grad(&gpu, &dy, 3, &mut db, false).err().unwrap();
            assert!(err.to_string().contains("rows of 3"), "{err}");
            let mut db = gpu.zeros::<f32>(4).unwrap();
            let err = bias_grad(&gpu, &dy, 5, &mut db, false).err().unwrap();
            assert!(err.to_string().contains("bias gradient"), "{err}");
        }
    }
}
