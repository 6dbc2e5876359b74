//! Optimizers. AdamW and learning-rate schedules arrive with the trainer; plain SGD is
//! here for the engine's own end-to-end check (memorising a few sequences).

mod sgd;

pub use sgd::sgd_step;
