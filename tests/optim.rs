//! AdamW, the learning-rate schedule and gradient clipping: 20 training steps of a tiny
//! Qwen2 against PyTorch's AdamW + transformers' schedule (fixture made by
//! tools/make_optim_goldens.py), and the optimizer's own contracts.

use std::path::{Path, PathBuf};

use scotd::autograd::Gradients;
use scotd::model::{save_safetensors, Batch, Model, Weights};
use scotd::ops::Reduction;
use scotd::optim::{clip_grad_norm, default_decay, AdamW, AdamWConfig, Decay, Schedule};
use scotd::Tensor;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim")
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn flat_ints(v: &serde_json::Value) -> (Vec<i64>, usize, usize) {
    let rows = v.as_array().unwrap();
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect();
    (flat.clone(), rows.len(), flat.len() / rows.len())
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Largest |a - b| relative to the largest |b| (so near-zero entries do not dominate).
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64));
    let worst = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max);
    worst / scale.max(1e-30)
}

/// The fixture's batch and the optimizer settings it was trained with.
struct Golden {
    batch: Batch,
    targets: Vec<i64>,
    config: AdamWConfig,
    schedule: Schedule,
    max_norm: f32,
    expected: serde_json::Value,
}

fn golden() -> Golden {
    let dir = fixture_dir();
    let inputs = read_json(&dir.join("inputs.json"));
    let (ids, b, t) = flat_ints(&inputs["input_ids"]);
    let (targets, ..) = flat_ints(&inputs["targets"]);
    let batch = Batch::new(ids.into_iter().map(|i| i as u32).collect(), b, t).unwrap();
    let expected = read_json(&dir.join("expected.json"));
    let s = &expected["settings"];
    let get = |key: &str| s[key].as_f64().unwrap() as f32;
    Golden {
        batch,
        targets,
        config: AdamWConfig {
            lr: get("peak_lr"),
            beta1: get("beta1"),
            beta2: get("beta2"),
            eps: get("eps"),
            weight_decay: get("weight_decay"),
        },
        schedule: Schedule {
            peak_lr: get("peak_lr"),
            warmup_steps: s["warmup_steps"].as_u64().unwrap(),
            total_steps: s["total_steps"].as_u64().unwrap(),
            decay: Decay::Cosine,
            min_lr_ratio: get("min_lr_ratio"),
        },
        max_norm: get("max_norm"),
        expected,
    }
}

/// What one training step reports.
struct StepLog {
    lr: f32,
    loss: f32,
    grad_norm: f32,
}

/// One step of the reference loop: loss, backward, clip, AdamW at the scheduled rate.
fn train_step(model: &Model, opt: &mut AdamW, g: &Golden, step: u64) -> StepLog {
    let params = model.parameters();
    let loss = model.loss(&g.batch, &g.targets, Reduction::Mean).unwrap();
    let mut grads = loss.backward().unwrap();
    let grad_norm = clip_grad_norm(&params, &mut grads, g.max_norm).unwrap();
    let lr = g.schedule.lr(step);
    opt.step(&params, &grads, lr).unwrap();
    StepLog {
        lr,
        loss: loss.to_scalar().unwrap(),
        grad_norm,
    }
}

