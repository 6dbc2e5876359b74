//! The probe API on a tiny random model: recording changes nothing, a same-prompt patch
//! changes nothing, zeroing the residual stream changes everything, recorded attention
//! probabilities are the softmax of the recorded queries and keys; every probe kind on a
//! GPU device (the emulator) gives the CPU's numbers; and the `scotd probe` commands end
//! to end on the CPU and the emulator.

mod common;

use scotd::model::Model;
use scotd::probe::lens::logit_lens;
use scotd::probe::linear::{probe_layers, probed_sites, residual_features, Pooling};
use scotd::probe::patch::{patch, PatchReport};
use scotd::probe::record::{record, run_probes};
use scotd::probe::{Intervention, Probes, Site, SiteKind};
use scotd::testing::relative_error;
use scotd::DType;

const CONFIG: &str = r#"{"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
    "vocab_size": 97, "tie_word_embeddings": true}"#;

fn model() -> Model {
    common::random_model(CONFIG, 3)
}

const PROMPT: [u32; 9] = [5, 17, 3, 88, 42, 42, 7, 60, 1];

fn logits(model: &Model, probes: &mut Probes) -> Vec<f32> {
    run_probes(model, &PROMPT, probes)
        .unwrap()
        .to_vec_f32()
        .unwrap()
}

fn every_site(layers: usize) -> Vec<Site> {
    let all = "resid_pre,q,k,attn_probs,attn_heads,attn_out,resid_mid,mlp_out,resid_post,final_norm,logits";
    Site::parse_list(all, layers).unwrap()
}

#[test]
fn recording_every_site_changes_no_logit() {
    let model = model();
    let plain = logits(&model, &mut Probes::default());
    let mut probes = Probes::recording(every_site(3));
    assert_eq!(logits(&model, &mut probes), plain);
    assert_eq!(probes.recorded.len(), 9 * 3 + 2);
    let recorded_logits = &probes.recorded[&Site::last(SiteKind::Logits)];
    assert_eq!(recorded_logits.read_f32().unwrap().to_vec(), plain);
}

#[test]
fn patching_a_site_from_the_same_prompt_changes_nothing() {
    let model = model();
    let plain = logits(&model, &mut Probes::default());
    let patches = [
        (Site::layer(SiteKind::ResidPost, 1), None),
        (Site::layer(SiteKind::AttnHeads, 2), None),
        (Site::layer(SiteKind::AttnHeads, 2), Some(1)),
    ];
    for (site, head) in patches {
        let value = record(&model, &PROMPT, &[site]).unwrap()[&site].clone();
        let mut probes = Probes::default();
        probes.intervene(site, Intervention::Replace { value, head });
        assert_eq!(logits(&model, &mut probes), plain, "{site} head {head:?}");
    }
    let mut steer = Probes::default();
    steer.intervene(
        Site::layer(SiteKind::ResidMid, 0),
        Intervention::Add {
            vector: vec![0.0; 32],
            scale: 3.0,
        },
    );
    assert_eq!(logits(&model, &mut steer), plain, "a zero steering vector");
}

#[test]
fn zeroing_the_residual_stream_changes_every_position() {
    let model = model();
    let plain = logits(&model, &mut Probes::default());
    let mut probes = Probes::default();
    probes.intervene(Site::layer(SiteKind::ResidPost, 2), Intervention::Zero);
    let zeroed = logits(&model, &mut probes);
    for (pos, (a, b)) in plain.chunks(97).zip(zeroed.chunks(97)).enumerate() {
        assert!(
            a.iter().zip(b).any(|(x, y)| x != y),
            "position {pos} unchanged"
        );
    }
    // A steering vector moves the logits.
    let mut steer = Probes::default();
    steer.intervene(
        Site::layer(SiteKind::ResidMid, 0),
        Intervention::Add {
            vector: vec![1.0; 32],
            scale: 0.5,
        },
    );
    assert_ne!(logits(&model, &mut steer), plain);
}

