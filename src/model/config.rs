//! The model's shape, read from a Hugging Face `config.json` (Qwen2 or Llama).

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Qwen2 / Qwen2.5: biases on the q/k/v projections.
    Qwen2,
    /// Llama (and DeepSeek-math, SmolLM2): no biases.
    Llama,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (always for Qwen2; `attention_bias` for Llama).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (Llama's `attention_bias` sets it too).
    pub o_bias: bool,
    /// The longest sequence the model was trained for, when config.json says.
    pub max_position_embeddings: Option<usize>,
}

/// The largest sizes a config may give, each far past any Qwen2/Llama checkpoint (Llama
/// 3.1 405B: hidden 16,384, 126 layers, 128 heads, vocab 128,256), so that a hostile
/// config is refused instead of sizing a layout no machine holds.
const MAX_WIDTH: usize = 1 << 16;
const MAX_LAYERS: usize = 1 << 10;
const MAX_HEADS: usize = 1 << 10;
const MAX_HEAD_DIM: usize = 1 << 10;
const MAX_VOCAB: usize = 1 << 24;

/// Reads typed fields out of the JSON object, naming the file and field on error.
struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::format(self.path, field, msg)
    }

    fn usize_opt(&self, field: &str) -> Result<Option<usize>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(self.err(field, format!("expected a positive integer, got {v}"))),
            },
        }
    }

    fn usize(&self, field: &str) -> Result<usize> {
        self.usize_opt(field)?
            .ok_or_else(|| self.err(field, "missing (expected a positive integer)"))
    }

    /// A size of the model, at most `max` (past it the layout alone would exhaust memory:
    /// a fuzzed config with 77 trillion layers did).
    fn size(&self, field: &str, max: usize) -> Result<usize> {
        let n = self.usize(field)?;
        self.at_most(field, n, max)
    }

    fn at_most(&self, field: &str, n: usize, max: usize) -> Result<usize> {
        if n > max {
            return Err(self.err(field, format!("{n} is past the largest supported, {max}")));
        }
        Ok(n)
    }

    fn f32_or(&self, field: &str, default: f32) -> Result<f32> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_f64() {
                // Positive and finite in f32, which the engine computes in.
                Some(x) if (x as f32) > 0.0 && (x as f32).is_finite() => Ok(x as f32),
                _ => Err(self.err(
                    field,
                    format!("expected a positive number that f32 holds (up to 3.4e38), got {v}"),
                )),
            },
        }
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(field, format!("expected true or false, got {v}"))),
        }
    }
}

/// RoPE's base: the top-level `rope_theta` (transformers 4.x) or
/// `rope_parameters.rope_theta` (transformers 5). Only the default, unscaled RoPE exists here.
fn rope_theta(f: &Fields) -> Result<f32> {
    for field in ["rope_scaling", "rope_parameters"] {
        let Some(params) = f.obj.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(Value::as_str);
        if !matches!(kind, None | Some("default")) {
            return Err(f.err(
                field,
                format!(
                    "RoPE scaling is not supported, expected rope_type \"default\", got {params}"
                ),
            ));
        }
        if let Some(theta) = params.get("rope_theta") {
            let nested = Fields {
                path: f.path,
                obj: params.as_object().expect("has a key, so is an object"),
            };
            return nested.f32_or("rope_theta", 10000.0).map_err(|_| {
                f.err(
                    &format!("{field}.rope_theta"),
                    format!(
                        "expected a positive number that f32 holds (up to 3.4e38), got {theta}"
                    ),
                )
            });
        }
    }
    f.f32_or("rope_theta", 10000.0)
}

