//! The trainer's configuration: one TOML file (`scotd train --config run.toml`) whose
//! every field can also be given as a flag (`--lr 2e-5`); datasets come from the file's
//! `[[datasets]]`, a `--datasets` TOML array, or repeated `--dataset name=gsm8k,path=x.jsonl`
//! flags. transformers' and TRL's names are accepted too (`learning_rate`, `--learning-rate`:
//! [`hf_names`](super::hf_names)). Defaults are the ones a small SFT run wants;
//! docs/train.md lists every setting and configs/ shows complete files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hf_names;
use crate::data::{BadLines, DataFormat, Overlong, Packing};
use crate::model::ModelConfig;
use crate::optim::Decay;
use crate::{Device, Error, Result};

/// The most tokens one micro-batch may hold (micro_batch_rows × seq_len). Its logits
/// alone are tokens × vocabulary floats, and their gradient as many again: at this cap
/// and Qwen2.5's 151,936-token vocabulary, 40 GB each in f32, about what one large GPU
/// holds beside the model. The reference run uses 16,384.
pub const MAX_MICRO_BATCH_TOKENS: usize = 1 << 16;

/// The most tokens one optimizer step may hold (grad_accum × micro_batch_rows ×
/// seq_len). A step's micro-batches are all drawn before any compute (the loss is
/// normalised by the whole step's supervised tokens), so their ids, positions, segments
/// and targets, 20 bytes a token, are in memory together: 320 MB at this cap, 512 times
/// the reference run's step of 32,768 tokens.
pub const MAX_STEP_TOKENS: usize = 1 << 24;

/// A run's steps when neither `steps` nor `epochs` is set.
pub const DEFAULT_STEPS: u64 = 1000;

/// The most epochs a run may ask for; past it, a typo rather than a plan.
pub const MAX_EPOCHS: f64 = 1e6;

/// Where a run starts from (`resume_from_checkpoint`, as transformers' `Trainer.train`
/// takes it: `true` or a checkpoint folder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResumeFrom {
    /// `true`: the newest checkpoint in `output_dir`, which must exist; `false`: none.
    Newest(bool),
    Checkpoint(PathBuf),
}

/// One dataset of the mix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Short name for logs and metrics.
    pub name: String,
    pub path: PathBuf,
    /// Detected from the first record when absent.
    #[serde(default)]
    pub format: Option<DataFormat>,
    /// Relative sampling weight (0.7 / 0.3 in the reference run).
    pub weight: f64,
}

/// The data type checkpoints are exported in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveDtype {
    F32,
    Bf16,
}

