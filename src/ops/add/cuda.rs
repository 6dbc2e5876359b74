//! Launchers of kernels/add.cu's residual add. Its backward is the identity (both inputs
//! get the output's gradient), so it has no kernel; the bias gradient kernels of the same
//! file belong to linear (src/ops/linear/cuda.rs).

use super::AddBackward;
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, GpuViewMut, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype};
use crate::{Result, Tensor};

/// Elements a thread adds per iteration of the kernel's pack loop (16 bytes of bf16).
const PER_THREAD: usize = 8;

/// `a + b`, elementwise, in a new buffer.
pub fn add_forward<'a, 'b, T: GpuFloat + 'a + 'b>(
    gpu: &Gpu,
    a: impl Into<GpuView<'a, T>>,
    b: impl Into<GpuView<'b, T>>,
) -> Result<GpuBuffer<T>> {
    let (a, b) = (a.into(), b.into());
    expect_len("add", "b", &b, a.len())?;
    let mut y = gpu.alloc::<T>(a.len())?;
    let args = [
        KernelArg::output(&mut y),
        KernelArg::input(a),
        KernelArg::input(b),
        KernelArg::int(a.len())?,
    ];
    // SAFETY: the arguments match add_forward_<T>'s parameters; y, a and b hold n elements.
    unsafe { launch::<T>(gpu, a.len(), &args) }?;
    Ok(y)
}

/// `a += b` in place: a gradient added into its buffer without a second one.
pub fn add_assign<'a, 'b, T: GpuFloat + 'a + 'b>(
    gpu: &Gpu,
    a: impl Into<GpuViewMut<'a, T>>,
    b: impl Into<GpuView<'b, T>>,
) -> Result<()> {
    let (mut a, b) = (a.into(), b.into());
    let n = a.len();
    expect_len("add", "b", &b, n)?;
    let y = KernelArg::output(&mut a);
    let args = [y, y, KernelArg::input(b), KernelArg::int(n)?];
    // SAFETY: as add_forward, with y and a the same elements: each is read and then
    // written by the same thread, so the kernel supports the alias.
    unsafe { launch::<T>(gpu, n, &args) }
}

/// # Safety
/// `args` are add_forward_<T>'s arguments for `n` elements.
unsafe fn launch<T: GpuFloat>(gpu: &Gpu, n: usize, args: &[KernelArg]) -> Result<()> {
    let cfg = LaunchConfig::elementwise(n, PER_THREAD);
    gpu.launch(&format!("add_forward_{}", T::SUFFIX), cfg, args)
}

/// [`super::add`] of two GPU tensors of one dtype.
pub(super) fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    on_gpu_dtype!("add", gpu_dtype_of("add", &[a, b])?, T => {
        let (ra, rb) = (a.read_gpu("add")?, b.read_gpu("add")?);
        let gpu = ra.gpu().clone();
        let y = add_forward::<T>(&gpu, ra.view::<T>("add")?, rb.view::<T>("add")?)?;
        let on = (ra.device(), &gpu);
        Ok(Tensor::from_gpu_op(on, y, a.shape().clone(), &[a, b], AddBackward))
    })
}

/// [`super::add_into`] on a GPU: `target += value`, both of the target's dtype.
pub(super) fn add_into(target: &Tensor, value: &Tensor) -> Result<()> {
    on_gpu_dtype!("add_into", gpu_dtype_of("add_into", &[target, value])?, T => {
        let rv = value.read_gpu("add_into")?;
        let mut wt = target.write_gpu("add_into")?;
        let gpu = wt.gpu();
        add_assign::<T>(&gpu, wt.view_mut::<T>("add_into")?, rv.view::<T>("add_into")?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::rng::Rng;
    use half::bf16;

    /// Lengths with a tail after the packs (and 1, 5: nothing but a tail).
    const LENGTHS: &[usize] = &[1, 5, 37, 1001, 4103];

    // One f32 add per element, then (bf16) one rounding: exactly the CPU's result
    // rounded, so both storage types are compared bit for bit.
    #[test]
    fn f32_matches_the_cpu_reference_exactly() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(11);
            for &n in LENGTHS {
                let (a, b) = (rng.normal_vec(n, 1.0), rng.normal_vec(n, 1.0));
                let want = super::super::cpu::add_forward(&a, &b);
                let (ga, gb) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
                let y = add_forward(&gpu, &ga, &gb).unwrap();
                assert_eq!(gpu.download(&y).unwrap(), want, "n = {n}");
                let mut ga = ga;
                add_assign(&gpu, &mut ga, &gb).unwrap();
                assert_eq!(gpu.download(&ga).unwrap(), want, "in place, n = {n}");
            }
        }
    }

    #[test]
    fn bf16_is_the_cpu_reference_rounded_once() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(12);
            let round = |v: Vec<f32>| -> Vec<bf16> { v.into_iter().map(bf16::from_f32).collect() };
            let widen = |v: &[bf16]| -> Vec<f32> { v.iter().map(|h| h.to_f32()).collect() };
            for &n in LENGTHS {
                let (a, b) = (round(rng.normal_vec(n, 1.0)), round(rng.normal_vec(n, 1.0)));
                let want: Vec<bf16> = super::super::cpu::add_forward(&widen(&a), &widen(&b))
                    .into_iter()
                    .map(bf16::from_f32)
                    .collect();
                let mut ga = gpu.upload(&a).unwrap();
                let gb = gpu.upload(&b).unwrap();
                let y = add_forward(&gpu, &ga, &gb).unwrap();
                assert_eq!(gpu.download(&y).unwrap(), want, "n = {n}");
                add_assign(&gpu, &mut ga, &gb).unwrap();
                assert_eq!(gpu.download(&ga).unwrap(), want, "in place, n = {n}");
            }
        }
    }

    #[test]
    fn operands_of_different_lengths_are_an_error() {
        for gpu in test_gpus() {
            let a = gpu.zeros::<f32>(6).unwrap();
            let b = gpu.zeros::<f32>(7).unwrap();
            let err = add_forward(&gpu, &a, &b).err().unwrap().to_string();
            assert!(
                err.contains("add") && err.contains('7') && err.contains('6'),
                "{err}"
            );
        }
    }
}
