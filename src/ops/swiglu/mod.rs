//! The gated activation of the Qwen2/Llama MLP: `silu(gate) * up`, as Hugging Face's
//! `act_fn(gate_proj(x)) * up_proj(x)` with `silu(g) = g * sigmoid(g)`.

mod cpu;
pub mod cuda;

use crate::autograd::{Backward, Input};
use crate::tensor::Storage;
use crate::{Device, Error, Result, Tensor};

/// `silu(gate) * up`, elementwise; `gate` and `up` have the same shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.shape() != up.shape() {
        return Err(Error::shape(
            "swiglu",
            format!(
                "gate has shape {} but up has shape {}; they must match",
                gate.shape(),
                up.shape()
            ),
        ));
    }
    let backward = SwigluBackward {
        gate: gate.clone(),
        up: up.clone(),
    };
    match super::device_of("swiglu", &[gate, up])? {
        Device::Cpu => {
            super::expect_f32("swiglu", &[gate, up])?;
            let out = cpu::swiglu_forward(&gate.read_f32()?, &up.read_f32()?);
            Ok(Tensor::from_op(
                Storage::F32(out),
                gate.shape().clone(),
                &[gate, up],
                backward,
            ))
        }
        _ => cuda::swiglu(backward),
    }
}

/// Keeps the inputs only: sigmoid(gate) is recomputed rather than kept as a second
/// activation-sized tensor.
pub(super) struct SwigluBackward {
    gate: Tensor,
    up: Tensor,
}

impl Backward for SwigluBackward {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn backward(&self, grad_output: &Tensor, inputs: &[Input]) -> Result<Vec<Option<Tensor>>> {
        if self.gate.device().is_gpu() {
            return cuda::swiglu_backward_on_gpu(self, grad_output, inputs);
        }
        let (g, u, grad) = (
            self.gate.read_f32()?,
            self.up.read_f32()?,
            grad_output.read_f32()?,
        );
        let shape = self.gate.shape();
        let dgate = inputs[0]
            .requires_grad()
            .then(|| cpu::swiglu_gate_grad(&g, &u, &grad))
            .map(|d| Tensor::from_vec(d, shape.clone()))
            .transpose()?;
        let dup = inputs[1]
            .requires_grad()
            .then(|| cpu::swiglu_up_grad(&g, &grad))
            .map(|d| Tensor::from_vec(d, shape.clone()))
            .transpose()?;
        Ok(vec![dgate, dup])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{gradcheck, GradcheckConfig};
    use crate::ops::test_util::check_bf16_against_cpu;
    use crate::rng::Rng;
    use crate::DType;

    #[test]
    fn forward_matches_direct_computation() {
        let mut rng = Rng::new(7);
        let g = rng.normal_vec(7 * 19, 3.0);
        let u = rng.normal_vec(7 * 19, 1.0);
        let gate = Tensor::from_vec(g.clone(), [7, 19]).unwrap();
        let up = Tensor::from_vec(u.clone(), [7, 19]).unwrap();
        let got = swiglu(&gate, &up).unwrap();
        assert_eq!(got.dims(), &[7, 19]);
        for (i, (out, (&g, &u))) in got
            .to_vec_f32()
            .unwrap()
            .iter()
            .zip(g.iter().zip(&u))
            .enumerate()
        {
            // g / (1 + e^-g) in f64: a different formulation from the op's.
            let want = (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32;
            assert!(
                (out - want).abs() <= 1e-6 * want.abs() + 1e-7,
                "element {i}: {out} vs {want}"
            );
        }
    }

    #[test]
    fn large_gate_values_stay_finite_forward_and_backward() {
        let g = vec![-1e4, -100.0, -88.0, 88.0, 100.0, 1e4];
        let gate = Tensor::from_vec(g.clone(), [6]).unwrap().into_param();
        let up = Tensor::from_vec(vec![2.0; 6], [6]).unwrap().into_param();
        let out = swiglu(&gate, &up).unwrap();
        let grads = out
            .backward_with(Tensor::from_vec(vec![1.0; 6], [6]).unwrap())
            .unwrap();
        let (y, dgate, dup) = (
            out.to_vec_f32().unwrap(),
            grads.get(&gate).unwrap().to_vec_f32().unwrap(),
            grads.get(&up).unwrap().to_vec_f32().unwrap(),
        );
        for i in 0..6 {
            let (y, dg, du) = (y[i], dgate[i], dup[i]);
            assert!(
                y.is_finite() && dg.is_finite() && du.is_finite(),
                "g = {}",
                g[i]
            );
            if g[i] > 0.0 {
                // sigmoid(g) rounds to 1: silu is the identity, silu' is 1.
                assert_eq!((y, dg, du), (2.0 * g[i], 2.0, g[i]));
            } else {
                // silu(g) ≈ g·e^g and silu'(g) ≈ (1 + g)·e^g: below 1e-35 in size.
                assert!(y.abs() < 1e-35 && dg.abs() < 1e-35 && du.abs() < 1e-35);
            }
        }
    }

    crate::device_tests! {
        fn gradcheck_odd_shape(device: Device) {
            let mut rng = Rng::new(9);
            let gate = Tensor::from_vec(rng.normal_vec(7 * 19, 2.0), [7, 19]).unwrap();
            let up = Tensor::from_vec(rng.normal_vec(7 * 19, 1.0), [7, 19]).unwrap();
            gradcheck(
                &[gate, up],
                |t| swiglu(&t[0], &t[1]),
                &GradcheckConfig { device, ..Default::default() },
            )
            .unwrap();
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let gate = Tensor::zeros([7, 19], DType::F32);
        let up = Tensor::zeros([19, 7], DType::F32);
        let err = swiglu(&gate, &up).unwrap_err().to_string();
        assert!(
            err.contains("swiglu") && err.contains("[7, 19]") && err.contains("[19, 7]"),
            "{err}"
        );
    }

    #[test]
    fn non_f32_input_is_an_error() {
        let gate = Tensor::zeros([3], DType::F32);
        let up = Tensor::zeros([3], DType::F16);
        let err = swiglu(&gate, &up).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DType {
                    op: "swiglu",
                    got: DType::F16,
                    ..
                }
            ),
            "{err}"
        );
    }

    crate::gpu_tests! {
        fn bf16_matches_the_f32_cpu_op_within_rounding(device: Device) {
            let f = |t: &[Tensor]| swiglu(&t[0], &t[1]);
            check_bf16_against_cpu(device, &[&[7, 1003], &[7, 1003]], f, 2e-2);
        }
    }
}
