//! What each fuzz target (fuzz/, run by tools/fuzz.sh with AFL++) does with one input:
//! hand the bytes to a reader of untrusted input. An error is a correct answer to bad
//! input; a panic, an abort, a hang or unbounded memory is a bug. The regression test
//! (tests/fuzz_regressions.rs) replays every input the fuzzer ever found through these
//! same functions.

use std::path::{Path, PathBuf};

use crate::data::{read_questions, read_rows, BadLines, DataFormat, ReasoningFormat};
use crate::model::{parameter_specs, ModelConfig, Weights};
use crate::tokenizer::{ChatTemplate, Message};

/// A safetensors file: its header parsed, then every tensor a Qwen2/Llama layer names
/// read as stored.
pub fn safetensors(data: &[u8]) {
    let path = scratch_file("model.safetensors", data);
    if let Ok(weights) = Weights::open_file(&path) {
        for name in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
        ] {
            let _ = weights.read_as_stored(name);
        }
    }
}

/// A config.json: parsed, and the parameter layout it implies computed.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = ModelConfig::from_json(&text, Path::new("config.json")) {
        let _ = parameter_specs(&config);
    }
}

/// A dataset file, read as every format (bad lines skipped, as a training run may) and as
/// questions with gold answers.
pub fn datasets(data: &[u8]) {
    let path = scratch_file("rows.jsonl", data);
    let formats = [
        DataFormat::Gsm8k,
        DataFormat::Alpaca,
        DataFormat::Messages,
        DataFormat::Traces,
    ];
    for format in formats {
        let _ = read_rows(
            &path,
            format,
            &ReasoningFormat::default(),
            Some("sys"),
            BadLines::Skip,
        );
    }
    let _ = read_questions(&path);
}

/// A chat template and a message: the bytes up to the first 0 are a Jinja template's
/// source, the rest a user message rendered through it and through the built-in ones.
pub fn chat_template(data: &[u8]) {
    let (source, content) = split_at_byte(data, 0);
    let messages = [Message::new("system", "s"), Message::new("user", content)];
    let jinja = ChatTemplate::Jinja {
        source,
        bos_token: "<s>".into(),
        eos_token: "</s>".into(),
    };
    for template in [
        jinja,
        ChatTemplate::ChatMl,
        ChatTemplate::DeepSeek,
        ChatTemplate::Raw,
    ] {
        let _ = template.render(&messages, true);
    }
}

/// A gold answer and a model's output, split at the first newline: the verdict both ways.
pub fn verifier(data: &[u8]) {
    let (gold, output) = split_at_byte(data, b'\n');
    let _ = crate::verify::verdict(&gold, &output);
    let _ = crate::verify::compare(&output, &gold);
}

fn split_at_byte(data: &[u8], byte: u8) -> (String, String) {
    let at = data.iter().position(|&b| b == byte).unwrap_or(data.len());
    let rest = data.get(at + 1..).unwrap_or(&[]);
    (
        String::from_utf8_lossy(&data[..at]).into_owned(),
        String::from_utf8_lossy(rest).into_owned(),
    )
}

/// `data` written to `name` in this process's scratch folder (the readers take paths).
fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scotd-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the temporary folder is writable");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("the temporary folder is writable");
    path
}
