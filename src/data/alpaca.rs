//! Alpaca rows: `{"instruction", "input", "output"}` records, from a JSON array (as Alpaca
//! ships) or JSONL. The user turn is the instruction, followed by the input after a blank
//! line when there is one; the assistant turn is the output.

use serde_json::{Map, Value};

use super::formats::Row;
use super::records::{self, FieldError};
use crate::tokenizer::Message;

pub(super) fn row(obj: &Map<String, Value>, fallback_id: String) -> Result<Row, FieldError> {
    let instruction = records::text(obj, "instruction")?;
    let input = records::optional_string(obj, "input")?.unwrap_or_default();
    let output = records::text(obj, "output")?;
    let user = if input.trim().is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n\n{input}")
    };
    Ok(Row {
        id: records::optional_id(obj)?.unwrap_or(fallback_id),
        messages: vec![
            Message::new("user", user),
            Message::new("assistant", output),
        ],
        alternatives: Vec::new(),
    })
}
