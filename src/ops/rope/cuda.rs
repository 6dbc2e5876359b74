//! Launcher of kernels/rope.cu: q and k rotated in place in one launch, by the cos/sin
//! of a [`RopeTable`] built on the host (bit-identical factors to the CPU reference).

use super::RopeTable;
use crate::backend::cuda::{expect_len, Gpu, GpuBuffer, GpuFloat, KernelArg, LaunchConfig};
use crate::{Error, Result};

const THREADS: u32 = 256;
/// Enough blocks to fill any current GPU several times; the kernel strides over the rest.
const MAX_BLOCKS: usize = 4096;

/// A table's factors on the device, reused by every layer's q and k.
pub struct DeviceRopeTable {
    cos: GpuBuffer<f32>,
    sin: GpuBuffer<f32>,
    row_of_token: GpuBuffer<i32>,
    tokens: usize,
    half: usize,
}

impl DeviceRopeTable {
    pub fn new(gpu: &Gpu, table: &RopeTable) -> Result<Self> {
        let (cos, sin, rows) = table.parts();
        let rows = rows
            .iter()
            .map(|&r| i32::try_from(r).map_err(|_| Error::shape("rope", "too many positions")))
            .collect::<Result<Vec<i32>>>()?;
        Ok(DeviceRopeTable {
            cos: gpu.upload(cos)?,
            sin: gpu.upload(sin)?,
            row_of_token: gpu.upload(&rows)?,
            tokens: table.tokens(),
            half: table.head_dim() / 2,
        })
    }
}

/// Rotates q ([tokens, q_heads, D]) and k ([tokens, kv_heads, D]) in place; `inverse`
/// rotates back (the backward: applied to the gradients of the rotated q and k).
pub fn rope_in_place<T: GpuFloat>(
    gpu: &Gpu,
    (q, k): (&mut GpuBuffer<T>, &mut GpuBuffer<T>),
    (q_heads, kv_heads): (usize, usize),
    table: &DeviceRopeTable,
    inverse: bool,
) -> Result<()> {
    let head_dim = 2 * table.half;
    expect_len("rope", "q", q, table.tokens * q_heads * head_dim)?;
    expect_len("rope", "k", k, table.tokens * kv_heads * head_dim)?;
    let pairs = table.tokens * (q_heads + kv_heads) * table.half;
    if pairs == 0 {
        return Ok(());
    }
    let args = [
        KernelArg::output(q),
        KernelArg::output(k),
        KernelArg::input(&table.cos),
        KernelArg::input(&table.sin),
        KernelArg::input(&table.row_of_token),
        KernelArg::int(table.tokens)?,
        KernelArg::int(q_heads)?,
        KernelArg::int(kv_heads)?,
        KernelArg::int(table.half)?,
    ];
    let blocks = pairs.div_ceil(THREADS as usize).min(MAX_BLOCKS) as u32;
    let direction = if inverse { "backward" } else { "forward" };
    let name = format!("rope_{direction}_{}", T::SUFFIX);
    // SAFETY: q and k hold tokens rows of their heads (checked); the table's rows index
    // its cos/sin, made for these tokens.
    unsafe { gpu.launch(&name, LaunchConfig::linear(blocks, THREADS, 0), &args) }
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{rotate, Rotation};
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::ops::test_util::assert_close_abs;
    use crate::rng::Rng;

    #[test]
    fn rotations_match_the_cpu_reference_for_q_and_k_together() {
        let (tokens, q_heads, kv_heads, head_dim) = (11, 6, 2, 10);
        // Repeated positions (packed sequences restart at 0) and large ones.
        let positions: Vec<u32> = vec![0, 1, 2, 0, 1, 2, 3, 4, 900, 901, 32767];
        let table = RopeTable::new(&positions, head_dim, 1e6);
        let mut rng = Rng::new(12);
        let q = rng.normal_vec(tokens * q_heads * head_dim, 1.0);
        let k = rng.normal_vec(tokens * kv_heads * head_dim, 1.0);
        for gpu in test_gpus() {
            let device_table = DeviceRopeTable::new(&gpu, &table).unwrap();
            for (inverse, rotation) in [(false, Rotation::Forward), (true, Rotation::Inverse)] {
                let (mut gq, mut gk) = (gpu.upload(&q).unwrap(), gpu.upload(&k).unwrap());
                rope_in_place(
                    &gpu,
                    (&mut gq, &mut gk),
                    (q_heads, kv_heads),
                    &device_table,
                    inverse,
                )
                .unwrap();
                let q_ref = rotate(&q, &table, q_heads, rotation);
                let k_ref = rotate(&k, &table, kv_heads, rotation);
                assert_close_abs(&gpu.download(&gq).unwrap(), &q_ref, 1e-6);
                assert_close_abs(&gpu.download(&gk).unwrap(), &k_ref, 1e-6);
            }
        }
    }

    #[test]
    fn bf16_rotation_rounds_once() {
        let positions: Vec<u32> = (0..7).collect();
        let table = RopeTable::new(&positions, 8, 10_000.0);
        let mut rng = Rng::new(13);
        let q: Vec<half::bf16> = rng
            .normal_vec(7 * 3 * 8, 1.0)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect();
        let k: Vec<half::bf16> = rng
            .normal_vec(7 * 8, 1.0)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect();
        let wide: Vec<f32> = q.iter().map(|h| h.to_f32()).collect();
        let q_ref = rotate(&wide, &table, 3, Rotation::Forward);
        for gpu in test_gpus() {
            let device_table = DeviceRopeTable::new(&gpu, &table).unwrap();
            let (mut gq, mut gk) = (gpu.upload(&q).unwrap(), gpu.upload(&k).unwrap());
            rope_in_place(&gpu, (&mut gq, &mut gk), (3, 1), &device_table, false).unwrap();
            for (a, b) in gpu.download(&gq).unwrap().iter().zip(&q_ref) {
                assert!(
                    (a.to_f32() - b).abs() <= 4e-3 * b.abs() + 1e-6,
                    "{a} vs {b}"
                );
            }
        }
    }
}
