//! Traces written by another engine (vLLM, an API): rows of question and output read by
//! [`read_foreign_rows`], each given a gold answer (its own, or GSM8K's joined by question
//! text), verified as `scotd sample` verifies its own traces ([`trace_record`]) and
//! returned as [`TraceRecord`] lines.
//!
//! Each line's `id` is the row's own, else the joined GSM8K question's, else the file and
//! line where its question first appears (`answers.jsonl:3`); its `question` is the GSM8K
//! file's text when the question is found there (so that whitespace variants of one
//! question are one question), else the row's; the lines of one id must carry one
//! question. `sample` counts the lines of one id from 0 in input order; `tokens` is the
//! output's length in the given tokenizer; `answer` and `correct` are the verifier's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::traces::trace_record;
use crate::data::{
    gsm8k_by_question, question_key, read_foreign_rows, BadLines, ForeignFields, ForeignRow,
    Question, ReadReport, TraceId, TraceRecord,
};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Which verified traces are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Keep {
    /// Every trace, each with its verdict (`scotd verify --filter` keeps the correct).
    All,
    /// Only the traces the verifier accepts.
    Correct,
}

/// What happens to a row for which no gold answer is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MissingGold {
    /// Left out, counted, and the first few named in the summary.
    Skip,
    /// An error naming the row's file and line.
    Fail,
}

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub fields: ForeignFields,
    /// A GSM8K file whose gold answers are joined to rows without one, by question text.
    pub gsm8k: Option<PathBuf>,
    pub keep: Keep,
    pub missing_gold: MissingGold,
    pub bad_lines: BadLines,
}

/// How many rows without gold the summary names.
const NAMED_WITHOUT_GOLD: usize = 3;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportSummary {
    /// Rows read (bad lines skipped under `--skip-bad-lines` not included).
    pub rows: usize,
    /// Rows whose gold came from the GSM8K file.
    pub joined: usize,
    /// Rows verified (those with a gold answer).
    pub verified: usize,
    pub correct: usize,
    /// Traces returned (all verified, or the correct ones).
    pub written: usize,
    pub without_gold: usize,
    /// `file:line: question` of the first rows without gold.
    pub without_gold_named: Vec<String>,
    /// Each input file's read report (bad lines skipped are listed there).
    pub reports: Vec<ReadReport>,
}

/// The verified traces of every row of `inputs`, in input order.
pub fn import_traces(
    inputs: &[PathBuf],
    tokenizer: &Tokenizer,
    opts: &ImportOptions,
) -> Result<(Vec<TraceRecord>, ImportSummary)> {
    let gsm8k = match &opts.gsm8k {
        Some(path) => gsm8k_by_question(path)?,
        None => HashMap::new(),
    };
    let mut summary = ImportSummary::default();
    let mut ids = Ids::default();
    let mut traces = Vec::new();
    for path in inputs {
        let (rows, report) = read_foreign_rows(path, &opts.fields, opts.bad_lines)?;
        summary.reports.push(report);
        for row in rows {
            summary.rows += 1;
            let key = question_key(&row.question);
            let joined = gsm8k.get(&key);
            let Some(gold) = row.gold.clone().or_else(|| joined.map(|q| q.gold.clone())) else {
                without_gold(path, &row, opts.missing_gold, &mut summary)?;
                continue;
            };
            summary.joined += usize::from(row.gold.is_none());
            let id = row
                .id
                .clone()
                .or_else(|| joined.map(|q| q.id.clone()))
                .unwrap_or_else(|| ids.fallback(key, path, &row));
            let question = Question {
                id,
                question: joined.map_or(row.question.clone(), |q| q.question.clone()),
                gold,
            };
            let sample = ids.next_sample(&question, row.location.in_file(path))?;
            let tokens = tokenizer.encode(&row.output, false)?.len();
            let trace = trace_record(&question, sample, row.output, tokens);
            summary.verified += 1;
            summary.correct += usize::from(trace.correct);
            if trace.correct || opts.keep == Keep::All {
                traces.push(trace);
            }
        }
    }
    summary.written = traces.len();
    Ok((traces, summary))
}

fn without_gold(
    path: &Path,
    row: &ForeignRow,
    missing_gold: MissingGold,
    summary: &mut ImportSummary,
) -> Result<()> {
    let at = row.location.in_file(path);
    if missing_gold == MissingGold::Fail {
        return Err(Error::format(
            at,
            "gold",
            "no gold answer: the row has no gold field and no --gsm8k question has its text",
        ));
    }
    summary.without_gold += 1;
    if summary.without_gold_named.len() < NAMED_WITHOUT_GOLD {
        summary
            .without_gold_named
            .push(format!("{at}: {}", row.question));
    }
    Ok(())
}

/// An id's question, where it was first seen, and its next sample index.
struct IdUse {
    question: String,
    first_seen: String,
    next_sample: u64,
}

/// The ids given to rows without one, and the use of every id so far.
#[derive(Default)]
struct Ids {
    by_question: HashMap<String, TraceId>,
    uses: HashMap<TraceId, IdUse>,
}

impl Ids {
    /// The file name and line where the question first appeared.
    fn fallback(&mut self, key: String, path: &Path, row: &ForeignRow) -> TraceId {
        let file = Path::new(path.file_name().unwrap_or(path.as_os_str()));
        self.by_question
            .entry(key)
            .or_insert_with(|| TraceId::Text(row.location.in_file(file)))
            .clone()
    }

    /// The sample index of the next trace of `question`'s id, seen at `at`. The lines of
    /// one id must carry one question, as the trainer's trace reader requires.
    fn next_sample(&mut self, question: &Question, at: String) -> Result<u64> {
        let id_use = self
            .uses
            .entry(question.id.clone())
            .or_insert_with(|| IdUse {
                question: question.question.clone(),
                first_seen: at.clone(),
                next_sample: 0,
            });
        if id_use.question != question.question {
            return Err(Error::format(
                at,
                "question",
                format!(
                    "differs from the question of id {} at {}",
                    question.id, id_use.first_seen
                ),
            ));
        }
        id_use.next_sample += 1;
        Ok(id_use.next_sample - 1)
    }
}
