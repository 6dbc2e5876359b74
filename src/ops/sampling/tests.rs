//! Tests of token choice: every device against the CPU reference, the rule's edge cases,
//! the reference's frequencies against the renormalised softmax, determinism and errors.

use super::cpu;
use super::cuda::{choose_tokens_into, DeviceChoices};
use super::*;
use crate::backend::cuda::profile::Recorder;
use crate::backend::cuda::Gpu;
use crate::rng::Rng;
use crate::DType;

fn sampled(temperature: f32, top_k: usize, top_p: f32, uniform: f64) -> TokenChoice {
    TokenChoice {
        temperature,
        top_k,
        top_p,
        uniform,
    }
}

/// Rows of distinct logits 0.004 apart in [-6, 6) (each row a shuffle of the same values),
/// so that no threshold or argmax sits within rounding of another value.
fn spaced_logits(rng: &mut Rng, rows: usize, vocab: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * vocab);
    for _ in 0..rows {
        let mut row: Vec<f32> = (0..vocab)
            .map(|i| -6.0 + 12.0 * i as f32 / vocab as f32)
            .collect();
        for i in (1..vocab).rev() {
            row.swap(i, rng.below(i + 1));
        }
        out.extend(row);
    }
    out
}

/// Greedy, temperature alone, top-k, top-p, both, and the settings that reduce to greedy,
/// in turn, each with its own uniform.
fn mixed_choices(rng: &mut Rng, rows: usize) -> Vec<TokenChoice> {
    (0..rows)
        .map(|row| {
            let u = rng.uniform();
            match row % 7 {
                0 => TokenChoice::greedy(),
                1 => sampled(0.7, 0, 1.0, u),
                2 => sampled(1.0, 20, 1.0, u),
                3 => sampled(1.3, 0, 0.9, u),
                4 => sampled(0.8, 50, 0.8, u),
                5 => sampled(2.0, 1, 1.0, u),
                _ => sampled(1.0, 0, 1e-6, u),
            }
        })
        .collect()
}

/// Asserts that the launches since `recorder` started were `kernel` once on a GPU device
/// and nothing on the CPU.
fn assert_ran(recorder: &Recorder, device: Device, kernel: &str) {
    if device.is_gpu() {
        assert_eq!(recorder.kernels(), [(kernel.to_string(), 1)]);
    } else {
        assert_eq!(recorder.total(), 0);
    }
}

crate::device_tests! {
    fn mixed_rows_match_the_cpu_reference(device: Device) {
        let mut rng = Rng::new(1);
        // Padding columns past the limit, a width that is not a multiple of the threads.
        let (rows, vocab, limit) = (49, 3001, 2900);
        let data = spaced_logits(&mut rng, rows, vocab);
        let choices = mixed_choices(&mut rng, rows);
        let want = cpu::choose_tokens(&data, vocab, &choices, limit);
        let argmax = cpu::choose_tokens(&data, vocab, &vec![TokenChoice::greedy(); rows], limit);
        let logits = Tensor::from_vec(data, [rows, vocab]).unwrap().to(device).unwrap();
        let recorder = Recorder::start();
        let got = choose_tokens(&logits, &choices, limit).unwrap();
        assert_ran(&recorder, device, "choose_tokens_f32");
        assert_eq!(got, want);
        // Many sampled rows left the argmax: the comparison tells the rules apart.
        let off_argmax = got.iter().zip(&argmax).filter(|(a, b)| a != b).count();
        assert!(off_argmax >= rows / 3, "{off_argmax} of {rows}");
    }
}

crate::device_tests! {
    fn bf16_logits_match_the_cpu_reference_of_the_same_values(device: Device) {
        let mut rng = Rng::new(2);
        let (rows, vocab) = (21, 1500);
        let data = spaced_logits(&mut rng, rows, vocab);
        let choices = mixed_choices(&mut rng, rows);
        let logits = Tensor::from_vec(data, [rows, vocab])
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        // bf16 rounds some of the spaced values together: ties, kept alike by both.
        let rounded = logits.to_vec_f32().unwrap();
        let want = cpu::choose_tokens(&rounded, vocab, &choices, vocab);
        let logits = logits.to(device).unwrap();
        let recorder = Recorder::start();
        let got = choose_tokens(&logits, &choices, vocab).unwrap();
        assert_ran(&recorder, device, "choose_tokens_bf16");
        assert_eq!(got, want);
    }
}

