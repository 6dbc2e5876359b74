//! The run folder's checkpoints: `checkpoint-<step>/` holds a Hugging Face model folder
//! plus the trainer state needed to resume exactly (f32 master weights, AdamW moments,
//! step, data position). `trainer_state.json` is written last, so a folder without it
//! is an interrupted save and is ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::MixerState;
use crate::model::{save_safetensors, ParamStore, Weights};
use crate::optim::AdamW;
use crate::{DType, Error, Result};

pub const STATE_FILE: &str = "trainer_state.json";
const MASTER_WEIGHTS: &str = "master_weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    /// Training steps completed.
    pub step: u64,
    /// Updates AdamW applied (fewer than `step` when a step was skipped for a
    /// non-finite gradient).
    pub optimizer_steps: u64,
    pub mixer: MixerState,
    /// The run's configuration, so a resume with other settings is noticed.
    pub config: serde_json::Value,
}

pub fn checkpoint_dir(output_dir: &Path, step: u64) -> PathBuf {
    output_dir.join(format!("checkpoint-{step}"))
}

/// The paths in `dir`; none when it does not exist yet.
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    listing
        .map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect()
}

/// Completed checkpoints, oldest first.
pub fn completed(output_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for path in entries(output_dir)? {
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(step) = step.filter(|_| path.join(STATE_FILE).is_file()) {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Writes checkpoint `state.step`: the HF folder, then master weights and moments, then
/// the state file that marks it complete; deletes all but the newest `keep_last`. The
/// tensors are read from the store's device: checkpoints are the same on every device.
pub fn save(
    output_dir: &Path,
    (store, optimizer): (&ParamStore, &AdamW),
    state: &TrainerState,
    tokenizer_dir: &Path,
    export_dtype: DType,
    keep_last: usize,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(output_dir, state.step);
    let masters = &store.masters;
    crate::model::save_checkpoint(masters, Some(tokenizer_dir), &dir, export_dtype)?;
    save_safetensors(&dir.join(MASTER_WEIGHTS), &masters.parameters())?;
    save_safetensors(&dir.join(OPTIMIZER), &optimizer.state_tensors()?)?;
    let json = serde_json::to_vec_pretty(state).expect("trainer state serialises");
    crate::io::write_atomic(&dir.join(STATE_FILE), &json)?;
    let all = completed(output_dir)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(keep_last)) {
        prune(old)?;
    }
    Ok(dir)
}

/// Deletes a checkpoint: renamed out of sight first, so an interrupted delete never
/// leaves a half-deleted folder under a checkpoint's name.
fn prune(dir: &Path) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = dir.with_file_name(format!(".{name}{PRUNING}"));
    std::fs::rename(dir, &doomed).map_err(|e| Error::io(dir, e))?;
    std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
}

const PRUNING: &str = ".pruning";

/// Removes what interrupted saves and prunes of an earlier run left in `output_dir`: a
/// `checkpoint-N` without its state file (its save never finished: it would look like a
/// loadable model), a prune's renamed folder, and the hidden staging folders and files of
/// atomic writes. Only for a run that holds the folder's lock (no one else is writing).
/// Returns what was removed.
pub fn remove_leftovers(output_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for path in entries(output_dir)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let unfinished_checkpoint =
            name.starts_with("checkpoint-") && !path.join(STATE_FILE).is_file();
        let staging = name.starts_with('.')
            && (name.ends_with(PRUNING) || name.contains(".tmp") || name.contains(".old"));
        if !(unfinished_checkpoint || staging) {
            continue;
        }
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        gone.map_err(|e| Error::io(&path, e))?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// Restores the store's parameters (on its device) and the optimizer from a checkpoint;
/// returns its state.
pub fn load(dir: &Path, store: &ParamStore, optimizer: &mut AdamW) -> Result<TrainerState> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: TrainerState = serde_json::from_slice(&text)
        .map_err(|e| Error::format(&state_path, "(json)", e.to_string()))?;
    let weights = Weights::open_file(&dir.join(MASTER_WEIGHTS))?;
    for (name, p) in store.masters.parameters() {
        p.copy_from(&weights.read(&name, p.dims())?)?;
    }
    store.flat.refresh_compute_copy()?;
    let moments = Weights::open_file(&dir.join(OPTIMIZER))?;
    optimizer.load_state(
        |name, shape| moments.read(name, shape),
        state.optimizer_steps,
    )?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_interrupted_saves_and_prunes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let make = |name: &str, state: bool| {
            let d = out.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("config.json"), "{}").unwrap();
            if state {
                std::fs::write(d.join(STATE_FILE), "{}").unwrap();
            }
        };
        make("checkpoint-2", true);
        make("checkpoint-3", false); // its save was interrupted
        make(".checkpoint-1.pruning", false);
        make(".checkpoint-4.tmp77", false);
        make("final", false);
        std::fs::write(out.join(".metrics.jsonl.tmp9"), "x").unwrap();
        std::fs::write(out.join("metrics.jsonl"), "").unwrap();
        let removed = remove_leftovers(out).unwrap();
        let names: Vec<String> = removed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                ".checkpoint-1.pruning",
                ".checkpoint-4.tmp77",
                ".metrics.jsonl.tmp9",
                "checkpoint-3"
            ]
        );
        for kept in ["checkpoint-2", "final", "metrics.jsonl"] {
            assert!(out.join(kept).exists(), "{kept}");
        }
        assert_eq!(completed(out).unwrap().len(), 1);
    }

    /// A resume compares the saved config with the run's: every f32 setting must come back
    /// from the JSON text as the same number (serde_json's default float parsing is only
    /// best-effort, and once refused to resume a run at lr 5e-5 with betas 0.9/0.999).
    #[test]
    fn f32_settings_survive_the_json_text_exactly() {
        for value in [5e-5f32, 0.9, 0.999, 0.95, 1e-8, 3e-3, 1e-5, 2e-5, 0.1, 0.01] {
            let saved = serde_json::to_value(value).unwrap();
            let text = serde_json::to_string(&saved).unwrap();
            let read: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(read, saved, "{value} came back as {text}");
        }
    }
}
