//! Tests for cross_entropy: values and gradients from PyTorch, gradchecks for every
//! reduction, the ignore index, the micro-batch rule of MeanOver, extreme logits, errors.

use super::lm_head::lm_head_loss_in_chunks;
use super::*;
use crate::autograd::{gradcheck, GradcheckConfig};
use crate::ops::test_util::assert_close_rel as assert_close;
use crate::ops::test_util::check_bf16_against_cpu;
use crate::rng::Rng;
use crate::Device;

const V: usize = 7;

#[rustfmt::skip]
const LOGITS: [f32; 5 * V] = [
    0.5, -1.25, 2.0, 0.75, -0.5, 1.5, -2.0,
    3.0, 0.25, -0.75, 1.0, 2.5, -1.5, 0.0,
    -0.3, 0.8, 1.7, -2.2, 0.1, 0.9, -1.1,
    1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.6,
    -4.0, 2.2, 0.4, 3.3, -0.6, 1.8, 2.9,
];
const TARGETS: [i64; 5] = [3, IGNORE_INDEX, 0, 6, 2];

// From torch.nn.functional.cross_entropy(logits.double(), targets, ignore_index=-100)
// with reduction "mean" and "sum", and the gradient of the mean (torch 2.15, in f64).
const TORCH_MEAN: f32 = 2.721_160_3;
const TORCH_SUM: f32 = 10.884_641;
#[rustfmt::skip]
const TORCH_MEAN_GRAD: [f64; 5 * V] = [
    0.024733534, 0.004298044, 0.110848009, -0.218241514, 0.009098959, 0.067232716, 0.002030252,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    -0.235122644, 0.044694047, 0.109929617, 0.002225186, 0.022194407, 0.049394561, 0.006684827,
    0.047258544, 0.042761299, 0.038692023, 0.035009990, 0.031678349, 0.028663756, -0.224063961,
    0.000073356, 0.036146091, -0.244025091, 0.108588859, 0.002198046, 0.024229450, 0.072789289,
];

fn loss_and_grad(logits: &Tensor, targets: &[i64], reduction: Reduction) -> (f32, Vec<f32>) {
    let loss = cross_entropy(logits, targets, reduction).unwrap();
    assert_eq!(loss.dims(), &[] as &[usize]);
    let grads = loss.backward().unwrap();
    (
        loss.to_scalar().unwrap(),
        grads.get(logits).unwrap().to_vec_f32().unwrap(),
    )
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn matches_pytorch_for_mean_and_sum() {
    let logits = Tensor::from_vec(LOGITS.to_vec(), [5, V])
        .unwrap()
        .into_param();
    let (mean, grad) = loss_and_grad(&logits, &TARGETS, Reduction::Mean);
    assert!((mean - TORCH_MEAN).abs() < 1e-6, "{mean} vs {TORCH_MEAN}");
    assert_close(&grad, &to_f32(&TORCH_MEAN_GRAD), 1e-6, "dlogits");

    let sum = cross_entropy(&logits, &TARGETS, Reduction::Sum).unwrap();
    let sum = sum.to_scalar().unwrap();
    assert!((sum - TORCH_SUM).abs() < 1e-5, "{sum} vs {TORCH_SUM}");
}

#[test]
fn leading_dimensions_are_flattened_into_rows() {
    let logits = Tensor::from_vec(LOGITS.to_vec(), [5, 1, V])
        .unwrap()
        .into_param();
    let (mean, grad) = loss_and_grad(&logits, &TARGETS, Reduction::Mean);
    assert!((mean - TORCH_MEAN).abs() < 1e-6, "{mean} vs {TORCH_MEAN}");
    assert_close(&grad, &to_f32(&TORCH_MEAN_GRAD), 1e-6, "dlogits");
}

crate::device_tests! {
    fn gradcheck_every_reduction_with_ignored_rows(device: Device) {
        let (rows, vocab) = (9, 17);
        let mut rng = Rng::new(21);
        let logits = Tensor::from_vec(rng.normal_vec(rows * vocab, 2.0), [rows, vocab]).unwrap();
        let targets: Vec<i64> = (0..rows)
            .map(|r| match r {
                2 | 6 => IGNORE_INDEX,
                _ => rng.below(vocab) as i64,
            })
            .collect();
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::MeanOver(11.0)] {
            let f = |t: &[Tensor]| cross_entropy(&t[0], &targets, reduction);
            gradcheck(
                std::slice::from_ref(&logits),
                f,
                &GradcheckConfig { device, ..Default::default() },
            )
            .unwrap_or_else(|e| panic!("{reduction:?}: {e}"));
        }
    }
}

#[test]
fn ignored_rows_get_exactly_zero_gradient() {
    let logits = Tensor::from_vec(LOGITS.to_vec(), [5, V])
        .unwrap()
        .into_param();
    let (_, grad) = loss_and_grad(&logits, &TARGETS, Reduction::Sum);
    assert!(grad[V..2 * V].iter().all(|&g| g == 0.0), "{grad:?}");
    // Every supervised row of softmax − onehot sums to zero.
    for r in [0, 2, 3, 4] {
        let row_sum: f32 = grad[r * V..(r + 1) * V].iter().sum();
        assert!(row_sum.abs() < 1e-6, "row {r}: {row_sum}");
    }
}