crate::device_tests! {
    fn greedy_takes_the_first_of_tied_maxima_and_nan_counts_as_minus_infinity(device: Device) {
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        #[rustfmt::skip]
        let rows: [[f32; 5]; 6] = [
            [1.0, 3.0, 3.0, 2.0, 3.0],
            [nan, nan, nan, nan, nan],
            [nan, -inf, 2.0, nan, 2.0],
            [-inf, -inf, -inf, -inf, -inf],
            [1.0, inf, inf, nan, 0.0],
            [-1.0, -1.0, -1.0, -1.0, -1.0],
        ];
        let want = [1, 0, 2, 0, 1, 0];
        let data: Vec<f32> = rows.iter().flatten().copied().collect();
        let logits = Tensor::from_vec(data, [6, 5]).unwrap().to(device).unwrap();
        let greedy = [TokenChoice::greedy(); 6];
        assert_eq!(choose_tokens(&logits, &greedy, 5).unwrap(), want);
        // A row whose max is not finite (rows 1, 3 and 4) has no softmax: it is chosen
        // greedily even when sampled.
        let hot = [sampled(1.0, 0, 1.0, 0.99); 6];
        let got = choose_tokens(&logits, &hot, 5).unwrap();
        assert_eq!([got[1], got[3], got[4]], [want[1], want[3], want[4]]);
    }
}

crate::device_tests! {
    fn nan_logits_are_never_drawn(device: Device) {
        let nan = f32::NAN;
        let data = vec![nan, 0.5, nan, 0.0, nan, nan, 0.25, nan];
        let logits = Tensor::from_vec(data, [1, 8]).unwrap().to(device).unwrap();
        for i in 0..20 {
            let u = i as f64 / 20.0;
            let got = choose_tokens(&logits, &[sampled(1.0, 0, 1.0, u)], 8).unwrap()[0];
            assert!([1, 3, 6].contains(&got), "uniform {u}: id {got}");
        }
    }
}

crate::device_tests! {
    fn padding_columns_are_never_chosen_even_holding_the_largest_logits(device: Device) {
        let mut rng = Rng::new(3);
        let (rows, vocab, limit) = (40, 700, 600);
        let mut data = spaced_logits(&mut rng, rows, vocab);
        for row in data.chunks_mut(vocab) {
            row[limit..].fill(50.0);
        }
        // Uniforms up to just below 1, where a draw over every column would land in the
        // padding.
        let choices: Vec<TokenChoice> = (0..rows)
            .map(|r| {
                let u = [0.0, 0.4, 0.999_999, 1.0 - 1e-12][(r / 4) % 4];
                match r % 4 {
                    0 => TokenChoice::greedy(),
                    1 => sampled(1.0, 0, 1.0, u),
                    2 => sampled(5.0, 100, 1.0, u),
                    _ => sampled(3.0, 0, 0.99, u),
                }
            })
            .collect();
        let logits = Tensor::from_vec(data.clone(), [rows, vocab]).unwrap().to(device).unwrap();
        let got = choose_tokens(&logits, &choices, limit).unwrap();
        assert!(got.iter().all(|&id| (id as usize) < limit), "{got:?}");
        assert_eq!(got, cpu::choose_tokens(&data, vocab, &choices, limit));
        // Without the limit the padding would win every greedy row.
        let unlimited = choose_tokens(&logits, &choices, vocab).unwrap();
        assert!(unlimited.iter().step_by(4).all(|&id| id as usize == limit));
    }
}

