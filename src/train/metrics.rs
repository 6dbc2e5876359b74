//! metrics.jsonl: one line per training step and per evaluation, appended and flushed
//! as they happen, so a crash loses nothing already logged; the same numbers go to a
//! TensorBoard event file beside it under transformers' names (train/loss,
//! train/learning_rate, train/grad_norm, train/epoch, eval/loss, eval/<dataset>_loss).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::tensorboard::EventWriter;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f32,
    pub lr: f32,
    pub grad_norm: f32,
    /// Examples drawn so far over the training rows of all datasets.
    pub epoch: f64,
    /// Tokens in the step's rows, padding included.
    pub tokens: usize,
    pub supervised_tokens: usize,
    pub tokens_per_s: f32,
    pub truncated: usize,
    pub dropped: usize,
    /// The update was skipped because the gradient norm was not finite.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalMetrics {
    pub step: u64,
    pub eval_loss: f32,
    pub eval_tokens: usize,
    /// The eval loss of each dataset's held-out rows, by dataset name.
    pub eval_loss_by_dataset: std::collections::BTreeMap<String, f32>,
}

pub struct MetricsLog {
    path: PathBuf,
    file: File,
    events: EventWriter,
    /// The training loss of the last step kept from an earlier run, if any.
    pub last_loss: Option<f32>,
}

impl MetricsLog {
    /// Opens `path` for appending, first dropping any line past `resumed_step` (what a
    /// resumed run will log again), or every line when the run starts afresh (`None`).
    /// The event file beside it is rewritten from the lines kept.
    pub fn open(path: &Path, resumed_step: Option<u64>) -> Result<Self> {
        let mut last_loss = None;
        let mut earlier = Vec::new();
        if path.exists() {
            let kept = match resumed_step {
                Some(step) => lines_through(path, step)?,
                None => String::new(),
            };
            let records: Vec<serde_json::Value> = kept
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            last_loss = records
                .iter()
                .rev()
                .find_map(|r| r["loss"].as_f64())
                .map(|loss| loss as f32);
            earlier = records.iter().filter_map(tensorboard_scalars).collect();
            crate::io::write_atomic(path, kept.as_bytes())?;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let events = EventWriter::create(dir, &earlier)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
            events,
            last_loss,
        })
    }

    pub fn write(&mut self, record: &impl Serialize) -> Result<()> {
        let value = serde_json::to_value(record).expect("metrics serialise");
        let mut line = serde_json::to_vec(&value).expect("metrics serialise");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))?;
        match tensorboard_scalars(&value) {
            Some((step, scalars)) => self.events.write(step, &scalars),
            None => Ok(()),
        }
    }
}

/// A metrics.jsonl record's step and scalars under transformers' TensorBoard names; a
/// value that is not a finite number (a NaN loss is written as null) is left out.
fn tensorboard_scalars(record: &serde_json::Value) -> Option<(u64, Vec<(String, f32)>)> {
    let step = record.get("step")?.as_u64()?;
    let mut scalars = Vec::new();
    let mut add = |tag: String, value: &serde_json::Value| {
        if let Some(v) = value.as_f64() {
            scalars.push((tag, v as f32));
        }
    };
    for (field, tag) in [
        ("loss", "train/loss"),
        ("lr", "train/learning_rate"),
        ("grad_norm", "train/grad_norm"),
        ("epoch", "train/epoch"),
        ("eval_loss", "eval/loss"),
    ] {
        if let Some(value) = record.get(field) {
            add(tag.to_string(), value);
        }
    }
    if let Some(by_dataset) = record["eval_loss_by_dataset"].as_object() {
        for (name, value) in by_dataset {
            add(format!("eval/{name}_loss"), value);
        }
    }
    Some((step, scalars))
}

fn lines_through(path: &Path, last_step: u64) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut kept = String::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        let step = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
        if step.is_some_and(|s| s <= last_step) {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    Ok(kept)
}
