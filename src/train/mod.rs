//! Supervised fine-tuning: configuration, the training loop, checkpoints, metrics and
//! their plots.

pub mod bench;
mod checkpoints;
mod config;
mod metrics;
pub mod plot;
mod step;
mod trainer;

pub use config::{
    DatasetConfig, GpuPrecision, SaveDtype, TrainConfig, MAX_MICRO_BATCH_TOKENS, MAX_STEP_TOKENS,
};
pub use step::{train_step, MicroBatch, StepResult};
pub use trainer::{train, train_until_stopped, TrainSummary};
