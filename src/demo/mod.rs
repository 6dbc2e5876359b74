//! `scotd demo`: the whole method on a laptop, with no download. A small Qwen2 teacher
//! learns generated arithmetic word problems, is sampled on new ones, the verifier keeps
//! its correct traces, and a smaller student is trained on them mixed with chat data,
//! then evaluated before and after; every stage through the real code paths (the same
//! trainer, sampler, verifier and readers as a real run), on data generated here.
//!
//! What is built so far: the data (problems, chat examples, tokenizer) and the teacher
//! stage, with the teacher's greedy accuracy on held-out problems.
//!
//! A run writes everything into one folder:
//!
//! | path | what |
//! |---|---|
//! | `config.json` | the [`DemoConfig`] of the run |
//! | `tokenizer/` | tokenizer.json and tokenizer_config.json (ChatML) |
//! | `data/teacher-train.jsonl` | the teacher's training problems (GSM8K JSONL) |
//! | `data/eval.jsonl` | held-out problems, never trained on |
//! | `data/chat.jsonl` | the chat examples (Alpaca JSONL) |
//! | `teacher/init/` | the teacher before training (random weights) |
//! | `teacher/training/` | the trainer's metrics.jsonl and checkpoints |
//! | `teacher/loss.png` | the teacher's training curves |
//! | `teacher/eval.jsonl` | the teacher's greedy answers to the held-out problems |
//!
//! # Choosing the teacher
//!
//! Measured on the project's 2-core development machine while other builds ran (so the
//! times are high and rough), 200 held-out problems, greedy decoding, Qwen2 with tied
//! embeddings, head_dim 32, 2 KV heads, intermediate 3 × hidden, batches of 8 × 256
//! packed tokens, cosine decay with 5 % warmup:
//!
//! | problems (steps, numbers ≤) | hidden × layers | lr | steps | train time | accuracy |
//! |---|---|---|--:|--:|--:|
//! | 2, 20 | 128 × 2 | 3e-3 | 600 | 102 s | 42.5 % |
//! | 2, 20 | 128 × 2 | 6e-3 | 600 | 137 s | 49.0 % |
//! | 2, 20 | 192 × 3 | 3e-3 | 600 | 291 s | 57.0 % |
//! | 2, 20 | 128 × 2 | 3e-3 | 1000 | 229 s | 69.5 % |
//! | 2, 10 | 128 × 2 | 3e-3 | 600 | 152 s | 78.0 % |

pub mod chat_data;
pub mod problems;
mod run_folder;
mod teacher;
pub mod tokenizer;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{Architecture, ModelConfig};
use crate::rng::Rng;
use crate::{Error, Result};
use problems::{Difficulty, MAX_STEPS};

pub use run_folder::RunFolder;
pub use teacher::{evaluate, Evaluation, TeacherStage};

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
    /// The model config for a vocabulary of `vocab_size` tokens, rounded up to a multiple
    /// of 64 rows.
    pub fn config(&self, vocab_size: usize, max_positions: usize) -> Result<ModelConfig> {
        let err = |field: &str, msg: String| Err(Error::format("demo model", field, msg));
        if [
            self.hidden_size,
            self.layers,
            self.heads,
            self.kv_heads,
            self.intermediate_size,
        ]
        .contains(&0)
        {
            return err(
                "(shape)",
                format!("every size must be at least 1: {self:?}"),
            );
        }
        if self.hidden_size % self.heads != 0 || (self.hidden_size / self.heads) % 2 != 0 {
            return err(
                "heads",
                format!(
                    "{} heads must split hidden_size {} into heads of an even size",
                    self.heads, self.hidden_size
                ),
            );
        }
        if self.heads % self.kv_heads != 0 {
            return err(
                "kv_heads",
                format!("{} must divide heads {}", self.kv_heads, self.heads),
            );
        }
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

/// How a demo model is trained: the trainer's main settings (the rest are its defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub steps: u64,
    pub lr: f32,
    /// Rows of `seq_len` packed tokens per step.
    pub batch_rows: usize,
    pub seq_len: usize,
}

/// Everything a demo run depends on; written to the run folder as config.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoConfig {
    pub seed: u64,
    pub difficulty: Difficulty,
    /// Problems the teacher is trained on.
    pub teacher_problems: usize,
    /// Held-out problems every model is evaluated on.
    pub eval_problems: usize,
    pub teacher: ModelShape,
    pub teacher_training: Training,
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
            max_new_tokens: 128,
        }
    }
}

impl DemoConfig {
    /// A small run for tests: the same stages in well under a minute.
    pub fn reduced() -> Self {
        let full = DemoConfig::default();
        DemoConfig {
            teacher_problems: 2000,
            eval_problems: 50,
            teacher_training: Training {
                steps: 60,
                ..full.teacher_training.clone()
            },
            ..full
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.difficulty.validate()?;
        let err = |field: &str, msg: &str| Err(Error::format("demo config", field, msg));
        if self.teacher_problems == 0 || self.eval_problems == 0 {
            return err(
                "problems",
                "the teacher and evaluation need at least 1 problem each",
            );
        }
        let t = &self.teacher_training;
        if t.steps == 0 || t.batch_rows == 0 || t.seq_len == 0 {
            return err(
                "teacher_training",
                "steps, batch_rows and seq_len must be at least 1",
            );
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return err("teacher_training.lr", "must be a positive number");
        }
        if self.max_new_tokens == 0 {
            return err("max_new_tokens", "must be at least 1");
        }
        Ok(())
    }

    /// The longest sequence a demo model sees: a training row, or a prompt and its reply.
    fn max_positions(&self) -> usize {
        self.teacher_training.seq_len.max(2 * self.max_new_tokens)
    }
}

/// What a demo run produced so far.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    pub teacher: TeacherStage,
}

/// Runs the demo into `out`, showing progress bars when `show_progress` is set. Rerunning
/// with the same config continues where a previous run stopped; another config is an
/// error.
pub fn run(config: &DemoConfig, out: &Path, show_progress: bool) -> Result<DemoSummary> {
    config.validate()?;
    let folder = RunFolder::create(out, config)?;
    let data = folder.write_data(config)?;
    let teacher = teacher::run(config, &folder, &data, show_progress)?;
    Ok(DemoSummary { teacher })
}

/// Problems generated to collect the words of the problem templates: each template shows
/// up many times in a few hundred.
const VOCABULARY_SAMPLE: usize = 500;

/// The demo's vocabulary: every piece of its problems (any seed, any difficulty), of its
/// chat examples and of the replies the reasoning format writes.
pub fn vocabulary() -> Result<Vec<String>> {
    let hardest = Difficulty {
        max_steps: MAX_STEPS,
        max_number: 20,
    };
    let mut rng = Rng::new(0);
    let sample: Vec<_> = (0..VOCABULARY_SAMPLE)
        .map(|_| problems::generate(&mut rng, hardest))
        .collect();
    let chat = chat_data::chat_examples();
    let problem_texts = sample
        .iter()
        .flat_map(|p| [p.question.as_str(), p.answer.as_str()]);
    let chat_texts = chat
        .iter()
        .flat_map(|e| [e.instruction.as_str(), e.input.as_str(), e.output.as_str()]);
    let replies = [" \\boxed{0}"];
    tokenizer::build_vocabulary(
        problem_texts.chain(chat_texts).chain(replies),
        &problems::lexicon(),
    )
}
