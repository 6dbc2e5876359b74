//! Comparison helpers shared by the ops' tests.

/// Every element within `tol` of the expected one, absolutely.
pub fn assert_close_abs(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "element {i}: got {g}, want {w}");
    }
}

/// Every element within `tol · (1 + |expected|)`: relative for large values, absolute
/// near zero.
pub fn assert_close_rel(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

use crate::rng::Rng;
use crate::testing::relative_error;
use crate::{DType, Device, Result, Tensor};

/// Runs `op` on the CPU in f32 and on `device` in bf16 with the same inputs (random,
/// rounded to bf16 first so both see equal values; `shapes` gives each input's), seeds
/// both backwards with the same bf16-rounded upstream gradient, and asserts that the
/// outputs and every input's gradient agree within `tol` relative to their largest
/// magnitude: bf16's rounding of a GPU op, its inputs' and parameters' gradients included.
pub fn check_bf16_against_cpu(
    device: Device,
    shapes: &[&[usize]],
    op: impl Fn(&[Tensor]) -> Result<Tensor>,
    tol: f32,
) {
    let mut rng = Rng::new(77);
    let bf16_rounded = |v: Vec<f32>, shape: &[usize]| {
        let t = Tensor::from_vec(v, shape.to_vec()).unwrap();
        t.to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let inputs: Vec<Tensor> = shapes
        .iter()
        .map(|s| bf16_rounded(rng.normal_vec(s.iter().product(), 1.0), s))
        .collect();
    let run = |on: Device, dtype: DType| {
        let params: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.to(on).unwrap().to_dtype(dtype).unwrap().into_param())
            .collect();
        let out = op(&params).unwrap();
        assert_eq!(out.device(), on);
        let seed = bf16_rounded(Rng::new(78).normal_vec(out.elem_count(), 1.0), out.dims());
        let seed = seed.to(on).unwrap().to_dtype(out.dtype()).unwrap();
        let grads = out.backward_with(seed).unwrap();
        let mut values = vec![out.to_vec_f32().unwrap()];
        values.extend(params.iter().map(|p| {
            grads
                .get(p)
                .map_or_else(Vec::new, |g| g.to_vec_f32().unwrap())
        }));
        values
    };
    let (want, got) = (run(Device::Cpu, DType::F32), run(device, DType::BF16));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let what = if i == 0 {
            "the output".to_string()
        } else {
            format!("input {}'s gradient", i - 1)
        };
        let err = relative_error(g, w);
        assert!(
            err <= tol,
            "{what} on {device} in bf16: relative error {err} > {tol}"
        );
    }
}
