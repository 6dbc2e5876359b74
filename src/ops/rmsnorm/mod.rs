//! RMSNorm over the last dimension, as Hugging Face's Qwen2RMSNorm / LlamaRMSNorm in
//! f32: `y = weight * (x * rsqrt(mean(x²) + eps))`.

mod cpu;
pub mod cuda;

use crate::autograd::{Backward, Input};
use crate::tensor::Storage;
use crate::{Device, Error, Result, Tensor};

/// Normalises each row of `x` (shape `[..., D]`, rank >= 1, D > 0) by its root mean
/// square and scales it by `weight` (shape `[D]`). Qwen2.5 uses `eps = 1e-6`.
pub fn rmsnorm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    check_shapes(x, weight)?;
    match super::device_of("rmsnorm", &[x, weight])? {
        Device::Cpu => {
            super::expect_f32("rmsnorm", &[x, weight])?;
            let (y, rstd) = cpu::rmsnorm_forward(&x.read_f32()?, &weight.read_f32()?, eps);
            let rows = rstd.len();
            let backward = RmsNormBackward {
                x: x.clone(),
                weight: weight.clone(),
                rstd: Tensor::from_vec(rstd, [rows])?,
            };
            Ok(Tensor::from_op(
                Storage::F32(y),
                x.shape().clone(),
                &[x, weight],
                backward,
            ))
        }
        _ => cuda::rmsnorm(x, weight, eps),
    }
}

