//! Supervised fine-tuning: configuration, the training loop, checkpoints, metrics and
//! their plots.

pub mod bench;
mod checkpoints;
mod config;
pub mod gpu;
mod metrics;
pub mod plot;
mod trainer;

pub use config::{DatasetConfig, GpuPrecision, SaveDtype, TrainConfig, TrainDevice};
pub use trainer::{train, TrainSummary};
