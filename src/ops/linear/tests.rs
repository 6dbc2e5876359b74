//! Tests for linear: forward and backward against naive loops, finite-difference
//! gradchecks on odd shapes, shape errors.

use super::*;
use crate::autograd::{gradcheck, GradcheckConfig};
use crate::ops::test_util::assert_close_rel as assert_close;
use crate::ops::test_util::check_bf16_against_cpu;
use crate::rng::Rng;
use crate::DType;

fn random(rng: &mut Rng, dims: &[usize]) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(rng.normal_vec(n, 1.0), dims).unwrap()
}

/// y[r, o] = Σ_i x[r, i] W[o, i] + b[o], in f64.
fn naive_forward(x: &[f32], w: &[f32], b: Option<&[f32]>, rows: usize, k: usize) -> Vec<f32> {
    let m = w.len() / k;
    let mut y = vec![0.0; rows * m];
    for r in 0..rows {
        for o in 0..m {
            let mut acc = b.map_or(0.0, |b| b[o] as f64);
            for i in 0..k {
                acc += x[r * k + i] as f64 * w[o * k + i] as f64;
            }
            y[r * m + o] = acc as f32;
        }
    }
    y
}

#[test]
fn forward_matches_naive_loops_with_and_without_bias() {
    // Large enough for the GEMM's parallel path, odd everywhere.
    let mut rng = Rng::new(11);
    let x = random(&mut rng, &[3, 37, 67]);
    let w = random(&mut rng, &[41, 67]);
    let b = random(&mut rng, &[41]);
    let (xv, wv, bv) = (
        x.to_vec_f32().unwrap(),
        w.to_vec_f32().unwrap(),
        b.to_vec_f32().unwrap(),
    );

    let y = linear(&x, &w, Some(&b)).unwrap();
    assert_eq!(y.dims(), &[3, 37, 41]);
    let want = naive_forward(&xv, &wv, Some(&bv), 111, 67);
    assert_close(&y.to_vec_f32().unwrap(), &want, 1e-5, "y with bias");

    let y = linear(&x, &w, None).unwrap();
    let want = naive_forward(&xv, &wv, None, 111, 67);
    assert_close(&y.to_vec_f32().unwrap(), &want, 1e-5, "y without bias");
}

#[test]
fn forward_of_a_single_vector() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], [3]).unwrap();
    let w = Tensor::from_vec(vec![1.0, 0.0, -1.0, 0.5, 0.5, 0.5], [2, 3]).unwrap();
    let b = Tensor::from_vec(vec![10.0, 20.0], [2]).unwrap();
    let y = linear(&x, &w, Some(&b)).unwrap();
    assert_eq!(y.dims(), &[2]);
    assert_eq!(y.to_vec_f32().unwrap(), vec![10.0 - 2.0, 20.0 + 3.0]);
}

crate::device_tests! {
    fn gradcheck_with_bias(device: Device) {
        let mut rng = Rng::new(12);
        let inputs = [
            random(&mut rng, &[2, 5, 13]),
            random(&mut rng, &[11, 13]),
            random(&mut rng, &[11]),
        ];
        let f = |t: &[Tensor]| linear(&t[0], &t[1], Some(&t[2]));
        gradcheck(&inputs, f, &GradcheckConfig { device, ..Default::default() }).unwrap();
    }
}

crate::device_tests! {
    fn gradcheck_without_bias(device: Device) {
        let mut rng = Rng::new(13);
        let inputs = [random(&mut rng, &[2, 5, 13]), random(&mut rng, &[11, 13])];
        let f = |t: &[Tensor]| linear(&t[0], &t[1], None);
        gradcheck(&inputs, f, &GradcheckConfig { device, ..Default::default() }).unwrap();
    }
}

