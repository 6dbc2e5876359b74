//! `scotd sample`: the teacher's traces for every question of a dataset, verified and
//! appended to a trace JSONL; a rerun resumes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use scotd::data::read_questions;
use scotd::sample::{sample_traces, Prompter, SampleOptions};
use serde_json::json;

use crate::prompts::{load_model, ModelArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Questions: GSM8K JSONL (`question`, `answer` ending in `#### N`) or rows with
    /// `question` and `gold`; an optional `id` names each (default: its line number).
    #[arg(long)]
    data: PathBuf,
    /// The trace JSONL to write; an existing one is resumed.
    #[arg(long)]
    out: PathBuf,
    /// Traces per question (more than one needs --temperature above 0).
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// Only the first this many questions.
    #[arg(long)]
    limit: Option<usize>,
    /// The user turn: plain (the question), deepseek-math (DeepSeek-math-instruct's
    /// step-by-step instruction, DeepSeek template by default) or a text file holding
    /// {question}.
    #[arg(long, default_value = "plain")]
    prompt: String,
}

pub fn run(args: Args) -> Result<()> {
    let mut questions = read_questions(&args.data)?;
    questions.truncate(args.limit.unwrap_or(usize::MAX));
    let (model, tokenizer) = load_model(&args.model.model, &args.model.placement)?;
    let prompter = Prompter::new(
        &tokenizer,
        Some(&args.prompt),
        args.model.decoding.template.as_deref(),
        args.model.decoding.system.clone(),
    )?;
    let opts = SampleOptions {
        samples_per_question: args.n,
        sampling: args.model.decoding.sampling(&tokenizer),
        settings: Some(settings(&args)),
    };
    let summary = sample_traces(
        &model, &tokenizer, &prompter, &questions, &opts, &args.out, true,
    )
    .with_context(|| format!("sampling into {}", args.out.display()))?;
    if summary.cut_bytes > 0 {
        eprintln!(
            "cut a torn last line ({} bytes) left by an interrupted run",
            summary.cut_bytes
        );
    }
    eprintln!(
        "{} questions: {} traces were already in {}, {} generated ({} correct, {:.1}%), {} tokens in {:.1} s ({:.1} tok/s)",
        summary.questions,
        summary.resumed,
        args.out.display(),
        summary.generated,
        summary.correct,
        100.0 * summary.correct as f64 / summary.generated.max(1) as f64,
        summary.tokens,
        summary.seconds,
        summary.tokens as f64 / summary.seconds.max(1e-9),
    );
    Ok(())
}

/// What decides a trace: a resume with other values would mix traces of two kinds in one
/// file (the batch size and the device do not change what a trace is).
fn settings(args: &Args) -> serde_json::Value {
    let d = &args.model.decoding;
    json!({
        "model": args.model.model.display().to_string(),
        "data": args.data.display().to_string(),
        "prompt": args.prompt,
        "template": d.template,
        "system": d.system,
        "n": args.n,
        "max_new_tokens": d.max_new_tokens,
        "temperature": d.temperature,
        "top_p": d.top_p,
        "top_k": d.top_k,
        "seed": d.seed,
    })
}
