//! Supervised fine-tuning: configuration, the training loop, checkpoints, metrics and
//! their plots.

pub mod bench;
mod checkpoints;
mod config;
mod epochs;
pub mod field_help;
pub mod hf_names;
mod metrics;
pub mod plot;
mod step;
pub mod tensorboard;
mod trainer;

pub use config::{
    DatasetConfig, GpuPrecision, ResumeFrom, SaveDtype, TrainConfig, DEFAULT_STEPS, MAX_EPOCHS,
    MAX_MICRO_BATCH_TOKENS, MAX_STEP_TOKENS,
};
pub use step::{train_step, MicroBatch, StepResult};
pub use trainer::{train, train_until_stopped, TrainSummary};
