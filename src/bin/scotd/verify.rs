//! `scotd verify`: checks model outputs against gold answers (`--pairs`) or keeps only the
//! correct traces of a sampled trace file (`--filter`, rejection sampling).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use scotd::verify::{filter_traces, verify_pairs, FilterReport};

#[derive(clap::Args)]
pub struct Args {
    /// JSONL of `gold` (a number, or a GSM8K answer ending in `#### N`) and `output`
    /// lines; each is written back with `final_answer`, `think_answer` and `correct`.
    #[arg(long, conflicts_with = "filter", required_unless_present = "filter")]
    pairs: Option<PathBuf>,
    /// Trace JSONL (as `scotd sample` writes it): re-verified, only correct lines kept.
    #[arg(long)]
    filter: Option<PathBuf>,
    /// Where to write the JSONL (stdout when left out; required with --filter).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    match (&args.pairs, &args.filter) {
        (Some(pairs), _) => run_pairs(pairs, args.out.as_deref()),
        (None, Some(traces)) => match &args.out {
            Some(out) => run_filter(traces, out),
            None => bail!("--filter needs --out for the kept traces"),
        },
        (None, None) => bail!("give --pairs or --filter"),
    }
}

fn run_pairs(pairs: &Path, out: Option<&Path>) -> Result<()> {
    let report = verify_pairs(pairs)?;
    write_output(&report.jsonl, out)?;
    let percent = 100.0 * report.correct as f64 / report.total.max(1) as f64;
    eprintln!(
        "accuracy {}/{} = {percent:.1}%",
        report.correct, report.total
    );
    Ok(())
}

fn run_filter(traces: &Path, out: &Path) -> Result<()> {
    let report = filter_traces(traces)?;
    scotd::io::write_atomic(out, report.jsonl.as_bytes())?;
    print_filter_counts(&report);
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Per question `id: kept/total`, then the totals.
fn print_filter_counts(report: &FilterReport) {
    for question in &report.questions {
        eprintln!("{}: {}/{}", question.id, question.kept, question.total);
    }
    eprintln!(
        "kept {}/{} traces; {}/{} questions have at least one correct trace",
        report.kept(),
        report.total(),
        report.solved(),
        report.questions.len()
    );
}

fn write_output(jsonl: &str, out: Option<&Path>) -> Result<()> {
    match out {
        Some(path) => Ok(scotd::io::write_atomic(path, jsonl.as_bytes())?),
        None => std::io::stdout()
            .write_all(jsonl.as_bytes())
            .context("writing to stdout"),
    }
}
