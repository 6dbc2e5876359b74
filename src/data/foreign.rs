//! Question/output rows written by another engine (vLLM, an API, a script), the input of
//! `scotd import-traces`: any JSONL (or JSON array, or parquet) whose records hold a
//! question and an output, and optionally a gold answer and an id, under field names
//! that [`ForeignFields`] lists. Two shapes need no field names:
//!
//! - an output field (or the record itself) that is an OpenAI completion response: its
//!   `choices[0].message.content` (chat) or `choices[0].text` is the output (a record
//!   that is a response has the response's `id`, which names no question: it is ignored);
//! - a `messages` list: the last `user` message is the question, the last `assistant`
//!   message the output.
//!
//! Also GSM8K's gold answers indexed by question text, to join them to rows without one.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::formats::{BadLines, ReadReport};
use super::questions::{question, Question};
use super::records::{self, reject, FieldError, Location};
use super::traces::TraceId;
use crate::{verify, Error, Result};

/// The field names tried for each part of a row, first match wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignFields {
    pub question: Vec<String>,
    pub output: Vec<String>,
    pub gold: Vec<String>,
    pub id: String,
}

impl Default for ForeignFields {
    fn default() -> Self {
        let names = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        ForeignFields {
            question: names(&["question", "prompt"]),
            output: names(&["output", "response", "completion", "text"]),
            gold: names(&["gold", "answer"]),
            id: "id".into(),
        }
    }
}

/// One foreign row: where it is, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignRow {
    pub location: Location,
    pub question: String,
    pub output: String,
    /// The final answer alone (`18`), when the row has one.
    pub gold: Option<String>,
    pub id: Option<TraceId>,
}

/// Every row of `path`, in file order. A bad record is an error naming the file, the line
/// and the field, or under [`BadLines::Skip`] an entry in the report.
pub fn read_foreign_rows(
    path: &Path,
    fields: &ForeignFields,
    bad_lines: BadLines,
) -> Result<(Vec<ForeignRow>, ReadReport)> {
    let mut report = ReadReport::new(path);
    let records = records::read_records(path)?;
    report.records = records.len();
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        let row = record
            .value
            .and_then(|value| foreign_row(records::object(&value)?, fields, record.location));
        match row {
            Ok(row) => rows.push(row),
            Err(problem) => reject(path, record.location, problem, bad_lines, &mut report)?,
        }
    }
    report.rows = rows.len();
    Ok((rows, report))
}

fn foreign_row(
    obj: &Map<String, Value>,
    fields: &ForeignFields,
    location: Location,
) -> std::result::Result<ForeignRow, FieldError> {
    let (question, output) = match conversation(obj)? {
        Some(pair) => pair,
        None => (
            records::text(obj, first_present(obj, &fields.question, "question")?)?.to_string(),
            output(obj, fields)?,
        ),
    };
    // A record that is itself an OpenAI response has the response's id, not a question's.
    let own_id = if obj.contains_key("choices") {
        None
    } else {
        obj.get(&fields.id)
    };
    let id = match own_id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(TraceId::Text(s.clone())),
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().map(TraceId::Int),
        Some(other) => {
            return Err(records::wrong_kind(
                &fields.id,
                "a string or an integer",
                other,
            ))
        }
    };
    Ok(ForeignRow {
        location,
        question,
        output,
        gold: gold(obj, &fields.gold)?,
        id,
    })
}

/// The first of `names` that `obj` has; `what` names the part for the error.
fn first_present<'a>(
    obj: &Map<String, Value>,
    names: &'a [String],
    what: &str,
) -> std::result::Result<&'a str, FieldError> {
    names
        .iter()
        .find(|name| obj.contains_key(name.as_str()))
        .map(String::as_str)
        .ok_or_else(|| {
            FieldError::new(
                what,
                format!(
                    "missing (expected a field named {}, or a `messages` list)",
                    names.join(", ")
                ),
            )
        })
}

/// The last user and assistant messages of a `messages` list, when the record has one.
fn conversation(
    obj: &Map<String, Value>,
) -> std::result::Result<Option<(String, String)>, FieldError> {
    let Some(messages) = obj.get("messages") else {
        return Ok(None);
    };
    let messages = messages.as_array().ok_or_else(|| {
        records::wrong_kind("messages", "a list of {role, content} messages", messages)
    })?;
    let last = |role: &str| {
        messages
            .iter()
            .rev()
            .filter_map(Value::as_object)
            .find(|m| m.get("role").and_then(Value::as_str) == Some(role))
            .and_then(|m| m.get("content").and_then(Value::as_str))
            .map(str::to_string)
            .ok_or_else(|| {
                FieldError::new("messages", format!("holds no {role} message with content"))
            })
    };
    Ok(Some((last("user")?, last("assistant")?)))
}

