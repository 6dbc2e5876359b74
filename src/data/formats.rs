//! What the dataset readers produce and how they are configured: the formats, the policy
//! for bad records, a training row (one conversation), the reasoning format of assistant
//! replies, and [`read_rows`], which reads any format into rows.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::records::{self, read_records, reject, FieldError, Location, Record};
use super::{alpaca, gsm8k, messages, traces};
use crate::tokenizer::Message;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// `{"question", "answer"}`, the answer ending in `#### N` (see [`split_gsm8k_answer`](super::split_gsm8k_answer)).
    Gsm8k,
    /// `{"instruction", "input", "output"}`, a JSON array or JSONL.
    Alpaca,
    /// `{"messages": [{"role", "content"}, ...]}` per line, ending with an assistant turn.
    Messages,
    /// The [`TraceRecord`](super::TraceRecord) lines that `scotd sample` writes.
    Traces,
}

/// What to do with a record that cannot be read: skip it (it is listed in the
/// [`ReadReport`]) or stop with its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadLines {
    Skip,
    Fail,
}

/// One training conversation, before tokenization. `messages` ends with the assistant's
/// reply; `alternatives` holds other replies to the same conversation (several correct
/// traces of one question, SCoTD): each time the row is drawn, the assistant turn is
/// chosen among `[reply] + alternatives`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    pub messages: Vec<Message>,
    pub alternatives: Vec<String>,
}

impl Row {
    /// How many replies the row can be drawn with.
    pub fn reply_count(&self) -> usize {
        1 + self.alternatives.len()
    }

    /// The conversation with reply `choice` (0 = the one in `messages`, k = alternative k-1)
    /// as its final assistant turn.
    pub fn with_reply(&self, choice: usize) -> Vec<Message> {
        let mut messages = self.messages.clone();
        let alternative = choice.checked_sub(1).and_then(|k| self.alternatives.get(k));
        if let (Some(reply), Some(last)) = (alternative, messages.last_mut()) {
            last.content = reply.clone();
        }
        messages
    }
}

/// How a reasoning row's assistant reply is written: a template with one `{trace}` and one
/// `{answer}` placeholder, the trace first. A config field (a plain string in config
/// files); the default is `<think>{trace}</think> {answer}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ReasoningFormat {
    pub template: String,
}

impl Default for ReasoningFormat {
    fn default() -> Self {
        ReasoningFormat {
            template: "<think>{trace}</think> {answer}".to_string(),
        }
    }
}

impl ReasoningFormat {
    pub fn new(template: impl Into<String>) -> Result<Self> {
        let format = ReasoningFormat {
            template: template.into(),
        };
        format.parts()?;
        Ok(format)
    }

    /// The assistant reply for a trace and its final answer (e.g. `\boxed{72}`).
    ///
    /// A trace that already contains the template's separator (the text between `{trace}`
    /// and `{answer}`, trimmed: `</think>` for the default) was written in this format by
    /// the teacher itself and is used as it is, trimmed. Any other trace is put into the
    /// template, even one that ends with its own `\boxed{}`: the student should always
    /// think first and answer after the separator, and the evaluator reads the last
    /// `\boxed{}`, which is the template's.
    pub fn reply(&self, trace: &str, final_answer: &str) -> Result<String> {
        let (before, separator, after) = self.parts()?;
        let trace = trace.trim();
        let own_separator = separator.trim();
        if !own_separator.is_empty() && trace.contains(own_separator) {
            return Ok(trace.to_string());
        }
        Ok(format!("{before}{trace}{separator}{final_answer}{after}"))
    }

    /// The template split around its placeholders: before `{trace}`, between the two, and
    /// after `{answer}`.
    fn parts(&self) -> Result<(&str, &str, &str)> {
        let err = |msg: &str| {
            Error::format(
                "reasoning format",
                "template",
                format!("{msg}: got {:?}", self.template),
            )
        };
        for placeholder in ["{trace}", "{answer}"] {
            if self.template.matches(placeholder).count() != 1 {
                return Err(err(&format!("expected exactly one {placeholder}")));
            }
        }
        let (before, rest) = self.template.split_once("{trace}").unwrap_or_default();
        let (separator, after) = rest
            .split_once("{answer}")
            .ok_or_else(|| err("{trace} must come before {answer}"))?;
        Ok((before, separator, after))
    }
}

/// What reading a file gave: records seen, rows made, and the records skipped with their
/// errors (for the caller to log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadReport {
    pub path: PathBuf,
    /// Non-blank JSONL lines or JSON array elements, bad ones included.
    pub records: usize,
    pub rows: usize,
    pub skipped: Vec<Skipped>,
    /// Traces format: records with `correct: false`, left out by design.
    pub incorrect_traces: usize,
    /// Traces format: questions none of whose traces is correct (no row).
    pub unsolved_questions: usize,
}

/// A record left out under [`BadLines::Skip`]: where, and the full error (file, line or
/// index, field, what was expected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub location: Location,
    pub error: String,
}

impl ReadReport {
    pub(super) fn new(path: &Path) -> Self {
        ReadReport {
            path: path.to_path_buf(),
            records: 0,
            rows: 0,
            skipped: Vec::new(),
            incorrect_traces: 0,
            unsolved_questions: 0,
        }
    }
}

/// One log line: `path: 10 records, 9 rows, 1 skipped, 3 incorrect traces, ...`.
impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} records, {} rows, {} skipped",
            self.path.display(),
            self.records,
            self.rows,
            self.skipped.len()
        )?;
        if self.incorrect_traces + self.unsolved_questions > 0 {
            write!(
                f,
                ", {} incorrect traces left out, {} questions without a correct trace",
                self.incorrect_traces, self.unsolved_questions
            )?;
        }
        Ok(())
    }
}

