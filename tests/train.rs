//! The SFT trainer end to end on a tiny model and the committed fixtures, in sections:
//! what training learns (memorisation with assistant-only loss, the step-level loss
//! normalisation, packing), resuming (after a clean stop and after `kill -9`), configs and
//! devices, logs, settings checked up front, signals, shared use, and transformers / TRL
//! names with epochs and TensorBoard; `tfevents`, at the end, reads the event files back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scotd::autograd::no_grad;
use scotd::data::Packing;
use scotd::model::{Batch, Model, ModelConfig};
use scotd::ops::{cross_entropy, Reduction};
use scotd::optim::Decay;
use scotd::train::{train, GpuPrecision, ResumeFrom, TrainConfig};
use scotd::Device;

/// A tiny Qwen2 with the fixture tokenizer (ChatML template, 335 tokens), saved as a
/// Hugging Face folder.
fn tiny_student(hidden: usize, layers: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let json = format!(
        r#"{{"model_type": "qwen2", "hidden_size": {hidden}, "num_hidden_layers": {layers},
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": {},
            "vocab_size": 335, "tie_word_embeddings": true, "max_position_embeddings": 512}}"#,
        hidden * 2
    );
    let config = ModelConfig::from_json(&json, Path::new("inline")).unwrap();
    Model::random(config, 5).save(dir.path()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(common::fixture("tokenizer").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn config(student: &Path, out: &Path, steps: u64) -> TrainConfig {
    let toml = format!(
        r#"model = "{}"
output_dir = "{}"
seq_len = 96
micro_batch_rows = 2
grad_accum = 2
steps = {steps}
lr = 3e-3
warmup_steps = 0
decay = "constant"
weight_decay = 0.0
eval_rows = 0
eval_every = 0
save_every = 4
keep_last = 3
seed = 7

[[datasets]]
name = "chat"
path = "{}"
weight = 0.6

[[datasets]]
name = "math"
path = "{}"
format = "gsm8k"
weight = 0.4
"#,
        student.display(),
        out.display(),
        common::fixture("data/messages.jsonl").display(),
        common::fixture("data/gsm8k.jsonl").display(),
    );
    let path = out.with_extension("toml");
    std::fs::write(&path, toml).unwrap();
    TrainConfig::load(Some(&path), &[]).unwrap()
}

fn losses(metrics: &Path) -> Vec<(u64, f32)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

// ---------------------------------------------------------------- what training learns

#[test]
fn tiny_student_memorises_the_mix_with_assistant_only_loss() {
    let student = tiny_student(48, 2);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(student.path(), &out.path().join("run"), 150);
    cfg.save_every = 0;
    let summary = train(cfg, false).unwrap();
    let l = losses(&summary.metrics);
    assert_eq!(l.len(), 150);
    assert!(l[0].1 > 4.0, "starts near ln(335) = 5.8, got {}", l[0].1);
    let tail: f32 = l[l.len() - 5..].iter().map(|x| x.1).sum::<f32>() / 5.0;
    assert!(tail < 0.05, "the last five steps average {tail}");
    // The final checkpoint is a model folder that loads and a tokenizer beside it.
    assert!(Model::load(&summary.final_dir).is_ok());
    assert!(summary.final_dir.join("tokenizer.json").is_file());
}

#[test]
fn prompt_positions_get_no_gradient_and_packing_keeps_per_sequence_losses() {
    let model = common::random_model(
        r#"{"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 40, "vocab_size": 50}"#,
        9,
    );
    let a: Vec<u32> = vec![3, 9, 27, 31, 4, 8, 15];
    let b: Vec<u32> = vec![16, 23, 42, 1, 2];
    // Prompt = first 3 tokens of each; targets are next tokens within the sequence.
    let targets = |s: &[u32]| -> Vec<i64> {
        (0..s.len())
            .map(|t| {
                if t < 2 || t + 1 == s.len() {
                    -100
                } else {
                    s[t + 1] as i64
                }
            })
            .collect()
    };
    let alone = |s: &[u32]| -> f32 {
        let _g = no_grad();
        model
            .loss(
                &Batch::new(s.to_vec(), 1, s.len()).unwrap(),
                &targets(s),
                Reduction::Sum,
            )
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let ids = [a.clone(), b.clone()].concat();
    let positions: Vec<u32> = (0..a.len() as u32).chain(0..b.len() as u32).collect();
    let segments: Vec<u32> = [vec![0; a.len()], vec![1; b.len()]].concat();
    let packed = Batch::packed(ids, 1, a.len() + b.len(), positions, Some(segments)).unwrap();
    let logits = model.forward(&packed).unwrap().detach().into_param();
    let packed_targets = [targets(&a), targets(&b)].concat();
    let loss = cross_entropy(&logits, &packed_targets, Reduction::Sum).unwrap();
    let expected = alone(&a) + alone(&b);
    assert!((loss.to_scalar().unwrap() - expected).abs() < 1e-4 * expected.abs());

    let grad = loss
        .backward()
        .unwrap()
        .get(&logits)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let vocab = 50;
    for (t, &target) in packed_targets.iter().enumerate() {
        let row = &grad[t * vocab..(t + 1) * vocab];
        let zero = row.iter().all(|&g| g == 0.0);
        assert_eq!(
            zero,
            target == -100,
            "position {t}: gradient rows exist exactly where supervised"
        );
    }
}

#[test]
fn one_micro_batch_of_eight_equals_four_of_two() {
    let model = common::random_model(
        r#"{"model_type": "llama", "hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 3,
                "num_key_value_heads": 1, "intermediate_size": 30, "vocab_size": 40}"#,
        4,
    );
    let t = 6;
    let ids: Vec<u32> = (0..8 * t).map(|i| ((i * 13) % 40) as u32).collect();
    // Uneven supervision per row, so a mean of per-micro-batch means would differ.
    let targets: Vec<i64> = (0..8 * t)
        .map(|i| {
            if (i % t) < (i / t) % 5 {
                -100
            } else {
                ((i * 7) % 40) as i64
            }
        })
        .collect();
    let params: Vec<_> = model.parameters();
    let whole = model
        .loss(
            &Batch::new(ids.clone(), 8, t).unwrap(),
            &targets,
            Reduction::Mean,
        )
        .unwrap();
    let g_whole = whole.backward().unwrap();
    let supervised = targets.iter().filter(|&&x| x != -100).count() as f32;
    let mut g_parts = scotd::autograd::Gradients::default();
    for part in 0..4 {
        let r = part * 2 * t..(part + 1) * 2 * t;
        let l = model
            .loss(
                &Batch::new(ids[r.clone()].to_vec(), 2, t).unwrap(),
                &targets[r],
                Reduction::MeanOver(supervised),
            )
            .unwrap();
        g_parts.add_from(l.backward().unwrap()).unwrap();
    }
    for (name, p) in &params {
        let (a, b) = (
            g_whole.get(p).unwrap().to_vec_f32().unwrap(),
            g_parts.get(p).unwrap().to_vec_f32().unwrap(),
        );
        let scale = a.iter().fold(1e-12f32, |m, x| m.max(x.abs()));
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
            / scale;
        assert!(err < 1e-5, "{name}: {err:e}");
    }
}

// ---------------------------------------------------------------- resuming

#[test]
fn stopping_and_resuming_gives_bit_identical_losses() {
    let student = tiny_student(32, 2);
    let out = tempfile::tempdir().unwrap();
    let straight = train(
        config(student.path(), &out.path().join("straight"), 12),
        false,
    )
    .unwrap();
    let first = train(
        config(student.path(), &out.path().join("resumed"), 8),
        false,
    )
    .unwrap();
    assert_eq!(first.resumed_from, None);
    let second = train(
        config(student.path(), &out.path().join("resumed"), 12),
        false,
    )
    .unwrap();
    assert_eq!(second.resumed_from, Some(8));
    assert_eq!(losses(&straight.metrics), losses(&second.metrics));
    assert_eq!(losses(&second.metrics).len(), 12, "no step logged twice");
    // A run that had already finished resumes into nothing, and still reports its loss.
    let again = train(
        config(student.path(), &out.path().join("resumed"), 12),
        false,
    )
    .unwrap();
    assert_eq!(again.resumed_from, Some(12));
    assert_eq!(again.final_loss, second.final_loss);
}

fn scotd_train(config_path: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scotd"));
    cmd.args(["train", "--quiet", "--config"]).arg(config_path);
    cmd
}

#[test]
fn kill_9_mid_run_then_resume_gives_bit_identical_losses() {
    // A larger student, so that steps take long enough to kill the run between checkpoints.
    let student = tiny_student(128, 4);
    let out = tempfile::tempdir().unwrap();
    let steps = 24;
    let straight = out.path().join("straight");
    let killed = out.path().join("killed");
    for run in [&straight, &killed] {
        let cfg = config(student.path(), run, steps);
        std::fs::write(run.with_extension("toml"), toml::to_string(&cfg).unwrap()).unwrap();
    }
    assert!(scotd_train(&straight.with_extension("toml"))
        .status()
        .unwrap()
        .success());

    let mut child = scotd_train(&killed.with_extension("toml")).spawn().unwrap();
    let marker: PathBuf = killed.join("checkpoint-8/trainer_state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join(format!("checkpoint-{steps}")).exists(),
        "killed before the end"
    );

    let status = scotd_train(&killed.with_extension("toml"))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        losses(&straight.join("metrics.jsonl")),
        losses(&killed.join("metrics.jsonl"))
    );
}

// ---------------------------------------------------------------- configs, errors and devices

#[test]
fn example_configs_parse_and_bad_fields_are_named() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    for name in ["tiny-cpu.toml", "reference-qwen2.5-0.5b.toml"] {
        let cfg = TrainConfig::load(Some(&root.join(name)), &[]).unwrap();
        assert_eq!(cfg.datasets.len(), 2, "{name}");
        assert_eq!(
            (cfg.datasets[0].weight, cfg.datasets[1].weight),
            (0.7, 0.3),
            "{name}"
        );
    }
    // Flags override the file, as TOML values.
    let cfg = TrainConfig::load(
        Some(&root.join("tiny-cpu.toml")),
        &[
            ("lr".into(), "2e-4".into()),
            ("output_dir".into(), "elsewhere".into()),
        ],
    )
    .unwrap();
    assert_eq!(
        (cfg.lr, cfg.output_dir.as_path()),
        (2e-4, Path::new("elsewhere"))
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    for (text, field) in [
        ("model = \"m\"\nsteps = \"many\"\n[[datasets]]\nname = \"a\"\npath = \"a\"\nweight = 1.0\n", "steps"),
        ("model = \"m\"\nbf16 = true\n", "bf16"),
        ("model = \"m\"\n", "datasets"),
        ("model = \"m\"\nlr = -1.0\n[[datasets]]\nname = \"a\"\npath = \"a\"\nweight = 1.0\n", "lr"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let err = TrainConfig::load(Some(&bad), &[]).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains(field), "{text}: {err}");
    }
}

#[test]
fn zero_weights_and_missing_templates_are_clear_errors() {
    let student = tiny_student(32, 1);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(student.path(), &out.path().join("w"), 2);
    cfg.datasets.iter_mut().for_each(|d| d.weight = 0.0);
    let err = train(cfg, false).unwrap_err().to_string();
    assert!(err.contains("weight"), "{err}");

    std::fs::remove_file(student.path().join("tokenizer_config.json")).unwrap();
    let err = train(config(student.path(), &out.path().join("t"), 2), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("chat template") || err.contains("chat_template"),
        "{err}"
    );
}

/// The trainer with `device = "emulator"` (the same step, f32, on the CPU emulator of
/// CUDA) follows the CPU trainer, and a run resumes across devices: 4 steps on the
/// emulated GPU (its checkpoint read from the device), then 4 more on the CPU from it.
#[test]
fn the_gpu_step_follows_the_cpu_trainer_and_resumes_across_devices() {
    let student = tiny_student(32, 2);
    let out = tempfile::tempdir().unwrap();
    let cpu = train(config(student.path(), &out.path().join("cpu"), 8), false).unwrap();
    let mut first = config(student.path(), &out.path().join("mixed"), 4);
    first.device = Device::Emulator;
    first.gpu_precision = GpuPrecision::F32;
    let gpu_start = train(first.clone(), false).unwrap();
    let mut second = config(student.path(), &out.path().join("mixed"), 8);
    second.device = Device::Cpu;
    let resumed = train(second, false).unwrap();
    assert_eq!(resumed.resumed_from, Some(4));
    let (cpu_losses, mixed) = (losses(&cpu.metrics), losses(&resumed.metrics));
    assert_eq!(mixed.len(), 8);
    for ((step, a), (_, b)) in cpu_losses.iter().zip(&mixed) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "step {step}: cpu {a} vs gpu/cpu {b}"
        );
    }
    assert!(gpu_start.final_dir.join("model.safetensors").exists());
}

