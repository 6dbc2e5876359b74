//! Training one demo model with the real trainer: from random weights (saved first as a
//! checkpoint folder with the demo tokenizer) or from an earlier stage's checkpoint, on
//! datasets in the run folder; then its loss curves drawn next to it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{ModelShape, Training};
use crate::model::{save_checkpoint, Model, ModelConfig};
use crate::train::plot::{plot_metrics, read_metrics};
use crate::train::{train, DatasetConfig, TrainConfig};
use crate::{DType, Result};

/// Checkpoints per run, so an interrupted run resumes near where it stopped.
const CHECKPOINTS: u64 = 4;
/// How many times the evaluation loss is measured, when there are held-out rows.
const EVAL_LOSS_POINTS: u64 = 10;
/// The loss plot's width and height in pixels.
const PLOT_SIZE: (u32, u32) = (1000, 800);

/// Where a stage's model starts.
pub enum Start<'a> {
    /// Random weights of this shape, seeded; the tokenizer folder goes with them.
    Random {
        shape: &'a ModelShape,
        vocab_size: usize,
        max_positions: usize,
        seed: u64,
        tokenizer: PathBuf,
    },
    /// An earlier stage's trained checkpoint.
    From(&'a Path),
}

/// A trained model and how its training went.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The final checkpoint: a Hugging Face model folder.
    pub model_dir: PathBuf,
    pub parameters: usize,
    pub steps: u64,
    /// The last step's loss as metrics.jsonl logs it (so also after a rerun that had
    /// nothing left to train).
    pub final_loss: f64,
    /// This run's training time (0 when a rerun found it finished).
    pub seconds: f64,
    pub metrics: PathBuf,
    pub loss_plot: PathBuf,
}

/// Trains a model in `stage_dir` (`init/` for random weights, `training/` for the
/// trainer's output, `loss.png`). `eval_rows` rows of each dataset are held out for the
/// evaluation loss.
pub fn train_stage(
    start: Start,
    datasets: Vec<DatasetConfig>,
    training: &Training,
    eval_rows: usize,
    seed: u64,
    stage_dir: &Path,
    show_progress: bool,
) -> Result<Trained> {
    let model = match start {
        Start::Random {
            shape,
            vocab_size,
            max_positions,
            seed,
            tokenizer,
        } => {
            let model = Model::random(shape.config(vocab_size, max_positions)?, seed);
            let init = stage_dir.join("init");
            save_checkpoint(&model, Some(&tokenizer), &init, DType::F32)?;
            init
        }
        Start::From(dir) => dir.to_path_buf(),
    };
    let config = trainer_config(model, datasets, training, eval_rows, seed, stage_dir);
    let started = Instant::now();
    let summary = train(config, show_progress)?;
    let seconds = started.elapsed().as_secs_f64();
    let metrics = read_metrics(&summary.metrics)?;
    let loss_plot = stage_dir.join("loss.png");
    plot_metrics(&metrics, &loss_plot, PLOT_SIZE)?;
    let parameters =
        ModelConfig::from_file(&summary.final_dir.join("config.json"))?.num_parameters();
    Ok(Trained {
        model_dir: summary.final_dir,
        parameters,
        steps: training.steps,
        final_loss: metrics.loss.last().map_or(f64::NAN, |&(_, loss)| loss),
        seconds,
        metrics: summary.metrics,
        loss_plot,
    })
}

/// The trainer's settings for a stage: `training`'s, 5 % warmup, no weight decay, a few
/// checkpoints (only the newest kept) and the evaluation loss when rows are held out.
fn trainer_config(
    model: PathBuf,
    datasets: Vec<DatasetConfig>,
    training: &Training,
    eval_rows: usize,
    seed: u64,
    stage_dir: &Path,
) -> TrainConfig {
    let eval_every = if eval_rows > 0 {
        (training.steps / EVAL_LOSS_POINTS).max(1)
    } else {
        0
    };
    TrainConfig {
        model,
        output_dir: stage_dir.join("training"),
        datasets,
        eval_rows,
        seq_len: training.seq_len,
        micro_batch_rows: training.batch_rows,
        grad_accum: 1,
        steps: Some(training.steps),
        lr: training.lr,
        warmup_steps: training.steps / 20,
        weight_decay: 0.0,
        seed,
        eval_every,
        save_every: (training.steps / CHECKPOINTS).max(1),
        keep_last: 1,
        ..TrainConfig::default()
    }
}
