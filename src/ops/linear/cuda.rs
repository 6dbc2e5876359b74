//! The linear layer on the GPU: forward and backward as GEMMs plus our kernels of
//! kernels/add.cu for the bias, its broadcast before the forward GEMM adds into it and
//! its gradient `db = Σ_rows dy` in f32 through per-block partial sums, never one atomic
//! per element.

use super::LinearBackward;
use crate::autograd::Input;
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype, weight_grad_on_gpu};
use crate::{Error, Result, Shape, Tensor};

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
pub fn linear_forward<'x, 'w, T: GpuFloat + 'x + 'w>(
    gpu: &Gpu,
    x: impl Into<GpuView<'x, T>>,
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

/// [`super::linear`] on a GPU: the output of the layer `saved` describes.
pub(super) fn linear(
    saved: LinearBackward,
    bias: Option<&Tensor>,
    shape: Shape,
    inputs: &[&Tensor],
) -> Result<Tensor> {
    const OP: &str = "linear";
    let (x, weight) = (saved.x.clone(), saved.weight.clone());
    on_gpu_dtype!(OP, gpu_dtype_of(OP, inputs)?, T => {
        let (rx, rw) = (x.read_gpu(OP)?, weight.read_gpu(OP)?);
        let rb = bias.map(|b| b.read_gpu(OP)).transpose()?;
        let gpu = rx.gpu().clone();
        let bias = rb.as_ref().map(|b| b.view::<T>(OP)).transpose()?;
        let y = linear_forward::<T>(&gpu, rx.view(OP)?, rw.view(OP)?, bias, saved.dims)?;
        Ok(Tensor::from_gpu_op((rx.device(), &gpu), y, shape, inputs, saved))
    })
}

/// dx (x's dtype) = dy · W; dW (f32) = dyᵀ · x and db (f32) = Σ_rows dy, each into the
/// parameter's gradient buffer or returned.
pub(super) fn linear_backward_on_gpu(
    saved: &LinearBackward,
    dy: &Tensor,
    inputs: &[Input],
) -> Result<Vec<Option<Tensor>>> {
    const OP: &str = "linear backward";
    let (x, weight) = (&saved.x, &saved.weight);
    let (rows, k, m) = saved.dims;
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[dy, x, weight])?, T => {
        let (rd, rx, rw) = (dy.read_gpu(OP)?, x.read_gpu(OP)?, weight.read_gpu(OP)?);
        let gpu = rd.gpu().clone();
        let on = (rd.device(), &gpu);
        let dy_view = rd.view::<T>(OP)?;
        let mut grads = vec![None, None];
        if inputs[0].requires_grad() {
            let mut dx = gpu.alloc::<T>(rows * k)?;
            gpu.gemm(&mut dx, dy_view, false, rw.view::<T>(OP)?, false, (rows, k, m), false)?;
            grads[0] = Some(Tensor::from_gpu(on, dx, x.shape().clone()));
        }
        if inputs[1].requires_grad() {
            let x_view = rx.view::<T>(OP)?;
            let ((), dw) = weight_grad_on_gpu(OP, &inputs[1], on, |dw, accumulate| {
                gpu.gemm(dw, dy_view, true, x_view, false, (m, k, rows), accumulate)
            })?;
            grads[1] = dw;
        }
        if let Some(b) = inputs.get(2) {
            let db = if b.requires_grad() {
                weight_grad_on_gpu(OP, b, on, |db, accumulate| {
                    bias_grad(&gpu, dy_view, m, db, accumulate)
                })?
                .1
            } else {
                None
            };
            grads.push(db);
        }
        Ok(grads)
    })
}

/// The bias gradient of a linear layer with `m` outputs: `dy` holds rows of `m`; the
/// column sums are written to `db` (f32, length `m`), or added to it when `accumulate`
/// is set (gradient accumulation over micro-batches).
pub fn bias_grad<'y, 'd, T: GpuFloat + 'y>(
    gpu: &Gpu,
    dy: impl Into<GpuView<'y, T>>,
    m: usize,
    db: impl Into<GpuViewMut<'d, f32>>,
    accumulate: bool,
) -> Result<()> {
    let (dy, db) = (dy.into(), db.into());
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
    fn forward_matches_the_cpu_reference_with_and_without_bias() {
        let (rows, k, m) = (7, 19, 13);
        let mut rng = Rng::new(11);
        let x = rng.normal_vec(rows * k, 1.0);
        let w = rng.normal_vec(m * k, 1.0);
        let b = rng.normal_vec(m, 1.0);
        for gpu in test_gpus() {
            let (gx, gw, gb) = (
                gpu.upload(&x).unwrap(),
                gpu.upload(&w).unwrap(),
                gpu.upload(&b).unwrap(),
            );
            for bias in [None, Some(&gb)] {
                let y =
                    linear_forward(&gpu, &gx, &gw, bias.map(GpuView::from), (rows, k, m)).unwrap();
                let weights = [crate::backend::cpu::WeightRows::F32(&w)];
                let y_ref = super::super::cpu::linears_forward(
                    &x,
                    &weights,
                    &[bias.map(|_| &b[..])],
                    &[m],
                    (rows, k),
                )
                .remove(0);
                assert_close_abs(&gpu.download(&y).unwrap(), &y_ref, 1e-5);
            }
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
