//! `scotd solution-traces`: a GSM8K file's own worked solutions written as a trace JSONL,
//! the teacher when no teacher model can run (the seed replication's teacher).

use std::path::PathBuf;

use anyhow::{Context, Result};
use scotd::hub::{resolve_model, Needs};
use scotd::sample::{solution_traces, write_traces};
use scotd::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// GSM8K JSONL: `question` and `answer` (a worked solution ending in `#### N`), an
    /// optional `id` (default: the line number).
    #[arg(long)]
    data: PathBuf,
    /// The trace JSONL to write (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// A model folder (or Hub id, org/name[@revision]) whose tokenizer counts each trace's
    /// `tokens` (the student's).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Only the first this many questions.
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let tokenizer = Tokenizer::from_dir(&resolve_model(&args.tokenizer, Needs::Tokenizer)?)?;
    let traces = solution_traces(&args.data, &tokenizer, args.limit.unwrap_or(usize::MAX))?;
    write_traces(&args.out, &traces).with_context(|| format!("writing {}", args.out.display()))?;
    let correct = traces.iter().filter(|t| t.correct).count();
    let tokens: u64 = traces.iter().map(|t| t.tokens).sum();
    eprintln!(
        "{} solution traces written to {} ({} verified correct, {} tokens, {:.0} a trace)",
        traces.len(),
        args.out.display(),
        correct,
        tokens,
        tokens as f64 / traces.len().max(1) as f64,
    );
    Ok(())
}
