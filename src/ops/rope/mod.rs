//! Rotary position embedding (RoPE) of queries and keys, Hugging Face's half-split
//! convention. Positions are explicit per token because packed sequences restart at 0.

mod cpu;
pub mod cuda;

use std::sync::Arc;

pub use cpu::RopeTable;
use cpu::Rotation;

use crate::autograd::{Backward, Input};
use crate::tensor::Storage;
use crate::{Error, Result, Tensor};

/// Rotates `x` of shape [..., H, Dh] by its tokens' positions: `positions` holds one
/// position per token, a token being one index into the leading dimensions (so
/// positions.len() is their product). `theta` is the model's rope_theta.
pub fn rope(x: &Tensor, positions: &[u32], theta: f32) -> Result<Tensor> {
    if x.shape().rank() < 2 {
        return Err(rank_error(x));
    }
    let head_dim = x.shape().dim(-1);
    if !head_dim.is_multiple_of(2) {
        return Err(Error::shape(
            "rope",
            format!("head dim Dh of x must be even, got shape {}", x.shape()),
        ));
    }
    rope_with_table(x, &rope_table(positions, head_dim, theta)?)
}

/// The cos/sin table of `positions` for heads of `head_dim`: built once, it serves
/// every tensor rotated at those positions (q and k of every layer).
pub fn rope_table(positions: &[u32], head_dim: usize, theta: f32) -> Result<Arc<RopeTable>> {
    if !head_dim.is_multiple_of(2) {
        return Err(Error::shape(
            "rope",
            format!("head dim Dh must be even, got {head_dim}"),
        ));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::shape(
            "rope",
            format!("theta must be a positive finite number, got {theta}"),
        ));
    }
    Ok(Arc::new(RopeTable::new(positions, head_dim, theta)))
}

/// [`rope`] with a table from [`rope_table`], whose positions and head dim must be x's.
pub fn rope_with_table(x: &Tensor, table: &Arc<RopeTable>) -> Result<Tensor> {
    let heads = check_shapes(x, table)?;
    let backward = RopeBackward {
        table: Arc::clone(table),
        heads,
    };
    if x.device().is_gpu() {
        return cuda::rope(x, backward);
    }
    super::expect_f32("rope", &[x])?;
    let out = cpu::rotate(&x.read_f32()?, table, heads, Rotation::Forward);
    Ok(Tensor::from_op(
        Storage::F32(out),
        x.shape().clone(),
        &[x],
        backward,
    ))
}

fn rank_error(x: &Tensor) -> Error {
    Error::shape(
        "rope",
        format!(
            "x must be [..., H, Dh] (rank >= 2), got shape {}",
            x.shape()
        ),
    )
}

/// Returns H once x's shape is known to fit the table.
fn check_shapes(x: &Tensor, table: &RopeTable) -> Result<usize> {
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(rank_error(x));
    }
    let (heads, head_dim) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    if head_dim != table.head_dim() {
        return Err(Error::shape(
            "rope",
            format!(
                "x of shape {} has head dim {head_dim} but the table was built for {}",
                x.shape(),
                table.head_dim()
            ),
        ));
    }
    let tokens: usize = dims[..dims.len() - 2].iter().product();
    if tokens != table.tokens() {
        return Err(Error::shape(
            "rope",
            format!(
                "x of shape {} has {tokens} tokens (product of the dims before [H, Dh]) but {} positions were given",
                x.shape(),
                table.tokens()
            ),
        ));
    }
    Ok(heads)
}

/// The rotation is orthogonal, so its backward is the inverse rotation of the gradient.
pub(super) struct RopeBackward {
    table: Arc<RopeTable>,
    heads: usize,
}

impl Backward for RopeBackward {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn backward(&self, grad_output: &Tensor, _: &[Input]) -> Result<Vec<Option<Tensor>>> {
        if grad_output.device().is_gpu() {
            return Ok(vec![Some(cuda::rope_backward(self, grad_output)?)]);
        }
        let grad = cpu::rotate(
            &grad_output.read_f32()?,
            &self.table,
            self.heads,
            Rotation::Inverse,
        );
        Ok(vec![Some(Tensor::from_vec(
            grad,
            grad_output.shape().clone(),
        )?)])
    }
}

#[cfg(test)]
mod tests;
