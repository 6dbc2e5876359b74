//! `messages` rows: `{"messages": [{"role", "content"}, ...]}` per JSONL line (the chat
//! format of most SFT datasets), ending with the assistant turn to learn. Every assistant
//! turn of the conversation is supervised.

use serde_json::{Map, Value};

use super::formats::Row;
use super::records::{self, FieldError};
use crate::tokenizer::Message;

pub(super) fn row(obj: &Map<String, Value>, fallback_id: String) -> Result<Row, FieldError> {
    let turns = match obj.get("messages") {
        Some(Value::Array(turns)) => turns,
        Some(other) => return Err(records::wrong_kind("messages", "an array", other)),
        None => return Err(FieldError::new("messages", "missing (expected an array)")),
    };
    let messages = turns
        .iter()
        .enumerate()
        .map(|(i, turn)| message(turn, i))
        .collect::<Result<Vec<_>, _>>()?;
    match messages.last() {
        None => return Err(FieldError::new("messages", "is empty")),
        Some(last) if last.role != "assistant" => {
            return Err(FieldError::new(
                format!("messages[{}].role", messages.len() - 1),
                format!(
                    "the conversation must end with an assistant turn, got {:?}",
                    last.role
                ),
            ))
        }
        Some(last) if last.content.trim().is_empty() => {
            return Err(FieldError::new(
                format!("messages[{}].content", messages.len() - 1),
                "the final assistant turn is empty",
            ))
        }
        Some(_) => {}
    }
    Ok(Row {
        id: records::optional_id(obj)?.unwrap_or(fallback_id),
        messages,
        alternatives: Vec::new(),
    })
}

fn message(turn: &Value, index: usize) -> Result<Message, FieldError> {
    let in_turn = |e: FieldError| FieldError::new(format!("messages[{index}].{}", e.field), e.msg);
    let obj = records::object(turn).map_err(in_turn)?;
    let role = records::text(obj, "role").map_err(in_turn)?;
    let content = records::string(obj, "content").map_err(in_turn)?;
    Ok(Message::new(role, content))
}
