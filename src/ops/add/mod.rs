//! Elementwise addition of two tensors of the same shape: the residual connection, and
//! the tape's sum of two gradients of one tensor.

mod cpu;
pub mod cuda;

use crate::autograd::{no_grad, Backward, Input};
use crate::tensor::Storage;
use crate::{Device, Error, Result, Tensor};

/// `a + b`, both of the same shape, device and dtype.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "add",
            format!("operands differ in shape: {} vs {}", a.shape(), b.shape()),
        ));
    }
    match super::device_of("add", &[a, b])? {
        Device::Cpu => {
            super::expect_f32("add", &[a, b])?;
            let out = cpu::add_forward(&a.read_f32()?, &b.read_f32()?);
            Ok(Tensor::from_op(
                Storage::F32(out),
                a.shape().clone(),
                &[a, b],
                AddBackward,
            ))
        }
        _ => cuda::add(a, b),
    }
}

/// `a + b` off the tape (the sum of two gradients).
pub(crate) fn sum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _off = no_grad();
    add(a, b)
}

/// `target += value` in place: a gradient added into a parameter's gradient buffer.
/// `value` is converted to the buffer's dtype (f32) when it is another.
pub(crate) fn add_into(target: &Tensor, value: &Tensor) -> Result<()> {
    if target.shape() != value.shape() {
        return Err(Error::shape(
            "add_into",
            format!(
                "a gradient of shape {} for a buffer of shape {}",
                value.shape(),
                target.shape()
            ),
        ));
    }
    if target.same_storage(value) {
        return Err(Error::Autograd(
            "a gradient shares its gradient buffer's storage".into(),
        ));
    }
    let value = if value.dtype() == target.dtype() {
        value.clone()
    } else {
        value.to_dtype(target.dtype())?
    };
    match super::device_of("add_into", &[target, &value])? {
        Device::Cpu => {
            let v = value.read_f32()?;
            let mut t = target.write_f32()?;
            cpu::add_assign(&mut t, &v);
            Ok(())
        }
        _ => cuda::add_into(target, &value),
    }
}

/// Both inputs get the output's gradient.
pub(super) struct AddBackward;

impl Backward for AddBackward {
    fn name(&self) -> &'static str {
        "add"
    }

    fn backward(&self, grad_output: &Tensor, _: &[Input]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad_output.clone()), Some(grad_output.clone())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{gradcheck, GradcheckConfig};
    use crate::rng::Rng;
    use crate::testing::relative_error;
    use crate::DType;

    crate::device_tests! {
        fn forward_adds_elementwise(device: Device) {
            let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], [3]).unwrap().to(device).unwrap();
            let b = Tensor::from_vec(vec![10.0, 20.0, 30.0], [3]).unwrap().to(device).unwrap();
            let y = add(&a, &b).unwrap();
            assert_eq!(y.device(), device);
            assert_eq!(y.to_vec_f32().unwrap(), vec![11.0, 22.0, 33.0]);
        }
    }

    crate::device_tests! {
        fn gradcheck_odd_shape(device: Device) {
            let mut rng = Rng::new(1);
            let a = Tensor::from_vec(rng.normal_vec(5 * 7, 1.0), [5, 7]).unwrap();
            let b = Tensor::from_vec(rng.normal_vec(5 * 7, 1.0), [5, 7]).unwrap();
            let cfg = GradcheckConfig { device, ..Default::default() };
            gradcheck(&[a, b], |x| add(&x[0], &x[1]), &cfg).unwrap();
        }
    }

    crate::gpu_tests! {
        fn bf16_is_the_f32_sum_rounded(device: Device) {
            let mut rng = Rng::new(2);
            let round = |v: Vec<f32>| {
                Tensor::from_vec(v, [41]).unwrap().to_dtype(DType::BF16).unwrap()
            };
            let (a, b) = (round(rng.normal_vec(41, 1.0)), round(rng.normal_vec(41, 1.0)));
            let want = add(&a.to_dtype(DType::F32).unwrap(), &b.to_dtype(DType::F32).unwrap())
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap();
            let got = add(&a.to(device).unwrap(), &b.to(device).unwrap()).unwrap();
            assert_eq!(got.dtype(), DType::BF16);
            assert_eq!(got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        }
    }

    crate::device_tests! {
        fn gradients_add_into_a_buffer(device: Device) {
            let buffer = Tensor::from_vec(vec![1.0, 2.0], [2]).unwrap().to(device).unwrap();
            let g = Tensor::from_vec(vec![0.5, -4.0], [2]).unwrap().to(device).unwrap();
            add_into(&buffer, &g).unwrap();
            add_into(&buffer, &g).unwrap();
            assert_eq!(buffer.to_vec_f32().unwrap(), vec![2.0, -6.0]);
            let rel = relative_error(&buffer.to_vec_f32().unwrap(), &[2.0, -6.0]);
            assert_eq!(rel, 0.0);
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let a = Tensor::zeros([2, 3], DType::F32);
        let b = Tensor::zeros([3, 2], DType::F32);
        let err = add(&a, &b).unwrap_err().to_string();
        assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
    }

    #[test]
    fn tensors_on_two_devices_are_an_error() {
        let a = Tensor::zeros([2], DType::F32);
        let b = a.to(Device::Emulator).unwrap();
        let err = add(&a, &b).unwrap_err().to_string();
        assert!(
            err.contains("add") && err.contains("cpu") && err.contains("emulator"),
            "{err}"
        );
    }
}
