//! Launchers of kernels/swiglu.cu: `y = silu(gate) * up` and its backward, both
//! gradients in one pass that recomputes sigmoid(gate) (nothing saved by the forward).

use super::SwigluBackward;
use crate::autograd::Input;
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype};
use crate::{Result, Tensor};

/// Elements a thread handles per iteration of the kernels' pack loop (16 bytes of bf16).
const PER_THREAD: usize = 8;

/// `silu(gate) * up`, elementwise.
pub fn swiglu_forward<'g, 'u, T: GpuFloat + 'g + 'u>(
    gpu: &Gpu,
    gate: impl Into<GpuView<'g, T>>,
    up: impl Into<GpuView<'u, T>>,
) -> Result<GpuBuffer<T>> {
    let (gate, up) = (gate.into(), up.into());
    let n = gate.len();
    expect_len("swiglu", "up", &up, n)?;
    let mut y = gpu.alloc::<T>(n)?;
    let args = [
        KernelArg::output(&mut y),
        KernelArg::input(gate),
        KernelArg::input(up),
        KernelArg::int(n)?,
    ];
    let cfg = LaunchConfig::elementwise(n, PER_THREAD);
    // SAFETY: the arguments match swiglu_forward_<T>'s parameters; every buffer holds n.
    unsafe { gpu.launch(&format!("swiglu_forward_{}", T::SUFFIX), cfg, &args)? };
    Ok(y)
}

/// `(d_gate, d_up)` for the output gradient `grad`.
pub fn swiglu_backward<'d, 'g, 'u, T: GpuFloat + 'd + 'g + 'u>(
    gpu: &Gpu,
    grad: impl Into<GpuView<'d, T>>,
    gate: impl Into<GpuView<'g, T>>,
    up: impl Into<GpuView<'u, T>>,
) -> Result<(GpuBuffer<T>, GpuBuffer<T>)> {
    let (grad, gate, up) = (grad.into(), gate.into(), up.into());
    let n = gate.len();
    expect_len("swiglu_backward", "up", &up, n)?;
    expect_len("swiglu_backward", "the output gradient", &grad, n)?;
    let mut d_gate = gpu.alloc::<T>(n)?;
    let mut d_up = gpu.alloc::<T>(n)?;
    let args = [
        KernelArg::output(&mut d_gate),
        KernelArg::output(&mut d_up),
        KernelArg::input(grad),
        KernelArg::input(gate),
        KernelArg::input(up),
        KernelArg::int(n)?,
    ];
    let cfg = LaunchConfig::elementwise(n, PER_THREAD);
    // SAFETY: the arguments match swiglu_backward_<T>'s parameters; every buffer holds n.
    unsafe { gpu.launch(&format!("swiglu_backward_{}", T::SUFFIX), cfg, &args)? };
    Ok((d_gate, d_up))
}

/// [`super::swiglu`] of the GPU tensors `saved` holds.
pub(super) fn swiglu(saved: SwigluBackward) -> Result<Tensor> {
    const OP: &str = "swiglu";
    let (gate, up) = (saved.gate.clone(), saved.up.clone());
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[&gate, &up])?, T => {
        let (rg, ru) = (gate.read_gpu(OP)?, up.read_gpu(OP)?);
        let gpu = rg.gpu().clone();
        let y = swiglu_forward::<T>(&gpu, rg.view(OP)?, ru.view(OP)?)?;
        let on = (rg.device(), &gpu);
        Ok(Tensor::from_gpu_op(on, y, gate.shape().clone(), &[&gate, &up], saved))
    })
}

