//! Training: the SFT loop, its checkpoints and metrics.

pub mod plot;
