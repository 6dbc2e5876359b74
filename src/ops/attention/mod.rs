//! Causal grouped-query self-attention, softmax(q·kᵀ/√Dh)·v, with an optional segment
//! mask so that sequences packed into one row never attend to each other.

mod cpu;
pub mod cuda;
pub mod flash;
mod paged;
pub mod paged_cuda;

pub use paged::{kv_cache_write, paged_attention, PagedDims, PagedRows};

pub use cpu::AttentionDims;

use crate::autograd::{Backward, Input};
use crate::tensor::Storage;
use crate::{Error, Result, Tensor};

/// Attention of q [B, T, Hq, Dh] over k, v [B, T, Hkv, Dh] (heads not transposed to the
/// front), Hq a multiple of Hkv; query head h reads key/value head h / (Hq/Hkv).
/// Position i of row b sees key j iff j <= i and, when `segments` ([B*T] ids, row-major)
/// is given, segments[b*T + i] == segments[b*T + j]. Returns [B, T, Hq, Dh]. On a GPU,
/// bf16 at head dims 64 and 128 runs the flash kernels, everything else the simple ones.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, segments: Option<&[u32]>) -> Result<Tensor> {
    let dims = check_shapes(q, k, v, segments)?;
    if super::device_of("attention", &[q, k, v])?.is_gpu() {
        return cuda::attention((q, k, v), segments, dims);
    }
    super::expect_f32("attention", &[q, k, v])?;
    let (out, lse) = cpu::attention_forward(
        (&q.read_f32()?, &k.read_f32()?, &v.read_f32()?),
        segments,
        dims,
        cpu::ROW_BLOCK,
    );
    let backward = AttentionBackward {
        qkv: [q.clone(), k.clone(), v.clone()],
        out: None,
        lse: Tensor::from_vec(lse, [dims.batch * dims.q_heads * dims.seq])?,
        segments: segments.map(<[u32]>::to_vec),
        dims,
    };
    Ok(Tensor::from_op(
        Storage::F32(out),
        q.shape().clone(),
        &[q, k, v],
        backward,
    ))
}

fn check_shapes(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: Option<&[u32]>,
) -> Result<AttentionDims> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        super::expect_rank("attention", name, t, 4)?;
    }
    let fail = |msg: String| Err(Error::shape("attention", msg));
    if k.shape() != v.shape() {
        return fail(format!(
            "k and v must have the same shape, got k {} and v {}",
            k.shape(),
            v.shape()
        ));
    }
    let (qd, kd) = (q.dims(), k.dims());
    let dims = AttentionDims {
        batch: qd[0],
        seq: qd[1],
        q_heads: qd[2],
        kv_heads: kd[2],
        head_dim: qd[3],
    };
    if (qd[0], qd[1], qd[3]) != (kd[0], kd[1], kd[3]) {
        return fail(format!(
            "q {} and k/v {} must agree in B, T and Dh ([B, T, H, Dh])",
            q.shape(),
            k.shape()
        ));
    }
    if dims.q_heads == 0 || dims.kv_heads == 0 || !dims.q_heads.is_multiple_of(dims.kv_heads) {
        return fail(format!(
            "the Hq = {} query heads (q {}) must be a nonzero multiple of the Hkv = {} key/value heads (k {})",
            dims.q_heads,
            q.shape(),
            dims.kv_heads,
            k.shape()
        ));
    }
    if dims.head_dim == 0 {
        return fail(format!("head dim Dh of q {} must be nonzero", q.shape()));
    }
    if let Some(segments) = segments {
        if segments.len() != dims.batch * dims.seq {
            return fail(format!(
                "segments has {} ids, q {} needs B*T = {}",
                segments.len(),
                q.shape(),
                dims.batch * dims.seq
            ));
        }
    }
    Ok(dims)
}

/// Saves q, k, v, the row log-sum-exps [B, Hq, T] (see cpu.rs) and the mask's segments;
/// on a GPU the output too (the kernels' delta = rowsum(dout · out)), kept without its
/// node so that the output does not own itself.
pub(super) struct AttentionBackward {
    pub(super) qkv: [Tensor; 3],
    pub(super) out: Option<Tensor>,
    pub(super) lse: Tensor,
    pub(super) segments: Option<Vec<u32>>,
    pub(super) dims: AttentionDims,
}

impl Backward for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn backward(&self, grad_output: &Tensor, _: &[Input]) -> Result<Vec<Option<Tensor>>> {
        if grad_output.device().is_gpu() {
            return cuda::attention_backward_on_gpu(self, grad_output);
        }
        let [q, k, v] = &self.qkv;
        let (dq, dk, dv) = cpu::attention_backward(
            (&q.read_f32()?, &k.read_f32()?, &v.read_f32()?),
            self.segments.as_deref(),
            self.dims,
            &self.lse.read_f32()?,
            &grad_output.read_f32()?,
            cpu::ROW_BLOCK,
        );
        Ok(vec![
            Some(Tensor::from_vec(dq, q.shape().clone())?),
            Some(Tensor::from_vec(dk, k.shape().clone())?),
            Some(Tensor::from_vec(dv, v.shape().clone())?),
        ])
    }
}

#[cfg(test)]
mod tests;