pub(super) fn swiglu_backward_on_gpu(
    saved: &SwigluBackward,
    grad: &Tensor,
    inputs: &[Input],
) -> Result<Vec<Option<Tensor>>> {
    const OP: &str = "swiglu backward";
    let (gate, up) = (&saved.gate, &saved.up);
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[grad, gate, up])?, T => {
        let (rd, rg, ru) = (grad.read_gpu(OP)?, gate.read_gpu(OP)?, up.read_gpu(OP)?);
        let gpu = rg.gpu().clone();
        let on = (rg.device(), &gpu);
        let (dg, du) = swiglu_backward::<T>(&gpu, rd.view(OP)?, rg.view(OP)?, ru.view(OP)?)?;
        let shape = gate.shape();
        Ok(vec![
            inputs[0].requires_grad().then(|| Tensor::from_gpu(on, dg, shape.clone())),
            inputs[1].requires_grad().then(|| Tensor::from_gpu(on, du, shape.clone())),
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::super::cpu;
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::ops::test_util::assert_close_rel;
    use crate::rng::Rng;
    use half::bf16;

    const LENGTHS: &[usize] = &[1, 7, 45, 1003, 4101];

    /// Gates wide enough that sigmoid saturates (std 4), with the extremes where
    /// e^-g overflows or silu' could turn into inf * 0 up front.
    fn gates(rng: &mut Rng, n: usize) -> Vec<f32> {
        let mut g = rng.normal_vec(n, 4.0);
        for (slot, v) in g.iter_mut().zip([-100.0, 100.0, -88.0, 30.0, -1e4, 0.0]) {
            *slot = v;
        }
        g
    }

    #[test]
    fn f32_kernels_match_the_cpu_reference() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(31);
            for &n in LENGTHS {
                let g = gates(&mut rng, n);
                let u = rng.normal_vec(n, 1.0);
                let dy = rng.normal_vec(n, 1.0);
                let (gg, gu) = (gpu.upload(&g).unwrap(), gpu.upload(&u).unwrap());
                let y = swiglu_forward(&gpu, &gg, &gu).unwrap();
                // The reference's polynomial exp is within 3e-7 of libm's; a few ulp apart.
                assert_close_rel(
                    &gpu.download(&y).unwrap(),
                    &cpu::swiglu_forward(&g, &u),
                    1e-6,
                    "y",
                );
                let (dg, du) = swiglu_backward(&gpu, &gpu.upload(&dy).unwrap(), &gg, &gu).unwrap();
                let (dg, du) = (gpu.download(&dg).unwrap(), gpu.download(&du).unwrap());
                assert!(dg.iter().chain(&du).all(|v| v.is_finite()));
                assert_close_rel(&dg, &cpu::swiglu_gate_grad(&g, &u, &dy), 1e-6, "d_gate");
                assert_close_rel(&du, &cpu::swiglu_up_grad(&g, &dy), 1e-6, "d_up");
            }
        }
    }

    #[test]
    fn bf16_kernels_match_the_cpu_reference_within_bf16_rounding() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(32);
            let round = |v: Vec<f32>| -> Vec<bf16> { v.into_iter().map(bf16::from_f32).collect() };
            let widen = |v: &[bf16]| -> Vec<f32> { v.iter().map(|h| h.to_f32()).collect() };
            // Only the output is rounded (f32 math on exact bf16 inputs): within half a bf16
            // ulp of the f32 reference (at most 2^-8 of it, 8 significant bits), plus the
            // reference's few f32 ulp.
            let check = |got: &[bf16], want: &[f32], what: &str| {
                for (i, (g, w)) in widen(got).iter().zip(want).enumerate() {
                    assert!(
                        (g - w).abs() <= w.abs() * (1.0 / 256.0 + 1e-6) + 1e-30,
                        "{what}[{i}]: {g} vs {w}"
                    );
                }
            };
            for &n in LENGTHS {
                let g = round(gates(&mut rng, n));
                let u = round(rng.normal_vec(n, 1.0));
                let dy = round(rng.normal_vec(n, 1.0));
                let (gw, uw, dyw) = (widen(&g), widen(&u), widen(&dy));
                let (gg, gu) = (gpu.upload(&g).unwrap(), gpu.upload(&u).unwrap());
                let y = swiglu_forward(&gpu, &gg, &gu).unwrap();
                check(
                    &gpu.download(&y).unwrap(),
                    &cpu::swiglu_forward(&gw, &uw),
                    "y",
                );
                let (dg, du) = swiglu_backward(&gpu, &gpu.upload(&dy).unwrap(), &gg, &gu).unwrap();
                check(
                    &gpu.download(&dg).unwrap(),
                    &cpu::swiglu_gate_grad(&gw, &uw, &dyw),
                    "d_gate",
                );
                check(
                    &gpu.download(&du).unwrap(),
                    &cpu::swiglu_up_grad(&gw, &dyw),
                    "d_up",
                );
            }
        }
    }

    #[test]
    fn mismatched_lengths_are_errors() {
        for gpu in test_gpus() {
            let a = gpu.zeros::<f32>(8).unwrap();
            let b = gpu.zeros::<f32>(9).unwrap();
            let err = swiglu_forward(&gpu, &a, &b).err().unwrap().to_string();
            assert!(err.contains("up") && err.contains('9'), "{err}");
            let err = swiglu_backward(&gpu, &b, &a, &a).err().unwrap().to_string();
            assert!(err.contains("output gradient"), "{err}");
        }
    }
}