fn check_shapes(x: &Tensor, weight: &Tensor) -> Result<()> {
    super::expect_rank("rmsnorm", "weight", weight, 1)?;
    let Some(&dim) = x.dims().last() else {
        return Err(Error::shape(
            "rmsnorm",
            "x must have at least 1 dimension, got a scalar (shape [])",
        ));
    };
    if dim == 0 {
        return Err(Error::shape(
            "rmsnorm",
            format!(
                "x has shape {}: the mean of an empty last dimension is undefined",
                x.shape()
            ),
        ));
    }
    if weight.dims()[0] != dim {
        return Err(Error::shape(
            "rmsnorm",
            format!(
                "weight has shape {} but x (shape {}) has last dimension {dim}",
                weight.shape(),
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// Keeps x, the weight and the per-row `1 / rms` of the forward ([rows] f32).
pub(super) struct RmsNormBackward {
    x: Tensor,
    weight: Tensor,
    rstd: Tensor,
}

impl Backward for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rmsnorm"
    }

    fn backward(&self, grad_output: &Tensor, inputs: &[Input]) -> Result<Vec<Option<Tensor>>> {
        if self.x.device().is_gpu() {
            return cuda::rmsnorm_backward_on_gpu(self, grad_output, inputs);
        }
        let (x, w) = (self.x.read_f32()?, self.weight.read_f32()?);
        let (rstd, grad) = (self.rstd.read_f32()?, grad_output.read_f32()?);
        let dx = inputs[0]
            .requires_grad()
            .then(|| cpu::rmsnorm_input_grad(&x, &w, &rstd, &grad))
            .map(|dx| Tensor::from_vec(dx, self.x.shape().clone()))
            .transpose()?;
        let dweight = inputs[1]
            .requires_grad()
            .then(|| cpu::rmsnorm_weight_grad(&x, &rstd, &grad, w.len()))
            .map(|dw| Tensor::from_vec(dw, self.weight.shape().clone()))
            .transpose()?;
        Ok(vec![dx, dweight])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{gradcheck, GradcheckConfig};
    use crate::ops::test_util::check_bf16_against_cpu;
    use crate::rng::Rng;
    use crate::DType;

    fn assert_close(got: &[f32], want: &[f32], rtol: f32, atol: f32) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= atol + rtol * w.abs(),
                "element {i}: got {g}, want {w}"
            );
        }
    }

    fn torch_case() -> (Tensor, Tensor) {
        // The second row is tiny (mean(x²) ≈ 4e-6), so eps = 1e-6 changes it visibly.
        let x = Tensor::from_vec(
            vec![
                0.5, -1.25, 2.0, 0.125, -3.5, 1.0, 0.75, //
                1e-3, -2e-3, 5e-4, 0.0, 3e-3, -1e-3, 2.5e-3,
            ],
            [2, 7],
        )
        .unwrap();
        let weight = Tensor::from_vec(vec![0.9, 1.1, -0.5, 2.0, 0.25, 1.5, -1.0], [7]).unwrap();
        (x, weight)
    }

    /// Values from transformers 5.24 Qwen2RMSNorm(7, eps=1e-6) in float32 on torch
    /// 2.15 CPU, with the inputs of `torch_case` and this upstream gradient. The
    /// tolerance is a few f32 ulps: torch sums in f32, this op in f64.
    #[test]
    fn matches_hugging_face_qwen2_rmsnorm() {
        let (x, weight) = torch_case();
        let (x, weight) = (x.into_param(), weight.into_param());
        let y = rmsnorm(&x, &weight, 1e-6).unwrap();
        #[rustfmt::skip]
        let torch_y = [
            0.26864812, -0.82086927, -0.59699583, 0.14924896, -0.52237135, 0.89549375, -0.44774687,
            0.44603518, -1.0903083, -0.12389866, 0.0, 0.37169597, -0.743392, -1.2389866,
        ];
        assert_close(&y.to_vec_f32().unwrap(), &torch_y, 1e-6, 0.0);

        let upstream = vec![
            0.3, -0.7, 1.2, 0.4, -0.1, 0.8, -0.6, //
            1.0, 0.5, -0.25, 2.0, -1.5, 0.75, 0.2,
        ];
        let grads = y
            .backward_with(Tensor::from_vec(upstream, [2, 7]).unwrap())
            .unwrap();
        #[rustfmt::skip]
        let torch_dx = [
            0.13482039, -0.39376554, -0.4636715, 0.47100455, 0.16965458, 0.663658, 0.31864476,
            496.24673, 172.15393, 87.055115, 1982.3785, -35.213287, 507.33237, 26.409988,
        ];
        #[rustfmt::skip]
        let torch_dweight = [
            0.58514404, 0.026776701, 1.3708407, 0.029849792, -2.0212271, 0.105900675, -0.020850822,
        ];
        assert_close(
            &grads.get(&x).unwrap().to_vec_f32().unwrap(),
            &torch_dx,
            1e-6,
            0.0,
        );
        assert_close(
            &grads.get(&weight).unwrap().to_vec_f32().unwrap(),
            &torch_dweight,
            1e-6,
            0.0,
        );
    }

    #[test]
    fn forward_normalises_each_row_of_a_rank_3_input() {
        let (dims, dim) = ([3, 5, 37], 37);
        let mut rng = Rng::new(11);
        let x_data = rng.normal_vec(3 * 5 * 37, 2.0);
        let w_data = rng.normal_vec(dim, 1.0);
        let x = Tensor::from_vec(x_data.clone(), dims).unwrap();
        let weight = Tensor::from_vec(w_data.clone(), [dim]).unwrap();
        let eps = 1e-5;
        let y = rmsnorm(&x, &weight, eps).unwrap();
        assert_eq!(y.dims(), &dims);

        let mut want = Vec::new();
        for row in x_data.chunks(dim) {
            let mean_sq = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
            let scale = (mean_sq + eps as f64).sqrt();
            want.extend(
                row.iter()
                    .zip(&w_data)
                    .map(|(&v, &w)| (w as f64 * v as f64 / scale) as f32),
            );
        }
        assert_close(&y.to_vec_f32().unwrap(), &want, 1e-6, 1e-7);
    }

    crate::device_tests! {
        fn gradcheck_rank_3_with_non_unit_weight(device: Device) {
            let mut rng = Rng::new(3);
            let x = Tensor::from_vec(rng.normal_vec(3 * 5 * 37, 1.0), [3, 5, 37]).unwrap();
            let weight = Tensor::from_vec(rng.uniform_vec(37, -2.0, 2.0), [37]).unwrap();
            gradcheck(
                &[x, weight],
                |t| rmsnorm(&t[0], &t[1], 1e-6),
                &GradcheckConfig { device, ..Default::default() },
            )
            .unwrap();
        }
    }

    #[test]
    fn frozen_input_gets_no_gradient_and_weight_gradient_is_unchanged() {
        let (x, weight) = torch_case();
        let upstream = Tensor::from_vec(vec![1.0; 14], [2, 7]).unwrap();
        let x_param = x.clone().into_param();
        let w_param = weight.clone().into_param();
        let both = rmsnorm(&x_param, &w_param, 1e-6)
            .unwrap()
            .backward_with(upstream.clone())
            .unwrap();
        let w_only = rmsnorm(&x, &w_param, 1e-6)
            .unwrap()
            .backward_with(upstream)
            .unwrap();
        assert!(w_only.get(&x).is_none());
        assert_eq!(
            w_only.get(&w_param).unwrap().to_vec_f32().unwrap(),
            both.get(&w_param).unwrap().to_vec_f32().unwrap()
        );
    }

    /// The weight gradient sums over many rows; it must not depend on how rayon
    /// splits them. (Partial sums per thread in f32 fail this; the f64 block sums
    /// in a fixed order pass.)
    #[test]
    fn weight_gradient_is_bitwise_identical_across_thread_counts() {
        let mut rng = Rng::new(5);
        let x = Tensor::from_vec(rng.normal_vec(301 * 23, 1.0), [301, 23]).unwrap();
        let weight = Tensor::from_vec(rng.normal_vec(23, 1.0), [23])
            .unwrap()
            .into_param();
        let upstream = Tensor::from_vec(rng.normal_vec(301 * 23, 1.0), [301, 23]).unwrap();
        let weight_grad_with_threads = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let grads = rmsnorm(&x, &weight, 1e-6)
                    .unwrap()
                    .backward_with(upstream.clone())
                    .unwrap();
                grads.get(&weight).unwrap().to_vec_f32().unwrap()
            })
        };
        assert_eq!(weight_grad_with_threads(1), weight_grad_with_threads(3));
    }

    #[test]
    fn weight_of_wrong_length_is_an_error() {
        let x = Tensor::zeros([4, 7], DType::F32);
        let weight = Tensor::zeros([5], DType::F32);
        let err = rmsnorm(&x, &weight, 1e-6).unwrap_err().to_string();
        assert!(
            err.contains("rmsnorm") && err.contains("[5]") && err.contains("[4, 7]"),
            "{err}"
        );
    }

    #[test]
    fn weight_of_rank_2_is_an_error() {
        let x = Tensor::zeros([4, 7], DType::F32);
        let weight = Tensor::zeros([1, 7], DType::F32);
        let err = rmsnorm(&x, &weight, 1e-6).unwrap_err().to_string();
        assert!(err.contains("weight") && err.contains("[1, 7]"), "{err}");
    }

    #[test]
    fn scalar_and_empty_rows_are_errors() {
        let weight = Tensor::zeros([1], DType::F32);
        let err = rmsnorm(&Tensor::scalar(1.0), &weight, 1e-6).unwrap_err();
        assert!(err.to_string().contains("scalar"), "{err}");
        let empty_weight = Tensor::zeros([0], DType::F32);
        let err = rmsnorm(&Tensor::zeros([3, 0], DType::F32), &empty_weight, 1e-6).unwrap_err();
        assert!(err.to_string().contains("[3, 0]"), "{err}");
    }

    #[test]
    fn non_f32_input_is_an_error() {
        let x = Tensor::zeros([2, 7], DType::BF16);
        let weight = Tensor::zeros([7], DType::F32);
        let err = rmsnorm(&x, &weight, 1e-6).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DType {
                    op: "rmsnorm",
                    got: DType::BF16,
                    ..
                }
            ),
            "{err}"
        );
    }

    crate::gpu_tests! {
        fn bf16_matches_the_f32_cpu_op_within_rounding(device: Device) {
            let f = |t: &[Tensor]| rmsnorm(&t[0], &t[1], 1e-6);
            check_bf16_against_cpu(device, &[&[37, 150], &[150]], f, 2e-2);
        }
    }
}
