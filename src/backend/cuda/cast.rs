//! Launchers of kernels/cast.cu: f32 to bf16 (round to nearest even, as
//! `half::bf16::from_f32`) and bf16 to f32 (exact).

use bytemuck::Pod;
use half::bf16;

use super::{Gpu, GpuBuffer, GpuView, KernelArg, LaunchConfig};
use crate::Result;

/// Elements a thread moves per iteration of the kernels' pack loop.
const PER_THREAD: usize = 8;

/// `x` rounded to bf16.
pub fn cast_f32_to_bf16<'x>(gpu: &Gpu, x: impl Into<GpuView<'x, f32>>) -> Result<GpuBuffer<bf16>> {
    cast(gpu, x.into(), "cast_f32_to_bf16")
}

/// `x` widened to f32.
pub fn cast_bf16_to_f32<'x>(gpu: &Gpu, x: impl Into<GpuView<'x, bf16>>) -> Result<GpuBuffer<f32>> {
    cast(gpu, x.into(), "cast_bf16_to_f32")
}

/// `x` converted by `kernel`, one of cast.cu's (y, x, n) kernels from `From` to `To`.
fn cast<From: Pod, To: Pod>(gpu: &Gpu, x: GpuView<From>, kernel: &str) -> Result<GpuBuffer<To>> {
    let mut y = gpu.alloc::<To>(x.len())?;
    let args = [
        KernelArg::output(&mut y),
        KernelArg::input(x),
        KernelArg::int(x.len())?,
    ];
    let cfg = LaunchConfig::elementwise(x.len(), PER_THREAD);
    // SAFETY: both callers name the kernel whose (To*, const From*, int n) parameters
    // these are; y and x hold n elements.
    unsafe { gpu.launch(kernel, cfg, &args)? };
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::rng::Rng;

    /// Values where rounding matters: ties (to even, both ways), just above and below a
    /// tie, the largest values that round to the largest bf16 or to infinity, subnormals,
    /// signed zeros, infinities and NaNs (quiet and signalling, which must stay NaN).
    fn special_values() -> Vec<f32> {
        let bits = [
            0x3f80_8000u32, // 1 + 2^-8: a tie, rounds down to even 1.0
            0x3f81_8000,    // a tie that rounds up to even
            0x3f80_8001,    // just above a tie: up
            0x3f80_7fff,    // just below a tie: down
            0x7f7f_7fff,    // rounds to the largest finite bf16
            0x7f7f_8000,    // a tie at the top: rounds to infinity
            0x0000_0001,    // the smallest subnormal
            0x0040_8000,    // a subnormal tie
            0x8000_0000,    // -0
            0x0000_0000,
            0x7f80_0000, // inf
            0xff80_0000, // -inf
            0x7fc0_0000, // quiet NaN
            0x7f80_0001, // signalling NaN whose payload is all in the low half
            0xff81_2345,
        ];
        bits.iter().map(|&b| f32::from_bits(b)).collect()
    }

    #[test]
    fn f32_to_bf16_rounds_as_the_half_crate_bit_for_bit() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(7);
            // Odd lengths: packs of 8 and a tail; 1 and 7 are all tail.
            for n in [1usize, 7, 37, 1001, 4099] {
                let mut x = rng.normal_vec(n, 3.0);
                for (slot, v) in x.iter_mut().zip(special_values()) {
                    *slot = v;
                }
                // Random bits too, so every mantissa pattern below the cut is tried.
                for v in x.iter_mut().skip(special_values().len()).step_by(3) {
                    *v = f32::from_bits(rng.next_u64() as u32);
                }
                let y = gpu
                    .download(&cast_f32_to_bf16(&gpu, &gpu.upload(&x).unwrap()).unwrap())
                    .unwrap();
                for (i, (&got, &v)) in y.iter().zip(&x).enumerate() {
                    let want = bf16::from_f32(v);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "element {i} of {n}: {v:e} ({:#010x})",
                        v.to_bits()
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_to_f32_is_exact() {
        for gpu in test_gpus() {
            let mut rng = Rng::new(8);
            for n in [1usize, 9, 1003] {
                let x: Vec<bf16> = (0..n)
                    .map(|_| bf16::from_bits(rng.next_u64() as u16))
                    .collect();
                let y = gpu
                    .download(&cast_bf16_to_f32(&gpu, &gpu.upload(&x).unwrap()).unwrap())
                    .unwrap();
                for (&got, &h) in y.iter().zip(&x) {
                    assert_eq!(got.to_bits(), (h.to_bits() as u32) << 16);
                }
            }
        }
    }

    #[test]
    fn empty_buffers_cast_to_empty_buffers() {
        for gpu in test_gpus() {
            let y = cast_f32_to_bf16(&gpu, &gpu.zeros::<f32>(0).unwrap()).unwrap();
            assert!(y.is_empty());
        }
    }
}
