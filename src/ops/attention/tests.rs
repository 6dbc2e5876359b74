//! attention: parity with torch's scaled_dot_product_attention and with a naive
//! reference, gradchecks for GQA with and without packing, the causal and packing
//! guarantees, and shape errors.

use super::*;
use crate::autograd::{gradcheck, GradcheckConfig};
use crate::backend::cuda::profile::Recorder;
use crate::ops::test_util::assert_close_abs as assert_close;
use crate::ops::test_util::check_bf16_against_cpu;
use crate::rng::Rng;
use crate::{DType, Device};

fn random(rng: &mut Rng, shape: [usize; 4]) -> Tensor {
    Tensor::from_vec(rng.normal_vec(shape.iter().product(), 1.0), shape).unwrap()
}

/// Random q [B, T, Hq, Dh] and k, v [B, T, Hkv, Dh].
fn random_qkv(seed: u64, [b, t, hq, hkv, dh]: [usize; 5]) -> [Tensor; 3] {
    let mut rng = Rng::new(seed);
    [
        random(&mut rng, [b, t, hq, dh]),
        random(&mut rng, [b, t, hkv, dh]),
        random(&mut rng, [b, t, hkv, dh]),
    ]
}

/// Attention written out from the definition, in f64, one query at a time.
fn naive_attention(q: &Tensor, k: &Tensor, v: &Tensor, segments: Option<&[u32]>) -> Vec<f32> {
    let [b_n, t_n, hq, dh] = q.dims().try_into().unwrap();
    let hkv = k.dims()[2];
    let (q, k, v) = (
        q.to_vec_f32().unwrap(),
        k.to_vec_f32().unwrap(),
        v.to_vec_f32().unwrap(),
    );
    let at = |x: &[f32], heads: usize, b: usize, t: usize, h: usize| {
        let start = ((b * t_n + t) * heads + h) * dh;
        x[start..start + dh]
            .iter()
            .map(|&e| e as f64)
            .collect::<Vec<f64>>()
    };
    let mut out = Vec::new();
    for b in 0..b_n {
        for i in 0..t_n {
            for h in 0..hq {
                let g = h / (hq / hkv);
                let qi = at(&q, hq, b, i, h);
                let seen: Vec<usize> = (0..=i)
                    .filter(|&j| segments.is_none_or(|s| s[b * t_n + i] == s[b * t_n + j]))
                    .collect();
                let scores: Vec<f64> = seen
                    .iter()
                    .map(|&j| {
                        let kj = at(&k, hkv, b, j, g);
                        qi.iter().zip(&kj).map(|(x, y)| x * y).sum::<f64>() / (dh as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let mut o = vec![0.0f64; dh];
                for (&j, w) in seen.iter().zip(&weights) {
                    for (od, vd) in o.iter_mut().zip(at(&v, hkv, b, j, g)) {
                        *od += w / total * vd;
                    }
                }
                out.extend(o.iter().map(|&x| x as f32));
            }
        }
    }
    out
}

#[test]
fn matches_torch_sdpa_with_a_packed_row() {
    // torch 2.15 F.scaled_dot_product_attention(enable_gqa=True) with the boolean mask
    // causal & same-segment; B=2, T=5, Hq=2, Hkv=1, Dh=3, segments [0;5] and
    // [3, 3, 8, 8, 8]; inputs (((arange(n) * a) % m).float() - o) / d with
    // (a, m, o, d) = (37, 23, 11, 7) for q, (17, 19, 9, 5) for k, (29, 31, 15, 8) for v.
    #[rustfmt::skip]
    let want = [
        -1.875, 1.75, 1.5, -1.875, 1.75, 1.5,
        0.042062853, 1.289905, 1.0399048, -0.0071826577, 1.3017238, 1.0517238,
        -1.3678553, 1.5735888, 1.3235888, -1.181402, 1.4328301, 1.1828302,
        0.837876, 0.7213163, 0.47131628, 0.6919171, 0.5233776, 0.27337757,
        -0.22474712, 0.14091001, -0.10909001, -0.014793729, 0.24667229, -0.0033277587,
        -1.75, 1.875, 1.625, -1.75, 1.875, 1.625,
        -1.5715821, 1.8321797, 1.5821797, 1.0223471, 1.2096368, 0.95963675,
        0.625, 0.375, 0.125, 0.625, 0.375, 0.125,
        0.26854256, 0.018542558, -0.23145744, 0.06389487, -0.18610515, -0.43610516,
        0.21746625, -0.03253375, -0.28253376, -0.43019256, -0.68019253, -0.93019253,
    ];
    let pattern = |n: usize, (a, m, o, d): (usize, usize, f32, f32)| {
        let data = (0..n).map(|i| (((i * a) % m) as f32 - o) / d).collect();
        Tensor::from_vec(data, [2, 5, n / 30, 3]).unwrap()
    };
    let q = pattern(60, (37, 23, 11.0, 7.0));
    let k = pattern(30, (17, 19, 9.0, 5.0));
    let v = pattern(30, (29, 31, 15.0, 8.0));
    let segments = [0, 0, 0, 0, 0, 3, 3, 8, 8, 8];
    let out = attention(&q, &k, &v, Some(&segments)).unwrap();
    assert_close(&out.to_vec_f32().unwrap(), &want, 2e-6);
}

#[test]
fn matches_naive_reference_over_several_row_blocks() {
    // T = 150 spans three row blocks of 64, the last one partial.
    let [q, k, v] = random_qkv(1, [2, 150, 6, 2, 10]);
    let out = attention(&q, &k, &v, None).unwrap().to_vec_f32().unwrap();
    assert_close(&out, &naive_attention(&q, &k, &v, None), 1e-5);
    // Row 0: three contiguous sequences; row 1: ids that interleave.
    let segments: Vec<u32> = (0..150)
        .map(|t| {
            if t < 40 {
                0
            } else if t < 110 {
                1
            } else {
                2
            }
        })
        .chain((0..150).map(|t| (t / 7) % 3))
        .collect();
    let out = attention(&q, &k, &v, Some(&segments))
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_close(&out, &naive_attention(&q, &k, &v, Some(&segments)), 1e-5);
}

#[test]
fn row_block_size_does_not_change_forward_or_backward() {
    let [b, t, hq, hkv, dh] = [2, 13, 4, 2, 5];
    let dims = cpu::AttentionDims {
        batch: b,
        seq: t,
        q_heads: hq,
        kv_heads: hkv,
        head_dim: dh,
    };
    let [q, k, v] = random_qkv(2, [b, t, hq, hkv, dh]).map(|x| x.to_vec_f32().unwrap());
    let grad_out = Rng::new(3).normal_vec(q.len(), 1.0);
    let segments: Vec<u32> = (0..(b * t) as u32).map(|i| i / 5).collect();
    let run = |row_block: usize| {
        let (out, lse) = cpu::attention_forward((&q, &k, &v), Some(&segments), dims, row_block);
        let (dq, dk, dv) = cpu::attention_backward(
            (&q, &k, &v),
            Some(&segments),
            dims,
            &lse,
            &grad_out,
            row_block,
        );
        [out, lse, dq, dk, dv]
    };
    let whole = run(t);
    for row_block in [1, 4] {
        for (got, want) in run(row_block).iter().zip(&whole) {
            assert_close(got, want, 1e-5);
        }
    }
}

fn gradcheck_attention(device: Device, seed: u64, shape: [usize; 5], segments: Option<&[u32]>) {
    let inputs = random_qkv(seed, shape);
    let f = |x: &[Tensor]| attention(&x[0], &x[1], &x[2], segments);
    // Two emulated forwards per element: a GPU device checks a spread of 64 elements per
    // input (every head and batch row), the CPU 400.
    let cfg = GradcheckConfig {
        device,
        max_elements_per_input: if device == Device::Cpu { 400 } else { 64 },
        ..Default::default()
    };
    gradcheck(&inputs, f, &cfg).unwrap();
}

crate::device_tests! {
    fn gradcheck_gqa_3_to_1(device: Device) {
        gradcheck_attention(device, 4, [2, 7, 6, 2, 6], None);
    }
}

crate::device_tests! {
    fn gradcheck_gqa_3_to_1_packed(device: Device) {
        let segments = [0, 0, 0, 1, 1, 1, 1, 4, 4, 9, 9, 9, 9, 9];
        gradcheck_attention(device, 5, [2, 7, 6, 2, 6], Some(&segments));
    }
}

crate::device_tests! {
    fn gradcheck_gqa_7_to_1(device: Device) {
        gradcheck_attention(device, 6, [2, 9, 7, 1, 10], None);
    }
}

crate::device_tests! {
    fn gradcheck_gqa_7_to_1_packed(device: Device) {
        // Row 1's ids interleave, so the mask is not a block diagonal.
        let segments = [0, 0, 1, 1, 1, 1, 2, 2, 2, 5, 6, 5, 6, 5, 6, 5, 6, 5];
        gradcheck_attention(device, 7, [2, 9, 7, 1, 10], Some(&segments));
    }
}

/// The kernels the attention op launched, forward and backward, in bf16 at `shape`.
fn kernels_of_a_bf16_step(device: Device, shape: [usize; 5]) -> Vec<(String, usize)> {
    let recorder = Recorder::start();
    let f = |t: &[Tensor]| attention(&t[0], &t[1], &t[2], None);
    let shapes: Vec<Vec<usize>> = random_qkv(1, shape)
        .iter()
        .map(|t| t.dims().to_vec())
        .collect();
    let shapes: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
    check_bf16_against_cpu(device, &shapes, f, 2e-2);
    recorder.kernels()
}

crate::gpu_tests! {
    /// bf16 at head dim 64 runs the flash kernels in both directions (and nothing of the
    /// simple ones), and matches the f32 CPU op within bf16 rounding.
    fn bf16_at_head_dim_64_runs_flash_forward_and_backward(device: Device) {
        let ran = kernels_of_a_bf16_step(device, [2, 37, 6, 2, 64]);
        let count = |name: &str| ran.iter().find(|(k, _)| k == name).map_or(0, |(_, n)| *n);
        for kernel in [
            "flash_attention_forward_d64",
            "flash_attention_delta_d64",
            "flash_attention_dq_d64",
            "flash_attention_dkv_d64",
        ] {
            assert_eq!(count(kernel), 1, "{kernel} in {ran:?}");
        }
        assert!(ran.iter().all(|(k, _)| !k.starts_with("attention_")), "{ran:?}");
    }
}

crate::gpu_tests! {
    /// Other head dims, and f32, run the simple kernels.
    fn other_head_dims_and_f32_run_the_simple_kernels(device: Device) {
        let ran = kernels_of_a_bf16_step(device, [1, 9, 4, 2, 8]);
        let names: Vec<&str> = ran.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"attention_forward_bf16"), "{names:?}");
        assert!(names.contains(&"attention_backward_dkv_bf16"), "{names:?}");
        assert!(names.iter().all(|k| !k.starts_with("flash")), "{names:?}");

        let recorder = Recorder::start();
        let [q, k, v] = random_qkv(2, [1, 9, 4, 2, 64]).map(|t| t.to(device).unwrap());
        attention(&q, &k, &v, None).unwrap();
        assert_eq!(recorder.launches("attention_forward_f32"), 1);
        assert_eq!(recorder.total(), 1);
    }
}

/// The [1, t1 - t0, H, Dh] slice of a [1, T, H, Dh] tensor.
fn positions(x: &Tensor, t0: usize, t1: usize) -> Tensor {
    let [_, _, h, dh] = x.dims().try_into().unwrap();
    let data = x.to_vec_f32().unwrap()[t0 * h * dh..t1 * h * dh].to_vec();
    Tensor::from_vec(data, [1, t1 - t0, h, dh]).unwrap()
}

#[test]
fn packed_sequences_equal_separate_runs() {
    let [q, k, v] = random_qkv(8, [1, 7, 6, 2, 6]);
    let segments = [0, 0, 0, 0, 1, 1, 1];
    let packed = attention(&q, &k, &v, Some(&segments))
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let alone = |t0, t1| {
        let [q, k, v] = [&q, &k, &v].map(|x| positions(x, t0, t1));
        attention(&q, &k, &v, None).unwrap().to_vec_f32().unwrap()
    };
    assert_close(&packed, &[alone(0, 4), alone(4, 7)].concat(), 1e-6);
}

#[test]
fn packed_sequences_get_no_gradient_from_each_other() {
    let [q, k, v] = random_qkv(9, [1, 7, 6, 2, 6]).map(Tensor::into_param);
    let segments = [0, 0, 0, 0, 1, 1, 1];
    let out = attention(&q, &k, &v, Some(&segments)).unwrap();
    // A loss on the first sequence's outputs only.
    let seed: Vec<f32> = (0..out.elem_count())
        .map(|i| if i < 4 * 6 * 6 { 1.0 } else { 0.0 })
        .collect();
    let grads = out
        .backward_with(Tensor::from_vec(seed, out.shape().clone()).unwrap())
        .unwrap();
    for (x, heads) in [(&q, 6), (&k, 2), (&v, 2)] {
        let g = grads.get(x).unwrap().to_vec_f32().unwrap();
        let (first, second) = g.split_at(4 * heads * 6);
        assert!(first.iter().any(|&e| e != 0.0));
        assert!(second.iter().all(|&e| e == 0.0), "{second:?}");
    }
}

#[test]
fn future_keys_and_values_do_not_change_earlier_outputs() {
    let [q, k, v] = random_qkv(10, [2, 9, 6, 2, 6]);
    let out = attention(&q, &k, &v, None).unwrap().to_vec_f32().unwrap();
    // New keys and values from position 5 on, in both batch rows.
    let mut rng = Rng::new(11);
    let redraw_future = |x: &Tensor, rng: &mut Rng| {
        let mut data = x.to_vec_f32().unwrap();
        for (i, e) in data.iter_mut().enumerate() {
            if (i / (2 * 6)) % 9 >= 5 {
                *e = rng.normal() as f32;
            }
        }
        Tensor::from_vec(data, x.shape().clone()).unwrap()
    };
    let (k2, v2) = (redraw_future(&k, &mut rng), redraw_future(&v, &mut rng));
    let out2 = attention(&q, &k2, &v2, None).unwrap().to_vec_f32().unwrap();
    let token = 6 * 6;
    for b in 0..2 {
        let row = |o: &[f32], t0: usize, t1: usize| {
            o[(b * 9 + t0) * token..(b * 9 + t1) * token].to_vec()
        };
        assert_eq!(
            row(&out, 0, 5),
            row(&out2, 0, 5),
            "batch row {b}: past changed"
        );
        assert_ne!(
            row(&out, 5, 9),
            row(&out2, 5, 9),
            "batch row {b}: present unchanged"
        );
    }
}

#[test]
fn shape_errors_name_the_problem() {
    let t = |shape: [usize; 4]| Tensor::zeros(shape, DType::F32);
    let err = |q: Tensor, k: Tensor, v: Tensor, segments: Option<&[u32]>| {
        attention(&q, &k, &v, segments).unwrap_err().to_string()
    };
    let e = err(t([2, 5, 6, 4]), t([2, 5, 4, 4]), t([2, 5, 4, 4]), None);
    assert!(e.contains("Hq = 6") && e.contains("Hkv = 4"), "{e}");
    let e = err(t([2, 5, 6, 4]), t([2, 5, 0, 4]), t([2, 5, 0, 4]), None);
    assert!(e.contains("Hkv = 0"), "{e}");
    for k_shape in [[3, 5, 2, 4], [2, 4, 2, 4], [2, 5, 2, 6]] {
        let e = err(t([2, 5, 6, 4]), t(k_shape), t(k_shape), None);
        assert!(
            e.contains("[2, 5, 6, 4]") && e.contains(&format!("{k_shape:?}")),
            "{e}"
        );
    }
    let e = err(t([2, 5, 6, 4]), t([2, 5, 2, 4]), t([2, 5, 3, 4]), None);
    assert!(e.contains("k and v") && e.contains("[2, 5, 3, 4]"), "{e}");
    let e = err(
        t([2, 5, 6, 4]),
        t([2, 5, 2, 4]),
        t([2, 5, 2, 4]),
        Some(&[0; 5]),
    );
    assert!(
        e.contains("segments has 5") && e.contains("B*T = 10"),
        "{e}"
    );
    let q3 = Tensor::zeros([5, 6, 4], DType::F32);
    let e = err(q3, t([2, 5, 2, 4]), t([2, 5, 2, 4]), None);
    assert!(e.contains("q must have 4 dimensions"), "{e}");
}