#[test]
fn all_ignored_rows_give_zero_loss_and_zero_gradient() {
    let logits = Tensor::from_vec(LOGITS.to_vec(), [5, V])
        .unwrap()
        .into_param();
    let targets = [IGNORE_INDEX; 5];
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::MeanOver(3.0)] {
        let (loss, grad) = loss_and_grad(&logits, &targets, reduction);
        assert_eq!(loss, 0.0, "{reduction:?}");
        assert!(grad.iter().all(|&g| g == 0.0), "{reduction:?}: {grad:?}");
    }
}

/// Four micro-batches of 2 rows with MeanOver(the step's supervised count) add up to
/// one Mean over all 8 rows, in loss and in gradient, even though the micro-batches
/// hold 2, 1, 0 and 2 supervised tokens.
#[test]
fn mean_over_adds_micro_batches_up_to_the_mean_of_the_whole_step() {
    let (rows, vocab) = (8, 17);
    let mut rng = Rng::new(22);
    let data = rng.normal_vec(rows * vocab, 1.5);
    let targets = [5, 3, IGNORE_INDEX, 12, IGNORE_INDEX, IGNORE_INDEX, 0, 16];
    let whole = Tensor::from_vec(data.clone(), [rows, vocab])
        .unwrap()
        .into_param();
    let (step_mean, step_grad) = loss_and_grad(&whole, &targets, Reduction::Mean);

    let supervised = targets.iter().filter(|&&t| t != IGNORE_INDEX).count() as f32;
    let (mut loss_total, mut mean_of_means) = (0.0, 0.0);
    let mut grad = Vec::new();
    for (chunk, chunk_targets) in data.chunks(2 * vocab).zip(targets.chunks(2)) {
        let logits = Tensor::from_vec(chunk.to_vec(), [2, vocab])
            .unwrap()
            .into_param();
        let (loss, g) = loss_and_grad(&logits, chunk_targets, Reduction::MeanOver(supervised));
        loss_total += loss;
        grad.extend(g);
        mean_of_means += cross_entropy(&logits, chunk_targets, Reduction::Mean)
            .unwrap()
            .to_scalar()
            .unwrap()
            / 4.0;
    }
    assert!(
        (loss_total - step_mean).abs() < 1e-5,
        "{loss_total} vs {step_mean}"
    );
    assert_close(&grad, &step_grad, 1e-6, "dlogits");
    // The rule matters here: a mean of per-micro-batch means is a different number.
    assert!(
        (mean_of_means - step_mean).abs() > 0.1,
        "{mean_of_means} vs {step_mean}"
    );
}

#[test]
fn huge_logits_stay_finite_and_exact() {
    #[rustfmt::skip]
    let data = vec![
        1e4, -1e4, 0.0, 5e3,
        -1e4, -1e4, -1e4, -1e4,
    ];
    let logits = Tensor::from_vec(data, [2, 4]).unwrap().into_param();
    let (loss, grad) = loss_and_grad(&logits, &[1, 2], Reduction::Sum);
    // Row 0: lse = 1e4, the target logit is -1e4. Row 1: uniform over 4, ln 4.
    let want = 2e4 + 4f32.ln();
    assert!(
        loss.is_finite() && (loss - want).abs() < 1e-2,
        "{loss} vs {want}"
    );
    let want_grad = [1.0, -1.0, 0.0, 0.0, 0.25, 0.25, -0.75, 0.25];
    assert_close(&grad, &want_grad, 1e-6, "dlogits");
}

#[test]
fn target_out_of_range_is_an_error_naming_position_and_value() {
    let logits = Tensor::from_vec(LOGITS.to_vec(), [5, V]).unwrap();
    for bad in [V as i64, -1, -101] {
        let targets = [0, 1, bad, 2, 3];
        let err = cross_entropy(&logits, &targets, Reduction::Mean)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("position 2") && err.contains(&format!("is {bad},")),
            "{err}"
        );
    }
}

#[test]
fn target_count_must_match_rows() {
    let logits = Tensor::from_vec(LOGITS.to_vec(), [5, V]).unwrap();
    let err = cross_entropy(&logits, &[0, 1, 2], Reduction::Mean)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[5, 7]") && err.contains("5 rows") && err.contains("3 targets"),
        "{err}"
    );
}

#[test]
fn scalar_logits_and_bad_mean_over_counts_are_errors() {
    let err = cross_entropy(&Tensor::scalar(1.0), &[0], Reduction::Mean).unwrap_err();
    assert!(err.to_string().contains("scalar"), "{err}");

    let logits = Tensor::from_vec(LOGITS.to_vec(), [5, V]).unwrap();
    for count in [0.0, -3.0, f32::NAN, f32::INFINITY] {
        let err = cross_entropy(&logits, &TARGETS, Reduction::MeanOver(count)).unwrap_err();
        assert!(err.to_string().contains("MeanOver"), "{count}: {err}");
    }
}

