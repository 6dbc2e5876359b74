//! Questions with gold answers, the input of teacher sampling and evaluation: a JSONL file
//! (or a JSON array, or parquet) of GSM8K rows `{"question", "answer"}` whose answer ends in `#### N`,
//! or rows `{"question", "gold"}` whose gold is the final answer itself. An optional `id`
//! (string or integer) names each question; without one, its line number (its index in a
//! JSON array, its row number in parquet) does. Every problem is an error naming the file, the line and the field.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::records::{self, FieldError, Location};
use super::traces::TraceId;
use crate::{verify, Error, Result};

/// One question to answer, and the reference final answer to check the answer against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub id: TraceId,
    pub question: String,
    /// The final answer alone (`18`), not a worked solution.
    pub gold: String,
}

/// Reads every question of `path`, in file order. Ids must be unique.
pub fn read_questions(path: &Path) -> Result<Vec<Question>> {
    let questions = read_questions_with(path, |_| Ok(()))?;
    Ok(questions
        .into_iter()
        .map(|(question, ())| question)
        .collect())
}

/// [`read_questions`], each question with what `extra` reads from the same record (a
/// problem there names the file, the line and the field as well).
pub(super) fn read_questions_with<T>(
    path: &Path,
    extra: impl Fn(&Map<String, Value>) -> std::result::Result<T, FieldError>,
) -> Result<Vec<(Question, T)>> {
    let mut questions = Vec::new();
    let mut seen: HashMap<TraceId, Location> = HashMap::new();
    for record in records::read_records(path)? {
        let (question, more) = record
            .value
            .and_then(|value| {
                let obj = records::object(&value)?;
                Ok((question(obj, record.location)?, extra(obj)?))
            })
            .map_err(|problem| problem.at(path, record.location))?;
        if let Some(first) = seen.insert(question.id.clone(), record.location) {
            return Err(Error::format(
                record.location.in_file(path),
                "id",
                format!("{} repeats the id of {first}", question.id),
            ));
        }
        questions.push((question, more));
    }
    if questions.is_empty() {
        return Err(Error::format(
            path,
            "(records)",
            "the file holds no questions",
        ));
    }
    Ok(questions)
}

pub(super) fn question(
    obj: &Map<String, Value>,
    location: Location,
) -> std::result::Result<Question, FieldError> {
    let id = match obj.get("id") {
        None | Some(Value::Null) => TraceId::Int(location.number() as i64),
        Some(_) => super::traces::trace_id(obj)?,
    };
    Ok(Question {
        id,
        question: records::text(obj, "question")?.to_string(),
        gold: gold(obj)?,
    })
}

/// The final answer of `answer` (GSM8K) or `gold`; it must hold a number.
fn gold(obj: &Map<String, Value>) -> std::result::Result<String, FieldError> {
    let (field, text) = match (obj.get("answer"), obj.get("gold")) {
        (Some(_), _) => ("answer", records::text(obj, "answer")?.to_string()),
        (None, Some(Value::Number(n))) => ("gold", n.to_string()),
        (None, Some(_)) => ("gold", records::text(obj, "gold")?.to_string()),
        (None, None) => {
            return Err(FieldError::new(
                "answer",
                "missing (expected a GSM8K `answer` ending in `#### N`, or a `gold` answer)",
            ))
        }
    };
    if field == "answer" && !text.contains("####") {
        return Err(FieldError::new(
            field,
            "holds no final answer (expected a GSM8K answer ending in `#### N`)",
        ));
    }
    let answer = verify::gold_answer(&text)
        .ok_or_else(|| FieldError::new(field, "holds no final answer"))?;
    if verify::normalize(answer).is_none() {
        return Err(FieldError::new(
            field,
            format!("the final answer {answer:?} is not a number"),
        ));
    }
    Ok(answer.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Question>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        std::fs::write(&path, text).unwrap();
        read_questions(&path)
    }

    #[test]
    fn reads_gsm8k_rows_and_gold_rows_with_ids_or_line_numbers() {
        let qs = read(concat!(
            "{\"question\": \"A?\", \"answer\": \"2+2=4\\n#### 1,004\"}\n",
            "\n",
            "{\"id\": \"q7\", \"question\": \"B?\", \"gold\": 3.5}\n",
            "{\"id\": 9, \"question\": \"C?\", \"gold\": \"\\\\frac{1}{2}\"}\n",
        ))
        .unwrap();
        assert_eq!(qs[0].id, TraceId::Int(1));
        assert_eq!(qs[0].gold, "1,004");
        assert_eq!(qs[1].id, TraceId::Text("q7".into()));
        assert_eq!(qs[1].gold, "3.5");
        assert_eq!(qs[2].id, TraceId::Int(9));
    }

    #[test]
    fn bad_rows_name_file_line_and_field() {
        let err = |text: &str| read(text).unwrap_err().to_string();
        let e =
            err("{\"question\": \"A?\", \"answer\": \"4\\n#### 4\"}\n{\"answer\": \"#### 4\"}\n");
        assert!(e.contains("q.jsonl:2") && e.contains("question"), "{e}");
        let e = err("{\"question\": \"A?\", \"answer\": \"so four\\n#### four\"}\n");
        assert!(e.contains("q.jsonl:1") && e.contains("not a number"), "{e}");
        let e = err("{\"question\": \"A?\", \"answer\": \"no final line\"}\n");
        assert!(e.contains("answer") && e.contains("####"), "{e}");
        let e = err("{\"id\": 1, \"question\": \"A?\", \"gold\": 1}\n{\"id\": 1, \"question\": \"B?\", \"gold\": 2}\n");
        assert!(e.contains("q.jsonl:2") && e.contains("repeats"), "{e}");
        assert!(err("").contains("no questions"));
    }
}