/// The MLP's activation: the engine implements only SiLU (`src/ops/swiglu`), which
/// transformers names "silu" or "swish" and Qwen2 and Llama default to.
fn hidden_act(f: &Fields) -> Result<()> {
    match f.obj.get("hidden_act") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(act)) if act == "silu" || act == "swish" => Ok(()),
        Some(other) => Err(f.err(
            "hidden_act",
            format!("unsupported activation {other}, expected \"silu\" (the only one implemented)"),
        )),
    }
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::io::read_text(path)?;
        Self::from_json(&text, path)
    }

    /// Parses config.json text; `path` is only used to name the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::format(path, "(json)", e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::format(path, "(json)", "expected a JSON object"))?;
        let f = Fields { path, obj };

        let architecture = match obj.get("model_type").and_then(Value::as_str) {
            Some("qwen2") => Architecture::Qwen2,
            Some("llama") => Architecture::Llama,
            Some(other) => {
                return Err(f.err(
                    "model_type",
                    format!("unsupported model type {other:?}, expected \"qwen2\" or \"llama\""),
                ))
            }
            None => return Err(f.err("model_type", "missing (expected \"qwen2\" or \"llama\")")),
        };
        let rope_theta = rope_theta(&f)?;
        if f.bool_or("use_sliding_window", false)? {
            return Err(f.err(
                "use_sliding_window",
                "sliding-window attention is not supported, expected false",
            ));
        }
        hidden_act(&f)?;
        if f.bool_or("mlp_bias", false)? {
            return Err(f.err("mlp_bias", "MLP biases are not supported, expected false"));
        }

        let hidden_size = f.size("hidden_size", MAX_WIDTH)?;
        let num_attention_heads = f.size("num_attention_heads", MAX_HEADS)?;
        let num_key_value_heads = f
            .usize_opt("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        let num_key_value_heads =
            f.at_most("num_key_value_heads", num_key_value_heads, MAX_HEADS)?;
        let head_dim = match f.usize_opt("head_dim")? {
            Some(d) => f.at_most("head_dim", d, MAX_HEAD_DIM)?,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(f.err(
                    "num_attention_heads",
                    format!("{num_attention_heads} does not divide hidden_size {hidden_size} and head_dim is not given"),
                ))
            }
        };
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} must divide num_attention_heads {num_attention_heads}"
                ),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(f.err(
                "head_dim",
                format!("RoPE needs an even head_dim, got {head_dim}"),
            ));
        }
        let attention_bias = f.bool_or("attention_bias", false)?;
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Llama => (attention_bias, attention_bias),
        };
        Ok(ModelConfig {
            architecture,
            hidden_size,
            num_hidden_layers: f.size("num_hidden_layers", MAX_LAYERS)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            intermediate_size: f.size("intermediate_size", MAX_WIDTH * 16)?,
            vocab_size: f.size("vocab_size", MAX_VOCAB)?,
            rope_theta,
            rms_norm_eps: f.f32_or("rms_norm_eps", 1e-6)?,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            qkv_bias,
            o_bias,
            max_position_embeddings: f.usize_opt("max_position_embeddings")?,
        })
    }

    /// The config as Hugging Face transformers (5.x) writes it, so saved checkpoints load
    /// there. transformers 5 reads `dtype` and `rope_parameters`; the legacy `torch_dtype`
    /// and top-level `rope_theta` are written too because transformers 4.x reads only
    /// those (and would silently fall back to RoPE base 10000), while 5.x accepts them.
    pub fn to_hf_json(&self) -> Value {
        let (model_type, class) = match self.architecture {
            Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            Architecture::Llama => ("llama", "LlamaForCausalLM"),
        };
        let rope_theta = f32_as_written(self.rope_theta);
        let mut v = serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
            "rope_theta": rope_theta,
            "rms_norm_eps": f32_as_written(self.rms_norm_eps),
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "dtype": "float32",
            "torch_dtype": "float32",
        });
        if let Some(n) = self.max_position_embeddings {
            v["max_position_embeddings"] = n.into();
        }
        match self.architecture {
            Architecture::Llama => {
                v["attention_bias"] = Value::Bool(self.qkv_bias);
                v["mlp_bias"] = Value::Bool(false);
            }
            Architecture::Qwen2 => v["use_sliding_window"] = Value::Bool(false),
        }
        v
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        super::parameter_specs(self).iter().map(|s| s.numel()).sum()
    }
}

/// An f32 as the f64 of its shortest decimal form: 1e-6f32 is written 1e-6, as the
/// config it came from said, not 9.999999974752427e-7 (its exact f64 widening).
fn f32_as_written(x: f32) -> f64 {
    x.to_string()
        .parse()
        .expect("every f32 prints in a form f64 parses (inf and NaN included)")
}
