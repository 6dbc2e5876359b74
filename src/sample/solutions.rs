//! The teacher that needs no model: a GSM8K file's own worked solutions, written as the
//! trace JSONL a sampling teacher writes, so that everything downstream (the verifier, the
//! trainer's `traces` format) treats them as one greedy trace per question. Each trace is
//! the solution with its calculator notes removed and `#### N` written as `\boxed{N}`;
//! the verifier then extracts and checks the answer as it does for a model's trace.

use std::path::Path;

use super::traces::trace_record;
use crate::data::{read_gsm8k_solutions, TraceRecord};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The solution traces of the first `limit` questions of `path`; `tokens` counts each
/// trace in `tokenizer`'s tokens (the student's: the teacher here has none).
pub fn solution_traces(
    path: &Path,
    tokenizer: &Tokenizer,
    limit: usize,
) -> Result<Vec<TraceRecord>> {
    read_gsm8k_solutions(path)?
        .into_iter()
        .take(limit)
        .map(|(question, solution)| {
            let trace = format!(
                "{}\n\\boxed{{{}}}",
                solution.reasoning, solution.final_answer
            );
            let tokens = tokenizer.encode(&trace, false)?.len();
            Ok(trace_record(&question, 0, trace, tokens))
        })
        .collect()
}

/// The traces as JSONL, written atomically.
pub fn write_traces(path: &Path, traces: &[TraceRecord]) -> Result<()> {
    let mut text = String::new();
    for trace in traces {
        let line = serde_json::to_string(trace)
            .map_err(|e| Error::format(path, "(json)", e.to_string()))?;
        text.push_str(&line);
        text.push('\n');
    }
    crate::io::write_atomic(path, text.as_bytes())
}
