//! The trainer's configuration: one TOML file (`scotd train --config run.toml`) whose
//! every field can also be given as a flag (`--lr 2e-5`, `--datasets.0.weight 0.5` is not
//! needed: datasets come from the file or repeated `--dataset` flags). Defaults are the
//! ones a small SFT run wants; docs/train.md and configs/ show complete files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{BadLines, DataFormat, Overlong, Packing};
use crate::optim::Decay;
use crate::{Device, Error, Result};

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
    /// The student: a Hugging Face checkpoint folder.
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

    pub steps: u64,
    pub lr: f32,
    pub warmup_steps: u64,
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
            steps: 1000,
            lr: 1e-5,
            warmup_steps: 30,
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
            device: Device::Cpu,
            gpu_precision: GpuPrecision::Bf16,
            recompute: false,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file, then applies `overrides` (field = TOML value) from flags.
    pub fn load(path: Option<&Path>, overrides: &[(String, String)]) -> Result<Self> {
        let label = path.map_or_else(|| PathBuf::from("(flags)"), Path::to_path_buf);
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
                text.parse::<toml::Table>()
                    .map_err(|e| Error::format(p, "(toml)", e.to_string()))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in overrides {
            let parsed = parse_flag_value(value);
            table.insert(key.replace('-', "_"), parsed);
        }
        let config: TrainConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::format(&label, "(config)", e.to_string()))?;
        config.validate(&label)?;
        Ok(config)
    }

    /// The names of every field, for building one flag per field.
    pub fn field_names() -> Vec<String> {
        match toml::Value::try_from(TrainConfig::default()) {
            Ok(toml::Value::Table(t)) => t.keys().cloned().chain(optional_fields()).collect(),
            _ => unreachable!("the default config serialises to a table"),
        }
    }

    fn validate(&self, label: &Path) -> Result<()> {
        let err = |field: &str, msg: String| Err(Error::format(label, field, msg));
        if self.model.as_os_str().is_empty() {
            return err("model", "missing: the student checkpoint folder".into());
        }
        if self.datasets.is_empty() {
            return err(
                "datasets",
                "no datasets: add [[datasets]] entries with name, path and weight".into(),
            );
        }
        for (name, v) in [
            ("seq_len", self.seq_len),
            ("micro_batch_rows", self.micro_batch_rows),
            ("grad_accum", self.grad_accum),
        ] {
            if v == 0 {
                return err(name, "must be at least 1".into());
            }
        }
        if self.steps == 0 {
            return err("steps", "must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return err("lr", format!("must be a positive number, got {}", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return err(
                "min_lr_ratio",
                format!("must be in [0, 1], got {}", self.min_lr_ratio),
            );
        }
        if self.keep_last == 0 {
            return err("keep_last", "must keep at least 1 checkpoint".into());
        }
        Ok(())
    }
}

/// Fields that are `None` by default, so absent from the serialised default.
fn optional_fields() -> impl Iterator<Item = String> {
    ["template", "system_prompt"].into_iter().map(String::from)
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
