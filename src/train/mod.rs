//! Supervised fine-tuning: configuration, the training loop, checkpoints, metrics and
//! their plots.

pub mod bench;
mod checkpoints;
mod config;
mod metrics;
pub mod plot;
mod step;
mod trainer;

pub use config::{DatasetConfig, GpuPrecision, SaveDtype, TrainConfig};
pub use step::{train_step, MicroBatch, StepResult};
pub use trainer::{train, TrainSummary};
