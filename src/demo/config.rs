//! The demo's settings: the problems, the two model shapes, each training, sampling and
//! evaluation sizes; the full demo's defaults and the reduced preset the tests run.

use serde::{Deserialize, Serialize};

use super::problems::Difficulty;
use crate::model::{Architecture, ModelConfig};
use crate::{Error, Result};

/// A demo model's shape: Qwen2 (biases on q/k/v) with tied embeddings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate_size: usize,
}

impl ModelShape {
    /// Checks that the sizes make a model: none zero, heads of an even size, KV heads
    /// dividing the heads.
    pub fn validate(&self, field: &str) -> Result<()> {
        let err = |msg: String| Err(Error::format("demo config", field, msg));
        let sizes = [
            self.hidden_size,
            self.layers,
            self.heads,
            self.kv_heads,
            self.intermediate_size,
        ];
        if sizes.contains(&0) {
            return err(format!("every size must be at least 1: {self:?}"));
        }
        let head_dim = self.hidden_size / self.heads;
        if !self.hidden_size.is_multiple_of(self.heads) || !head_dim.is_multiple_of(2) {
            return err(format!(
                "{} heads must split hidden_size {} into heads of an even size",
                self.heads, self.hidden_size
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return err(format!(
                "kv_heads {} must divide heads {}",
                self.kv_heads, self.heads
            ));
        }
        Ok(())
    }

    /// The model config for a vocabulary of `vocab_size` tokens, rounded up to a multiple
    /// of 64 rows.
    pub fn config(&self, vocab_size: usize, max_positions: usize) -> Result<ModelConfig> {
        self.validate("model")?;
        Ok(ModelConfig {
            architecture: Architecture::Qwen2,
            hidden_size: self.hidden_size,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads,
            head_dim: self.hidden_size / self.heads,
            intermediate_size: self.intermediate_size,
            vocab_size: vocab_size.div_ceil(64) * 64,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            qkv_bias: true,
            o_bias: false,
            max_position_embeddings: Some(max_positions),
        })
    }
}

/// How a demo model is trained: the trainer's main settings (the rest are its defaults,
/// with 5 % warmup and no weight decay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub steps: u64,
    pub lr: f32,
    /// Rows of `seq_len` packed tokens per step.
    pub batch_rows: usize,
    pub seq_len: usize,
}

impl Training {
    fn validate(&self, field: &str) -> Result<()> {
        let err = |msg: &str| Err(Error::format("demo config", field, msg));
        if self.steps == 0 || self.batch_rows == 0 || self.seq_len == 0 {
            return err("steps, batch_rows and seq_len must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return err("lr must be a positive number");
        }
        Ok(())
    }
}

/// Everything a demo run depends on; written to the run folder as config.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoConfig {
    pub seed: u64,
    pub difficulty: Difficulty,
    /// Problems the teacher is trained on.
    pub teacher_problems: usize,
    /// Problems the teacher is sampled on: the student's training questions.
    pub sample_problems: usize,
    /// Traces sampled per problem, and their temperature.
    pub samples_per_problem: usize,
    pub sample_temperature: f32,
    /// Held-out problems every model is evaluated on.
    pub eval_problems: usize,
    pub teacher: ModelShape,
    pub teacher_training: Training,
    pub student: ModelShape,
    /// The student's first training, on the chat examples alone: it stands in for the
    /// instruct model distillation starts from, which can chat but not reason.
    pub student_chat_training: Training,
    /// Distillation: the verified traces mixed 70/30 with the chat examples.
    pub student_training: Training,
    /// The longest reply generated, in tokens.
    pub max_new_tokens: usize,
}

impl Default for DemoConfig {
    /// The full demo: a few minutes a stage on two CPU cores.
    fn default() -> Self {
        DemoConfig {
            seed: 0,
            difficulty: Difficulty {
                max_steps: 2,
                max_number: 10,
            },
            teacher_problems: 20_000,
            sample_problems: 2000,
            samples_per_problem: 2,
            sample_temperature: 0.7,
            eval_problems: 200,
            teacher: ModelShape {
                hidden_size: 128,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                intermediate_size: 384,
            },
            teacher_training: Training {
                steps: 1000,
                lr: 3e-3,
                batch_rows: 8,
                seq_len: 256,
            },
            student: ModelShape {
                hidden_size: 96,
                layers: 2,
                heads: 3,
                kv_heads: 1,
                intermediate_size: 288,
            },
            student_chat_training: Training {
                steps: 100,
                lr: 3e-3,
                batch_rows: 4,
                seq_len: 256,
            },
            student_training: Training {
                steps: 800,
                lr: 3e-3,
                batch_rows: 8,
                seq_len: 256,
            },
            max_new_tokens: 128,
        }
    }
}

impl DemoConfig {
    /// A small run for tests: one-step problems with numbers up to 6 and short trainings,
    /// the same stages in under a minute on two cores.
    pub fn reduced() -> Self {
        let full = DemoConfig::default();
        let short = |training: &Training, steps| Training {
            steps,
            batch_rows: 4,
            ..training.clone()
        };
        DemoConfig {
            difficulty: Difficulty {
                max_steps: 1,
                max_number: 6,
            },
            teacher_problems: 2000,
            sample_problems: 200,
            eval_problems: 60,
            teacher_training: short(&full.teacher_training, 120),
            student_chat_training: short(&full.student_chat_training, 30),
            student_training: short(&full.student_training, 120),
            ..full
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.difficulty.validate()?;
        let err = |field: &str, msg: &str| Err(Error::format("demo config", field, msg));
        if [
            self.teacher_problems,
            self.sample_problems,
            self.eval_problems,
        ]
        .contains(&0)
        {
            return err("problems", "every set of problems needs at least 1");
        }
        if self.samples_per_problem == 0 {
            return err("samples_per_problem", "must be at least 1");
        }
        if !(self.sample_temperature >= 0.0 && self.sample_temperature.is_finite()) {
            return err("sample_temperature", "must be 0 or more");
        }
        if self.max_new_tokens == 0 {
            return err("max_new_tokens", "must be at least 1");
        }
        self.teacher.validate("teacher")?;
        self.student.validate("student")?;
        self.teacher_training.validate("teacher_training")?;
        self.student_chat_training
            .validate("student_chat_training")?;
        self.student_training.validate("student_training")
    }

    /// The longest sequence a demo model sees: a training row, or a prompt and its reply.
    pub(super) fn max_positions(&self) -> usize {
        [
            self.teacher_training.seq_len,
            self.student_chat_training.seq_len,
            self.student_training.seq_len,
            2 * self.max_new_tokens,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presets_are_valid_and_bad_settings_name_their_field() {
        DemoConfig::default().validate().unwrap();
        DemoConfig::reduced().validate().unwrap();
        let mut odd_heads = DemoConfig::default();
        odd_heads.student.heads = 5;
        let err = odd_heads.validate().unwrap_err().to_string();
        assert!(err.contains("student") && err.contains("heads"), "{err}");
        let mut no_steps = DemoConfig::default();
        no_steps.student_training.steps = 0;
        let err = no_steps.validate().unwrap_err().to_string();
        assert!(err.contains("student_training"), "{err}");
        let shape = DemoConfig::default().teacher;
        let config = shape.config(600, 512).unwrap();
        assert_eq!((config.vocab_size, config.head_dim), (640, 32));
    }
}