crate::device_tests! {
    fn top_k_of_one_and_a_tiny_top_p_are_greedy(device: Device) {
        let mut rng = Rng::new(4);
        let (rows, vocab) = (24, 1000);
        let data = spaced_logits(&mut rng, rows, vocab);
        let logits = Tensor::from_vec(data, [rows, vocab]).unwrap().to(device).unwrap();
        let greedy = choose_tokens(&logits, &vec![TokenChoice::greedy(); rows], vocab).unwrap();
        let uniforms: Vec<f64> = (0..rows).map(|_| rng.uniform()).collect();
        for choice in [sampled(1.5, 1, 1.0, 0.0), sampled(1.5, 0, 1e-6, 0.0)] {
            let choices: Vec<TokenChoice> = uniforms
                .iter()
                .map(|&uniform| TokenChoice { uniform, ..choice })
                .collect();
            assert_eq!(choose_tokens(&logits, &choices, vocab).unwrap(), greedy, "{choice:?}");
        }
        // The same temperature with no cut leaves the argmax in most rows.
        let free: Vec<TokenChoice> =
            uniforms.iter().map(|&u| sampled(1.5, 0, 1.0, u)).collect();
        let off = choose_tokens(&logits, &free, vocab)
            .unwrap()
            .iter()
            .zip(&greedy)
            .filter(|(a, b)| a != b)
            .count();
        assert!(off > rows / 2, "{off} of {rows}");
    }
}

crate::device_tests! {
    fn the_same_inputs_give_the_same_ids(device: Device) {
        let mut rng = Rng::new(5);
        let (rows, vocab) = (14, 2000);
        let data = spaced_logits(&mut rng, rows, vocab);
        let choices = mixed_choices(&mut rng, rows);
        let logits = Tensor::from_vec(data, [rows, vocab]).unwrap().to(device).unwrap();
        let first = choose_tokens(&logits, &choices, vocab).unwrap();
        assert_eq!(choose_tokens(&logits, &choices, vocab).unwrap(), first);
    }
}

crate::device_tests! {
    fn wide_rows_of_tied_values_match_the_cpu_reference(device: Device) {
        let mut rng = Rng::new(10);
        // Wider than one step of the kernel's 16-byte loads (4 vectors of 8 bf16 for each of
        // 1024 threads), with a scalar tail; then a width whose rows mostly start off 16 bytes.
        for (vocab, limit) in [(40_968, 40_965), (40_965, 40_965)] {
            let rows = 8;
            // A grid of 0.25: each value tied at hundreds of ids, so that top-k cuts in ties.
            let mut data: Vec<f32> = (0..rows * vocab)
                .map(|_| (rng.normal() as f32 * 8.0).round() * 0.25)
                .collect();
            // Each row's max again at ids in the vectors and in the tail: the first one wins.
            for (r, row) in data.chunks_mut(vocab).enumerate() {
                let max = row[..limit].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for j in [limit - 1, 33_000 - r, 12_345 + r, 7 * r + 3] {
                    row[j] = max;
                }
            }
            let choices: Vec<TokenChoice> = (0..rows)
                .map(|r| {
                    let u = rng.uniform();
                    match r {
                        0 => TokenChoice::greedy(),
                        1 => sampled(1.0, 2, 1.0, u),
                        2 => sampled(1.0, 100, 1.0, u),
                        3 => sampled(0.9, 5000, 1.0, u),
                        4 => sampled(1.2, 0, 0.5, u),
                        5 => sampled(1.0, 300, 0.9, u),
                        6 => sampled(0.5, 1, 1.0, u),
                        _ => sampled(2.0, 40_000, 1.0, u),
                    }
                })
                .collect();
            for dtype in [DType::F32, DType::BF16] {
                let logits = Tensor::from_vec(data.clone(), [rows, vocab])
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let rounded = logits.to_vec_f32().unwrap();
                let want = cpu::choose_tokens(&rounded, vocab, &choices, limit);
                assert!(want[0] <= 3, "the greedy row's first max: {}", want[0]);
                let got = choose_tokens(&logits.to(device).unwrap(), &choices, limit).unwrap();
                assert_eq!(got, want, "{dtype:?}, width {vocab}");
            }
        }
    }
}

