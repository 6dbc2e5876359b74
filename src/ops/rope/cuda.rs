//! Launcher of kernels/rope.cu: q and k rotated in place in one launch, by the cos/sin
//! of a [`RopeTable`] built on the host (bit-identical factors to the CPU reference).

use std::sync::{Arc, Mutex};

use super::{RopeBackward, RopeTable};
use crate::backend::cuda::{
    expect_len, Gpu, GpuBuffer, GpuFloat, GpuView, KernelArg, LaunchConfig,
};
use crate::ops::{gpu_dtype_of, on_gpu_dtype};
use crate::{Device, Error, Result, Tensor};

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

/// A host table's copies on devices, uploaded on first use on each.
#[derive(Default)]
pub struct DeviceTables(Mutex<Vec<(Device, Arc<DeviceRopeTable>)>>);

impl DeviceTables {
    fn get(&self, device: Device, gpu: &Gpu, table: &RopeTable) -> Result<Arc<DeviceRopeTable>> {
        let mut tables = self
            .0
            .lock()
            .expect("the table cache lock is never poisoned");
        if let Some((_, t)) = tables.iter().find(|(d, _)| *d == device) {
            return Ok(t.clone());
        }
        let made = Arc::new(DeviceRopeTable::new(gpu, table)?);
        tables.push((device, made.clone()));
        Ok(made)
    }
}

/// `x` ([tokens, heads, D]) rotated by the table's angles, in a new buffer; `inverse`
/// rotates back (the backward: applied to the gradient of the rotated tensor).
pub fn rope_rotate<'x, T: GpuFloat + 'x>(
    gpu: &Gpu,
    x: impl Into<GpuView<'x, T>>,
    heads: usize,
    table: &DeviceRopeTable,
    inverse: bool,
) -> Result<GpuBuffer<T>> {
    let x = x.into();
    let head_dim = 2 * table.half;
    expect_len("rope", "x", &x, table.tokens * heads * head_dim)?;
    let mut y = gpu.alloc::<T>(x.len())?;
    let pairs = table.tokens * heads * table.half;
    if pairs == 0 {
        return Ok(y);
    }
    let args = [
        KernelArg::output(&mut y),
        KernelArg::input(x),
        KernelArg::input(&table.cos),
        KernelArg::input(&table.sin),
        KernelArg::input(&table.row_of_token),
        KernelArg::int(table.tokens)?,
        KernelArg::int(heads)?,
        KernelArg::int(table.half)?,
    ];
    let blocks = pairs.div_ceil(THREADS as usize).min(MAX_BLOCKS) as u32;
    let direction = if inverse { "backward" } else { "forward" };
    let name = format!("rope_{direction}_{}", T::SUFFIX);
    // SAFETY: x and y hold tokens rows of `heads` heads (checked); the table's rows index
    // its cos/sin, made for these tokens.
    unsafe { gpu.launch(&name, LaunchConfig::linear(blocks, THREADS, 0), &args)? };
    Ok(y)
}

/// [`super::rope_with_table`] of a GPU tensor.
pub(super) fn rope(x: &Tensor, saved: RopeBackward) -> Result<Tensor> {
    const OP: &str = "rope";
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[x])?, T => {
        let rx = x.read_gpu(OP)?;
        let gpu = rx.gpu().clone();
        let table = saved.table.on_devices.get(rx.device(), &gpu, &saved.table)?;
        let y = rope_rotate::<T>(&gpu, rx.view(OP)?, saved.heads, &table, false)?;
        let on = (rx.device(), &gpu);
        Ok(Tensor::from_gpu_op(on, y, x.shape().clone(), &[x], saved))
    })
}

/// The backward of [`rope`]: the gradient rotated back.
pub(super) fn rope_backward(saved: &RopeBackward, grad: &Tensor) -> Result<Tensor> {
    const OP: &str = "rope backward";
    on_gpu_dtype!(OP, gpu_dtype_of(OP, &[grad])?, T => {
        let rg = grad.read_gpu(OP)?;
        let gpu = rg.gpu().clone();
        let table = saved.table.on_devices.get(rg.device(), &gpu, &saved.table)?;
        let dx = rope_rotate::<T>(&gpu, rg.view(OP)?, saved.heads, &table, true)?;
        Ok(Tensor::from_gpu((rg.device(), &gpu), dx, grad.shape().clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{rotate, Rotation};
    use super::*;
    use crate::backend::cuda::test_gpus;
    use crate::ops::test_util::assert_close_abs;
    use crate::rng::Rng;

    #[test]
    fn rotations_match_the_cpu_reference() {
        let (tokens, heads, head_dim) = (11, 6, 10);
        // Repeated positions (packed sequences restart at 0) and large ones.
        let positions: Vec<u32> = vec![0, 1, 2, 0, 1, 2, 3, 4, 900, 901, 32767];
        let table = RopeTable::new(&positions, head_dim, 1e6);
        let mut rng = Rng::new(12);
        let x = rng.normal_vec(tokens * heads * head_dim, 1.0);
        for gpu in test_gpus() {
            let device_table = DeviceRopeTable::new(&gpu, &table).unwrap();
            for (inverse, rotation) in [(false, Rotation::Forward), (true, Rotation::Inverse)] {
                let gx = gpu.upload(&x).unwrap();
                let y = rope_rotate(&gpu, &gx, heads, &device_table, inverse).unwrap();
                let want = rotate(&x, &table, heads, rotation);
                assert_close_abs(&gpu.download(&y).unwrap(), &want, 1e-6);
            }
        }
    }

    #[test]
    fn bf16_rotation_rounds_once() {
        let positions: Vec<u32> = (0..7).collect();
        let table = RopeTable::new(&positions, 8, 10_000.0);
        let mut rng = Rng::new(13);
        let x: Vec<half::bf16> = rng
            .normal_vec(7 * 3 * 8, 1.0)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect();
        let wide: Vec<f32> = x.iter().map(|h| h.to_f32()).collect();
        let want = rotate(&wide, &table, 3, Rotation::Forward);
        for gpu in test_gpus() {
            let device_table = DeviceRopeTable::new(&gpu, &table).unwrap();
            let y = rope_rotate(&gpu, &gpu.upload(&x).unwrap(), 3, &device_table, false).unwrap();
            for (a, b) in gpu.download(&y).unwrap().iter().zip(&want) {
                assert!(
                    (a.to_f32() - b).abs() <= 4e-3 * b.abs() + 1e-6,
                    "{a} vs {b}"
                );
            }
        }
    }
}
