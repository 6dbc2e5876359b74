//! The ops of the Qwen2/Llama architecture. One folder per op: `mod.rs` holds the public
//! function (shape checks, dispatch on the device of its tensors, the backward recorded
//! on the tape, which runs on the same device), `cpu.rs` the reference implementation
//! every other backend is tested against, and `cuda.rs` the launchers of its kernels
//! (kernels/<op>.cu) and their use on tensors. A GPU op's tensors share one dtype (f32,
//! or bf16 with f32 arithmetic); a parameter's gradient is always f32.

pub mod add;
pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod swiglu;
#[cfg(test)]
pub(crate) mod test_util;

pub use add::add;
pub use attention::{attention, kv_cache_write, paged_attention, PagedDims, PagedRows};
pub use cross_entropy::{cross_entropy, lm_head_loss, Reduction, IGNORE_INDEX};
pub use embedding::embedding;
pub use linear::{linear, linears};
pub use rmsnorm::rmsnorm;
pub use rope::{rope, rope_table, rope_with_table, RopeTable};
pub use sampling::{choose_tokens, TokenChoice};
pub use swiglu::swiglu;

use crate::backend::cpu::WeightRows;
use crate::tensor::Storage;
use crate::{DType, Device, Error, Result, Tensor};

/// The device every tensor of an op is on; an error naming the op and the two devices
/// when they differ.
pub(crate) fn device_of(op: &'static str, tensors: &[&Tensor]) -> Result<Device> {
    let Some(first) = tensors.first() else {
        return Ok(Device::Cpu);
    };
    let device = first.device();
    match tensors.iter().find(|t| t.device() != device) {
        None => Ok(device),
        Some(other) => Err(Error::DeviceMismatch {
            op,
            msg: format!(
                "its tensors must be on one device, got one on {device} and one on {} (move them with .to(device))",
                other.device()
            ),
        }),
    }
}

/// The dtype every tensor of a GPU op holds (f32 or bf16).
pub(crate) fn gpu_dtype_of(op: &'static str, tensors: &[&Tensor]) -> Result<DType> {
    let dtype = tensors.first().map_or(DType::F32, |t| t.dtype());
    for t in tensors {
        if t.dtype() != dtype || dtype == DType::F16 {
            return Err(Error::DType {
                op,
                got: t.dtype(),
                expected: "one dtype, F32 or BF16, for every tensor of a GPU op",
            });
        }
    }
    Ok(dtype)
}

/// Runs `$body` with `$T` the element type of the GPU dtype `$dtype` (f32 or bf16).
macro_rules! on_gpu_dtype {
    ($op:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err($crate::Error::DType {
                op: $op,
                got: other,
                expected: "F32 or BF16 on a GPU",
            }),
        }
    };
}
pub(crate) use on_gpu_dtype;

/// Every op on the CPU computes in f32; this names the op and the offending tensor.
pub(crate) fn expect_f32(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    for t in tensors {
        if t.dtype() != DType::F32 {
            return Err(Error::DType {
                op,
                got: t.dtype(),
                expected: "F32 (convert with to_dtype(DType::F32))",
            });
        }
    }
    Ok(())
}

/// A weight matrix's elements as stored (its range of `storage`, read through
/// `weight.read_host()`): f32, or bf16 as `Model::load_for_inference` keeps a bf16
/// checkpoint's matrices, which the ops widen to f32 as they compute.
pub(crate) fn weight_rows<'a>(
    op: &'static str,
    (storage, range): (&'a Storage, std::ops::Range<usize>),
) -> Result<WeightRows<'a>> {
    match storage {
        Storage::F32(v) => Ok(WeightRows::F32(&v[range])),
        Storage::BF16(v) => Ok(WeightRows::Bf16(&v[range])),
        other => Err(Error::DType {
            op,
            got: other.dtype(),
            expected: "F32 or BF16 (convert with to_dtype(DType::F32))",
        }),
    }
}

/// Checks that a tensor has exactly `rank` dimensions.
pub(crate) fn expect_rank(op: &'static str, name: &str, t: &Tensor, rank: usize) -> Result<()> {
    if t.shape().rank() != rank {
        return Err(Error::shape(
            op,
            format!(
                "{name} must have {rank} dimensions, got shape {}",
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// Runs a GPU backward that writes a weight's f32 gradient through `f(target,
/// accumulate)`: into the weight's gradient buffer, added to, when it has one; else into a
/// new buffer, returned as the gradient (or dropped when the weight needs none).
pub(crate) fn weight_grad_on_gpu<R>(
    op: &'static str,
    input: &crate::autograd::Input,
    (device, gpu): (Device, &std::sync::Arc<crate::backend::cuda::Gpu>),
    f: impl FnOnce(crate::backend::cuda::GpuViewMut<'_, f32>, bool) -> Result<R>,
) -> Result<(R, Option<Tensor>)> {
    if let Some(buffer) = input.grad_buffer() {
        let mut target = buffer.write_gpu(op)?;
        let out = f(target.view_mut::<f32>(op)?, true)?;
        return Ok((out, None));
    }
    let mut fresh = gpu.alloc::<f32>(input.shape().elem_count())?;
    let out = f((&mut fresh).into(), false)?;
    let grad = input
        .requires_grad()
        .then(|| Tensor::from_gpu((device, gpu), fresh, input.shape().clone()));
    Ok((out, grad))
}
