//! What the commands that run a model share: the device flags and the one loader of a
//! model with its tokenizer, the decoding flags, choosing the chat template, and turning
//! a prompt into token ids.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use scotd::hub::{resolve_model, Needs};
use scotd::model::Model;
use scotd::sample::SamplingConfig;
use scotd::tokenizer::{ChatTemplate, Message, Tokenizer};
use scotd::{DType, Device};

/// The model every generating command runs, and how it decodes.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json), or a
    /// Hub id (org/name or org/name@revision): from the Hugging Face cache, downloaded into
    /// it when absent (unless HF_HUB_OFFLINE=1).
    #[arg(long, visible_alias = "teacher")]
    pub model: PathBuf,
    #[command(flatten)]
    pub placement: DeviceArgs,
    #[command(flatten)]
    pub decoding: DecodingArgs,
}

/// Where a model runs and the precision of its weights and arithmetic.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// cpu, emulator (the CUDA kernels run on the CPU: slow, for checks), cuda (device 0)
    /// or cuda:N (a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// f32 or bf16 [default: bf16 on cuda and cpu, f32 on the emulator]. The CPU computes
    /// in f32 either way: bf16 there keeps a bf16 checkpoint's matrices in bf16 (half the
    /// memory, faster decoding, the same numbers; an f32 checkpoint stays f32).
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
}

/// The values of `--precision`, as `gpu_precision` of the training config spells them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
}

impl DeviceArgs {
    /// The parameters' dtype: the one asked for, else f32 on the emulator (it is for
    /// checking against the CPU's numbers) and bf16 elsewhere (on the CPU: as stored).
    pub fn dtype(&self) -> DType {
        match (self.precision, self.device) {
            (Some(Precision::F32), _) | (None, Device::Emulator) => DType::F32,
            (Some(Precision::Bf16), _) | (None, _) => DType::BF16,
        }
    }
}

/// Prompting and decoding options.
#[derive(clap::Args, Clone, Debug)]
pub struct DecodingArgs {
    /// Chat template: the model's own by default; or chatml, deepseek, raw, or a .jinja file.
    #[arg(long)]
    pub template: Option<String>,
    /// A system message put before the user's.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 = greedy. A negative value is read as a value (and refused), not as a flag.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub top_p: f32,
    /// Keep only the k most likely tokens before top-p; 0 keeps them all.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// The most memory the KV cache may take: bytes, or a size such as 512MiB, 8GiB, 2GB
    /// [default: what the batch needs at its longest].
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    pub kv_budget: Option<u64>,
}

impl DecodingArgs {
    /// The decoding settings for a model whose tokens `tokenizer` spells: ids past its
    /// vocabulary (the padding rows of a config's) are never chosen.
    pub fn sampling(&self, tokenizer: &Tokenizer) -> SamplingConfig {
        SamplingConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            batch_size: self.batch_size,
            vocab_limit: Some(tokenizer.vocab_size()),
            kv_budget: self.kv_budget,
        }
    }
}

/// A byte count: plain bytes, or a number with a unit, decimal (kB, MB, GB, TB) or binary
/// (KiB, MiB, GiB, TiB), case-insensitive: `8GiB`, `1.5GB`, `512 MiB`.
pub fn parse_byte_size(text: &str) -> std::result::Result<u64, String> {
    let expected = "expected bytes or a size such as 512MiB, 8GiB or 2GB";
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: {expected}"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: {expected}")),
    };
    let bytes = number * scale as f64;
    if bytes < 1.0 {
        return Err(format!("{text:?} is less than a byte: {expected}"));
    }
    if bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is more bytes than a u64 counts"));
    }
    Ok(bytes as u64)
}

pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

/// The model for inference on the device and in the precision asked for, and its
/// tokenizer: what every command that runs a model loads. `model` is a folder or a Hub id.
pub fn load_model(model: &Path, placement: &DeviceArgs) -> Result<(Model, Tokenizer)> {
    let dir = &resolve_model(model, Needs::Model)?;
    let model = Model::load_on(dir, placement.device, placement.dtype()).with_context(|| {
        format!(
            "loading the model from {} onto {}",
            dir.display(),
            placement.device
        )
    })?;
    let tokenizer = Tokenizer::from_dir(dir)?;
    Ok((model, tokenizer))
}

pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let (model, tokenizer) = load_model(&args.model, &args.placement)?;
    let template = tokenizer.resolve_chat_template(args.decoding.template.as_deref())?;
    Ok(Loaded {
        model,
        tokenizer,
        template,
    })
}

/// A conversation of an optional system message and the turns given.
pub fn conversation(system: Option<&str>, turns: &[Message]) -> Vec<Message> {
    let system = system.map(|s| Message {
        role: "system".into(),
        content: s.into(),
    });
    system.into_iter().chain(turns.iter().cloned()).collect()
}

impl Loaded {
    /// Token ids of a conversation rendered through the template, ready for the reply.
    pub fn chat_ids(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.template.render(messages, true)?;
        Ok(self
            .tokenizer
            .encode(&text, self.template.add_special_tokens())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_in_decimal_and_binary_units() {
        for (text, bytes) in [
            ("4096", 4096),
            ("512MiB", 512 << 20),
            ("8GiB", 8 << 30),
            ("2GB", 2_000_000_000),
            ("1.5 kib", 1536),
            ("3 b", 3),
        ] {
            assert_eq!(parse_byte_size(text), Ok(bytes), "{text}");
        }
        for (text, complaint) in [
            ("8parsecs", "unknown unit \"parsecs\""),
            ("GiB", "not a size"),
            ("0", "less than a byte"),
            ("-1MiB", "not a size"),
            ("1e30", "unknown unit"),
            ("99999999999TiB", "more bytes than a u64"),
        ] {
            let err = parse_byte_size(text).unwrap_err();
            assert!(err.contains(complaint), "{text}: {err}");
        }
    }

    #[test]
    fn precision_defaults_to_f32_on_the_emulator_only() {
        let dtype = |device, precision| DeviceArgs { device, precision }.dtype();
        assert_eq!(dtype(Device::Cuda(1), None), DType::BF16);
        assert_eq!(dtype(Device::Cpu, None), DType::BF16);
        assert_eq!(dtype(Device::Emulator, None), DType::F32);
        assert_eq!(dtype(Device::Cuda(0), Some(Precision::F32)), DType::F32);
        assert_eq!(dtype(Device::Cpu, Some(Precision::Bf16)), DType::BF16);
    }
}
