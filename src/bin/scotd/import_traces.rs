//! `scotd import-traces`: rows of question and output written by another engine (vLLM,
//! an API) verified into a trace JSONL, as `scotd sample` writes its own.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use scotd::data::{BadLines, ForeignFields};
use scotd::hub::{resolve_model, Needs};
use scotd::sample::{import_traces, write_traces, ImportOptions, ImportSummary, Keep, MissingGold};
use scotd::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct Args {
    /// Files of question/output rows (JSONL, a JSON array or parquet), read in order.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The trace JSONL to write (replaced atomically).
    #[arg(long)]
    out: PathBuf,
    /// A model folder (or Hub id, org/name[@revision]) whose tokenizer counts each trace's
    /// `tokens` (the student's, as `scotd solution-traces` counts them).
    #[arg(long)]
    tokenizer: PathBuf,
    /// GSM8K file (`question`, `answer` ending in `#### N`) whose gold answers are joined
    /// to rows without one, by question text (trimmed, whitespace collapsed); its `id`
    /// (default: line number) then names the row's question.
    #[arg(long)]
    gsm8k: Option<PathBuf>,
    /// Which traces to write: all, each with its verdict (`correct`), or only correct ones.
    #[arg(long, value_enum, default_value_t = Keep::All)]
    keep: Keep,
    /// Rows with no gold answer (none of their own, none in --gsm8k): skip (counted and
    /// the first few named) or fail (an error naming the row).
    #[arg(long, value_enum, default_value_t = MissingGold::Skip)]
    missing_gold: MissingGold,
    /// Skip rows that cannot be read (each named on stderr) instead of stopping at the first.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Field names of the question, first present wins.
    #[arg(long, value_delimiter = ',', default_value = "question,prompt")]
    question_field: Vec<String>,
    /// Field names of the output (a string, or an OpenAI response object), first present wins.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "output,response,completion,text"
    )]
    output_field: Vec<String>,
    /// Field names of the gold answer (a number, or a GSM8K answer ending in `#### N`).
    #[arg(long, value_delimiter = ',', default_value = "gold,answer")]
    gold_field: Vec<String>,
    /// Field name of the question id (a string or an integer).
    #[arg(long, default_value = "id")]
    id_field: String,
}

pub fn run(args: Args) -> Result<()> {
    let tokenizer = Tokenizer::from_dir(&resolve_model(&args.tokenizer, Needs::Tokenizer)?)?;
    let opts = ImportOptions {
        fields: ForeignFields {
            question: args.question_field,
            output: args.output_field,
            gold: args.gold_field,
            id: args.id_field,
        },
        gsm8k: args.gsm8k,
        keep: args.keep,
        missing_gold: args.missing_gold,
        bad_lines: if args.skip_bad_lines {
            BadLines::Skip
        } else {
            BadLines::Fail
        },
    };
    let (traces, summary) = import_traces(&args.inputs, &tokenizer, &opts)?;
    if traces.is_empty() {
        print_summary(&summary);
        bail!("no trace to write: every row was skipped");
    }
    write_traces(&args.out, &traces).with_context(|| format!("writing {}", args.out.display()))?;
    print_summary(&summary);
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn print_summary(summary: &ImportSummary) {
    for skipped in summary.reports.iter().flat_map(|r| &r.skipped) {
        eprintln!("skipped {}", skipped.error);
    }
    for named in &summary.without_gold_named {
        eprintln!("no gold: {named}");
    }
    let bad: usize = summary.reports.iter().map(|r| r.skipped.len()).sum();
    eprintln!(
        "{} rows read, {} golds joined from GSM8K, {}/{} correct, {} written; skipped: {} without gold, {} bad lines",
        summary.rows,
        summary.joined,
        summary.correct,
        summary.verified,
        summary.written,
        summary.without_gold,
        bad
    );
}
