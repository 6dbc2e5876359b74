//! Evaluating a demo model with the evaluator (`scotd eval`'s library): greedy answers to
//! the held-out problems, verified, and replies to chat probes, into a report folder.

use std::path::Path;

use crate::data::Question;
use crate::eval::{evaluate, EvalOptions, EvalReport, EvalTarget};
use crate::model::Model;
use crate::sample::{Prompter, SamplingConfig};
use crate::tokenizer::Tokenizer;
use crate::Result;

/// Sequences decoded together.
pub const DECODE_BATCH: usize = 16;

/// Evaluates the model in `model_dir` on `questions` (and `probes`, which may be empty)
/// into `out_dir`; `name` is the model's name in the report.
pub fn evaluate_model(
    model_dir: &Path,
    name: &str,
    questions: &[Question],
    probes: &[&str],
    max_new_tokens: usize,
    out_dir: &Path,
    show_progress: bool,
) -> Result<EvalReport> {
    let model = Model::load(model_dir)?;
    let tokenizer = Tokenizer::from_dir(model_dir)?;
    let prompter = Prompter::new(&tokenizer, None, None, None)?;
    let target = EvalTarget {
        model: &model,
        model_name: name,
        tokenizer: &tokenizer,
        prompter: &prompter,
        data_name: "held-out problems (data/eval.jsonl)",
    };
    let options = EvalOptions {
        sampling: SamplingConfig {
            max_new_tokens,
            batch_size: DECODE_BATCH,
            ..SamplingConfig::default()
        },
        probes: probes.iter().map(|p| p.to_string()).collect(),
        chat: None,
        lm_eval_fewshot: None,
    };
    evaluate(&target, questions, &options, out_dir, show_progress)
}