// ---------------------------------------------------------------- logs

#[test]
fn without_a_terminal_progress_is_a_log_line_every_logging_steps() {
    let student = tiny_student(32, 2);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("logged");
    let cfg = config(student.path(), &run, 5);
    std::fs::write(run.with_extension("toml"), toml::to_string(&cfg).unwrap()).unwrap();
    // Standard error piped: not a terminal. Set by transformers' name for log_every.
    let output = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(["train", "--logging-steps", "2", "--config"])
        .arg(run.with_extension("toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let steps: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("step "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    // Every second step, and the last.
    assert_eq!(steps, ["2/5", "4/5", "5/5"], "{stderr}");
    assert!(
        stderr.contains(" loss ") && stderr.contains(" tok/s "),
        "{stderr}"
    );
}

#[test]
fn held_out_loss_is_logged_before_the_first_step_and_per_dataset() {
    let student = tiny_student(32, 1);
    let out = tempfile::tempdir().unwrap();
    let run_dir = out.path().join("run");
    let with_evals = |steps| {
        let mut cfg = config(student.path(), &run_dir, steps);
        (cfg.eval_rows, cfg.eval_every, cfg.seq_len) = (2, 2, 512);
        cfg.datasets[0].path = common::fixture("data/alpaca.json");
        cfg
    };
    let eval_lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(run_dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("eval_loss").is_some())
            .collect()
    };
    train(with_evals(4), false).unwrap();
    let evals = eval_lines();
    let steps: Vec<u64> = evals.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 2, 4]);
    for v in &evals {
        let by_dataset = v["eval_loss_by_dataset"].as_object().unwrap();
        let names: Vec<&str> = by_dataset.keys().map(String::as_str).collect();
        assert_eq!(names, ["chat", "math"], "{v}");
        let (chat, math) = (
            by_dataset["chat"].as_f64().unwrap(),
            by_dataset["math"].as_f64().unwrap(),
        );
        let overall = v["eval_loss"].as_f64().unwrap();
        assert!(
            overall > chat.min(math) - 1e-6 && overall < chat.max(math) + 1e-6,
            "{v}"
        );
    }
    // Continuing the finished run to 6 steps keeps the one step-0 line.
    train(with_evals(6), false).unwrap();
    let steps: Vec<u64> = eval_lines()
        .iter()
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 2, 4, 6]);
    // A fresh start (no checkpoint left) logs afresh rather than after the old lines.
    for entry in std::fs::read_dir(&run_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        }
    }
    train(with_evals(2), false).unwrap();
    let steps: Vec<u64> = eval_lines()
        .iter()
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 2]);
}

