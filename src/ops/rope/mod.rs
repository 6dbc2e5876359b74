//! Rotary position embedding (RoPE) of queries and keys, Hugging Face's half-split
//! convention. Positions are explicit per token because packed sequences restart at 0.

mod cpu;

use cpu::{RopeTable, Rotation};

use crate::autograd::Backward;
use crate::tensor::Storage;
use crate::{Error, Result, Tensor};

/// Rotates `x` of shape [..., H, Dh] by its tokens' positions: `positions` holds one
/// position per token, a token being one index into the leading dimensions (so
/// positions.len() is their product). `theta` is the model's rope_theta.
pub fn rope(x: &Tensor, positions: &[u32], theta: f32) -> Result<Tensor> {
    super::expect_f32("rope", &[x])?;
    let (heads, head_dim) = check_shapes(x, positions, theta)?;
    let table = RopeTable::new(positions, head_dim, theta);
    let out = cpu::rotate(&x.read_f32()?, &table, heads, Rotation::Forward);
    Ok(Tensor::from_op(
        Storage::F32(out),
        x.shape().clone(),
        &[x],
        RopeBackward { table, heads },
    ))
}

/// Returns (H, Dh) once the shapes and theta are known to be usable.
fn check_shapes(x: &Tensor, positions: &[u32], theta: f32) -> Result<(usize, usize)> {
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(Error::shape(
            "rope",
            format!(
                "x must be [..., H, Dh] (rank >= 2), got shape {}",
                x.shape()
            ),
        ));
    }
    let (heads, head_dim) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    if head_dim % 2 != 0 {
        return Err(Error::shape(
            "rope",
            format!("head dim Dh of x must be even, got shape {}", x.shape()),
        ));
    }
    let tokens: usize = dims[..dims.len() - 2].iter().product();
    if tokens != positions.len() {
        return Err(Error::shape(
            "rope",
            format!(
                "x of shape {} has {tokens} tokens (product of the dims before [H, Dh]) but {} positions were given",
                x.shape(),
                positions.len()
            ),
        ));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::shape(
            "rope",
            format!("theta must be a positive finite number, got {theta}"),
        ));
    }
    Ok((heads, head_dim))
}

/// The rotation is orthogonal, so its backward is the inverse rotation of the gradient.
struct RopeBackward {
    table: RopeTable,
    heads: usize,
}

impl Backward for RopeBackward {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn backward(&self, _inputs: &[Tensor], grad_output: &Tensor) -> Result<Vec<Option<Tensor>>> {
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
