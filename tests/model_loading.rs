//! Loading checkpoints: round trips, sharded indexes, and bad files that must give an
//! error naming the file and the tensor, never a panic.

mod common;

use std::path::Path;

use scotd::model::{Batch, Model, ModelConfig};
use scotd::{DType, Device, Tensor};

fn tiny_config(tied: bool) -> ModelConfig {
    let json = format!(
        r#"{{"model_type": "qwen2", "hidden_size": 24, "num_hidden_layers": 2,
            "num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 40,
            "vocab_size": 37, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": {tied}}}"#
    );
    ModelConfig::from_json(&json, Path::new("inline.json")).unwrap()
}

fn saved_model(tied: bool) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::random(tiny_config(tied), 7);
    model.save(dir.path()).unwrap();
    (dir, model)
}

fn logits(model: &Model) -> Vec<f32> {
    let _g = scotd::autograd::no_grad();
    let batch = Batch::new((0..10).map(|i| (i * 5) % 37).collect(), 2, 5).unwrap();
    model.forward(&batch).unwrap().to_vec_f32().unwrap()
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites the JSON header of a safetensors file with `edit`, keeping the data.
fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut new_header = serde_json::to_vec(&header).unwrap();
    while !new_header.len().is_multiple_of(8) {
        new_header.push(b' ');
    }
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn save_then_load_gives_the_same_logits() {
    for tied in [true, false] {
        let (dir, model) = saved_model(tied);
        let loaded = Model::load(dir.path()).unwrap();
        assert_eq!(loaded.config, model.config);
        assert_eq!(logits(&loaded), logits(&model));
    }
}

/// Writes `params` into `dir` as two safetensors shards and the index naming them.
fn save_two_shards(dir: &Path, params: &[(String, Tensor)]) {
    let (first, second) = params.split_at(params.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        scotd::model::save_safetensors(&dir.join(file), part).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let (dir, model) = saved_model(false);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    save_two_shards(dir.path(), &model.parameters());
    assert_eq!(logits(&Model::load(dir.path()).unwrap()), logits(&model));
}

/// Every parameter's name, device, dtype and stored bytes.
fn placed_bits(model: &Model) -> Vec<(String, Device, DType, Vec<u8>)> {
    model
        .parameters()
        .into_iter()
        .map(|(name, t)| {
            let bytes = t.host_storage().unwrap().to_le_bytes();
            (name, t.device(), t.dtype(), bytes)
        })
        .collect()
}

/// The golden tiny Qwen2 (f32, one file), and the golden tiny untied Llama stored in bf16
/// as two shards.
fn checkpoints_to_place() -> Vec<(&'static str, tempfile::TempDir)> {
    let qwen2 = tempfile::tempdir().unwrap();
    let golden = common::fixture("golden/qwen2_tied");
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(golden.join(file), qwen2.path().join(file)).unwrap();
    }
    let llama = tempfile::tempdir().unwrap();
    let golden = common::fixture("golden/llama_untied");
    std::fs::copy(golden.join("config.json"), llama.path().join("config.json")).unwrap();
    let bf16: Vec<(String, Tensor)> = Model::load(&golden)
        .unwrap()
        .parameters()
        .into_iter()
        .map(|(name, t)| (name, t.to_dtype(DType::BF16).unwrap()))
        .collect();
    save_two_shards(llama.path(), &bf16);
    vec![
        ("f32 qwen2, one file", qwen2),
        ("bf16 llama, two shards", llama),
    ]
}

scotd::gpu_tests! {
    /// Loading straight onto a GPU device, tensor by tensor, places the bits that loading
    /// on the host and moving the model would.
    fn load_on_places_the_bits_of_load_then_to_device(device: Device) {
        for (what, dir) in checkpoints_to_place() {
            for dtype in [DType::F32, DType::BF16] {
                let placed = Model::load_on(dir.path(), device, dtype).unwrap();
                let moved = Model::load(dir.path())
                    .unwrap()
                    .to_device(device, dtype)
                    .unwrap();
                let bits = placed_bits(&placed);
                assert!(
                    bits.iter().all(|(_, d, t, _)| (*d, *t) == (device, dtype)),
                    "{what}, {dtype:?}: a parameter is elsewhere or in another dtype"
                );
                assert!(bits == placed_bits(&moved), "{what}, {dtype:?}: the bits differ");
            }
        }
    }
}

#[test]
fn load_on_the_cpu_is_load_in_f32_and_load_for_inference_in_bf16() {
    for (what, dir) in checkpoints_to_place() {
        let f32 = Model::load_on(dir.path(), Device::Cpu, DType::F32).unwrap();
        assert!(
            placed_bits(&f32) == placed_bits(&Model::load(dir.path()).unwrap()),
            "{what}: f32"
        );
        let bf16 = Model::load_on(dir.path(), Device::Cpu, DType::BF16).unwrap();
        let kept = Model::load_for_inference(dir.path()).unwrap();
        assert!(placed_bits(&bf16) == placed_bits(&kept), "{what}: bf16");
    }
    let (_, bf16_llama) = checkpoints_to_place().pop().unwrap();
    let model = Model::load_on(bf16_llama.path(), Device::Cpu, DType::BF16).unwrap();
    assert_eq!(model.layers[0].q_proj.weight.dtype(), DType::BF16);
    assert_eq!(model.norm.dtype(), DType::F32);
}

#[test]
fn load_on_refuses_f16() {
    let (dir, _) = saved_model(true);
    for device in [Device::Cpu, Device::Emulator] {
        let err = Model::load_on(dir.path(), device, DType::F16)
            .err()
            .expect("f16 is no compute dtype")
            .to_string();
        assert!(
            err.contains("load_on") && err.contains("F32 or BF16"),
            "{err}"
        );
    }
}

#[test]
fn a_folder_in_place_of_the_weights_and_a_byte_order_mark_are_handled() {
    let (dir, model) = saved_model(true);
    let config = dir.path().join("config.json");
    let mut text = b"\xEF\xBB\xBF".to_vec();
    text.extend(std::fs::read(&config).unwrap());
    std::fs::write(&config, text).unwrap();
    assert_eq!(logits(&Model::load(dir.path()).unwrap()), logits(&model));
    let weights = dir.path().join("model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    std::fs::create_dir(&weights).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("is a folder"),
        "{err}"
    );
}

#[test]
fn truncated_file_names_the_file() {
    let (dir, _) = saved_model(true);
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn header_that_lies_about_sizes_names_the_tensor() {
    let (dir, _) = saved_model(true);
    let path = dir.path().join("model.safetensors");
    edit_header(&path, |h| {
        h["model.norm.weight"]["shape"] = serde_json::json!([25])
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("model.norm.weight"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let (dir, model) = saved_model(true);
    let params: Vec<_> = model
        .parameters()
        .into_iter()
        .filter(|(n, _)| n != "model.layers.1.mlp.up_proj.weight")
        .collect();
    scotd::model::save_safetensors(&dir.path().join("model.safetensors"), &params).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn shape_disagreeing_with_config_is_named() {
    let (dir, _) = saved_model(true);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    config["intermediate_size"] = 41.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("mlp.gate_proj.weight") && err.contains("disagrees with config.json"),
        "{err}"
    );
}

#[test]
fn unsupported_and_unknown_dtypes_are_errors() {
    let (dir, _) = saved_model(true);
    let path = dir.path().join("model.safetensors");
    // I32 has the same width as F32, so the header stays consistent.
    edit_header(&path, |h| h["model.norm.weight"]["dtype"] = "I32".into());
    let err = load_err(dir.path());
    assert!(
        err.contains("model.norm.weight") && err.contains("I32") && err.contains("expected F32"),
        "{err}"
    );

    edit_header(&path, |h| h["model.norm.weight"]["dtype"] = "Q4_K".into());
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("Q4_K"),
        "{err}"
    );
}

#[test]
fn bf16_and_f16_checkpoints_are_upcast() {
    let (dir, model) = saved_model(false);
    for dtype in [scotd::DType::BF16, scotd::DType::F16] {
        let params: Vec<_> = model
            .parameters()
            .into_iter()
            .map(|(n, t)| (n, t.to_dtype(dtype).unwrap()))
            .collect();
        scotd::model::save_safetensors(&dir.path().join("model.safetensors"), &params).unwrap();
        let loaded = Model::load(dir.path()).unwrap();
        let (a, b) = (logits(&loaded), logits(&model));
        let max_diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(max_diff < 1e-2, "{dtype:?}: {max_diff}");
        assert!(max_diff > 0.0, "{dtype:?} rounding should change something");
    }
}

#[test]
fn bad_config_fields_are_named() {
    let cases = [
        (r#"{"model_type": "gpt2"}"#, "model_type"),
        (
            r#"{"model_type": "llama", "hidden_size": "big"}"#,
            "hidden_size",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 24, "num_attention_heads": 6, "num_key_value_heads": 4}"#,
            "num_key_value_heads",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 24, "num_attention_heads": 6, "num_hidden_layers": 1}"#,
            "intermediate_size",
        ),
        (
            r#"{"model_type": "llama", "rope_scaling": {"type": "yarn"}}"#,
            "rope_scaling",
        ),
        ("[1, 2]", "(json)"),
        // Past f32 (it would become infinity) and below f32's smallest (zero).
        (
            r#"{"model_type": "llama", "rope_parameters": {"rope_theta": 1e39}}"#,
            "rope_parameters.rope_theta",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 24, "num_attention_heads": 6, "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 10, "rms_norm_eps": 1e-50}"#,
            "rms_norm_eps",
        ),
    ];
    for (json, field) in cases {
        let err = ModelConfig::from_json(json, Path::new("/x/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/x/config.json") && err.contains(field),
            "{json}: {err}"
        );
    }
}

#[test]
fn missing_checkpoint_folder_is_an_io_error_naming_the_path() {
    let err = load_err(Path::new("/nonexistent/scotd-model"));
    assert!(
        err.contains("/nonexistent/scotd-model/config.json"),
        "{err}"
    );
}

/// Sizes past any real checkpoint are refused with the field and the limit (a fuzzed
/// config of 77 trillion layers once sized a layout until memory ran out).
#[test]
fn sizes_past_any_real_model_are_refused() {
    let json = r#"{"model_type": "llama", "hidden_size": 56, "num_hidden_layers": 77777777777771,
        "num_attention_heads": 7, "intermediate_size": 90, "vocab_size": 103}"#;
    let err = ModelConfig::from_json(json, Path::new("c.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("num_hidden_layers") && err.contains("past the largest supported"),
        "{err}"
    );
}