// ---------------------------------------------------------------- settings checked before anything runs

/// One bad setting of each kind: every one is refused before anything is read or
/// written, with the field, its value and the allowed range in the message.
#[test]
fn every_setting_is_checked_against_its_range_before_anything_is_written() {
    type Change = fn(&mut TrainConfig);
    let cases: [(Change, &[&str]); 19] = [
        (
            |c| c.lr = 1e30,
            &["lr = 1e30", "must be finite and in (0, 1]"],
        ),
        (|c| c.lr = f32::NAN, &["lr = NaN", "(0, 1]"]),
        (|c| c.beta1 = 1.0, &["beta1 = 1.0", "must be in [0, 1)"]),
        (|c| c.beta2 = f32::NAN, &["beta2 = NaN", "[0, 1)"]),
        (|c| c.eps = -1e-8, &["eps = -1e-8", "(0, 1]"]),
        (
            |c| c.weight_decay = -0.1,
            &["weight_decay = -0.1", "[0, 1]"],
        ),
        (|c| c.min_lr_ratio = 2.0, &["min_lr_ratio = 2.0", "[0, 1]"]),
        (
            |c| c.max_grad_norm = -1.0,
            &["max_grad_norm = -1.0", ">= 0"],
        ),
        (
            |c| c.max_grad_norm = f32::INFINITY,
            &["max_grad_norm = inf", "finite"],
        ),
        (|c| c.seq_len = 0, &["seq_len = 0", "at least 1"]),
        (
            |c| c.grad_accum = usize::MAX,
            &["grad_accum = ", "at most 16777216"],
        ),
        (
            |c| c.micro_batch_rows = 1 << 40,
            &["micro_batch_rows × seq_len", "at most 65536"],
        ),
        (
            |c| c.seq_len = 1000,
            &[
                "seq_len = 1000",
                "past the model's max_position_embeddings of 512",
            ],
        ),
        (|c| c.steps = Some(0), &["steps = 0", "at least 1"]),
        (|c| c.keep_last = 0, &["keep_last = 0", "at least 1"]),
        (
            |c| c.datasets[1].name = "chat".into(),
            &["datasets", "two are named `chat`"],
        ),
        (
            |c| c.datasets[0].weight = -1.0,
            &["datasets.chat.weight = -1.0", ">= 0"],
        ),
        (
            |c| c.datasets[0].weight = f64::NAN,
            &["datasets.chat.weight = NaN"],
        ),
        (|c| c.output_dir = PathBuf::new(), &["output_dir: empty"]),
    ];
    let student = tiny_student(32, 1);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let valid = config(student.path(), &run, 2);
    for (change, expected) in cases {
        let mut cfg = valid.clone();
        change(&mut cfg);
        let err = train(cfg, false).unwrap_err().to_string();
        for part in expected {
            assert!(err.contains(part), "expected {part:?} in: {err}");
        }
        assert!(!run.exists(), "{err}: the output folder was created");
    }
}