/// The arithmetic of a GPU step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuPrecision {
    /// bf16 weights and activations, f32 accumulation, f32 master weights and moments.
    Bf16,
    /// f32 throughout (the CPU's numbers, for checks).
    F32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The student: a Hugging Face checkpoint folder, or a Hub id (org/name[@revision])
    /// resolved from the Hugging Face cache (downloaded when absent, unless offline).
    pub model: PathBuf,
    /// Where checkpoints, metrics and the final model go.
    pub output_dir: PathBuf,
    pub datasets: Vec<DatasetConfig>,
    /// Chat template override: chatml, deepseek, raw or a .jinja file (default: the model's own).
    pub template: Option<String>,
    /// The assistant turn of reasoning rows; {trace} and {answer} are filled in.
    pub reasoning_format: String,
    pub system_prompt: Option<String>,
    pub bad_lines: BadLines,
    /// Rows held out of every dataset for evaluation loss.
    pub eval_rows: usize,

    pub seq_len: usize,
    /// Rows of `seq_len` tokens per micro-batch.
    pub micro_batch_rows: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub packing: Packing,
    pub overlong: Overlong,

    /// Optimizer steps of the run; when unset, `epochs` decides, and without either,
    /// [`DEFAULT_STEPS`]. Set with `epochs`, `steps` wins (as transformers' `max_steps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Passes over the training rows (fractions allowed): the steps are counted from the
    /// data ([`super::epochs`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    pub lr: f32,
    pub warmup_steps: u64,
    /// Warmup as a fraction of the run's steps (rounded up); replaces `warmup_steps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f32>,
    pub decay: Decay,
    /// The learning-rate floor as a fraction of `lr`.
    pub min_lr_ratio: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Global gradient-norm clipping; 0 turns it off.
    pub max_grad_norm: f32,
    pub seed: u64,

    /// When standard error is not a terminal (a log file, a CI job), a plain progress
    /// line every this many steps instead of the progress bar (0: none).
    pub log_every: u64,
    /// Evaluate every this many steps (0: never).
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    /// Checkpoints kept (the oldest are deleted).
    pub keep_last: usize,
    pub save_dtype: SaveDtype,
    /// Unset: continue from the newest checkpoint in `output_dir` if there is one. `true`:
    /// from the newest, which must exist; `false`: start afresh, refused when `output_dir`
    /// holds a checkpoint; a path: from that checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_from_checkpoint: Option<ResumeFrom>,

    /// Where the step runs: "cpu", "emulator" (the CUDA kernels on the CPU emulator: slow,
    /// for checking the GPU path without one) or "cuda" / "cuda:N" (a build with
    /// `--features cuda`). Checkpoints are the same on every device, so a run may resume
    /// on another one.
    pub device: Device,
    /// Arithmetic on a GPU device (ignored on the CPU, which computes in f32).
    pub gpu_precision: GpuPrecision,
    /// Recompute each layer's activations in the backward instead of keeping them (less
    /// memory, one more forward of the layers).
    pub recompute: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: PathBuf::new(),
            output_dir: PathBuf::from("runs/sft"),
            datasets: Vec::new(),
            template: None,
            reasoning_format: "<think>{trace}</think> {answer}".into(),
            system_prompt: None,
            bad_lines: BadLines::Fail,
            eval_rows: 32,
            seq_len: 512,
            micro_batch_rows: 4,
            grad_accum: 1,
            packing: Packing::Pack,
            overlong: Overlong::Truncate,
            steps: None,
            epochs: None,
            lr: 1e-5,
            warmup_steps: 30,
            warmup_ratio: None,
            decay: Decay::Cosine,
            min_lr_ratio: 0.1,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            max_grad_norm: 1.0,
            seed: 0,
            log_every: 10,
            eval_every: 100,
            save_every: 200,
            keep_last: 2,
            save_dtype: SaveDtype::F32,
            resume_from_checkpoint: None,
            device: Device::Cpu,
            gpu_precision: GpuPrecision::Bf16,
            recompute: false,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file, then applies `overrides` (field = TOML value) from flags.
    /// A `dataset` override (repeatable) is one [`DatasetConfig`] in flag form
    /// ([`DatasetConfig::from_flag`]); together they replace the file's datasets.
    pub fn load(path: Option<&Path>, overrides: &[(String, String)]) -> Result<Self> {
        let label = path.map_or_else(|| PathBuf::from("(flags)"), Path::to_path_buf);
        let mut table = match path {
            Some(p) => {
                let text = crate::io::read_text(p)?;
                let table = text
                    .parse::<toml::Table>()
                    .map_err(|e| Error::format(p, "(toml)", e.to_string()))?;
                hf_names::to_ours(table, p)?
            }
            None => toml::Table::new(),
        };
        let flags = flag_table(overrides)?;
        refuse_two_warmups(&table, &label)?;
        refuse_two_warmups(&flags, Path::new("(flags)"))?;
        for (key, value) in flags {
            for group in hf_names::ONE_DECIDES
                .iter()
                .filter(|g| g.contains(&key.as_str()))
            {
                for other in group {
                    table.remove(*other);
                }
            }
            table.insert(key, value);
        }
        let config: TrainConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::format(&label, "(config)", e.to_string()))?;
        config.validate(&label)?;
        Ok(config)
    }

    /// The run's steps: `steps`, else `epochs` × `steps_per_epoch` rounded up (as
    /// transformers counts them), else [`DEFAULT_STEPS`].
    pub fn total_steps(&self, steps_per_epoch: impl FnOnce() -> Result<u64>) -> Result<u64> {
        match (self.steps, self.epochs) {
            (Some(steps), _) => Ok(steps),
            (None, Some(epochs)) => Ok(((epochs * steps_per_epoch()? as f64).ceil() as u64).max(1)),
            (None, None) => Ok(DEFAULT_STEPS),
        }
    }

    /// Warmup steps of a run of `total_steps`: `warmup_ratio` of them rounded up, when set.
    pub fn warmup(&self, total_steps: u64) -> u64 {
        match self.warmup_ratio {
            // The ratio as written (0.1, not 0.100000001), so 0.1 of 40 steps is 4.
            Some(ratio) => {
                let ratio: f64 = ratio.to_string().parse().unwrap_or(f64::from(ratio));
                (ratio * total_steps as f64).ceil() as u64
            }
            None => self.warmup_steps,
        }
    }

    /// The names of every field, for building one flag per field.
    pub fn field_names() -> Vec<String> {
        match toml::Value::try_from(TrainConfig::default()) {
            Ok(toml::Value::Table(t)) => t.keys().cloned().chain(optional_fields()).collect(),
            _ => unreachable!("the default config serialises to a table"),
        }
    }

    /// Checks every setting against its meaning, before anything is read or allocated;
    /// an error names the file (`label`), the field, its value and what is allowed.
    pub fn validate(&self, label: &Path) -> Result<()> {
        self.validate_paths(label)?;
        self.validate_datasets(label)?;
        self.validate_sizes(label)?;
        self.validate_optimizer(label)?;
        self.validate_counts(label)?;
        self.validate_resume(label)
    }

    /// Checks the settings that depend on the student: `model` is its config.json.
    pub fn validate_for_model(&self, model: &ModelConfig, label: &Path) -> Result<()> {
        match model.max_position_embeddings {
            Some(max) if self.seq_len > max => Err(out_of_range(
                label,
                "seq_len",
                self.seq_len,
                format!("past the model's max_position_embeddings of {max}"),
            )),
            _ => Ok(()),
        }
    }

    fn validate_paths(&self, label: &Path) -> Result<()> {
        if self.model.as_os_str().is_empty() {
            return Err(Error::format(
                label,
                "model",
                "missing: the student checkpoint folder",
            ));
        }
        if self.output_dir.as_os_str().is_empty() {
            return Err(Error::format(
                label,
                "output_dir",
                "empty: the folder for checkpoints and metrics",
            ));
        }
        Ok(())
    }

    fn validate_datasets(&self, label: &Path) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::format(label, field, msg));
        if self.datasets.is_empty() {
            return err(
                "datasets",
                "no datasets: add [[datasets]] entries with name, path and weight".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.datasets {
            if d.name.is_empty() || d.path.as_os_str().is_empty() {
                return err("datasets", "every dataset needs a name and a path".into());
            }
            if !names.insert(d.name.as_str()) {
                return err("datasets", format!("two are named `{}`", d.name));
            }
            if !(d.weight.is_finite() && d.weight >= 0.0) {
                let field = format!("datasets.{}.weight", d.name);
                return Err(out_of_range(
                    label,
                    &field,
                    d.weight,
                    "must be finite and >= 0",
                ));
            }
        }
        if self.datasets.iter().all(|d| d.weight == 0.0) {
            return err(
                "datasets",
                "every weight is 0: at least one must be positive".into(),
            );
        }
        Ok(())
    }

    /// The batch shape, within [`MAX_MICRO_BATCH_TOKENS`] and [`MAX_STEP_TOKENS`].
    fn validate_sizes(&self, label: &Path) -> Result<()> {
        for (field, value) in [
            ("seq_len", self.seq_len),
            ("micro_batch_rows", self.micro_batch_rows),
            ("grad_accum", self.grad_accum),
        ] {
            if value == 0 {
                return Err(out_of_range(label, field, value, "must be at least 1"));
            }
        }
        // In u128, so no product of two usizes overflows.
        let micro_batch = self.micro_batch_rows as u128 * self.seq_len as u128;
        if micro_batch > MAX_MICRO_BATCH_TOKENS as u128 {
            return Err(Error::format(
                label,
                "micro_batch_rows × seq_len",
                format!(
                    "{} × {} = {micro_batch} tokens a micro-batch: must be at most {MAX_MICRO_BATCH_TOKENS}",
                    self.micro_batch_rows, self.seq_len
                ),
            ));
        }
        let step = micro_batch * self.grad_accum as u128;
        if step > MAX_STEP_TOKENS as u128 {
            return Err(out_of_range(
                label,
                "grad_accum",
                self.grad_accum,
                format!(
                    "{step} tokens a step (grad_accum × micro_batch_rows × seq_len): must be at most {MAX_STEP_TOKENS}"
                ),
            ));
        }
        Ok(())
    }

    /// The learning rate and AdamW's settings.
    fn validate_optimizer(&self, label: &Path) -> Result<()> {
        use Interval::*;
        for (field, value, allowed) in [
            ("lr", self.lr, AboveZeroToOne),
            ("min_lr_ratio", self.min_lr_ratio, ZeroToOne),
            ("weight_decay", self.weight_decay, ZeroToOne),
            ("beta1", self.beta1, ZeroToBelowOne),
            ("beta2", self.beta2, ZeroToBelowOne),
            ("eps", self.eps, AboveZeroToOne),
            ("max_grad_norm", self.max_grad_norm, FiniteNonNegative),
            ("warmup_ratio", self.warmup_ratio.unwrap_or(0.0), ZeroToOne),
        ] {
            if !allowed.contains(value) {
                return Err(out_of_range(label, field, value, allowed.describe()));
            }
        }
        Ok(())
    }

    fn validate_counts(&self, label: &Path) -> Result<()> {
        if self.steps == Some(0) {
            return Err(out_of_range(label, "steps", 0, "must be at least 1"));
        }
        if let Some(epochs) = self.epochs.filter(|e| !(*e > 0.0 && *e <= MAX_EPOCHS)) {
            return Err(out_of_range(
                label,
                "epochs",
                epochs,
                format!("must be in (0, {MAX_EPOCHS:e}]"),
            ));
        }
        if self.keep_last == 0 {
            return Err(out_of_range(
                label,
                "keep_last",
                self.keep_last,
                "must keep at least 1 checkpoint",
            ));
        }
        Ok(())
    }

    fn validate_resume(&self, label: &Path) -> Result<()> {
        match &self.resume_from_checkpoint {
            Some(ResumeFrom::Checkpoint(path)) if path.as_os_str().is_empty() => {
                Err(Error::format(
                    label,
                    "resume_from_checkpoint",
                    "empty: true, false or a checkpoint folder",
                ))
            }
            _ => Ok(()),
        }
    }
}

