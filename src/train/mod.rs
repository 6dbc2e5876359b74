//! Supervised fine-tuning: configuration, the training loop, checkpoints, metrics and
//! their plots.

mod checkpoints;
mod config;
mod metrics;
pub mod plot;
mod trainer;

pub use config::{DatasetConfig, SaveDtype, TrainConfig};
pub use trainer::{train, TrainSummary};