/// Rows whose every sum depends on the order of its adds (p over 13 orders of magnitude):
/// the kernel's ids must not depend on the order threads run in.
#[test]
fn ids_do_not_depend_on_the_order_threads_run_in() {
    let mut rng = Rng::new(6);
    let (rows, vocab) = (12, 5000);
    let data: Vec<f32> = (0..rows * vocab)
        .map(|_| rng.uniform() as f32 * 30.0 - 15.0)
        .collect();
    let choices: Vec<TokenChoice> = (0..rows)
        .map(|r| sampled(1.0, [0, 300][r % 2], [1.0, 0.9, 0.5][r % 3], rng.uniform()))
        .collect();
    let ids_on = |gpu: &Gpu| {
        let device_choices = DeviceChoices::new(gpu, &choices, vocab).unwrap();
        let mut ids = gpu.alloc::<u32>(rows).unwrap();
        let logits = gpu.upload(&data).unwrap();
        choose_tokens_into(gpu, &logits, vocab, &device_choices, &mut ids).unwrap();
        gpu.download(&ids).unwrap()
    };
    let in_thread_order = ids_on(&Gpu::emulated().unwrap());
    assert_eq!(
        in_thread_order,
        cpu::choose_tokens(&data, vocab, &choices, vocab)
    );
    for schedule in [1, 2] {
        let shuffled = Gpu::emulated_shuffled(schedule).unwrap();
        assert_eq!(
            ids_on(&shuffled),
            in_thread_order,
            "{}",
            shuffled.describe()
        );
    }
}

crate::gpu_tests! {
    fn a_row_of_qwen_vocabulary_width_matches_the_cpu_reference(device: Device) {
        let mut rng = Rng::new(7);
        // Qwen2.5's padded vocabulary and its tokenizer's 151,665 ids.
        let (vocab, limit) = (151_936, 151_665);
        let choices = [
            TokenChoice::greedy(),
            sampled(0.8, 0, 0.95, rng.uniform()),
            sampled(1.0, 40, 0.9, rng.uniform()),
        ];
        let rows = choices.len();
        // A head of 60 likely ids 0.15 apart holds nearly all the mass, so the thresholds
        // and the draw sit far from any rounding; the tail is noise, the padding larger.
        let mut data: Vec<f32> = (0..rows * vocab).map(|_| rng.normal() as f32 - 5.0).collect();
        for row in data.chunks_mut(vocab) {
            for j in 0..60 {
                row[rng.below(limit)] = 5.0 + 0.15 * j as f32;
            }
            row[limit..].fill(30.0);
        }
        let want = cpu::choose_tokens(&data, vocab, &choices, limit);
        let logits = Tensor::from_vec(data, [rows, vocab])
            .unwrap()
            .to(device)
            .unwrap();
        assert_eq!(choose_tokens(&logits, &choices, limit).unwrap(), want);
    }
}

/// The probabilities the rule draws from, computed directly in f64: the softmax of
/// logits / T, cut to the top-k and the top-p by sorting, renormalised.
fn renormalised_softmax(logits: &[f32], choice: &TokenChoice) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / choice.temperature as f64).exp())
        .collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
    let k = if choice.top_k == 0 {
        logits.len()
    } else {
        choice.top_k
    };
    let top_k: Vec<usize> = order.into_iter().take(k).collect();
    let mass: f64 = top_k.iter().map(|&i| weights[i]).sum();
    let mut kept = Vec::new();
    let mut kept_mass = 0.0;
    for &i in &top_k {
        if kept_mass >= choice.top_p as f64 * mass {
            break;
        }
        kept.push(i);
        kept_mass += weights[i];
    }
    let mut p = vec![0.0; logits.len()];
    for &i in &kept {
        p[i] = weights[i] / kept_mass;
    }
    p
}