impl DatasetConfig {
    /// A dataset from the flag form of its TOML entry, `key=value` pairs split by commas:
    /// `name=gsm8k,path=train.jsonl,weight=0.7,format=gsm8k`, or `path=x.jsonl` alone
    /// (named after the file, weight 1, format detected) or just `x.jsonl`.
    pub fn from_flag(spec: &str) -> Result<Self> {
        let bad = |msg: String| Error::format("(flags)", format!("--dataset {spec}"), msg);
        let mut entry = toml::Table::new();
        for part in spec.split(',') {
            let (key, value) = match part.split_once('=') {
                Some((key, value)) => (key.trim(), value.trim()),
                None if !entry.contains_key("path") => ("path", part.trim()),
                None => return Err(bad(format!("`{part}` is not key=value"))),
            };
            let value = match key {
                "weight" => toml::Value::Float(
                    value
                        .parse()
                        .map_err(|_| bad(format!("weight `{value}` is not a number")))?,
                ),
                "name" | "path" | "format" => toml::Value::String(value.to_string()),
                _ => {
                    return Err(bad(format!(
                        "unknown key `{key}`: name, path, weight or format"
                    )))
                }
            };
            entry.insert(key.to_string(), value);
        }
        let path = entry
            .get("path")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| bad("no path".into()))?;
        let stem = Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        entry.entry("name").or_insert(toml::Value::String(stem));
        entry.entry("weight").or_insert(toml::Value::Float(1.0));
        toml::Value::Table(entry)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))
    }
}