/// Reads a dataset file into rows. `system`, when given, becomes the first message of
/// every row that has no system message of its own. A file that yields no row is an error.
pub fn read_rows(
    path: &Path,
    format: DataFormat,
    reasoning: &ReasoningFormat,
    system: Option<&str>,
    bad_lines: BadLines,
) -> Result<(Vec<Row>, ReadReport)> {
    reasoning.parts()?;
    let mut report = ReadReport::new(path);
    let records = read_records(path)?;
    report.records = records.len();
    let mut rows = match format {
        DataFormat::Traces => traces::rows(path, records, reasoning, bad_lines, &mut report)?,
        DataFormat::Gsm8k => each_record(path, records, bad_lines, &mut report, |obj, id| {
            gsm8k::row(obj, id, reasoning)
        })?,
        DataFormat::Alpaca => each_record(path, records, bad_lines, &mut report, alpaca::row)?,
        DataFormat::Messages => each_record(path, records, bad_lines, &mut report, messages::row)?,
    };
    if rows.is_empty() {
        return Err(Error::format(
            path,
            "(rows)",
            format!("the dataset is empty: no usable row ({report})"),
        ));
    }
    if let Some(system) = system {
        rows.iter_mut().for_each(|row| add_system(row, system));
    }
    report.rows = rows.len();
    Ok((rows, report))
}

/// Converts each record with `to_row`, which gets the record and the id to use when the
/// record has no `id` field (`file:line` or `file[index]`).
fn each_record(
    path: &Path,
    records: Vec<Record>,
    bad_lines: BadLines,
    report: &mut ReadReport,
    to_row: impl Fn(&Map<String, Value>, String) -> std::result::Result<Row, FieldError>,
) -> Result<Vec<Row>> {
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        let fallback_id = record.location.in_file(Path::new(file_name(path)));
        let row = record
            .value
            .and_then(|value| to_row(records::object(&value)?, fallback_id));
        match row {
            Ok(row) => rows.push(row),
            Err(problem) => reject(path, record.location, problem, bad_lines, report)?,
        }
    }
    Ok(rows)
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("data")
}

fn add_system(row: &mut Row, system: &str) {
    if row.messages.first().is_some_and(|m| m.role == "system") {
        return;
    }
    row.messages.insert(0, Message::new("system", system));
}

/// The format of a dataset file, told from the fields of its first record: `messages` →
/// Messages, `instruction` → Alpaca, `question` + `trace` → Traces, `question` + `answer`
/// → GSM8K.
pub fn detect(path: &Path) -> Result<DataFormat> {
    let first = records::first_record(path)?;
    let fields = records::object(&first).map_err(|e| Error::format(path, e.field, e.msg))?;
    let has = |field: &str| fields.contains_key(field);
    if has("messages") {
        Ok(DataFormat::Messages)
    } else if has("instruction") {
        Ok(DataFormat::Alpaca)
    } else if has("question") && has("trace") {
        Ok(DataFormat::Traces)
    } else if has("question") && has("answer") {
        Ok(DataFormat::Gsm8k)
    } else {
        let found: Vec<&str> = fields.keys().map(String::as_str).collect();
        Err(Error::format(
            path,
            "(format)",
            format!(
                "cannot tell the format from the first record's fields {found:?}: expected \
                 `messages` (messages), `instruction` (alpaca), `question` + `trace` (traces) \
                 or `question` + `answer` (gsm8k)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reasoning_template_wraps_plain_traces_and_keeps_formatted_ones() {
        let format = ReasoningFormat::default();
        assert_eq!(
            format.reply("  2 + 2 = 4. \n", "\\boxed{4}").unwrap(),
            "<think>2 + 2 = 4.</think> \\boxed{4}"
        );
        // A trace with its own \boxed{} still gets the template (the student always thinks
        // first); a placeholder inside a trace is text, not a placeholder.
        assert_eq!(
            format
                .reply("So \\boxed{4} {answer}", "\\boxed{4}")
                .unwrap(),
            "<think>So \\boxed{4} {answer}</think> \\boxed{4}"
        );
        let own = "<think>2 + 2 = 4</think> \\boxed{4}";
        assert_eq!(format.reply(own, "\\boxed{4}").unwrap(), own);
    }

    #[test]
    fn a_template_without_exactly_one_of_each_placeholder_is_refused() {
        for bad in [
            "{answer} {trace}",
            "{trace}",
            "{trace}{trace}{answer}",
            "plain",
        ] {
            let err = ReasoningFormat::new(bad).unwrap_err().to_string();
            assert!(err.contains("reasoning format: template"), "{err}");
        }
        let custom = ReasoningFormat::new("{trace}\nThe answer is {answer}.").unwrap();
        assert_eq!(custom.reply("x", "1").unwrap(), "x\nThe answer is 1.");
        let from_config: ReasoningFormat = serde_json::from_str("\"{trace} => {answer}\"").unwrap();
        assert_eq!(from_config.template, "{trace} => {answer}");
    }

    #[test]
    fn with_reply_swaps_the_final_turn() {
        let row = Row {
            id: "q".into(),
            messages: vec![Message::new("user", "q?"), Message::new("assistant", "a0")],
            alternatives: vec!["a1".into(), "a2".into()],
        };
        assert_eq!(row.reply_count(), 3);
        for (choice, reply) in ["a0", "a1", "a2"].iter().enumerate() {
            let messages = row.with_reply(choice);
            assert_eq!(messages[1].content, *reply);
            assert_eq!(messages[0], row.messages[0]);
        }
    }
}