#[test]
fn the_references_frequencies_over_many_uniforms_are_the_renormalised_softmax() {
    let logits = [0.3f32, -1.2, 2.0, 0.9, -0.4, 1.6, -2.5, 0.0];
    let n = 20_000;
    for choice in [
        sampled(1.0, 0, 1.0, 0.0),
        sampled(0.5, 0, 1.0, 0.0),
        sampled(2.0, 3, 1.0, 0.0),
        sampled(1.0, 0, 0.7, 0.0),
        sampled(1.5, 5, 0.8, 0.0),
    ] {
        // Evenly spread uniforms: the draw is the inverse of the kept mass's cumulative
        // distribution, so each id's count is within one of n times its probability.
        let mut counts = vec![0usize; logits.len()];
        for i in 0..n {
            let uniform = (i as f64 + 0.5) / n as f64;
            counts[cpu::choose_row(&logits, &TokenChoice { uniform, ..choice }) as usize] += 1;
        }
        let want = renormalised_softmax(&logits, &choice);
        for (id, (&count, &p)) in counts.iter().zip(&want).enumerate() {
            let frequency = count as f64 / n as f64;
            assert!(
                (frequency - p).abs() <= 2.0 / n as f64,
                "{choice:?}: id {id} drawn {frequency}, softmax {p}"
            );
        }
    }
    // Random uniforms, as a sequence's RNG gives them, within 5 standard deviations.
    let choice = sampled(1.0, 4, 0.9, 0.0);
    let mut rng = Rng::new(8);
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        let uniform = rng.uniform();
        counts[cpu::choose_row(&logits, &TokenChoice { uniform, ..choice }) as usize] += 1;
    }
    for (&count, &p) in counts.iter().zip(&renormalised_softmax(&logits, &choice)) {
        let sigma = (p * (1.0 - p) / n as f64).sqrt();
        assert!((count as f64 / n as f64 - p).abs() <= 5.0 * sigma + 1e-12);
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_op_and_the_problem() {
    let logits = Tensor::zeros([2, 10], DType::F32);
    let two = [TokenChoice::greedy(); 2];
    let error = |logits: &Tensor, choices: &[TokenChoice], limit: usize| {
        let err = choose_tokens(logits, choices, limit).unwrap_err();
        assert!(matches!(err, Error::Shape { op: OP, .. }), "{err}");
        err.to_string()
    };
    let rank_3 = Tensor::zeros([2, 1, 10], DType::F32);
    assert!(error(&rank_3, &two, 10).contains("[2, 1, 10]"));
    assert!(error(&logits, &two[..1], 10).contains("2 rows but 1 choices"));
    assert!(error(&logits, &two, 0).contains("got 0"));
    assert!(error(&logits, &two, 11).contains("1..=10"));
    let with = |choice: TokenChoice| [TokenChoice::greedy(), choice];
    for (choice, says) in [
        (sampled(-0.5, 0, 1.0, 0.5), "temperature"),
        (sampled(f32::NAN, 0, 1.0, 0.5), "temperature"),
        (sampled(f32::INFINITY, 0, 1.0, 0.5), "temperature"),
        (sampled(1.0, 0, 0.0, 0.5), "top_p"),
        (sampled(1.0, 0, 1.5, 0.5), "top_p"),
        (sampled(1.0, 0, f32::NAN, 0.5), "top_p"),
        (sampled(1.0, 0, 1.0, 1.0), "uniform"),
        (sampled(1.0, 0, 1.0, -0.1), "uniform"),
    ] {
        let err = error(&logits, &with(choice), 10);
        assert!(err.contains("row 1") && err.contains(says), "{err}");
    }
}

#[test]
fn no_rows_choose_nothing() {
    let logits = Tensor::zeros([0, 10], DType::F32);
    assert_eq!(choose_tokens(&logits, &[], 10).unwrap(), Vec::<u32>::new());
}

#[test]
fn the_launcher_refuses_what_choose_tokens_refuses() {
    let gpu = Gpu::emulated().unwrap();
    let bad = sampled(1.0, 0, 2.0, 0.5);
    let err = DeviceChoices::new(&gpu, &[bad], 10).err().unwrap();
    assert!(err.to_string().contains("top_p"), "{err}");
    let err = DeviceChoices::new(&gpu, &[TokenChoice::greedy()], 0)
        .err()
        .unwrap();
    assert!(err.to_string().contains("vocab_limit"), "{err}");
    let choices = DeviceChoices::new(&gpu, &[TokenChoice::greedy()], 10).unwrap();
    let (logits, mut ids) = (gpu.zeros::<f32>(8).unwrap(), gpu.alloc::<u32>(1).unwrap());
    let err = choose_tokens_into(&gpu, &logits, 8, &choices, &mut ids).unwrap_err();
    assert!(
        err.to_string().contains("past the vocabulary of 8"),
        "{err}"
    );
}
