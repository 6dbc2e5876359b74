//! Optimizers: AdamW with its learning-rate schedules and gradient clipping for the
//! trainer, over a model's flat parameter buffers on any device (the CPU reference in
//! adamw.rs, the GPU kernels' launchers in `cuda`), and plain SGD for the engine's own
//! end-to-end check (memorising a few sequences).

mod adamw;
pub mod cuda;
mod schedule;
mod sgd;

pub use adamw::{default_decay, AdamW, AdamWConfig, StepOutcome};
pub use schedule::{Decay, Schedule};
pub use sgd::sgd_step;

/// A setting as the f64 a config file's decimal means, as torch (Python floats) holds
/// it: 0.9f32 widened is 0.899999976…, which moves 1 − β1 by an ulp once rounded
/// back to f32, while the shortest decimal of 0.9f32 is "0.9".
fn widen_as_written(x: f32) -> f64 {
    x.to_string()
        .parse()
        .expect("an f32's Display output parses as an f64")
}
