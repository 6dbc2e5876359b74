//! save_checkpoint writes what transformers writes: the same tensor names, shapes and
//! dtypes, and the same config values, as the fixture that transformers' own
//! save_pretrained produced (tools/make_checkpoint_fixture.py); the saved folder loads
//! back with the same logits, replaces an older one atomically, and carries the
//! tokenizer. The last test does the same for the real SmolLM2.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use scotd::autograd::no_grad;
use scotd::model::{save_checkpoint, Batch, Model, ModelConfig};
use scotd::tokenizer::Tokenizer;
use scotd::DType;
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_case(name: &str) -> Value {
    let fixture = read_json(&common::fixture("checkpoint/hf_layout.json"));
    fixture["cases"][name].clone()
}

/// A golden model's config.json (written by transformers), with edits.
fn golden_config(case: &str, edit: impl FnOnce(&mut Value)) -> ModelConfig {
    let path = common::fixture(&format!("golden/{case}/config.json"));
    let mut json = read_json(&path);
    edit(&mut json);
    ModelConfig::from_json(&json.to_string(), &path).unwrap()
}

fn qwen2_tied() -> ModelConfig {
    golden_config("qwen2_tied", |_| {})
}

fn llama_untied() -> ModelConfig {
    golden_config("llama_untied", |_| {})
}

/// The Qwen2 shape with room for the tokenizer fixture's 335 tokens.
fn qwen2_for_tokenizer() -> ModelConfig {
    golden_config("qwen2_tied", |c| c["vocab_size"] = 335.into())
}

/// {name: {"shape", "dtype"}} from a safetensors file's JSON header.
fn tensor_layout(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: BTreeMap<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(
        header["__metadata__"]["format"], "pt",
        "transformers needs format=pt"
    );
    let layout = header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let entry = serde_json::json!({"shape": info["shape"], "dtype": info["dtype"]});
            (name, entry)
        });
    Value::Object(layout.collect())
}

/// Our folder against transformers' for one fixture case.
fn assert_matches_transformers(dir: &Path, case: &str) {
    let want = fixture_case(case);
    assert_eq!(
        tensor_layout(&dir.join("model.safetensors")),
        want["tensors"],
        "{case}: tensor names, shapes or dtypes differ from transformers'"
    );
    let config = read_json(&dir.join("config.json"));
    for (key, value) in want["config"].as_object().unwrap() {
        assert_eq!(&config[key], value, "{case}: config.json {key}");
    }
    assert_eq!(
        read_json(&dir.join("generation_config.json")),
        want["generation_config"],
        "{case}: generation_config.json"
    );
}

fn last_logits(model: &Model) -> Vec<f32> {
    let _g = no_grad();
    let vocab = model.config.vocab_size as u32;
    let ids: Vec<u32> = (0..14).map(|i| (i * 37 + 5) % vocab).collect();
    let batch = Batch::new(ids, 2, 7).unwrap();
    model.forward(&batch).unwrap().to_vec_f32().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn layout_and_configs_match_transformers() {
    let cases = [
        ("qwen2_tied", qwen2_tied()),
        ("llama_untied", llama_untied()),
    ];
    for (name, config) in cases {
        let model = Model::random(config, 3);
        for (dtype, dtype_name) in [(DType::F32, "float32"), (DType::BF16, "bfloat16")] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("ckpt");
            save_checkpoint(&model, None, &dir, dtype).unwrap();
            assert_matches_transformers(&dir, &format!("{name}_{dtype_name}"));
        }
    }
}

#[test]
fn tied_models_store_no_lm_head() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    save_checkpoint(&Model::random(qwen2_tied(), 1), None, &dir, DType::F32).unwrap();
    let layout = tensor_layout(&dir.join("model.safetensors"));
    assert!(layout.get("lm_head.weight").is_none());
    assert!(layout.get("model.embed_tokens.weight").is_some());
}

#[test]
fn f32_reloads_with_identical_logits() {
    for config in [qwen2_tied(), llama_untied()] {
        let model = Model::random(config, 11);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ckpt");
        save_checkpoint(&model, None, &dir, DType::F32).unwrap();
        let reloaded = Model::load(&dir).unwrap();
        assert_eq!(reloaded.config, model.config);
        assert_eq!(last_logits(&reloaded), last_logits(&model));
    }
}

#[test]
fn bf16_reloads_with_rounded_weights_and_close_logits() {
    for config in [qwen2_tied(), llama_untied()] {
        let model = Model::random(config, 12);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ckpt");
        save_checkpoint(&model, None, &dir, DType::BF16).unwrap();
        let reloaded = Model::load(&dir).unwrap();
        for ((name, ours), (_, back)) in model.parameters().iter().zip(reloaded.parameters()) {
            let rounded = ours
                .to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            assert_eq!(
                back.to_vec_f32().unwrap(),
                rounded.to_vec_f32().unwrap(),
                "{name}"
            );
        }
        let (want, got) = (last_logits(&model), last_logits(&reloaded));
        let relative = max_abs_diff(&want, &got) / max_abs(&want);
        assert!(relative < 2e-2, "bf16 logits differ by {relative} relative");
    }
}