#[test]
fn an_activation_the_engine_lacks_is_refused_at_config_load() {
    let student = tiny_student(32, 1);
    let config_json = student.path().join("config.json");
    let text = std::fs::read_to_string(&config_json).unwrap();
    let gelu = text.replace(r#""hidden_act": "silu""#, r#""hidden_act": "gelu""#);
    assert_ne!(text, gelu, "the saved config names its activation");
    std::fs::write(&config_json, gelu).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let err = train(config(student.path(), &run, 2), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hidden_act") && err.contains("gelu") && err.contains("silu"),
        "{err}"
    );
    assert!(!run.exists());
}

/// `--lr -1` and `--lr -1e-5` are values of `--lr` (not unknown flags), refused by the
/// range check, which names the file they override.
#[test]
fn negative_flag_values_reach_the_range_check() {
    let dir = tempfile::tempdir().unwrap();
    let student = tiny_student(32, 1);
    let run = dir.path().join("run");
    let cfg = config(student.path(), &run, 2);
    std::fs::write(run.with_extension("toml"), toml::to_string(&cfg).unwrap()).unwrap();
    for (value, shown) in [("-1", "lr = -1.0"), ("-1e-5", "lr = -1e-5")] {
        let output = scotd_train(&run.with_extension("toml"))
            .args(["--lr", value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("run.toml") && stderr.contains(shown) && stderr.contains("(0, 1]"),
            "{stderr}"
        );
    }
    assert!(!run.exists());
}

// ---------------------------------------------------------------- signals

/// `scotd train` without --quiet, standard error piped: a log line every `log_every`
/// steps, read line by line as the run goes.
fn spawn_logged_train(
    config_path: &Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(["train", "--config"])
        .arg(config_path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(std::io::Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// Waits for the first progress line (step 1 is done), then sends `signal` to the run;
/// returns the lines read until then.
fn signal_after_first_step(
    child: &std::process::Child,
    lines: &std::sync::mpsc::Receiver<String>,
    signal: &str,
) -> Vec<String> {
    let seen = lines_to_first_step(lines);
    send_signal(child, signal);
    seen
}

/// The run's lines up to and including its first step's.
fn lines_to_first_step(lines: &std::sync::mpsc::Receiver<String>) -> Vec<String> {
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("step ")) {
        let line = lines
            .recv_timeout(Duration::from_secs(300))
            .expect("a step logged");
        seen.push(line);
    }
    seen
}

fn send_signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A run checkpoints no step but the last; SIGTERM after its first step makes it finish
/// the step in progress, checkpoint it, say so and exit 143, and the rerun resumes there
/// and ends with the losses of an uninterrupted run.
#[test]
fn sigterm_checkpoints_the_step_in_progress_and_the_rerun_resumes_from_it() {
    let student = tiny_student(128, 4);
    let out = tempfile::tempdir().unwrap();
    let steps = 12;
    let config_for = |run: &Path| {
        let mut cfg = config(student.path(), run, steps);
        (cfg.save_every, cfg.log_every) = (0, 1);
        cfg
    };
    let straight = train(config_for(&out.path().join("straight")), false).unwrap();
    let run = out.path().join("interrupted");
    let config_path = run.with_extension("toml");
    std::fs::write(&config_path, toml::to_string(&config_for(&run)).unwrap()).unwrap();

    let (mut child, lines) = spawn_logged_train(&config_path);
    let mut stderr = signal_after_first_step(&child, &lines, "TERM");
    let status = child.wait().unwrap();
    stderr.extend(lines.iter());
    assert_eq!(status.code(), Some(143), "{stderr:?}");
    let message = stderr
        .iter()
        .find(|l| l.starts_with("interrupted at step "))
        .unwrap_or_else(|| panic!("no interruption message in {stderr:?}"));
    let step: u64 = message["interrupted at step ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..steps).contains(&step), "{message}");
    let checkpoint = run.join(format!("checkpoint-{step}"));
    assert!(
        message.contains(&format!("checkpoint written to {}", checkpoint.display()))
            && message.ends_with("rerun the same command to resume"),
        "{message}"
    );
    assert!(checkpoint.join("trainer_state.json").is_file());

    let output = scotd_train(&config_path).output().unwrap();
    let rerun = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{rerun}");
    assert!(
        rerun.contains(&format!("resumed from step {step}")),
        "{rerun}"
    );
    assert_eq!(
        losses(&straight.metrics),
        losses(&run.join("metrics.jsonl"))
    );
}

/// A second SIGINT does not wait for the step in progress: the run exits at once with
/// SIGINT's 130 and writes no checkpoint. Steps of 16k tokens take over a second here, so
/// the first signal (0.3 s after step 1 is logged: one sent at once can land before the
/// run checks for it after step 1, which then stops there) and the second (0.2 s later)
/// both fall in step 2.
#[test]
fn a_second_sigint_exits_at_once() {
    let student = tiny_student(128, 4);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let mut cfg = config(student.path(), &run, 50);
    (cfg.save_every, cfg.log_every) = (0, 1);
    (cfg.seq_len, cfg.micro_batch_rows, cfg.grad_accum) = (512, 8, 4);
    let config_path = run.with_extension("toml");
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();

    let (mut child, lines) = spawn_logged_train(&config_path);
    let started = Instant::now();
    let mut stderr = lines_to_first_step(&lines);
    std::thread::sleep(Duration::from_millis(300));
    send_signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(200));
    send_signal(&child, "INT");
    let status = child.wait().unwrap();
    stderr.extend(lines.iter());
    assert_eq!(status.code(), Some(130), "{stderr:?}");
    assert!(
        !stderr.iter().any(|l| l.starts_with("interrupted at step")),
        "{stderr:?} (after {:?})",
        started.elapsed()
    );
    assert!(!run.join("checkpoint-2").exists() && !run.join("checkpoint-1").exists());
}

// ---------------------------------------------------------------- shared use

/// Two `scotd train` on one output_dir: while one job holds the folder's lock (here the
/// test, as a running train does), `scotd train` is refused at once and writes nothing;
/// once the lock is released it trains.
#[test]
fn a_second_run_on_one_output_dir_is_refused_while_the_first_holds_it() {
    let student = tiny_student(64, 2);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let config_path = run.with_extension("toml");
    let cfg = config(student.path(), &run, 2);
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();
    let held = scotd::io::lock_folder(&run).unwrap();
    let refused = scotd_train(&config_path).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("another scotd job"),
        "{err}"
    );
    assert!(
        !run.join("metrics.jsonl").exists(),
        "the refused run wrote metrics"
    );
    drop(held);
    let trained = scotd_train(&config_path).output().unwrap();
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
}

/// A resume with another setting is refused, naming the setting and both values.
#[test]
fn a_resume_with_other_settings_names_what_differs() {
    let student = tiny_student(64, 2);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let cfg = config(student.path(), &run, 2);
    train(cfg.clone(), false).unwrap();
    let mut other = cfg.clone();
    other.steps = Some(4); // free to change
    assert_eq!(cfg.weight_decay, 0.0);
    other.weight_decay = 0.25;
    let err = train(other, false).unwrap_err().to_string();
    assert!(
        err.contains("weight_decay (was 0.0, now 0.25)") && !err.contains("steps"),
        "{err}"
    );
}

// ---------------------------------------------------------------- transformers / TRL names, epochs, TensorBoard

/// The run's `train` metrics lines: (step, field) for each.
fn metric(metrics: &Path, field: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v.get(field)?.as_f64()?)))
        .collect()
}

