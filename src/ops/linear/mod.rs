//! Linear layer in Hugging Face's nn.Linear layout: `y = x · Wᵀ + b` with W stored
//! [out, in]. Every projection of the model (q/k/v/o, the MLP, the LM head) is one, so
//! this is where training time goes: all three products are single GEMM calls.

pub(crate) mod cpu;
pub mod cuda;

use crate::autograd::{Backward, Input};
use crate::tensor::Storage;
use crate::{Error, Result, Shape, Tensor};

/// `x · weightᵀ + bias`: x [..., K], weight [M, K], bias [M] → [..., M]. On the CPU the
/// weight may be f32 or bf16 (widened as it is read) and x and bias are f32; on a GPU
/// all three share one dtype.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut y = linears(x, &[(weight, bias)])?;
    Ok(y.pop().expect("one output per layer"))
}

/// [`linear`] of the same x with each (weight, bias) of `layers` (a layer's q, k and v
/// projections; its gate and up). At a decode step's few rows on the CPU the products
/// share one parallel pass; the outputs and their gradients are those of separate calls.
pub fn linears(x: &Tensor, layers: &[(&Tensor, Option<&Tensor>)]) -> Result<Vec<Tensor>> {
    let dims = layers
        .iter()
        .map(|&(w, b)| check_shapes(x, w, b))
        .collect::<Result<Vec<_>>>()?;
    let mut operands = vec![x];
    for &(w, b) in layers {
        operands.push(w);
        operands.extend(b);
    }
    let on_gpu = super::device_of("linear", &operands)?.is_gpu();
    let mut outputs = Vec::with_capacity(layers.len());
    let ys = if on_gpu {
        None
    } else {
        Some(cpu_forward(x, layers, &dims)?)
    };
    for (i, (&(weight, bias), dims)) in layers.iter().zip(dims).enumerate() {
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        let backward = LinearBackward {
            x: x.clone(),
            weight: weight.clone(),
            dims,
        };
        let mut out_dims = x.dims().to_vec();
        *out_dims.last_mut().expect("x has rank >= 1") = dims.2;
        outputs.push(match &ys {
            None => cuda::linear(backward, bias, Shape::from(out_dims), &inputs)?,
            Some(ys) => Tensor::from_op(
                Storage::F32(ys[i].clone()),
                Shape::from(out_dims),
                &inputs,
                backward,
            ),
        });
    }
    Ok(outputs)
}

/// Every layer's output on the CPU, computed together.
fn cpu_forward(
    x: &Tensor,
    layers: &[(&Tensor, Option<&Tensor>)],
    dims: &[(usize, usize, usize)],
) -> Result<Vec<Vec<f32>>> {
    let mut activations = vec![x];
    activations.extend(layers.iter().filter_map(|&(_, b)| b));
    super::expect_f32("linear", &activations)?;
    let stored = layers
        .iter()
        .map(|(w, _)| w.read_host("linear"))
        .collect::<Result<Vec<_>>>()?;
    let weights = stored
        .iter()
        .map(|s| super::weight_rows("linear", s.storage()))
        .collect::<Result<Vec<_>>>()?;
    let biases = layers
        .iter()
        .map(|(_, b)| b.map(|b| b.read_f32()).transpose())
        .collect::<Result<Vec<_>>>()?;
    let biases: Vec<Option<&[f32]>> = biases.iter().map(|b| b.as_deref()).collect();
    let out_features: Vec<usize> = dims.iter().map(|d| d.2).collect();
    let (rows, k) = (x.shape().rows(), x.shape().dim(-1));
    Ok(cpu::linears_forward(
        &x.read_f32()?,
        &weights,
        &biases,
        &out_features,
        (rows, k),
    ))
}

/// Validates the operands and returns (rows, K, M).
fn check_shapes(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<(usize, usize, usize)> {
    if x.shape().rank() == 0 {
        return Err(Error::shape(
            "linear",
            "x must have at least one dimension [..., in_features], got a scalar",
        ));
    }
    super::expect_rank("linear", "weight [out_features, in_features]", weight, 2)?;
    let (m, k) = (weight.dims()[0], weight.dims()[1]);
    let x_k = x.shape().dim(-1);
    if x_k != k {
        return Err(Error::shape(
            "linear",
            format!(
                "x {} has {x_k} input features but weight {} expects {k}",
                x.shape(),
                weight.shape()
            ),
        ));
    }
    if let Some(b) = bias {
        if b.dims() != [m] {
            return Err(Error::shape(
                "linear",
                format!(
                    "bias must have shape [{m}] to match weight {}, got {}",
                    weight.shape(),
                    b.shape()
                ),
            ));
        }
    }
    Ok((x.shape().rows(), k, m))
}

/// Keeps x and W and the problem size (rows, K, M); the bias needs nothing.
pub(super) struct LinearBackward {
    x: Tensor,
    weight: Tensor,
    dims: (usize, usize, usize),
}

impl Backward for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn backward(&self, grad_output: &Tensor, inputs: &[Input]) -> Result<Vec<Option<Tensor>>> {
        let (rows, _, m) = self.dims;
        if grad_output.elem_count() != rows * m {
            return Err(Error::Autograd(format!(
                "linear: output gradient has shape {}, expected {rows} rows of {m}",
                grad_output.shape()
            )));
        }
        if grad_output.device().is_gpu() {
            return cuda::linear_backward_on_gpu(self, grad_output, inputs);
        }
        let (x, weight) = (&self.x, &self.weight);
        let dy = grad_output.read_f32()?;
        // Frozen operands (a teacher's weights, an input without history) cost no GEMM.
        let dx = if inputs[0].requires_grad() {
            let stored = weight.read_host("linear")?;
            let w = super::weight_rows("linear", stored.storage())?.to_f32();
            let dx = cpu::input_grad(&dy, &w, self.dims);
            Some(Tensor::from_vec(dx, x.shape().clone())?)
        } else {
            None
        };
        let dw = if inputs[1].requires_grad() {
            let dw = cpu::weight_grad(&dy, &x.read_f32()?, self.dims);
            Some(Tensor::from_vec(dw, weight.shape().clone())?)
        } else {
            None
        };
        let mut grads = vec![dx, dw];
        if let Some(b) = inputs.get(2) {
            let db = b.requires_grad().then(|| cpu::bias_grad(&dy, rows, m));
            grads.push(
                db.map(|db| Tensor::from_vec(db, b.shape().clone()))
                    .transpose()?,
            );
        }
        Ok(grads)
    }
}

#[cfg(test)]
mod tests;
