//! AdamW, the learning-rate schedule and gradient clipping: 20 training steps of a tiny
//! Qwen2 against PyTorch's AdamW + transformers' schedule (fixture made by
//! tools/make_optim_goldens.py), and the optimizer's own contracts.

use std::path::{Path, PathBuf};

use scotd::model::{
    parameter_specs, save_safetensors, Batch, FlatParams, Model, ParamStore, Weights,
};
use scotd::optim::{default_decay, AdamW, AdamWConfig, Decay, Schedule};
use scotd::train::train_step;
use scotd::{DType, Device, Tensor};

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

/// One step of the trainer's loop ([`train_step`]) at the scheduled rate.
fn step(store: &ParamStore, opt: &mut AdamW, g: &Golden, step: u64) -> StepLog {
    let lr = g.schedule.lr(step);
    let batches = [(g.batch.clone(), g.targets.clone())];
    let r = train_step((store, opt), &batches, lr, g.max_norm, false).unwrap();
    StepLog {
        lr,
        loss: r.loss,
        grad_norm: r.outcome.grad_norm,
    }
}

/// The fixture's model as a store on `device` (f32) with its optimizer.
fn store_on(device: Device, g: &Golden) -> (ParamStore, AdamW) {
    let model = Model::load(&fixture_dir()).unwrap();
    let store = ParamStore::new(&model, device, DType::F32).unwrap();
    let opt = AdamW::new(&store.flat, g.config.clone()).unwrap();
    (store, opt)
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
fn the_decay_groups_are_the_fixtures() {
    let g = golden();
    let model = Model::load(&fixture_dir()).unwrap();
    let decayed: Vec<&str> = g.expected["decayed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for spec in parameter_specs(&model.config) {
        let torch = decayed.contains(&spec.name.as_str());
        assert_eq!(spec.decay, torch, "{}", spec.name);
        assert_eq!(default_decay(&spec.name), torch, "{}", spec.name);
    }
}

scotd::device_tests! {
    /// The trainer's step on every device against PyTorch's AdamW + transformers'
    /// schedule: the GPU's grad norm and AdamW kernels are checked against torch itself.
    fn twenty_steps_match_torch_adamw_with_the_hf_schedule(device: Device) {
        let g = golden();
        let (store, mut opt) = store_on(device, &g);
        let logs: Vec<StepLog> = (0..g.schedule.total_steps)
            .map(|s| step(&store, &mut opt, &g, s))
            .collect();
        let column =
            |f: fn(&StepLog) -> f32| logs.iter().map(|l| f(l) as f64).collect::<Vec<_>>();
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
        for (name, p) in store.masters.parameters() {
            let want = expected.read(&format!("param.{name}"), p.dims()).unwrap();
            let err = relative_error(&p.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap());
            assert!(err < 1e-5, "{name}: relative error {err:e} after 20 steps");
            if err > worst.0 {
                worst = (err, name.clone());
            }
        }
        eprintln!(
            "{device} vs torch (relative): final parameters {:.1e} ({}), losses {loss_err:.1e}, grad norms {norm_err:.1e}",
            worst.0, worst.1
        );
    }
}

/// Flat parameters on the CPU holding `values`, each decayed as said, and their
/// optimizer.
fn flat(params: &[(&str, Vec<f32>, bool)], config: AdamWConfig) -> (FlatParams, AdamW) {
    let named: Vec<(String, Tensor, bool)> = params
        .iter()
        .map(|(name, v, decay)| {
            let t = Tensor::from_vec(v.clone(), [v.len()]).unwrap();
            (name.to_string(), t, *decay)
        })
        .collect();
    let flat = FlatParams::new(&named, Device::Cpu, DType::F32).unwrap();
    let opt = AdamW::new(&flat, config).unwrap();
    (flat, opt)
}

/// Writes each parameter's gradient into the flat gradient buffer.
fn set_grads(flat: &FlatParams, grads: &[Vec<f32>]) {
    for (view, g) in flat.layout.views(&flat.grads).unwrap().iter().zip(grads) {
        view.copy_from(&Tensor::from_vec(g.clone(), [g.len()]).unwrap())
            .unwrap();
    }
}

fn values(flat: &FlatParams) -> Vec<Vec<f32>> {
    flat.masters()
        .unwrap()
        .iter()
        .map(|(_, t)| t.to_vec_f32().unwrap())
        .collect()
}

#[test]
fn adamw_alone_matches_torch_to_float_rounding() {
    let g = golden();
    let fixture = Weights::open_file(&fixture_dir().join("adamw_alone.safetensors")).unwrap();
    let read = |name: &str| fixture.read_as_stored(name).unwrap().to_vec_f32().unwrap();
    let (start, all_grads, lrs, want) = (read("start"), read("grads"), read("lrs"), read("final"));
    let n = start.len();
    let (params, mut opt) = flat(&[("w", start, true)], g.config);
    for (grad, lr) in all_grads.chunks(n).zip(lrs) {
        set_grads(&params, &[grad.to_vec()]);
        opt.step(&params, lr, 0.0).unwrap();
    }
    // torch's CPU sqrt is not correctly rounded (1 ulp off for ~20% of inputs on AVX-512)
    // and its lerp and addcmul use FMA; ours are plain IEEE operations, so a few
    // elements differ in the last bit.
    let got = values(&params).remove(0);
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
    let (whole, mut whole_opt) = store_on(Device::Cpu, &g);
    for s in 0..4 {
        step(&whole, &mut whole_opt, &g, s);
    }
    let (split, mut opt) = store_on(Device::Cpu, &g);
    let ids = &g.batch.input_ids;
    let rows: Vec<(Batch, Vec<i64>)> = (0..b)
        .map(|row| {
            let batch = Batch::new(ids[row * t..(row + 1) * t].to_vec(), 1, t).unwrap();
            (batch, g.targets[row * t..(row + 1) * t].to_vec())
        })
        .collect();
    for s in 0..4 {
        let lr = g.schedule.lr(s);
        train_step((&split, &mut opt), &rows, lr, g.max_norm, false).unwrap();
    }
    let whole_params = whole.masters.parameters();
    for ((name, got), (_, want)) in split.masters.parameters().iter().zip(whole_params) {
        let err = relative_error(&got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap());
        assert!(err < 1e-6, "{name}: relative error {err:e}");
    }
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
    let values0 = vec![0.5, -2.0, 3.0];
    let (lr, wd) = (0.1f32, 0.2f32);
    let (params, mut opt) = flat(
        &[
            ("model.layers.0.mlp.up_proj.weight", values0.clone(), true),
            (
                "model.layers.0.self_attn.q_proj.bias",
                values0.clone(),
                false,
            ),
        ],
        config(lr, wd),
    );
    opt.step(&params, lr, 0.0).unwrap();
    // A zero gradient moves nothing through the moments; only the decay acts.
    let decayed: Vec<f32> = values0.iter().map(|p| p * (1.0 - lr * wd)).collect();
    assert_eq!(values(&params), vec![decayed, values0]);
}

#[test]
fn the_first_step_moves_each_parameter_by_lr_against_its_gradient_sign() {
    let grad = [3.0f32, -0.002, 1e-4, -50.0];
    let lr = 1e-2;
    let (params, mut opt) = flat(&[("w", vec![1.0; 4], true)], config(lr, 0.0));
    set_grads(&params, &[grad.to_vec()]);
    opt.step(&params, lr, 0.0).unwrap();
    // Bias correction makes m̂ = g and √v̂ = |g|: the update is lr·g/(|g| + eps), about
    // lr·sign(g) whatever the gradient's size.
    for (got, g) in values(&params)[0].iter().zip(grad) {
        let want = 1.0 - lr as f64 * g as f64 / (g.abs() as f64 + 1e-8);
        assert!((*got as f64 - want).abs() < 2e-7, "{got} vs {want}");
        assert!((got - (1.0 - lr * g.signum())).abs() < 2e-6, "{got}");
    }
    assert_eq!(opt.step_count(), 1);
}

#[test]
fn clipping_scales_the_step_as_scaling_the_gradients_first() {
    // |(3, 4, 12)| = 13: clipped to 1, every gradient is multiplied by 1 / (13 + 1e-6).
    let (clipped, mut opt) = flat(
        &[("a", vec![1.0, 2.0], true), ("b", vec![3.0], true)],
        config(0.1, 0.1),
    );
    set_grads(&clipped, &[vec![3.0, 4.0], vec![12.0]]);
    let outcome = opt.step(&clipped, 0.1, 1.0).unwrap();
    assert_eq!(outcome.grad_norm, 13.0);
    let c = 1.0f32 / (13.0 + 1e-6);
    let (scaled, mut opt) = flat(
        &[("a", vec![1.0, 2.0], true), ("b", vec![3.0], true)],
        config(0.1, 0.1),
    );
    set_grads(&scaled, &[vec![3.0 * c, 4.0 * c], vec![12.0 * c]]);
    opt.step(&scaled, 0.1, 0.0).unwrap();
    assert_eq!(values(&clipped), values(&scaled));
}

#[test]
fn a_non_finite_gradient_skips_the_step() {
    let (params, mut opt) = flat(&[("a", vec![1.0, 2.0], true)], config(0.1, 0.1));
    set_grads(&params, &[vec![f32::NAN, 1.0]]);
    let outcome = opt.step(&params, 0.1, 1.0).unwrap();
    assert!(outcome.skipped && outcome.grad_norm.is_nan());
    assert_eq!(values(&params), vec![vec![1.0, 2.0]]);
    assert_eq!(opt.step_count(), 0, "a skipped step is not counted");
}

#[test]
fn another_store_is_refused() {
    let (params, mut opt) = flat(&[("a", vec![1.0], true)], AdamWConfig::default());
    let (other, _) = flat(&[("a", vec![1.0; 100], true)], AdamWConfig::default());
    let err = opt.step(&other, 0.1, 0.0).unwrap_err().to_string();
    assert!(err.contains("not the one"), "{err}");
    opt.step(&params, 0.1, 0.0).unwrap();
}

fn bits(model: &Model) -> Vec<u32> {
    model
        .parameters()
        .iter()
        .flat_map(|(_, p)| p.to_vec_f32().unwrap())
        .map(f32::to_bits)
        .collect()
}

fn moment_bits(o: &AdamW) -> Vec<u32> {
    o.state_tensors()
        .unwrap()
        .iter()
        .flat_map(|(_, t)| t.to_vec_f32().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn a_run_resumed_from_saved_state_is_bit_identical() {
    let g = golden();
    let (straight, mut opt) = store_on(Device::Cpu, &g);
    for s in 0..8 {
        step(&straight, &mut opt, &g, s);
    }
    let (stopped, mut first) = store_on(Device::Cpu, &g);
    for s in 0..5 {
        step(&stopped, &mut first, &g, s);
    }
    let dir = tempfile::tempdir().unwrap();
    stopped.masters.save(dir.path()).unwrap();
    let state_path = dir.path().join("optimizer.safetensors");
    save_safetensors(&state_path, &first.state_tensors().unwrap()).unwrap();
    let done = first.step_count();
    drop((stopped, first));

    let resumed = Model::load(dir.path()).unwrap();
    let resumed = ParamStore::new(&resumed, Device::Cpu, DType::F32).unwrap();
    let mut second = AdamW::new(&resumed.flat, g.config.clone()).unwrap();
    let state = Weights::open_file(&state_path).unwrap();
    second
        .load_state(|name, shape| state.read(name, shape), done)
        .unwrap();
    for s in done..8 {
        step(&resumed, &mut second, &g, s);
    }
    assert_eq!(second.step_count(), 8);
    assert!(
        bits(&resumed.masters) == bits(&straight.masters),
        "resumed run drifted"
    );
    assert!(moment_bits(&second) == moment_bits(&opt));
}

#[test]
fn loading_state_names_a_missing_or_mis_shaped_moment() {
    let (_params, mut opt) = flat(
        &[("model.norm.weight", vec![1.0, 2.0], false)],
        AdamWConfig::default(),
    );
    let mut state = opt.state_tensors().unwrap();
    let lookup = |state: &[(String, Tensor)], name: &str| {
        state
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| scotd::Error::format("(state)", name, "moment missing"))
    };
    state[1].1 = Tensor::from_vec(vec![0.0; 3], [3]).unwrap();
    let err = opt
        .load_state(|name, _| lookup(&state, name), 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exp_avg_sq.model.norm.weight"), "{err}");
    assert!(err.contains("[3]"), "{err}");

    state.remove(0);
    let err = opt
        .load_state(|name, _| lookup(&state, name), 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exp_avg.model.norm.weight"), "{err}");
    assert!(err.contains("missing"), "{err}");
    assert_eq!(opt.step_count(), 0, "a failed load changes nothing");
}