/// The output: a string field, an OpenAI response in that field, or the record itself
/// as an OpenAI response.
fn output(
    obj: &Map<String, Value>,
    fields: &ForeignFields,
) -> std::result::Result<String, FieldError> {
    if obj.contains_key("choices") {
        return response_text(obj, "choices");
    }
    let field = first_present(obj, &fields.output, "output")?;
    match obj.get(field) {
        Some(Value::Object(response)) => response_text(response, field),
        _ => Ok(records::string(obj, field)?.to_string()),
    }
}

/// `choices[0].message.content` or `choices[0].text` of an OpenAI response; `field`
/// names where the response sits.
fn response_text(
    response: &Map<String, Value>,
    field: &str,
) -> std::result::Result<String, FieldError> {
    let choice = response
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first());
    let text = choice.and_then(|c| {
        c.pointer("/message/content")
            .or_else(|| c.get("text"))
            .and_then(Value::as_str)
    });
    text.map(str::to_string).ok_or_else(|| {
        FieldError::new(
            field,
            "expected an OpenAI response with choices[0].message.content or choices[0].text",
        )
    })
}

/// The final answer of the first gold field present: a number, a GSM8K answer ending in
/// `#### N`, or the answer itself.
fn gold(
    obj: &Map<String, Value>,
    names: &[String],
) -> std::result::Result<Option<String>, FieldError> {
    let Some((field, value)) = names
        .iter()
        .find_map(|name| obj.get(name).map(|v| (name, v)))
    else {
        return Ok(None);
    };
    let text = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(records::wrong_kind(field, "a string or a number", other)),
    };
    let answer =
        verify::gold_answer(&text).ok_or_else(|| FieldError::new(field, "holds no answer"))?;
    // As the question readers require: a worked solution without `#### N` is no gold.
    if verify::normalize(answer).is_none() {
        return Err(FieldError::new(
            field,
            format!("the final answer {answer:?} is not a number (expected a number, or a GSM8K answer ending in `#### N`)"),
        ));
    }
    Ok(Some(answer.to_string()))
}

/// A question's text as the join compares it: trimmed, runs of whitespace as one space.
pub fn question_key(question: &str) -> String {
    question.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The questions of a GSM8K file (read as [`super::read_questions`] reads them) by
/// [`question_key`]. A question that appears twice with different golds is an error
/// naming both lines; a repeat with the same gold keeps the first.
pub fn gsm8k_by_question(path: &Path) -> Result<HashMap<String, Question>> {
    let mut by_key: HashMap<String, (Question, Location)> = HashMap::new();
    for record in records::read_records(path)? {
        let location = record.location;
        let parsed = record
            .value
            .and_then(|value| question(records::object(&value)?, location))
            .map_err(|problem| problem.at(path, location))?;
        let key = question_key(&parsed.question);
        if let Some((first, first_location)) = by_key.get(&key) {
            if first.gold != parsed.gold {
                return Err(Error::format(
                    location.in_file(path),
                    "answer",
                    format!(
                        "the question of {first_location} again, with gold {} there and {} here",
                        first.gold, parsed.gold
                    ),
                ));
            }
            continue;
        }
        by_key.insert(key, (parsed, location));
    }
    Ok(by_key.into_iter().map(|(k, (q, _))| (k, q)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Result<Vec<ForeignRow>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        std::fs::write(&path, text).unwrap();
        read_foreign_rows(&path, &ForeignFields::default(), BadLines::Fail).map(|(rows, _)| rows)
    }

    #[test]
    fn field_variants_responses_and_messages_are_read() {
        let read = rows(concat!(
            "{\"prompt\": \"A?\", \"completion\": \"4\", \"answer\": \"so\\n#### 4\", \"id\": 3}\n",
            "{\"question\": \"B?\", \"response\": {\"choices\": [{\"message\": {\"content\": \"5\"}}]}}\n",
            "{\"question\": \"C?\", \"choices\": [{\"text\": \"6\"}], \"gold\": 6}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"D?\"}, {\"role\": \"assistant\", \"content\": \"7\"}]}\n",
        ))
        .unwrap();
        let got: Vec<_> = read
            .iter()
            .map(|r| (r.question.as_str(), r.output.as_str(), r.gold.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("A?", "4", Some("4")),
                ("B?", "5", None),
                ("C?", "6", Some("6")),
                ("D?", "7", None)
            ]
        );
        assert_eq!(read[0].id, Some(TraceId::Int(3)));
        assert_eq!(read[1].id, None);
    }

    #[test]
    fn a_row_without_output_names_file_line_and_field() {
        let e = rows("{\"question\": \"A?\", \"output\": \"1\"}\n{\"question\": \"B?\"}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rows.jsonl:2") && e.contains("output"), "{e}");
    }

    #[test]
    fn a_gold_that_is_no_number_names_its_field() {
        let e = rows("{\"question\": \"A?\", \"output\": \"1\", \"answer\": \"She has two.\"}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rows.jsonl:1") && e.contains("answer") && e.contains("not a number"),
            "{e}"
        );
    }

    #[test]
    fn question_keys_collapse_whitespace() {
        assert_eq!(question_key("  How   many\n apples? "), "How many apples?");
    }
}
