//! rope: parity with transformers' apply_rotary_pos_emb, gradcheck, shape errors.

use super::*;
use crate::autograd::{gradcheck, GradcheckConfig};
use crate::ops::test_util::assert_close_abs as assert_close;
use crate::ops::test_util::check_bf16_against_cpu;
use crate::rng::Rng;

/// The deterministic input the reference values were computed from (in Python:
/// `(((arange(n) * 37) % 23).float() - 11) / 7`).
fn pattern(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 37) % 23) as f32 - 11.0) / 7.0)
        .collect()
}

#[test]
fn matches_transformers_on_small_heads() {
    // transformers 5.24, Qwen2RotaryEmbedding(rope_theta=1e4) + apply_rotary_pos_emb,
    // x = pattern(64) as [4 tokens, 2 heads, 8], positions [3, 0, 1, 700].
    #[rustfmt::skip]
    let want = [
        1.5758624, 0.8316017, -0.87389743, 1.144995, -0.0803325, -1.238115, 0.54546106, -0.71085393,
        -1.1922076, -0.42217174, -1.2894208, 0.7177111, 0.74715, 1.3647665, 0.10422722, -1.1407092,
        0.85714287, -0.42857143, 1.5714285, 0.2857143, -1.0, 1.0, -0.2857143, -1.5714285,
        0.42857143, -0.85714287, 1.1428572, -0.14285715, -1.4285715, 0.5714286, -0.71428573, 1.2857143,
        -1.2021013, -1.293553, 0.7256784, -0.5722854, 0.7718605, 0.013786197, -1.1356573, 0.856571,
        -1.073029, 1.5921018, 0.30141404, -1.0004281, 0.17967191, -0.12740582, -1.5684929, 0.42757124,
        0.40839195, 1.2765725, -0.9523974, -1.0926317, -0.9457487, 0.43207562, 0.87544763, -0.9203111,
        1.0011383, 1.3368174, -0.9939327, 1.3687251, -0.8192627, -0.17101431, 0.27078104, 0.5925216,
    ];
    let x = Tensor::from_vec(pattern(64), [4, 2, 8]).unwrap();
    let out = rope(&x, &[3, 0, 1, 700], 1e4).unwrap();
    assert_close(&out.to_vec_f32().unwrap(), &want, 1e-6);
}

#[test]
fn matches_transformers_at_qwen_head_dim_and_large_positions() {
    // As above with rope_theta=1e6 (Qwen2.5), x = pattern(384) as [3, 1, 128],
    // positions [4095, 0, 1234]; elements SELECTED of each token. Large positions
    // magnify any error in the frequencies.
    const SELECTED: [usize; 9] = [0, 1, 5, 37, 63, 64, 65, 101, 127];
    #[rustfmt::skip]
    let want = [
        [1.6716813, -0.13676615, 1.6597036, 0.025467431, -0.4256621, 1.4643282, 0.49658954, 0.14056876, -0.57359904],
        [1.4285715, 0.14285715, 1.5714285, -0.14285715, -0.71428573, 1.2857143, 0.0, -0.2857143, -0.85714287],
        [-1.5145569, 0.29800314, 1.0586655, -0.15877828, -0.99824876, -0.110633254, -0.115043335, -0.6964148, -1.1443872],
    ];
    let x = Tensor::from_vec(pattern(384), [3, 1, 128]).unwrap();
    let out = rope(&x, &[4095, 0, 1234], 1e6)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    for (token, want_token) in want.iter().enumerate() {
        let got: Vec<f32> = SELECTED.iter().map(|&i| out[token * 128 + i]).collect();
        assert_close(&got, want_token, 1e-6);
    }
}

crate::device_tests! {
    fn gradcheck_with_positions_restarting_at_zero(device: Device) {
        let mut rng = Rng::new(7);
        let x = Tensor::from_vec(rng.normal_vec(5 * 3 * 10, 1.0), [5, 3, 10]).unwrap();
        let positions = [5, 6, 0, 1, 2];
        let f = |t: &[Tensor]| rope(&t[0], &positions, 1e4);
        gradcheck(&[x], f, &GradcheckConfig { device, ..Default::default() }).unwrap();
    }
}

crate::device_tests! {
    fn gradcheck_with_several_leading_dims(device: Device) {
        let mut rng = Rng::new(8);
        let x = Tensor::from_vec(rng.normal_vec(2 * 3 * 3 * 6, 1.0), [2, 3, 3, 6]).unwrap();
        let positions = [2, 0, 1, 0, 1, 2];
        let f = |t: &[Tensor]| rope(&t[0], &positions, 10.0);
        gradcheck(&[x], f, &GradcheckConfig { device, ..Default::default() }).unwrap();
    }
}

#[test]
fn rotation_depends_only_on_the_tokens_own_position() {
    // The same vector at the same position rotates the same way wherever it sits.
    let row = pattern(2 * 6);
    let x = Tensor::from_vec([row.clone(), row.clone(), row].concat(), [3, 2, 6]).unwrap();
    let out = rope(&x, &[9, 0, 9], 1e4).unwrap().to_vec_f32().unwrap();
    assert_eq!(out[..12], out[24..]);
    assert_eq!(out[12..24], pattern(12)[..], "position 0 is the identity");
    assert_ne!(out[..12], out[12..24]);
}

#[test]
fn shape_errors_name_the_problem() {
    let err = |x: Tensor, positions: &[u32], theta: f32| {
        rope(&x, positions, theta).unwrap_err().to_string()
    };
    let e = err(Tensor::zeros([8], crate::DType::F32), &[0], 1e4);
    assert!(
        e.contains("rope") && e.contains("rank") && e.contains("[8]"),
        "{e}"
    );
    let e = err(Tensor::zeros([2, 3, 5], crate::DType::F32), &[0, 1], 1e4);
    assert!(e.contains("even") && e.contains("[2, 3, 5]"), "{e}");
    let e = err(Tensor::zeros([2, 3, 4], crate::DType::F32), &[0, 1, 2], 1e4);
    assert!(e.contains("2 tokens") && e.contains("3 positions"), "{e}");
    let e = err(Tensor::zeros([2, 3, 4], crate::DType::F32), &[0, 1], 0.0);
    assert!(e.contains("theta"), "{e}");
}

crate::gpu_tests! {
    fn bf16_matches_the_f32_cpu_op_within_rounding(device: Device) {
        let positions = [0, 1, 2, 0, 1, 900, 901];
        let f = |t: &[Tensor]| rope(&t[0], &positions, 1e6);
        check_bf16_against_cpu(device, &[&[7, 3, 64]], f, 2e-2);
    }
}