/// The flags as a table of our names: each value parsed as TOML ([`parse_flag_value`]),
/// repeated `dataset` flags gathered into `datasets`.
fn flag_table(overrides: &[(String, String)]) -> Result<toml::Table> {
    let mut table = toml::Table::new();
    let mut datasets = Vec::new();
    for (key, value) in overrides {
        let key = key.replace('-', "_");
        if key == "dataset" {
            let entry = toml::Value::try_from(DatasetConfig::from_flag(value)?)
                .expect("a dataset serialises");
            datasets.push(entry);
        } else {
            table.insert(key, parse_flag_value(value));
        }
    }
    let mut table = hf_names::to_ours(table, Path::new("(flags)"))?;
    if !datasets.is_empty() && table.contains_key("datasets") {
        return Err(Error::format(
            "(flags)",
            "--dataset and --datasets",
            "both given: use one",
        ));
    }
    if !datasets.is_empty() {
        table.insert("datasets".into(), toml::Value::Array(datasets));
    }
    Ok(table)
}

/// `warmup_ratio` replaces `warmup_steps`: a table with both is ambiguous (transformers
/// would quietly prefer `warmup_steps`).
fn refuse_two_warmups(table: &toml::Table, label: &Path) -> Result<()> {
    if table.contains_key("warmup_steps") && table.contains_key("warmup_ratio") {
        return Err(Error::format(
            label,
            "warmup_steps and warmup_ratio",
            "both set: warmup_ratio replaces warmup_steps, keep one",
        ));
    }
    Ok(())
}