/// Asserts each step's value within `tolerance` (relative) of torch's; returns the worst.
fn assert_all_close(what: &str, got: &[f64], want: &[f64], tolerance: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (step, (x, y)) in got.iter().zip(want).enumerate() {
        let err = (x - y).abs() / y.abs().max(1e-30);
        assert!(
            err <= tolerance,
            "{what} at step {step}: {x} vs torch {y} (relative {err:e})"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn twenty_steps_match_torch_adamw_with_the_hf_schedule() {
    let g = golden();
    let model = Model::load(&fixture_dir()).unwrap();
    let params = model.parameters();
    let decayed: Vec<&str> = g.expected["decayed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for (name, _) in &params {
        assert_eq!(
            default_decay(name),
            decayed.contains(&name.as_str()),
            "{name}"
        );
    }

    let mut opt = AdamW::new(&params, g.config.clone(), default_decay);
    let logs: Vec<StepLog> = (0..g.schedule.total_steps)
        .map(|step| train_step(&model, &mut opt, &g, step))
        .collect();
    let column = |f: fn(&StepLog) -> f32| logs.iter().map(|l| f(l) as f64).collect::<Vec<_>>();
    // The schedule computes in f64 as transformers does; only the final rounding to
    // f32 remains.
    let want_lrs: Vec<f32> = floats(&g.expected["lrs"])
        .iter()
        .map(|&x| x as f32)
        .collect();
    assert_eq!(logs.iter().map(|l| l.lr).collect::<Vec<_>>(), want_lrs);
    let loss_err = assert_all_close(
        "loss",
        &column(|l| l.loss),
        &floats(&g.expected["losses"]),
        1e-5,
    );
    let norm_err = assert_all_close(
        "grad norm",
        &column(|l| l.grad_norm),
        &floats(&g.expected["grad_norms"]),
        1e-5,
    );

    let expected = Weights::open_file(&fixture_dir().join("expected.safetensors")).unwrap();
    let mut worst = (0.0f64, String::new());
    for (name, p) in &params {
        let want = expected.read(&format!("param.{name}"), p.dims()).unwrap();
        let err = relative_error(&p.to_vec_f32(), &want.to_vec_f32());
        assert!(err < 1e-5, "{name}: relative error {err:e} after 20 steps");
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    eprintln!(
        "vs torch (relative): final parameters {:.1e} ({}), losses {loss_err:.1e}, grad norms {norm_err:.1e}",
        worst.0, worst.1
    );
}

#[test]
fn adamw_alone_matches_torch_to_float_rounding() {
    let g = golden();
    let fixture = Weights::open_file(&fixture_dir().join("adamw_alone.safetensors")).unwrap();
    let read = |name: &str| fixture.read_as_stored(name).unwrap().to_vec_f32();
    let (start, all_grads, lrs, want) = (read("start"), read("grads"), read("lrs"), read("final"));
    let n = start.len();
    let p = Tensor::from_vec(start, [n]).unwrap().into_param();
    let params = vec![("w".to_string(), p.clone())];
    let mut opt = AdamW::new(&params, g.config, |_| true);
    for (grad, lr) in all_grads.chunks(n).zip(lrs) {
        let seed = Tensor::from_vec(grad.to_vec(), [n]).unwrap();
        let grads = p.reshape([n]).unwrap().backward_with(seed).unwrap();
        opt.step(&params, &grads, lr).unwrap();
    }
    // torch's CPU sqrt is not correctly rounded (1 ulp off for ~20% of inputs on AVX-512)
    // and its lerp and addcmul use FMA; ours are plain IEEE operations, so a few
    // elements differ in the last bit.
    let got = p.to_vec_f32();
    let err = relative_error(&got, &want);
    let differing = got.iter().zip(&want).filter(|(x, y)| x != y).count();
    eprintln!("AdamW alone vs torch: {differing} of {n} elements differ, worst by {err:.1e} of the largest");
    assert!(
        err < 1.2e-7,
        "relative error {err:e}: more than float rounding"
    );
}

#[test]
fn accumulated_micro_batches_step_like_the_whole_batch() {
    let g = golden();
    let (b, t) = (g.batch.batch_size, g.batch.seq_len);
    let whole = Model::load(&fixture_dir()).unwrap();
    let mut whole_opt = AdamW::new(&whole.parameters(), g.config.clone(), default_decay);
    run(&whole, &mut whole_opt, &g, 0..4);

    let split = Model::load(&fixture_dir()).unwrap();
    let params = split.parameters();
    let mut opt = AdamW::new(&params, g.config.clone(), default_decay);
    let ids = &g.batch.input_ids;
    let supervised = g.targets.iter().filter(|&&x| x != -100).count() as f32;
    for step in 0..4 {
        let mut grads = Gradients::default();
        for row in 0..b {
            let batch = Batch::new(ids[row * t..(row + 1) * t].to_vec(), 1, t).unwrap();
            let targets = &g.targets[row * t..(row + 1) * t];
            let loss = split
                .loss(&batch, targets, Reduction::MeanOver(supervised))
                .unwrap();
            grads.add_from(loss.backward().unwrap()).unwrap();
        }
        clip_grad_norm(&params, &mut grads, g.max_norm).unwrap();
        opt.step(&params, &grads, g.schedule.lr(step)).unwrap();
    }
    for ((name, got), (_, want)) in params.iter().zip(whole.parameters()) {
        let err = relative_error(&got.to_vec_f32(), &want.to_vec_f32());
        assert!(err < 1e-6, "{name}: relative error {err:e}");
    }
}

/// A parameter holding `values`, and gradients holding `grad` for it.
fn param_with_grad(values: Vec<f32>, grad: Vec<f32>) -> (Tensor, Gradients) {
    let n = values.len();
    let p = Tensor::from_vec(values, [n]).unwrap().into_param();
    let seed = Tensor::from_vec(grad, [n]).unwrap();
    let grads = p.reshape([n]).unwrap().backward_with(seed).unwrap();
    (p, grads)
}

fn config(lr: f32, weight_decay: f32) -> AdamWConfig {
    AdamWConfig {
        lr,
        weight_decay,
        ..AdamWConfig::default()
    }
}

#[test]
fn weight_decay_only_touches_the_decayed_parameters() {
    let values = vec![0.5, -2.0, 3.0];
    let (weight, mut grads) = param_with_grad(values.clone(), vec![0.0; 3]);
    let (bias, bias_grads) = param_with_grad(values.clone(), vec![0.0; 3]);
    grads.add_from(bias_grads).unwrap();
    let params = vec![
        (
            "model.layers.0.mlp.up_proj.weight".to_string(),
            weight.clone(),
        ),
        (
            "model.layers.0.self_attn.q_proj.bias".to_string(),
            bias.clone(),
        ),
    ];
    let (lr, wd) = (0.1f32, 0.2f32);
    let mut opt = AdamW::new(&params, config(lr, wd), default_decay);
    opt.step(&params, &grads, lr).unwrap();
    // A zero gradient moves nothing through the moments; only the decay acts.
    let decayed: Vec<f32> = values.iter().map(|p| p * (1.0 - lr * wd)).collect();
    assert_eq!(weight.to_vec_f32(), decayed);
    assert_eq!(bias.to_vec_f32(), values);
}

#[test]
fn the_first_step_moves_each_parameter_by_lr_against_its_gradient_sign() {
    let grad = [3.0f32, -0.002, 1e-4, -50.0];
    let (p, grads) = param_with_grad(vec![1.0; 4], grad.to_vec());
    let params = vec![("w".to_string(), p.clone())];
    let lr = 1e-2;
    let mut opt = AdamW::new(&params, config(lr, 0.0), default_decay);
    opt.step(&params, &grads, lr).unwrap();
    // Bias correction makes m̂ = g and √v̂ = |g|: the update is lr·g/(|g| + eps), about
    // lr·sign(g) whatever the gradient's size.
    for (got, g) in p.to_vec_f32().iter().zip(grad) {
        let want = 1.0 - lr as f64 * g as f64 / (g.abs() as f64 + 1e-8);
        assert!((*got as f64 - want).abs() < 2e-7, "{got} vs {want}");
        assert!((got - (1.0 - lr * g.signum())).abs() < 2e-6, "{got}");
    }
    assert_eq!(opt.step_count(), 1);
}

#[test]
fn parameters_without_a_gradient_are_left_alone() {
    let (a, grads) = param_with_grad(vec![1.0, 2.0], vec![1.0, 1.0]);
    let b = Tensor::from_vec(vec![3.0, 4.0], [2]).unwrap().into_param();
    let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    let mut opt = AdamW::new(&params, config(0.1, 0.1), |_| true);
    opt.step(&params, &grads, 0.1).unwrap();
    assert_ne!(a.to_vec_f32(), [1.0, 2.0]);
    assert_eq!(b.to_vec_f32(), [3.0, 4.0]);
}

#[test]
fn a_parameter_list_other_than_the_one_built_for_is_refused() {
    let (a, grads) = param_with_grad(vec![1.0], vec![1.0]);
    let params = vec![("a".to_string(), a.clone())];
    let mut opt = AdamW::new(&params, AdamWConfig::default(), default_decay);
    let renamed = vec![("b".to_string(), a)];
    let err = opt.step(&renamed, &grads, 0.1).unwrap_err().to_string();
    assert!(err.contains("parameter b"), "{err}");
    assert!(opt.step(&[], &grads, 0.1).is_err());
    assert_eq!(opt.step_count(), 0, "a refused step is not counted");
}

/// The golden loop's steps `steps` (0-based, for the schedule) on `model`.
fn run(model: &Model, opt: &mut AdamW, g: &Golden, steps: std::ops::Range<u64>) {
    for step in steps {
        train_step(model, opt, g, step);
    }
}

fn bits(model: &Model) -> Vec<u32> {
    model
        .parameters()
        .iter()
        .flat_map(|(_, p)| p.to_vec_f32())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn a_run_resumed_from_saved_state_is_bit_identical() {
    let g = golden();
    let straight = Model::load(&fixture_dir()).unwrap();
    let mut opt = AdamW::new(&straight.parameters(), g.config.clone(), default_decay);
    run(&straight, &mut opt, &g, 0..8);

    let stopped = Model::load(&fixture_dir()).unwrap();
    let mut first = AdamW::new(&stopped.parameters(), g.config.clone(), default_decay);
    run(&stopped, &mut first, &g, 0..5);
    let dir = tempfile::tempdir().unwrap();
    stopped.save(dir.path()).unwrap();
    let state_path = dir.path().join("optimizer.safetensors");
    save_safetensors(&state_path, &first.state_tensors()).unwrap();
    let step = first.step_count();
    drop((stopped, first));

    let resumed = Model::load(dir.path()).unwrap();
    let mut second = AdamW::new(&resumed.parameters(), g.config.clone(), default_decay);
    let state = Weights::open_file(&state_path).unwrap();
    second
        .load_state(|name, shape| state.read(name, shape), step)
        .unwrap();
    run(&resumed, &mut second, &g, step..8);

    assert_eq!(second.step_count(), 8);
    assert!(bits(&resumed) == bits(&straight), "resumed run drifted");
    let moment_bits = |o: &AdamW| -> Vec<u32> {
        o.state_tensors()
            .iter()
            .flat_map(|(_, t)| t.to_vec_f32())
            .map(f32::to_bits)
            .collect()
    };
    assert!(moment_bits(&second) == moment_bits(&opt));
}

#[test]
fn loading_state_names_a_missing_or_mis_shaped_moment() {
    let (a, _) = param_with_grad(vec![1.0, 2.0], vec![0.0, 0.0]);
    let params = vec![("model.norm.weight".to_string(), a)];
    let mut opt = AdamW::new(&params, AdamWConfig::default(), default_decay);
    let mut state = opt.state_tensors();

    let wrong_shape = Tensor::from_vec(vec![0.0; 3], [3]).unwrap();
    state[1].1 = wrong_shape;
    let err = opt.load_state_tensors(&state, 4).unwrap_err().to_string();
    assert!(err.contains("exp_avg_sq.model.norm.weight"), "{err}");
    assert!(err.contains("[3]"), "{err}");

    state.remove(0);
    let err = opt.load_state_tensors(&state, 4).unwrap_err().to_string();
    assert!(err.contains("exp_avg.model.norm.weight"), "{err}");
    assert!(err.contains("missing"), "{err}");
    assert_eq!(opt.step_count(), 0, "a failed load changes nothing");
}
