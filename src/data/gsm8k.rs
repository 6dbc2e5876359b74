//! GSM8K rows: `{"question", "answer"}`, the answer a worked solution with calculator
//! notes (`<<48/2=24>>`) ending in `#### N`. The user turn is the question; the assistant
//! turn is the reasoning format filled with the solution (notes removed) and `\boxed{N}`.

use std::path::Path;

use serde_json::{Map, Value};

use super::formats::{ReasoningFormat, Row};
use super::questions::Question;
use super::records::{self, FieldError};
use crate::tokenizer::Message;

/// A GSM8K answer split into its worked solution and its final answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gsm8kAnswer {
    /// The text before `#### N`, calculator notes removed, trimmed.
    pub reasoning: String,
    /// N with thousands separators removed (`1,234` → `1234`).
    pub final_answer: String,
}

/// Splits a GSM8K answer at its last `#### `; Err says what is missing.
pub fn split_gsm8k_answer(answer: &str) -> Result<Gsm8kAnswer, String> {
    let (solution, final_answer) = answer
        .rsplit_once("####")
        .ok_or("no `#### N` final answer")?;
    let final_answer: String = final_answer.trim().chars().filter(|&c| c != ',').collect();
    if final_answer.is_empty() {
        return Err("the `####` final answer is empty".into());
    }
    Ok(Gsm8kAnswer {
        reasoning: without_calculator_notes(solution).trim().to_string(),
        final_answer,
    })
}

/// Every question of a GSM8K file with its worked solution, in file order: the input of
/// the teacher that is the dataset's own solutions. Ids and gold answers are read as
/// [`super::read_questions`] reads them; a row without a GSM8K `answer` is an error naming
/// the file, the line and the field.
pub fn read_gsm8k_solutions(path: &Path) -> crate::Result<Vec<(Question, Gsm8kAnswer)>> {
    super::questions::read_questions_with(path, |obj| {
        let answer = records::text(obj, "answer")?;
        split_gsm8k_answer(answer).map_err(|msg| FieldError::new("answer", msg))
    })
}

/// The questions of a GSM8K file with their answers as written (calculator notes and
/// `#### N` kept), in file order: few-shot examples as lm-evaluation-harness shows them.
pub fn read_gsm8k_examples(path: &Path) -> crate::Result<Vec<(String, String)>> {
    let rows = super::questions::read_questions_with(path, |obj| {
        Ok(records::text(obj, "answer")?.to_string())
    })?;
    Ok(rows
        .into_iter()
        .map(|(q, answer)| (q.question, answer))
        .collect())
}

/// Removes every `<<expression=result>>` note; an unclosed `<<` is left as it is.
fn without_calculator_notes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        let Some(length) = rest[start..].find(">>") else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start + length + 2..];
    }
    out.push_str(rest);
    out
}

pub(super) fn row(
    obj: &Map<String, Value>,
    fallback_id: String,
    reasoning: &ReasoningFormat,
) -> Result<Row, FieldError> {
    let question = records::text(obj, "question")?;
    let answer = split_gsm8k_answer(records::text(obj, "answer")?)
        .map_err(|msg| FieldError::new("answer", msg))?;
    let reply = reasoning
        .reply(
            &answer.reasoning,
            &format!("\\boxed{{{}}}", answer.final_answer),
        )
        .map_err(|e| FieldError::new("answer", e.to_string()))?;
    Ok(Row {
        id: records::optional_id(obj)?.unwrap_or(fallback_id),
        messages: vec![
            Message::new("user", question),
            Message::new("assistant", reply),
        ],
        alternatives: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_removed_and_the_final_answer_normalised() {
        let answer =
            "He has 3 * 400 = <<3*400=1200>>1200 cents.\nSo $<<1200/100=12>>12.\n#### 1,200";
        let split = split_gsm8k_answer(answer).unwrap();
        assert_eq!(split.reasoning, "He has 3 * 400 = 1200 cents.\nSo $12.");
        assert_eq!(split.final_answer, "1200");
    }

    #[test]
    fn an_unclosed_note_is_kept_and_a_missing_final_answer_is_an_error() {
        assert_eq!(without_calculator_notes("a <<b=c>>d <<e"), "a d <<e");
        assert!(split_gsm8k_answer("no marker here")
            .unwrap_err()
            .contains("####"));
        assert!(split_gsm8k_answer("text\n####  ")
            .unwrap_err()
            .contains("empty"));
        let negative = split_gsm8k_answer("down 3\n#### -3").unwrap();
        assert_eq!(negative.final_answer, "-3");
    }
}