/// A file in transformers' / TRL's names configures the same run as one in ours; a file
/// or flags naming one setting twice are refused naming both.
#[test]
fn transformers_and_trl_names_configure_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, settings: &str| {
        let path = dir.path().join(name);
        let datasets = "[[datasets]]\nname = \"a\"\npath = \"a.jsonl\"\nweight = 1.0\n";
        std::fs::write(&path, format!("model = \"m\"\n{settings}\n{datasets}")).unwrap();
        path
    };
    let theirs = write(
        "trl.toml",
        "learning_rate = 2e-5\nmax_steps = 40\nnum_train_epochs = 3\n\
         per_device_train_batch_size = 8\ngradient_accumulation_steps = 4\nmax_length = 256\n\
         lr_scheduler_type = \"constant_with_warmup\"\nadam_beta1 = 0.8\nadam_beta2 = 0.99\n\
         adam_epsilon = 1e-6\nlogging_steps = 5\neval_steps = 7\nsave_steps = 9\n\
         save_total_limit = 1\nwarmup_ratio = 0.1\nresume_from_checkpoint = true",
    );
    let ours = write(
        "ours.toml",
        "lr = 2e-5\nsteps = 40\nepochs = 3.0\nmicro_batch_rows = 8\ngrad_accum = 4\n\
         seq_len = 256\ndecay = \"constant\"\nbeta1 = 0.8\nbeta2 = 0.99\neps = 1e-6\n\
         log_every = 5\neval_every = 7\nsave_every = 9\nkeep_last = 1\nwarmup_ratio = 0.1\n\
         resume_from_checkpoint = true",
    );
    let theirs = TrainConfig::load(Some(&theirs), &[]).unwrap();
    assert_eq!(theirs, TrainConfig::load(Some(&ours), &[]).unwrap());
    assert_eq!(
        theirs.resume_from_checkpoint,
        Some(ResumeFrom::Newest(true))
    );
    assert_eq!(
        theirs.total_steps(|| unreachable!()).unwrap(),
        40,
        "max_steps wins"
    );
    assert_eq!(theirs.warmup(40), 4);

    let both = write("both.toml", "lr = 1e-5\nlearning_rate = 2e-5");
    let err = TrainConfig::load(Some(&both), &[]).unwrap_err().to_string();
    assert!(
        err.contains("both.toml") && err.contains("learning_rate and lr"),
        "{err}"
    );
    let seq = write("seq.toml", "max_seq_length = 64\nseq_len = 64");
    let err = TrainConfig::load(Some(&seq), &[]).unwrap_err().to_string();
    assert!(err.contains("max_seq_length and seq_len"), "{err}");
    let warm = write("warm.toml", "warmup_steps = 3\nwarmup_ratio = 0.1");
    let err = TrainConfig::load(Some(&warm), &[]).unwrap_err().to_string();
    assert!(err.contains("warmup_steps and warmup_ratio"), "{err}");
    // A flag replaces the file's value of the same setting under either name, and the
    // file's other member of a pair of which one decides.
    let flagged = TrainConfig::load(
        Some(&write("f.toml", "lr = 1e-5\nsteps = 40\nwarmup_steps = 3")),
        &[
            ("learning-rate".into(), "3e-5".into()),
            ("num_train_epochs".into(), "2".into()),
            ("warmup_ratio".into(), "0.5".into()),
        ],
    )
    .unwrap();
    assert_eq!(
        (
            flagged.lr,
            flagged.steps,
            flagged.epochs,
            flagged.warmup_ratio
        ),
        (3e-5, None, Some(2.0), Some(0.5))
    );
    let err = TrainConfig::load(
        None,
        &[
            ("lr".into(), "1e-5".into()),
            ("learning_rate".into(), "1e-5".into()),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("(flags)") && err.contains("learning_rate and lr"),
        "{err}"
    );
}