/// Names in `dir` other than the ones given: leftover temporary folders.
fn other_entries(dir: &Path, expected: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !expected.contains(&name.as_str()))
        .collect()
}

#[test]
fn saving_again_replaces_the_whole_folder_and_leaves_no_temporary_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    save_checkpoint(&Model::random(llama_untied(), 1), None, &dir, DType::F32).unwrap();
    std::fs::write(dir.join("stale.txt"), "from the old folder").unwrap();

    let newer = Model::random(qwen2_tied(), 2);
    save_checkpoint(&newer, None, &dir, DType::BF16).unwrap();
    assert!(
        !dir.join("stale.txt").exists(),
        "the old folder was not replaced"
    );
    assert_eq!(read_json(&dir.join("config.json"))["model_type"], "qwen2");
    assert_eq!(other_entries(tmp.path(), &["ckpt"]), Vec::<String>::new());
}

#[test]
fn a_failed_save_keeps_the_old_folder_and_leaves_no_temporary_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let model = Model::random(qwen2_for_tokenizer(), 1);
    save_checkpoint(&model, None, &dir, DType::F32).unwrap();
    let before = std::fs::read(dir.join("model.safetensors")).unwrap();

    // A tokenizer folder whose special_tokens_map.json cannot be read: the save fails
    // while copying it, after the weights are written into the temporary folder.
    let source = tmp.path().join("tokenizer");
    std::fs::create_dir(&source).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(common::fixture("tokenizer").join(name), source.join(name)).unwrap();
    }
    std::fs::create_dir(source.join("special_tokens_map.json")).unwrap();
    let err = save_checkpoint(&model, Some(&source), &dir, DType::BF16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("special_tokens_map.json"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        before
    );
    assert_eq!(
        other_entries(tmp.path(), &["ckpt", "tokenizer"]),
        Vec::<String>::new()
    );
}

#[test]
fn a_tokenizer_bigger_than_the_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    // The tokenizer fixture has 335 tokens, more than this model's 101.
    let model = Model::random(qwen2_tied(), 1);
    let err = save_checkpoint(
        &model,
        Some(&common::fixture("tokenizer")),
        &dir,
        DType::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("vocab_size 101"),
        "{err}"
    );
    assert!(!dir.exists());
}

#[test]
fn a_file_in_the_way_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ckpt");
    std::fs::write(&path, "not a folder").unwrap();
    let err = save_checkpoint(&Model::random(qwen2_tied(), 1), None, &path, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ckpt") && err.contains("is a file"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a folder");
    assert_eq!(other_entries(tmp.path(), &["ckpt"]), Vec::<String>::new());
}

#[test]
fn tokenizer_files_and_special_ids_are_carried_over() {
    let source = common::fixture("tokenizer");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let model = Model::random(qwen2_for_tokenizer(), 4);
    save_checkpoint(&model, Some(&source), &dir, DType::F32).unwrap();

    assert_matches_transformers(&dir, "qwen2_tokens_float32");
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            std::fs::read(source.join(name)).unwrap(),
            "{name}"
        );
    }
    let (ours, theirs) = (
        Tokenizer::from_dir(&dir).unwrap(),
        Tokenizer::from_dir(&source).unwrap(),
    );
    assert_eq!(ours.eos_ids(), theirs.eos_ids());
    assert_eq!(ours.pad_id(), theirs.pad_id());
    assert_eq!(
        ours.encode("The answer is 42.", true).unwrap(),
        theirs.encode("The answer is 42.", true).unwrap()
    );
    assert!(ours.chat_template().is_some());
    assert_eq!(
        last_logits(&Model::load(&dir).unwrap()),
        last_logits(&model)
    );
}

/// The real SmolLM2-135M-Instruct, saved with its tokenizer in f32 and bf16, loads back
/// with the same logits (f32) or close ones (bf16). With SCOTD_KEEP_CHECKPOINTS=DIR the
/// folders stay in DIR/smollm2-{f32,bf16} for tools/check_checkpoint_with_transformers.py.
#[test]
fn real_smollm2_saves_and_reloads() {
    let source = common::real_model_dir("smollm2-135m-instruct");
    let model = Model::load(&source).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = std::env::var_os("SCOTD_KEEP_CHECKPOINTS")
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let want = last_logits(&model);
    for (dtype, name, tolerance) in [(DType::F32, "f32", 0.0), (DType::BF16, "bf16", 5e-2)] {
        let dir = out.join(format!("smollm2-{name}"));
        save_checkpoint(&model, Some(&source), &dir, dtype).unwrap();
        let got = last_logits(&Model::load(&dir).unwrap());
        let relative = max_abs_diff(&want, &got) / max_abs(&want);
        assert!(relative <= tolerance, "{name}: logits differ by {relative}");
        let generation = read_json(&dir.join("generation_config.json"));
        assert_eq!(generation["eos_token_id"], serde_json::json!([2]));
        assert_eq!(generation["bos_token_id"], 1);
        assert!(dir.join("tokenizer.json").is_file());
    }
}