/// Where a float setting must lie; NaN lies in none.
#[derive(Clone, Copy)]
enum Interval {
    AboveZeroToOne,
    ZeroToOne,
    ZeroToBelowOne,
    FiniteNonNegative,
}

impl Interval {
    fn contains(self, x: f32) -> bool {
        match self {
            Interval::AboveZeroToOne => x > 0.0 && x <= 1.0,
            Interval::ZeroToOne => (0.0..=1.0).contains(&x),
            Interval::ZeroToBelowOne => (0.0..1.0).contains(&x),
            Interval::FiniteNonNegative => x >= 0.0 && x.is_finite(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Interval::AboveZeroToOne => "must be finite and in (0, 1]",
            Interval::ZeroToOne => "must be in [0, 1]",
            Interval::ZeroToBelowOne => "must be in [0, 1)",
            Interval::FiniteNonNegative => "must be finite and >= 0",
        }
    }
}

/// `<label>: <field> = <value>: <allowed>`. Floats print in their shortest form, with an
/// exponent when large or small (`1e30`, not thirty-one digits).
fn out_of_range(
    label: &Path,
    field: &str,
    value: impl std::fmt::Debug,
    allowed: impl Into<String>,
) -> Error {
    let hf: Vec<&str> = hf_names::hf_names_of(field).collect();
    let also = if hf.is_empty() {
        String::new()
    } else {
        format!(" (transformers / TRL: {})", hf.join(", "))
    };
    Error::format(label, format!("{field} = {value:?}{also}"), allowed)
}

/// Fields that are `None` by default, so absent from the serialised default.
fn optional_fields() -> impl Iterator<Item = String> {
    [
        "template",
        "system_prompt",
        "steps",
        "epochs",
        "warmup_ratio",
        "resume_from_checkpoint",
    ]
    .into_iter()
    .map(String::from)
}

/// A flag's value as TOML when it parses as a TOML value (numbers, booleans, arrays),
/// else as a plain string (paths, names).
fn parse_flag_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}