#[test]
fn recorded_attention_probabilities_are_the_softmax_of_recorded_queries_and_keys() {
    let model = model();
    let (layer, t, hq, hkv, dh) = (1, PROMPT.len(), 4, 2, 8);
    let sites =
        [SiteKind::Queries, SiteKind::Keys, SiteKind::AttnProbs].map(|k| Site::layer(k, layer));
    let rec = record(&model, &PROMPT, &sites).unwrap();
    let q = rec[&sites[0]].read_f32().unwrap().to_vec();
    let k = rec[&sites[1]].read_f32().unwrap().to_vec();
    let probs = rec[&sites[2]].read_f32().unwrap().to_vec();
    assert_eq!(rec[&sites[2]].dims(), &[1, hq, t, t]);
    for h in 0..hq {
        let g = h / (hq / hkv);
        for i in 0..t {
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    let qi = &q[(i * hq + h) * dh..][..dh];
                    let kj = &k[(j * hkv + g) * dh..][..dh];
                    qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>() / (dh as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            for j in 0..t {
                let want = if j <= i {
                    (scores[j] - max).exp() / sum
                } else {
                    0.0
                };
                let got = probs[(h * t + i) * t + j] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "head {h} row {i} key {j}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn bad_site_names_and_layers_are_clear_errors() {
    let err = Site::parse_list("resid_post.7", 3).unwrap_err().to_string();
    assert!(
        err.contains("layer 7 is out of range") && err.contains("3"),
        "{err}"
    );
    let err = Site::parse_list("residual", 3).unwrap_err().to_string();
    assert!(
        err.contains("unknown site") && err.contains("resid_post"),
        "{err}"
    );
    let err = Site::parse_list("logits.2", 3).unwrap_err().to_string();
    assert!(err.contains("has no layer"), "{err}");
    let model = model();
    let mut probes = Probes::default();
    probes.intervene(Site::layer(SiteKind::AttnProbs, 0), Intervention::Zero);
    let err = run_probes(&model, &PROMPT, &mut probes)
        .unwrap_err()
        .to_string();
    assert!(err.contains("recorded only"), "{err}");
    let err = run_probes(&model, &[], &mut Probes::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tokens"), "{err}");
}

/// `got` within 1e-4 of `want`, relative to the largest |want| (f32 on two devices).
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let error = relative_error(got, want);
    assert!(error < 1e-4, "{what}: relative error {error}");
}

/// The lens' probability of every token, [layer][position][token].
fn lens_probabilities(model: &Model) -> Vec<f32> {
    let lens = logit_lens(model, &PROMPT, 97).unwrap();
    let mut out = Vec::new();
    for position in lens.top.iter().flatten() {
        let mut by_token = vec![0.0; 97];
        for &(id, p) in position {
            by_token[id as usize] = p;
        }
        out.extend(by_token);
    }
    out
}

/// Pooled residual features of a few prompts of two made-up sets, and their labels.
fn linear_features(model: &Model, pooling: Pooling) -> (Vec<Vec<Vec<f32>>>, Vec<bool>) {
    let prompts: Vec<Vec<u32>> = (0..8u32)
        .map(|i| (0..4 + i).map(|j| (i * 31 + j * 7) % 97).collect())
        .collect();
    let features = prompts
        .iter()
        .map(|ids| residual_features(model, ids, pooling).unwrap())
        .collect();
    (features, (0..8).map(|i| i % 2 == 0).collect())
}

/// Every number of a patch report, in a fixed order.
fn patch_numbers(report: &PatchReport) -> Vec<f32> {
    let mut out = vec![report.probability_a, report.probability_b];
    out.extend(report.patched.iter().flatten());
    out.extend(report.heads.iter().flatten().flatten());
    out
}

scotd::gpu_tests! {
    /// Each probe kind on a model on a GPU device gives the CPU's numbers (f32): every
    /// site recorded, the interventions, the logit lens, linear probes and patching.
    fn every_probe_kind_gives_the_cpus_numbers(device: Device) {
        let cpu = model();
        let gpu = cpu.to_device(device, DType::F32).unwrap();
        let sites = every_site(3);
        let (want, got) = (record(&cpu, &PROMPT, &sites).unwrap(), record(&gpu, &PROMPT, &sites).unwrap());
        for site in &sites {
            assert_eq!(got[site].dims(), want[site].dims(), "{site}");
            let values = |r: &std::collections::BTreeMap<Site, scotd::Tensor>| r[site].to_vec_f32().unwrap();
            assert_close(&format!("record {site}"), &values(&got), &values(&want));
        }
        for (what, site, intervention) in [
            ("zero", Site::layer(SiteKind::ResidPost, 1), Intervention::Zero),
            ("steer", Site::layer(SiteKind::ResidMid, 0), Intervention::Add { vector: (0..32).map(|i| i as f32 / 32.0).collect(), scale: 2.0 }),
        ] {
            let run = |model: &Model| {
                let mut probes = Probes::default();
                probes.intervene(site, intervention.clone());
                run_probes(model, &PROMPT, &mut probes).unwrap().to_vec_f32().unwrap()
            };
            assert_close(what, &run(&gpu), &run(&cpu));
        }
        assert_close("logit lens", &lens_probabilities(&gpu), &lens_probabilities(&cpu));
        for pooling in [Pooling::Last, Pooling::Mean] {
            let (want, labels) = linear_features(&cpu, pooling);
            let (got, _) = linear_features(&gpu, pooling);
            let flat = |f: &[Vec<Vec<f32>>]| f.iter().flatten().flatten().copied().collect::<Vec<f32>>();
            assert_close(&format!("linear features, {pooling:?}"), &flat(&got), &flat(&want));
            let names: Vec<String> = probed_sites(3).iter().map(|s| s.to_string()).collect();
            let accuracies = |f: &[Vec<Vec<f32>>]| {
                let probes = probe_layers(f, &labels, &names, 0).unwrap();
                probes.iter().map(|p| (p.train_accuracy, p.held_out_accuracy)).collect::<Vec<_>>()
            };
            assert_eq!(accuracies(&got), accuracies(&want), "linear probes, {pooling:?}");
        }
        let other = [9, 3, 77, 12, 1];
        let report = |model: &Model| patch(model, (&PROMPT, &other), 5, true).unwrap();
        assert_close("patch", &patch_numbers(&report(&gpu)), &patch_numbers(&report(&cpu)));
    }
}

scotd::gpu_tests! {
    /// In bf16 the probes still leave the forward alone: recording changes no logit, and a
    /// site or head patched with its own recorded value (read back to the host and put
    /// back as bf16) changes nothing.
    fn bf16_probes_record_and_patch_without_changing_the_forward(device: Device) {
        let model = model().to_device(device, DType::BF16).unwrap();
        let plain = logits(&model, &mut Probes::default());
        let mut recording = Probes::recording(every_site(3));
        assert_eq!(logits(&model, &mut recording), plain);
        for (site, head) in [
            (Site::layer(SiteKind::ResidPost, 1), None),
            (Site::layer(SiteKind::AttnHeads, 2), Some(1)),
        ] {
            let value = recording.recorded[&site].clone();
            assert_eq!(value.dtype(), DType::BF16, "{site}");
            let mut probes = Probes::default();
            probes.intervene(site, Intervention::Replace { value, head });
            assert_eq!(logits(&model, &mut probes), plain, "{site} head {head:?}");
        }
    }
}

/// A tiny random Qwen2 with the fixture tokenizer (ChatML, `<think>`), as a checkpoint
/// folder the CLI can load.
fn tiny_checkpoint() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
        "vocab_size": 335, "tie_word_embeddings": true}"#;
    common::random_model(json, 4).save(dir.path()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(common::fixture("tokenizer").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn scotd(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scotd {args:?} failed:\n{text}");
    text
}

fn png_size(path: &std::path::Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
    (img.width(), img.height())
}

#[test]
fn every_probe_command_runs_end_to_end_on_a_tiny_model() {
    every_probe_command_runs_on("cpu");
}

#[test]
fn every_probe_command_runs_end_to_end_on_the_emulator() {
    every_probe_command_runs_on("emulator");
}

/// Each `scotd probe` command on a tiny checkpoint with `--device device`, its files checked.
fn every_probe_command_runs_on(device: &str) {
    let scotd = |args: &[&str]| scotd(&[args, &["--device", device]].concat());
    let ckpt = tiny_checkpoint();
    let model = ckpt.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let at = |name: &str| out.path().join(name);
    let dir = |name: &str| at(name).to_str().unwrap().to_string();
    let prompts = common::fixture("data/gsm8k_test40.jsonl");
    let prompts = prompts.to_str().unwrap();

    scotd(&[
        "probe",
        "record",
        "--model",
        model,
        "--prompts",
        prompts,
        "--sites",
        "resid_post.1,attn_probs.0,logits",
        "--out",
        &dir("rec"),
    ]);
    let index: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(at("rec/index.json")).unwrap()).unwrap();
    // 40 prompts × (1 resid_post + 4 heads of attn_probs + logits).
    assert_eq!(index.len(), 40 * 6);
    let probs = index
        .iter()
        .find(|e| e["site"] == "attn_probs" && e["head"] == 3)
        .unwrap();
    let t = probs["tokens"].as_array().unwrap().len();
    assert_eq!(probs["shape"], serde_json::json!([t, t]));
    let file = std::fs::read(at("rec/activations.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&file).unwrap();
    assert_eq!(tensors.len(), index.len());

    scotd(&[
        "probe",
        "attention",
        "--model",
        model,
        "--prompt",
        "What is 2 + 3?",
        "--layers",
        "1",
        "--out",
        &dir("att"),
    ]);
    assert!(png_size(&at("att/layer01_head03.png")).0 >= 200);

    let lens = scotd(&[
        "probe",
        "logit-lens",
        "--model",
        model,
        "--prompt",
        "What is 2 + 3?",
        "--out",
        &dir("lens"),
    ]);
    assert!(lens.contains("| 1 |"), "{lens}");
    assert!(png_size(&at("lens/lens.png")).0 >= 200);

    let alpaca = common::fixture("data/alpaca_instructions30.jsonl");
    scotd(&[
        "probe",
        "linear",
        "--model",
        model,
        "--a",
        prompts,
        "--b",
        alpaca.to_str().unwrap(),
        "--limit",
        "12",
        "--out",
        &dir("linear"),
    ]);
    let probes: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(at("linear/linear.json")).unwrap()).unwrap();
    assert_eq!(probes.len(), 3);
    assert_eq!(probes[0]["site"], "resid_pre.0");
    assert!(png_size(&at("linear/linear.png")).0 >= 200);

    let patch = scotd(&[
        "probe",
        "patch",
        "--model",
        model,
        "--prompt-a",
        "Hello!",
        "--prompt-b",
        "What is 17 * 3?",
        "--heads",
        "--out",
        &dir("patch"),
    ]);
    assert!(patch.contains("head 3"), "{patch}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(at("patch/patch.json")).unwrap()).unwrap();
    // Both prompts end with the template's `assistant` line, so the residual stream entering
    // layer 0 at the last position (the embedding of the same token) patches nothing.
    let patched = report["patched"].as_array().unwrap();
    assert_eq!(patched.len(), 3);
    assert_eq!(patched[0][0], report["probability_a"]);
    assert!(png_size(&at("patch/patch.png")).1 >= 200);
}

#[test]
fn bad_probe_input_is_a_clear_error() {
    let ckpt = tiny_checkpoint();
    let model = ckpt.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_scotd"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let err = run(&[
        "probe",
        "record",
        "--model",
        model,
        "--prompts",
        "no/such.jsonl",
        "--out",
        o,
    ]);
    assert!(err.contains("no/such.jsonl"), "{err}");
    let bad = common::fixture("data/messages.jsonl");
    let err = run(&[
        "probe",
        "record",
        "--model",
        model,
        "--prompts",
        bad.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(
        err.contains("messages.jsonl:1:") && err.contains("\"question\""),
        "{err}"
    );
    let prompts = common::fixture("data/gsm8k_test40.jsonl");
    let err = run(&[
        "probe",
        "record",
        "--model",
        model,
        "--prompts",
        prompts.to_str().unwrap(),
        "--sites",
        "resid_post.9",
        "--out",
        o,
    ]);
    assert!(err.contains("out of range"), "{err}");
    let err = run(&[
        "probe",
        "logit-lens",
        "--model",
        model,
        "--prompt",
        "  ",
        "--out",
        o,
    ]);
    assert!(err.contains("empty"), "{err}");
    let err = run(&[
        "probe",
        "patch",
        "--model",
        model,
        "--prompt-a",
        "a",
        "--prompt-b",
        "b",
        "--token",
        "<nope>",
        "--out",
        o,
    ]);
    assert!(err.contains("<nope>"), "{err}");
}

/// The real SmolLM2-135M-Instruct separates GSM8K questions from Alpaca instructions with a
/// linear probe on a small committed set (the pipeline end to end; the finding on 200 + 200
/// prompts is in docs/probes.md).
#[test]
fn a_linear_probe_separates_math_from_chat_in_smollm2() {
    let dir = common::real_model_dir("smollm2-135m-instruct");
    let model = scotd::model::Model::load(&dir).unwrap();
    let tokenizer = scotd::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let prompter = scotd::sample::Prompter::new(&tokenizer, None, None, None).unwrap();
    let read = |f: &str| scotd::probe::record::read_prompts(&common::fixture(f)).unwrap();
    let (math, chat) = (
        read("data/gsm8k_test40.jsonl"),
        read("data/alpaca_instructions30.jsonl"),
    );
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (label, set) in [(true, &math[..24]), (false, &chat[..24])] {
        for prompt in set {
            let ids = prompter.message_ids(&tokenizer, prompt).unwrap();
            let pooled = scotd::probe::linear::residual_features(
                &model,
                &ids,
                scotd::probe::linear::Pooling::Last,
            );
            features.push(pooled.unwrap());
            labels.push(label);
        }
    }
    let sites: Vec<String> = scotd::probe::linear::probed_sites(30)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let probes = scotd::probe::linear::probe_layers(&features, &labels, &sites, 0).unwrap();
    assert_eq!(probes.len(), 31);
    // The control: every prompt ends with the same template token, so its embedding
    // cannot separate the sets (the held-out third's majority at best).
    assert!(probes[0].held_out_accuracy < 0.7, "{probes:?}");
    let best = probes
        .iter()
        .map(|p| p.held_out_accuracy)
        .fold(0.0, f64::max);
    assert!(best > 0.9, "{probes:?}");
}
