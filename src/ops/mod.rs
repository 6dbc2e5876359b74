//! The ops of the Qwen2/Llama architecture. One folder per op: `mod.rs` holds the public
//! function (shape checks, dispatch, the backward registered on the tape) and `cpu.rs`
//! the reference implementation every other backend is tested against.

pub mod add;
pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;
#[cfg(test)]
mod test_util;

pub use add::add;
pub use attention::{attention, attention_with_caches, CachedDims, CachedQueries};
pub use cross_entropy::{cross_entropy, Reduction, IGNORE_INDEX};
pub use embedding::embedding;
pub use linear::{linear, linears};
pub use rmsnorm::rmsnorm;
pub use rope::{rope, rope_table, rope_with_table, RopeTable};
pub use swiglu::swiglu;

use crate::backend::cpu::WeightRows;
use crate::tensor::Storage;
use crate::{DType, Device, Error, Result, Tensor};

/// Every op on the CPU computes in f32; this names the op and the offending tensor.
pub(crate) fn expect_f32(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    for t in tensors {
        if t.device() != Device::Cpu {
            return Err(Error::Device(
                t.device(),
                format!("{op} runs on the CPU only in this build"),
            ));
        }
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

/// A weight matrix's elements as stored (read through `weight.read_storage()`): f32, or
/// bf16 as `Model::load_for_inference` keeps a bf16 checkpoint's matrices, which the
/// ops widen to f32 as they compute.
pub(crate) fn weight_rows<'a>(
    op: &'static str,
    weight: &Tensor,
    storage: &'a Storage,
) -> Result<WeightRows<'a>> {
    if weight.device() != Device::Cpu {
        return Err(Error::Device(
            weight.device(),
            format!("{op} runs on the CPU only in this build"),
        ));
    }
    match storage {
        Storage::F32(v) => Ok(WeightRows::F32(v)),
        Storage::BF16(v) => Ok(WeightRows::Bf16(v)),
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
