//! `scotd verify`'s file work: output/gold pairs annotated with the extracted answers and
//! a verdict, and trace JSONL ([`TraceRecord`]) re-verified and filtered to its correct
//! traces. Malformed lines are errors naming file:line and the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{extract, final_answer, gold_verdict, Verdict};
use crate::data::{TraceId, TraceRecord};
use crate::{Error, Result};

/// Annotated pairs, one JSON line each, and how many were correct.
pub struct PairsReport {
    pub jsonl: String,
    pub correct: usize,
    pub total: usize,
}

/// Correct traces, one JSON line each, and per question how many were kept.
pub struct FilterReport {
    pub jsonl: String,
    pub questions: Vec<QuestionCount>,
}

/// One question's traces: `kept` of them correct out of `total`.
pub struct QuestionCount {
    pub id: TraceId,
    pub kept: usize,
    pub total: usize,
}

impl FilterReport {
    pub fn kept(&self) -> usize {
        self.questions.iter().map(|q| q.kept).sum()
    }

    pub fn total(&self) -> usize {
        self.questions.iter().map(|q| q.total).sum()
    }

    /// Questions with at least one correct trace.
    pub fn solved(&self) -> usize {
        self.questions.iter().filter(|q| q.kept > 0).count()
    }
}

/// A field at fault and what is wrong with it.
type FieldProblem = (&'static str, String);

/// Reads lines holding `gold` (string or number) and `output`, and writes each back with
/// `final_answer`, `think_answer` and `correct` added, and `not_verified` (the reason)
/// when the answers were not compared.
pub fn verify_pairs(path: &Path) -> Result<PairsReport> {
    let mut report = PairsReport {
        jsonl: String::new(),
        correct: 0,
        total: 0,
    };
    for (line_number, line) in json_lines(path)? {
        let mut obj = object(&line).map_err(|p| line_error(path, line_number, p))?;
        let correct = annotate_pair(&mut obj).map_err(|p| line_error(path, line_number, p))?;
        report.correct += usize::from(correct);
        report.total += 1;
        push_line(&mut report.jsonl, &Value::Object(obj));
    }
    Ok(report)
}

fn annotate_pair(obj: &mut Map<String, Value>) -> std::result::Result<bool, FieldProblem> {
    let gold = gold_field(obj)?;
    let extracted = extract(string_field(obj, "output")?);
    let verdict = gold_verdict(&gold, extracted.final_answer.as_deref());
    obj.insert("final_answer".into(), extracted.final_answer.into());
    obj.insert("think_answer".into(), extracted.think_answer.into());
    let correct = verdict == Verdict::Equal;
    obj.insert("correct".into(), correct.into());
    if let Verdict::NotVerified(reason) = verdict {
        obj.insert("not_verified".into(), reason.to_string().into());
    }
    Ok(correct)
}

/// Re-verifies each trace line (`answer` and `correct` recomputed from `gold` and
/// `trace`) and keeps the correct ones.
pub fn filter_traces(path: &Path) -> Result<FilterReport> {
    let mut jsonl = String::new();
    let mut questions: Vec<QuestionCount> = Vec::new();
    let mut slots: HashMap<TraceId, usize> = HashMap::new();
    for (line_number, line) in json_lines(path)? {
        let record = reverified_trace(&line).map_err(|p| line_error(path, line_number, p))?;
        let slot = *slots.entry(record.id.clone()).or_insert_with(|| {
            questions.push(QuestionCount {
                id: record.id.clone(),
                kept: 0,
                total: 0,
            });
            questions.len() - 1
        });
        questions[slot].total += 1;
        if record.correct {
            questions[slot].kept += 1;
            push_line(&mut jsonl, &record);
        }
    }
    Ok(FilterReport { jsonl, questions })
}

fn reverified_trace(line: &str) -> std::result::Result<TraceRecord, FieldProblem> {
    let obj = object(line)?;
    string_field(&obj, "gold")?;
    string_field(&obj, "trace")?;
    let mut record: TraceRecord =
        serde_json::from_value(Value::Object(obj)).map_err(|e| ("trace record", e.to_string()))?;
    record.answer = final_answer(&record.trace);
    record.correct = gold_verdict(&record.gold, record.answer.as_deref()) == Verdict::Equal;
    Ok(record)
}

/// The non-blank lines of a file with their 1-based line numbers.
fn json_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = crate::io::read_text(path)?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, line.to_string()))
        .collect())
}

fn object(line: &str) -> std::result::Result<Map<String, Value>, FieldProblem> {
    match serde_json::from_str(line) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(("line", "is not a JSON object".into())),
        Err(e) => Err(("line", format!("is not valid JSON: {e}"))),
    }
}

fn string_field<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> std::result::Result<&'a str, FieldProblem> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err((field, format!("expected a string, got {other}"))),
        None => Err((field, "missing (expected a string)".into())),
    }
}

/// `gold` as text: a string, or a number written as JSON writes it.
fn gold_field(obj: &Map<String, Value>) -> std::result::Result<String, FieldProblem> {
    match obj.get("gold") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err((
            "gold",
            format!("expected a string or a number, got {other}"),
        )),
        None => Err(("gold", "missing (expected a string or a number)".into())),
    }
}

fn line_error(path: &Path, line_number: usize, (field, msg): FieldProblem) -> Error {
    let location = PathBuf::from(format!("{}:{line_number}", path.display()));
    Error::format(location, field, msg)
}

fn push_line(jsonl: &mut String, value: &impl serde::Serialize) {
    let line = serde_json::to_string(value).expect("JSON values always serialise");
    jsonl.push_str(&line);
    jsonl.push('\n');
}
