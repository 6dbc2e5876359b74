//! Elementwise addition of two tensors of the same shape: the residual connection.

mod cpu;
pub mod cuda;

use crate::autograd::Backward;
use crate::tensor::Storage;
use crate::{Error, Result, Tensor};

/// `a + b`, both of the same shape.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::expect_f32("add", &[a, b])?;
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "add",
            format!("operands differ in shape: {} vs {}", a.shape(), b.shape()),
        ));
    }
    let out = cpu::add_forward(&a.read_f32()?, &b.read_f32()?);
    Ok(Tensor::from_op(
        Storage::F32(out),
        a.shape().clone(),
        &[a, b],
        AddBackward,
    ))
}

struct AddBackward;

impl Backward for AddBackward {
    fn name(&self) -> &'static str {
        "add"
    }

    fn backward(&self, _inputs: &[Tensor], grad_output: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad_output.clone()), Some(grad_output.clone())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{gradcheck, GradcheckConfig};
    use crate::rng::Rng;

    #[test]
    fn forward_adds_elementwise() {
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], [3]).unwrap();
        let b = Tensor::from_vec(vec![10.0, 20.0, 30.0], [3]).unwrap();
        assert_eq!(add(&a, &b).unwrap().to_vec_f32(), vec![11.0, 22.0, 33.0]);
    }

    #[test]
    fn gradcheck_odd_shape() {
        let mut rng = Rng::new(1);
        let a = Tensor::from_vec(rng.normal_vec(5 * 7, 1.0), [5, 7]).unwrap();
        let b = Tensor::from_vec(rng.normal_vec(5 * 7, 1.0), [5, 7]).unwrap();
        gradcheck(&[a, b], |x| add(&x[0], &x[1]), &GradcheckConfig::default()).unwrap();
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let a = Tensor::zeros([2, 3], crate::DType::F32);
        let b = Tensor::zeros([3, 2], crate::DType::F32);
        let err = add(&a, &b).unwrap_err().to_string();
        assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
    }
}