/// At a size where the GEMMs run in parallel and the bias sum spans several column
/// blocks, backward agrees with the textbook formulas computed in naive loops.
#[test]
fn backward_matches_naive_formulas_at_a_larger_size() {
    let (rows, k, m) = (3 * 37, 67, 301);
    let mut rng = Rng::new(14);
    let x = random(&mut rng, &[3, 37, k]).into_param();
    let w = random(&mut rng, &[m, k]).into_param();
    let b = random(&mut rng, &[m]).into_param();
    let dy = random(&mut rng, &[3, 37, m]);
    let grads = linear(&x, &w, Some(&b))
        .unwrap()
        .backward_with(dy.clone())
        .unwrap();
    let (xv, wv, dyv) = (
        x.to_vec_f32().unwrap(),
        w.to_vec_f32().unwrap(),
        dy.to_vec_f32().unwrap(),
    );

    let mut dx = vec![0.0f64; rows * k];
    let mut dw = vec![0.0f64; m * k];
    let mut db = vec![0.0f64; m];
    for r in 0..rows {
        for o in 0..m {
            let g = dyv[r * m + o] as f64;
            db[o] += g;
            for i in 0..k {
                dx[r * k + i] += g * wv[o * k + i] as f64;
                dw[o * k + i] += g * xv[r * k + i] as f64;
            }
        }
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<_>>();
    let got = |t: &Tensor| grads.get(t).unwrap().to_vec_f32().unwrap();
    assert_close(&got(&x), &to_f32(dx), 1e-4, "dx");
    assert_close(&got(&w), &to_f32(dw), 1e-4, "dW");
    assert_close(&got(&b), &to_f32(db), 1e-5, "db");
}

#[test]
fn frozen_weight_gets_no_gradient_but_input_does() {
    let mut rng = Rng::new(15);
    let x = random(&mut rng, &[4, 7]).into_param();
    let w = random(&mut rng, &[5, 7]);
    let grads = linear(&x, &w, None)
        .unwrap()
        .backward_with(Tensor::from_vec(vec![1.0; 20], [4, 5]).unwrap())
        .unwrap();
    assert!(grads.get(&w).is_none());
    // dx[r, i] = Σ_o W[o, i] when dy is all ones.
    let wv = w.to_vec_f32().unwrap();
    let col_sums: Vec<f32> = (0..7)
        .map(|i| (0..5).map(|o| wv[o * 7 + i]).sum())
        .collect();
    let want: Vec<f32> = (0..4).flat_map(|_| col_sums.clone()).collect();
    assert_close(
        &grads.get(&x).unwrap().to_vec_f32().unwrap(),
        &want,
        1e-5,
        "dx",
    );
}

#[test]
fn mismatched_input_features_are_an_error() {
    let x = Tensor::zeros([2, 3, 5], DType::F32);
    let w = Tensor::zeros([4, 6], DType::F32);
    let err = linear(&x, &w, None).unwrap_err().to_string();
    assert!(
        err.contains("linear") && err.contains("[2, 3, 5]") && err.contains("[4, 6]"),
        "{err}"
    );
}

#[test]
fn wrong_bias_shape_is_an_error() {
    let x = Tensor::zeros([2, 5], DType::F32);
    let w = Tensor::zeros([4, 5], DType::F32);
    let b = Tensor::zeros([5], DType::F32);
    let err = linear(&x, &w, Some(&b)).unwrap_err().to_string();
    assert!(
        err.contains("bias") && err.contains("[4]") && err.contains("[5]"),
        "{err}"
    );
}

#[test]
fn weight_of_wrong_rank_and_scalar_input_are_errors() {
    let x = Tensor::zeros([2, 5], DType::F32);
    let w = Tensor::zeros([5], DType::F32);
    let err = linear(&x, &w, None).unwrap_err().to_string();
    assert!(err.contains("weight") && err.contains("[5]"), "{err}");

    let w = Tensor::zeros([4, 1], DType::F32);
    let err = linear(&Tensor::scalar(1.0), &w, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("scalar"), "{err}");
}

/// Decode-sized inputs (the small-m path, up to and past its row limit), with a bias,
/// against naive loops.
#[test]
fn forward_of_few_rows_matches_naive_loops() {
    let mut rng = Rng::new(16);
    let (k, m) = (45, 70);
    let w = random(&mut rng, &[m, k]);
    let b = random(&mut rng, &[m]);
    for rows in [1, 2, 5, 9, 16, 17] {
        let x = random(&mut rng, &[rows, k]);
        let y = linear(&x, &w, Some(&b)).unwrap();
        let want = naive_forward(
            &x.to_vec_f32().unwrap(),
            &w.to_vec_f32().unwrap(),
            Some(&b.to_vec_f32().unwrap()),
            rows,
            k,
        );
        assert_close(
            &y.to_vec_f32().unwrap(),
            &want,
            1e-5,
            &format!("{rows} rows"),
        );
    }
}

/// A bf16 weight computes as its exact f32 widening, forward (few rows and many) and
/// in the input gradient.
#[test]
fn bf16_weight_acts_as_its_f32_widening() {
    let mut rng = Rng::new(17);
    let w = random(&mut rng, &[33, 21]).to_dtype(DType::BF16).unwrap();
    let widened = w.to_dtype(DType::F32).unwrap();
    let b = random(&mut rng, &[33]);
    for rows in [1, 3, 40] {
        let x = random(&mut rng, &[rows, 21]).into_param();
        let y = linear(&x, &w, Some(&b)).unwrap();
        let want = linear(&x, &widened, Some(&b)).unwrap();
        assert_close(
            &y.to_vec_f32().unwrap(),
            &want.to_vec_f32().unwrap(),
            1e-6,
            "y",
        );
        let dy = random(&mut rng, &[rows, 33]);
        let dx = y.backward_with(dy.clone()).unwrap();
        let want_dx = want.backward_with(dy).unwrap();
        assert_close(
            &dx.get(&x).unwrap().to_vec_f32().unwrap(),
            &want_dx.get(&x).unwrap().to_vec_f32().unwrap(),
            1e-6,
            "dx",
        );
    }
}

#[test]
fn f16_weight_is_an_error() {
    let x = Tensor::zeros([2, 5], DType::F32);
    let w = Tensor::zeros([4, 5], DType::F16);
    let err = linear(&x, &w, None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DType {
                op: "linear",
                got: DType::F16,
                ..
            }
        ),
        "{err}"
    );
}