crate::gpu_tests! {
    fn bf16_matches_the_f32_cpu_op_within_rounding(device: Device) {
        let targets: Vec<i64> = vec![3, IGNORE_INDEX, 999, 0, 500];
        let f = |t: &[Tensor]| cross_entropy(&t[0], &targets, Reduction::Mean);
        check_bf16_against_cpu(device, &[&[5, 1000]], f, 2e-2);
    }
}

/// Hidden rows [11, 24], a weight [301, 24] and targets with ignored rows.
fn lm_head_case() -> (Tensor, Tensor, Vec<i64>) {
    let (rows, dim, vocab) = (11, 24, 301);
    let mut rng = Rng::new(5);
    let h = Tensor::from_vec(rng.normal_vec(rows * dim, 1.0), [rows, dim]).unwrap();
    let w = Tensor::from_vec(rng.normal_vec(vocab * dim, 0.5), [vocab, dim]).unwrap();
    let targets = (0..rows)
        .map(|r| {
            if r % 4 == 1 {
                IGNORE_INDEX
            } else {
                rng.below(vocab) as i64
            }
        })
        .collect();
    (h, w, targets)
}

/// The loss and both gradients of `f(hidden, weight)` on `device`.
fn loss_and_grads(
    device: Device,
    (h, w): (&Tensor, &Tensor),
    f: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> (f32, Vec<f32>, Vec<f32>) {
    let (h, w) = (
        h.to(device).unwrap().into_param(),
        w.to(device).unwrap().into_param(),
    );
    let loss = f(&h, &w);
    assert_eq!(loss.device(), device);
    let grads = loss.backward().unwrap();
    (
        loss.to_scalar().unwrap(),
        grads.get(&h).unwrap().to_vec_f32().unwrap(),
        grads.get(&w).unwrap().to_vec_f32().unwrap(),
    )
}

crate::device_tests! {
    /// The chunked op against the plain composition (full logits, then cross-entropy) on
    /// the CPU, in chunks of 4 rows (two full and a short one) and in one, for every
    /// reduction.
    fn lm_head_loss_equals_the_linear_then_cross_entropy(device: Device) {
        let (h, w, targets) = lm_head_case();
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::MeanOver(20.0)] {
            let plain = loss_and_grads(Device::Cpu, (&h, &w), |h, w| {
                let logits = crate::ops::linear(h, w, None).unwrap();
                cross_entropy(&logits, &targets, reduction).unwrap()
            });
            for chunk in [Some(4), None] {
                let (loss, dh, dw) = loss_and_grads(device, (&h, &w), |h, w| {
                    lm_head_loss_in_chunks(h, w, &targets, reduction, chunk).unwrap()
                });
                let what = format!("{reduction:?}, chunks of {chunk:?}");
                assert!((loss - plain.0).abs() <= 1e-5 * plain.0.abs(), "{what}: {loss} vs {}", plain.0);
                assert_close(&dh, &plain.1, 1e-5, &format!("dhidden, {what}"));
                assert_close(&dw, &plain.2, 1e-5, &format!("dweight, {what}"));
            }
        }
    }
}

crate::device_tests! {
    fn lm_head_loss_gradcheck(device: Device) {
        let (h, w, targets) = lm_head_case();
        let f = |t: &[Tensor]| lm_head_loss_in_chunks(&t[0], &t[1], &targets, Reduction::Mean, Some(3));
        let cfg = GradcheckConfig { device, ..Default::default() };
        gradcheck(&[h, w], f, &cfg).unwrap();
    }
}

crate::device_tests! {
    /// Evaluation computes the loss only: nothing is recorded under no_grad.
    fn lm_head_loss_under_no_grad_records_nothing(device: Device) {
        let (h, w, targets) = lm_head_case();
        let (h, w) = (h.to(device).unwrap().into_param(), w.to(device).unwrap().into_param());
        let recorded = lm_head_loss(&h, &w, &targets, Reduction::Sum).unwrap();
        let _off = crate::autograd::no_grad();
        let evaluated = lm_head_loss(&h, &w, &targets, Reduction::Sum).unwrap();
        assert!(recorded.requires_grad() && !evaluated.requires_grad());
        assert_eq!(recorded.to_scalar().unwrap(), evaluated.to_scalar().unwrap());
    }
}

crate::gpu_tests! {
    fn lm_head_loss_bf16_matches_the_f32_cpu_op_within_rounding(device: Device) {
        let targets: Vec<i64> = (0..13).map(|r| if r % 5 == 2 { IGNORE_INDEX } else { (r * 37) % 300 }).collect();
        let f = |t: &[Tensor]| lm_head_loss_in_chunks(&t[0], &t[1], &targets, Reduction::Mean, Some(5));
        check_bf16_against_cpu(device, &[&[13, 64], &[300, 64]], f, 2e-2);
    }
}
