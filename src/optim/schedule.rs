//! Learning-rate schedules: linear warmup from 0, then cosine or linear decay to a floor
//! (or a constant rate), exactly as Hugging Face transformers computes them.

use std::f64::consts::PI;

use super::widen_as_written;

/// The shape of the schedule after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Half a cosine from the peak down to the floor.
    #[serde(alias = "cosine_with_min_lr")]
    Cosine,
    /// A straight line from the peak down to the floor.
    Linear,
    /// The peak, held (after the warmup, as transformers' `constant_with_warmup`).
    #[serde(alias = "constant_with_warmup")]
    Constant,
}

/// `lr(step)` is the learning rate of update number `step + 1` (steps count from 0).
///
/// This is transformers' convention, which lives in how torch's `LambdaLR` counts: the
/// scheduler applies factor(0) when it is built, the first update runs with it, and
/// each `scheduler.step()` after an update moves to the next factor. So with warmup,
/// the first update runs at learning rate 0. The factors are those of
/// `get_cosine_schedule_with_warmup` / `get_linear_schedule_with_warmup` /
/// `get_constant_schedule_with_warmup` when `min_lr_ratio` is 0, and of
/// `get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate = min_lr_ratio)` for a
/// floor, computed in f64 with the same expressions (transformers 5.24).
///
/// Where we differ: transformers has no linear decay to a floor; ours is the linear
/// analogue of its cosine one (floor + (1 − floor)·linear factor, the same numbers when
/// the floor is 0). And past `total_steps` we hold the floor, where transformers' cosine
/// climbs back up (its half-cosine continues into the next period).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    pub peak_lr: f32,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
    /// The floor the decay ends at, as a fraction of `peak_lr`.
    pub min_lr_ratio: f32,
}

impl Schedule {
    /// The learning rate of update number `step + 1`.
    pub fn lr(&self, step: u64) -> f32 {
        (widen_as_written(self.peak_lr) * self.factor(step)) as f32
    }

    /// The multiple of `peak_lr` at `step`.
    fn factor(&self, step: u64) -> f64 {
        let warmup = self.warmup_steps;
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(warmup).max(1) as f64;
        let floor = widen_as_written(self.min_lr_ratio);
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Cosine => {
                let progress = ((step - warmup) as f64 / decay_steps).min(1.0);
                let cosine = 0.5 * (1.0 + (PI * progress).cos());
                cosine * (1.0 - floor) + floor
            }
            Decay::Linear => {
                // transformers' expression, (total - step) / (total - warmup), rather
                // than 1 - progress: they round differently.
                let remaining = self.total_steps.saturating_sub(step) as f64 / decay_steps;
                remaining * (1.0 - floor) + floor
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(decay: Decay, min_lr_ratio: f32) -> Schedule {
        Schedule {
            peak_lr: 1e-3,
            warmup_steps: 4,
            total_steps: 20,
            decay,
            min_lr_ratio,
        }
    }

    fn assert_close(got: f32, want: f64) {
        assert!(
            (got as f64 - want).abs() <= 1e-7 * want.abs().max(1e-3),
            "got {got}, want {want}"
        );
    }

    #[test]
    fn warmup_starts_at_zero_and_reaches_the_peak_when_it_ends() {
        for decay in [Decay::Cosine, Decay::Linear, Decay::Constant] {
            let s = schedule(decay, 0.1);
            assert_eq!(s.lr(0), 0.0);
            assert_close(s.lr(1), 0.25e-3);
            assert_close(s.lr(3), 0.75e-3);
            assert_close(s.lr(4), 1e-3);
        }
    }

    #[test]
    fn cosine_passes_halfway_and_ends_on_the_floor() {
        let s = schedule(Decay::Cosine, 0.1);
        assert_close(s.lr(12), 1e-3 * (0.1 + 0.9 * 0.5));
        // One update before the end: transformers' factor at progress 15/16.
        let cos = 0.5 * (1.0 + (PI * 15.0 / 16.0).cos());
        assert_close(s.lr(19), 1e-3 * (0.1 + 0.9 * cos));
        assert_close(s.lr(20), 1e-4);
        assert_close(s.lr(1000), 1e-4);
        assert_close(schedule(Decay::Cosine, 0.0).lr(20), 0.0);
    }

    #[test]
    fn linear_passes_halfway_and_ends_on_the_floor() {
        let s = schedule(Decay::Linear, 0.1);
        assert_close(s.lr(12), 1e-3 * (0.1 + 0.9 * 0.5));
        assert_close(s.lr(19), 1e-3 * (0.1 + 0.9 / 16.0));
        assert_close(s.lr(20), 1e-4);
        assert_close(s.lr(1000), 1e-4);
        assert_eq!(schedule(Decay::Linear, 0.0).lr(20), 0.0);
    }

    #[test]
    fn constant_holds_the_peak_after_warmup() {
        let s = schedule(Decay::Constant, 0.1);
        assert_close(s.lr(5), 1e-3);
        assert_close(s.lr(1000), 1e-3);
    }

    #[test]
    fn no_warmup_starts_at_the_peak() {
        let s = Schedule {
            warmup_steps: 0,
            ..schedule(Decay::Cosine, 0.0)
        };
        assert_close(s.lr(0), 1e-3);
        assert_close(s.lr(10), 0.5e-3);
    }

    #[test]
    fn decay_names_in_config_files_are_snake_case() {
        let s: Decay = serde_json::from_str("\"cosine\"").unwrap();
        assert_eq!(s, Decay::Cosine);
        assert_eq!(serde_json::to_string(&Decay::Linear).unwrap(), "\"linear\"");
    }
}