/// Several layers of one input in one call: each output and each gradient equals that
/// of a separate `linear` call, at decode-sized and training-sized row counts.
#[test]
fn linears_equal_separate_calls_forward_and_backward() {
    let mut rng = Rng::new(18);
    let k = 29;
    let w1 = random(&mut rng, &[40, k]).into_param();
    let w2 = random(&mut rng, &[7, k]).to_dtype(DType::BF16).unwrap();
    let b2 = random(&mut rng, &[7]).into_param();
    for rows in [1, 6, 30] {
        let x = random(&mut rng, &[rows, k]).into_param();
        let [y1, y2]: [Tensor; 2] = linears(&x, &[(&w1, None), (&w2, Some(&b2))])
            .unwrap()
            .try_into()
            .unwrap();
        let want1 = linear(&x, &w1, None).unwrap();
        let want2 = linear(&x, &w2, Some(&b2)).unwrap();
        assert_close(
            &y1.to_vec_f32().unwrap(),
            &want1.to_vec_f32().unwrap(),
            1e-6,
            "y1",
        );
        assert_close(
            &y2.to_vec_f32().unwrap(),
            &want2.to_vec_f32().unwrap(),
            1e-6,
            "y2",
        );

        let loss = |a: &Tensor, b: &Tensor| {
            let dy1 = Tensor::from_vec(vec![0.5; rows * 40], [rows, 40]).unwrap();
            let g1 = a.backward_with(dy1).unwrap();
            let dy2 = Tensor::from_vec(vec![-1.5; rows * 7], [rows, 7]).unwrap();
            let g2 = b.backward_with(dy2).unwrap();
            (g1, g2)
        };
        let (g1, g2) = loss(&y1, &y2);
        let (want_g1, want_g2) = loss(&want1, &want2);
        for (got, want, t, what) in [
            (&g1, &want_g1, &x, "dx via y1"),
            (&g1, &want_g1, &w1, "dw1"),
            (&g2, &want_g2, &x, "dx via y2"),
            (&g2, &want_g2, &b2, "db2"),
        ] {
            let (got, want) = (got.get(t).unwrap(), want.get(t).unwrap());
            assert_close(
                &got.to_vec_f32().unwrap(),
                &want.to_vec_f32().unwrap(),
                1e-6,
                what,
            );
        }
    }
}

crate::gpu_tests! {
    fn bf16_matches_the_f32_cpu_op_within_rounding(device: Device) {
        let f = |t: &[Tensor]| linear(&t[0], &t[1], Some(&t[2]));
        check_bf16_against_cpu(device, &[&[3, 37, 67], &[41, 67], &[41]], f, 2e-2);
    }
}