/// `--learning-rate` (and `--learning_rate`, as HfArgumentParser spells it) is `lr`:
/// refused with lr's range, which names both; every flag's help gives its meaning.
#[test]
fn the_command_line_takes_trl_flags_and_explains_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let student = tiny_student(32, 1);
    let run = dir.path().join("run");
    let cfg = config(student.path(), &run, 2);
    std::fs::write(run.with_extension("toml"), toml::to_string(&cfg).unwrap()).unwrap();
    for flag in ["--learning-rate", "--learning_rate"] {
        let output = scotd_train(&run.with_extension("toml"))
            .args([flag, "-1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("lr = -1.0 (transformers / TRL: learning_rate)")
                && stderr.contains("(0, 1]"),
            "{flag}: {stderr}"
        );
    }
    let output = scotd_train(&run.with_extension("toml"))
        .args(["--lr", "1e-5", "--learning-rate", "2e-5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("learning_rate and lr"), "{stderr}");
    assert!(!run.exists());

    let help = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(["train", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("Overrides"), "{help}");
    assert!(
        help.contains("Peak learning rate (learning_rate) [default: 1e-5]"),
        "{help}"
    );
    assert!(help.contains("--save-total-limit"), "{help}");
    // Each flag's help line is not empty.
    let flags: Vec<&str> = help
        .lines()
        .filter(|l| l.trim_start().starts_with("--"))
        .collect();
    assert!(flags.len() > 40, "{help}");
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("--") && !line.contains("  ") {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            assert!(
                !next.is_empty() && !next.starts_with("--"),
                "{line} has no help"
            );
        }
    }
}

/// `epochs` counts steps from the data: padded one example a row, 13 rows at 2 rows a
/// micro-batch and 2 micro-batches a step are 7 micro-batches, 4 steps an epoch; `steps`
/// wins when both are set. `warmup_ratio` is a fraction of those steps.
#[test]
fn epochs_count_steps_from_the_data_and_warmup_ratio_scales_with_them() {
    let student = tiny_student(32, 1);
    let out = tempfile::tempdir().unwrap();
    let by_epochs = |name: &str, epochs: f64, steps: Option<u64>| {
        let mut cfg = config(student.path(), &out.path().join(name), 1);
        (cfg.steps, cfg.epochs) = (steps, Some(epochs));
        (cfg.packing, cfg.seq_len, cfg.save_every) = (Packing::Pad, 512, 0);
        (cfg.warmup_ratio, cfg.decay) = (Some(0.25), Decay::Constant);
        cfg
    };
    let run = train(by_epochs("two", 2.0, None), false).unwrap();
    assert_eq!(run.steps, 8);
    let epochs = metric(&run.metrics, "epoch");
    assert_eq!(epochs.len(), 8);
    // 4 draws a step over 13 rows.
    assert_eq!(epochs[0], (1, 4.0 / 13.0));
    assert!(epochs[7].1 >= 2.0, "{epochs:?}");
    // Warmup: a quarter of 8 steps, so the third update is the first at the peak.
    let lrs: Vec<f64> = metric(&run.metrics, "lr")
        .iter()
        .map(|&(_, lr)| lr)
        .collect();
    assert_eq!(lrs[..3], [0.0, 1.5e-3, 3e-3].map(|x: f64| x as f32 as f64));
    assert_eq!(train(by_epochs("half", 0.5, None), false).unwrap().steps, 2);
    assert_eq!(
        train(by_epochs("steps", 2.0, Some(3)), false)
            .unwrap()
            .steps,
        3
    );
}

/// `resume_from_checkpoint`: `true` needs a checkpoint, `false` refuses one, a path
/// resumes from it (in another folder too, bit-identically) unless a newer checkpoint
/// would be overwritten.
#[test]
fn resume_from_checkpoint_true_false_or_a_path() {
    let student = tiny_student(32, 1);
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first");
    let with = |dir: &Path, resume: Option<ResumeFrom>| {
        let mut cfg = config(student.path(), dir, 8);
        cfg.resume_from_checkpoint = resume;
        cfg
    };
    let err = train(with(&first, Some(ResumeFrom::Newest(true))), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("resume_from_checkpoint = true") && err.contains("no complete"),
        "{err}"
    );
    let straight = train(with(&first, None), false).unwrap();
    let err = train(with(&first, Some(ResumeFrom::Newest(false))), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("resume_from_checkpoint = false") && err.contains("checkpoint-8"),
        "{err}"
    );
    let again = train(with(&first, Some(ResumeFrom::Newest(true))), false).unwrap();
    assert_eq!(again.resumed_from, Some(8));

    let older = first.join("checkpoint-4");
    let err = train(
        with(&first, Some(ResumeFrom::Checkpoint(older.clone()))),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("newer") && err.contains("checkpoint-8"),
        "{err}"
    );
    let err = train(
        with(&first, Some(ResumeFrom::Checkpoint(out.path().into()))),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a complete checkpoint"), "{err}");

    let elsewhere = out.path().join("elsewhere");
    let continued = train(with(&elsewhere, Some(ResumeFrom::Checkpoint(older))), false).unwrap();
    assert_eq!(continued.resumed_from, Some(4));
    let tail: Vec<(u64, f32)> = losses(&straight.metrics).into_iter().skip(4).collect();
    assert_eq!(losses(&continued.metrics), tail);
}

/// The TensorBoard event file beside metrics.jsonl: valid TFRecord framing (both CRCs of
/// every record), a version event first, then each metrics line's numbers under
/// transformers' names, after a resume too (rewritten from the lines kept).
#[test]
fn tensorboard_events_hold_the_metrics_under_transformers_names() {
    let student = tiny_student(32, 1);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let with_evals = |steps| {
        let mut cfg = config(student.path(), &run, steps);
        (cfg.eval_rows, cfg.eval_every) = (1, 2);
        cfg
    };
    train(with_evals(3), false).unwrap();
    let summary = train(with_evals(5), false).unwrap();
    assert_eq!(summary.resumed_from, Some(3));
    let events = tfevents::read(&run.join(scotd::train::tensorboard::EVENTS_FILE));
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    let decoded: Vec<(u64, String, f32)> = events[1..]
        .iter()
        .flat_map(|e| e.scalars.iter().map(|(tag, v)| (e.step, tag.clone(), *v)))
        .collect();
    let mut expected = Vec::new();
    for line in std::fs::read_to_string(&summary.metrics).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_u64().unwrap();
        let mut add = |tag: &str, field: &serde_json::Value| {
            expected.push((step, tag.to_string(), field.as_f64().unwrap() as f32));
        };
        if v.get("loss").is_some() {
            for (field, tag) in [
                ("loss", "train/loss"),
                ("lr", "train/learning_rate"),
                ("grad_norm", "train/grad_norm"),
                ("epoch", "train/epoch"),
            ] {
                add(tag, &v[field]);
            }
        } else {
            add("eval/loss", &v["eval_loss"]);
            for (name, loss) in v["eval_loss_by_dataset"].as_object().unwrap() {
                add(&format!("eval/{name}_loss"), loss);
            }
        }
    }
    assert_eq!(decoded, expected);
    let train_steps: Vec<u64> = events[1..]
        .iter()
        .filter(|e| e.scalars.iter().any(|(t, _)| t == "train/loss"))
        .map(|e| e.step)
        .collect();
    assert_eq!(
        train_steps,
        [1, 2, 3, 4, 5],
        "no step twice after the resume"
    );
}

/// `--dataset` flags: one entry each, replacing the file's datasets.
#[test]
fn dataset_flags_replace_the_files_datasets() {
    let student = tiny_student(32, 1);
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let cfg = config(student.path(), &run, 2);
    let path = run.with_extension("toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let gsm8k = common::fixture("data/gsm8k.jsonl");
    let messages = common::fixture("data/messages.jsonl");
    let loaded = TrainConfig::load(
        Some(&path),
        &[
            (
                "dataset".into(),
                format!(
                    "name=math,path={},weight=0.25,format=gsm8k",
                    gsm8k.display()
                ),
            ),
            ("dataset".into(), messages.display().to_string()),
        ],
    )
    .unwrap();
    let names: Vec<(&str, f64)> = loaded
        .datasets
        .iter()
        .map(|d| (d.name.as_str(), d.weight))
        .collect();
    assert_eq!(names, [("math", 0.25), ("messages", 1.0)]);
    let output = scotd_train(&path)
        .args([
            "--dataset",
            &format!("path={},weight=1", messages.display()),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let err = TrainConfig::load(
        Some(&path),
        &[("dataset".into(), "path=x.jsonl,weigth=1".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--dataset") && err.contains("unknown key `weigth`"),
        "{err}"
    );
}

/// A reader of TensorBoard event files written from the format (TFRecord framing, the
/// protocol-buffer wire format), not from the writer, to check it.
mod tfevents {
    use scotd::train::tensorboard::masked_crc32c;

    #[derive(Debug, Default)]
    pub struct Event {
        pub step: u64,
        pub file_version: Option<String>,
        pub scalars: Vec<(String, f32)>,
    }

    pub fn read(path: &std::path::Path) -> Vec<Event> {
        let bytes = std::fs::read(path).unwrap();
        let mut events = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let length_bytes = &bytes[at..at + 8];
            let length = u64::from_le_bytes(length_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(length_bytes), "length CRC at {at}");
            let data = &bytes[at + 12..at + 12 + length];
            let end = at + 12 + length;
            let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
            assert_eq!(crc, masked_crc32c(data), "data CRC at {at}");
            events.push(event(data));
            at = end + 4;
        }
        events
    }

    /// (field number, wire type, value bytes or varint) of each field of a message.
    fn fields(mut data: &[u8]) -> Vec<(u64, u64, Vec<u8>, u64)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let key = varint(&mut data);
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => out.push((field, wire, Vec::new(), varint(&mut data))),
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    out.push((field, wire, data[..n].to_vec(), 0));
                    data = &data[n..];
                }
                2 => {
                    let n = varint(&mut data) as usize;
                    out.push((field, wire, data[..n].to_vec(), 0));
                    data = &data[n..];
                }
                _ => panic!("wire type {wire}"),
            }
        }
        out
    }

    fn varint(data: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let byte = data[0];
            *data = &data[1..];
            value |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                break;
            }
        }
        value
    }

    fn event(data: &[u8]) -> Event {
        let mut event = Event::default();
        for (field, wire, bytes, number) in fields(data) {
            match (field, wire) {
                (1, 1) => assert!(f64::from_le_bytes(bytes.try_into().unwrap()) > 1e9),
                (2, 0) => event.step = number,
                (3, 2) => event.file_version = Some(String::from_utf8(bytes).unwrap()),
                (5, 2) => {
                    for (_, _, value, _) in fields(&bytes) {
                        let (mut tag, mut simple) = (String::new(), None);
                        for (f, w, b, _) in fields(&value) {
                            match (f, w) {
                                (1, 2) => tag = String::from_utf8(b).unwrap(),
                                (2, 5) => simple = Some(f32::from_le_bytes(b.try_into().unwrap())),
                                other => panic!("unexpected Summary.Value field {other:?}"),
                            }
                        }
                        event.scalars.push((tag, simple.expect("a simple_value")));
                    }
                }
                other => panic!("unexpected Event field {other:?}"),
            }
        }
        event
    }
}
