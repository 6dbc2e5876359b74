//! The trace JSONL that `scotd sample` writes and the trainer reads: one line per sampled
//! trace, several per question. [`TraceRecord`] is the one definition of a line:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `id` | string or integer | the question's id; the lines of one question share it |
//! | `question` | string | the question as the teacher saw it (the student's user turn) |
//! | `gold` | string | the reference final answer |
//! | `sample` | integer ≥ 0 | which of the question's samples this is |
//! | `trace` | string | the teacher's reasoning, as generated |
//! | `answer` | string or null | the final answer extracted from the trace, null if none |
//! | `correct` | bool | whether `answer` matches `gold` (the verifier's verdict) |
//! | `tokens` | integer ≥ 0 | the trace's length in teacher tokens |
//!
//! Reading keeps the correct traces only and groups them by `id`, in file order: one
//! [`Row`] per question with at least one correct trace, the first as its reply and the
//! others (exact duplicates removed) as alternatives. Each reply is
//! [`ReasoningFormat::reply`] of the trace and `\boxed{answer}`. Lines of one id must
//! carry the same question.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use super::formats::{BadLines, ReadReport, ReasoningFormat, Row};
use super::records::{self, reject, FieldError, Location, Record};
use crate::tokenizer::Message;
use crate::Result;

/// A question id as the dataset gives it; written back the same way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum TraceId {
    Int(i64),
    Text(String),
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceId::Int(n) => write!(f, "{n}"),
            TraceId::Text(s) => f.write_str(s),
        }
    }
}

/// One line of the trace JSONL (the table in the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceRecord {
    pub id: TraceId,
    pub question: String,
    pub gold: String,
    pub sample: u64,
    pub trace: String,
    pub answer: Option<String>,
    pub correct: bool,
    pub tokens: u64,
}

impl TraceRecord {
    /// Reads a line field by field, so that an error names the field at fault (serde's
    /// messages do not always). Accepts exactly what serde's derive accepts.
    fn from_json(obj: &Map<String, Value>) -> std::result::Result<Self, FieldError> {
        Ok(TraceRecord {
            id: trace_id(obj)?,
            question: records::string(obj, "question")?.to_string(),
            gold: records::string(obj, "gold")?.to_string(),
            sample: records::unsigned(obj, "sample")?,
            trace: records::string(obj, "trace")?.to_string(),
            answer: records::optional_string(obj, "answer")?.map(str::to_string),
            correct: records::boolean(obj, "correct")?,
            tokens: records::unsigned(obj, "tokens")?,
        })
    }
}

pub(super) fn trace_id(obj: &Map<String, Value>) -> std::result::Result<TraceId, FieldError> {
    match obj.get("id") {
        Some(Value::String(s)) => Ok(TraceId::Text(s.clone())),
        Some(Value::Number(n)) if n.is_i64() => Ok(TraceId::Int(n.as_i64().unwrap_or_default())),
        Some(other) => Err(records::wrong_kind("id", "a string or an integer", other)),
        None => Err(FieldError::new(
            "id",
            "missing (expected a string or an integer)",
        )),
    }
}

/// A question and its correct replies so far.
struct Question {
    id: String,
    text: String,
    first_seen: Location,
    replies: Vec<String>,
}

pub(super) fn rows(
    path: &Path,
    records: Vec<Record>,
    reasoning: &ReasoningFormat,
    bad_lines: BadLines,
    report: &mut ReadReport,
) -> Result<Vec<Row>> {
    let mut questions: Vec<Question> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for record in records {
        let added = record
            .value
            .and_then(|value| TraceRecord::from_json(records::object(&value)?))
            .and_then(|line| {
                add_line(
                    &mut questions,
                    &mut by_id,
                    line,
                    record.location,
                    reasoning,
                    report,
                )
            });
        if let Err(problem) = added {
            reject(path, record.location, problem, bad_lines, report)?;
        }
    }
    report.unsolved_questions = questions.iter().filter(|q| q.replies.is_empty()).count();
    Ok(questions.into_iter().filter_map(question_row).collect())
}

fn add_line(
    questions: &mut Vec<Question>,
    by_id: &mut HashMap<String, usize>,
    line: TraceRecord,
    location: Location,
    reasoning: &ReasoningFormat,
    report: &mut ReadReport,
) -> std::result::Result<(), FieldError> {
    let id = line.id.to_string();
    let slot = *by_id.entry(id.clone()).or_insert_with(|| {
        questions.push(Question {
            id: id.clone(),
            text: line.question.clone(),
            first_seen: location,
            replies: Vec::new(),
        });
        questions.len() - 1
    });
    let question = &mut questions[slot];
    if question.text != line.question {
        return Err(FieldError::new(
            "question",
            format!(
                "differs from the question of id {id} at {}",
                question.first_seen
            ),
        ));
    }
    if !line.correct {
        report.incorrect_traces += 1;
        return Ok(());
    }
    let answer = line
        .answer
        .ok_or_else(|| FieldError::new("answer", "is null in a trace marked correct"))?;
    let reply = reasoning
        .reply(&line.trace, &format!("\\boxed{{{answer}}}"))
        .map_err(|e| FieldError::new("trace", e.to_string()))?;
    if !question.replies.contains(&reply) {
        question.replies.push(reply);
    }
    Ok(())
}

fn question_row(question: Question) -> Option<Row> {
    let mut replies = question.replies.into_iter();
    let reply = replies.next()?;
    Some(Row {
        id: question.id,
        messages: vec![
            Message::new("user", question.text),
            Message::new("assistant", reply),
        ],
        alternatives: replies.collect(),
    })
}
