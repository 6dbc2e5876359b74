//! metrics.jsonl: one line per training step and per evaluation, appended and flushed
//! as they happen, so a crash loses nothing already logged.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f32,
    pub lr: f32,
    pub grad_norm: f32,
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
    /// The training loss of the last step kept from an earlier run, if any.
    pub last_loss: Option<f32>,
}

impl MetricsLog {
    /// Opens `path` for appending, first dropping any line past `resumed_step` (what a
    /// resumed run will log again), or every line when the run starts afresh (`None`).
    pub fn open(path: &Path, resumed_step: Option<u64>) -> Result<Self> {
        let mut last_loss = None;
        if path.exists() {
            let kept = match resumed_step {
                Some(step) => lines_through(path, step)?,
                None => String::new(),
            };
            last_loss = kept
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
                .map(|loss| loss as f32);
            crate::io::write_atomic(path, kept.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
            last_loss,
        })
    }

    pub fn write(&mut self, record: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("metrics serialise");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
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
