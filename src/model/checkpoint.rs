//! Saving a model as a Hugging Face checkpoint folder that transformers loads as one of
//! its own: config.json, model.safetensors (f32 or bf16), generation_config.json and the
//! tokenizer files, the whole folder written atomically. The layout is checked against
//! what transformers itself writes (tests/fixtures/checkpoint/hf_layout.json).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{save_safetensors, Model};
use crate::io::{write_atomic, write_dir_atomic};
use crate::tokenizer::Tokenizer;
use crate::{DType, Error, Result, Tensor};

/// The tokenizer files AutoTokenizer reads. tokenizer.json is required (checked when
/// the tokenizer is loaded); the others are copied when present.
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
];

/// Writes `model` into the folder `dir` as transformers' `save_pretrained` would, with
/// its weights stored as `dtype`. Tied models store no `lm_head.weight`, as in
/// transformers.
///
/// `tokenizer_dir` is the folder the tokenizer comes from (usually the checkpoint the
/// model was loaded from): its tokenizer files are copied, its special token ids go into
/// config.json and generation_config.json, and its generation_config.json's other
/// settings (sampling defaults) are kept. Its vocabulary must fit the model's.
///
/// The folder appears whole or not at all; an existing folder at `dir` is replaced.
pub fn save_checkpoint(
    model: &Model,
    tokenizer_dir: Option<&Path>,
    dir: &Path,
    dtype: DType,
) -> Result<()> {
    let ids = match tokenizer_dir {
        Some(source) => SpecialIds::read(source, model.config.vocab_size)?,
        None => SpecialIds::default(),
    };
    let config = model_config_json(model, dtype, &ids);
    let generation = generation_config_json(tokenizer_dir, &ids)?;
    let tensors = model
        .parameters()
        .into_iter()
        .map(|(name, t)| {
            // Parameters are f32 already: converting would only copy them.
            let stored = if t.dtype() == dtype {
                t
            } else {
                t.to_dtype(dtype)?
            };
            Ok((name, stored))
        })
        .collect::<Result<Vec<(String, Tensor)>>>()?;
    write_dir_atomic(dir, |staging| {
        write_json(&staging.join("config.json"), &config)?;
        write_json(&staging.join("generation_config.json"), &generation)?;
        save_safetensors(&staging.join("model.safetensors"), &tensors)?;
        match tokenizer_dir {
            Some(source) => copy_tokenizer_files(source, staging),
            None => Ok(()),
        }
    })
}

/// The name transformers gives a dtype in config.json.
fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
    }
}

/// The special token ids a checkpoint's configs carry.
#[derive(Default)]
struct SpecialIds {
    bos: Option<u32>,
    /// Every id that ends generation, the preferred one first.
    eos: Vec<u32>,
    pad: Option<u32>,
}

impl SpecialIds {
    /// From a tokenizer folder: the EOS ids scotd itself stops at (generation_config.json,
    /// config.json, then tokenizer_config.json's eos_token); bos and pad as
    /// generation_config.json or config.json give them, else tokenizer_config.json's.
    fn read(dir: &Path, model_vocab_size: usize) -> Result<SpecialIds> {
        let tokenizer = Tokenizer::from_dir(dir)?;
        if tokenizer.vocab_size() > model_vocab_size {
            return Err(Error::format(
                dir.join("tokenizer.json"),
                "(vocabulary)",
                format!(
                    "{} tokens, more than the model's vocab_size {model_vocab_size}: \
                     not this model's tokenizer",
                    tokenizer.vocab_size()
                ),
            ));
        }
        let configs = [
            read_json_object(&dir.join("generation_config.json"))?,
            read_json_object(&dir.join("config.json"))?,
        ];
        let from_configs = |field: &str| -> Result<Option<u32>> {
            for (path, obj) in configs.iter().flatten() {
                if let Some(id) = token_id(path, obj, field, model_vocab_size)? {
                    return Ok(Some(id));
                }
            }
            Ok(None)
        };
        Ok(SpecialIds {
            bos: from_configs("bos_token_id")?.or(tokenizer.bos_id()),
            eos: tokenizer.eos_ids().to_vec(),
            pad: from_configs("pad_token_id")?.or(tokenizer.pad_id()),
        })
    }
}

/// A JSON object file with its path, or None when the file does not exist.
fn read_json_object(path: &Path) -> Result<Option<(PathBuf, Map<String, Value>)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(obj)) => Ok(Some((path.to_path_buf(), obj))),
        Ok(_) => Err(Error::format(path, "(json)", "expected a JSON object")),
        Err(e) => Err(Error::format(path, "(json)", e.to_string())),
    }
}

/// A single token id field (null or absent: None), checked against the vocabulary.
fn token_id(
    path: &Path,
    obj: &Map<String, Value>,
    field: &str,
    vocab_size: usize,
) -> Result<Option<u32>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < vocab_size => Ok(Some(id as u32)),
            _ => Err(Error::format(
                path,
                field,
                format!("expected a token id below the model's vocab_size {vocab_size}, got {v}"),
            )),
        },
    }
}

/// config.json: the model's shape, the stored dtype and the special ids. Like
/// transformers, it names unknown ids as null and holds one EOS id (the list goes into
/// generation_config.json).
fn model_config_json(model: &Model, dtype: DType, ids: &SpecialIds) -> Value {
    let mut config = model.config.to_hf_json();
    let dtype = Value::from(torch_dtype_name(dtype));
    config["dtype"] = dtype.clone();
    config["torch_dtype"] = dtype;
    config["bos_token_id"] = ids.bos.into();
    config["eos_token_id"] = ids.eos.first().copied().into();
    config["pad_token_id"] = ids.pad.into();
    config
}

/// generation_config.json: the tokenizer folder's own when it has one (keeping its
/// sampling defaults), else the one transformers derives from a model config; either
/// way with the special ids, absent ones left out as transformers leaves them out.
fn generation_config_json(tokenizer_dir: Option<&Path>, ids: &SpecialIds) -> Result<Value> {
    let source = match tokenizer_dir {
        Some(dir) => read_json_object(&dir.join("generation_config.json"))?,
        None => None,
    };
    let mut config = match source {
        Some((_, obj)) => obj,
        None => derived_generation_config(),
    };
    // It names the transformers version that wrote the source file, not this one.
    config.remove("transformers_version");
    let eos = (!ids.eos.is_empty()).then(|| Value::from(ids.eos.clone()));
    set_or_remove(&mut config, "bos_token_id", ids.bos.map(Value::from));
    set_or_remove(&mut config, "eos_token_id", eos);
    set_or_remove(&mut config, "pad_token_id", ids.pad.map(Value::from));
    Ok(Value::Object(config))
}

/// What transformers' save_pretrained writes for a model without generation settings.
fn derived_generation_config() -> Map<String, Value> {
    let Value::Object(obj) = serde_json::json!({
        "_from_model_config": true,
        "output_attentions": false,
        "output_hidden_states": false,
        "use_cache": true,
    }) else {
        unreachable!("a JSON object literal")
    };
    obj
}

fn set_or_remove(obj: &mut Map<String, Value>, field: &str, value: Option<Value>) {
    match value {
        Some(v) => obj.insert(field.to_string(), v),
        None => obj.remove(field),
    };
}

/// Pretty JSON with a final newline, as transformers writes its configs.
fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("a JSON value serialises");
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

fn copy_tokenizer_files(source: &Path, dest: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let from = source.join(name);
        match std::fs::read(&from) {
            Ok(bytes) => write_atomic(&dest.join(name), &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(from, e)),
        }
    }
    Ok(())
}
