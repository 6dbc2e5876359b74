//! The OpenAI request bodies `scotd serve` accepts, read field by field so that a wrong
//! type names the field and what was expected, and the JSON shapes of its answers and
//! errors (`{"error": {"message", "type", "param", "code"}}`).

use scotd::tokenizer::Message;
use serde_json::{json, Map, Value};

/// Choices one request may ask for at most.
pub const MAX_N: usize = 64;
/// Stop strings one request may give at most.
pub const MAX_STOPS: usize = 16;

/// An answer that is an OpenAI error.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            param: Some(param.to_string()),
            code: None,
        }
    }

    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn body(&self) -> Value {
        let kind = match self.status {
            400..=499 => "invalid_request_error",
            503 => "server_overloaded",
            _ => "server_error",
        };
        json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// The endpoints that generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// A prompt as the request gave it.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptInput {
    Messages(Vec<Message>),
    Text(String),
    Ids(Vec<u32>),
}

/// A generation request, read and checked.
#[derive(Debug)]
pub struct Completion {
    pub model: Option<String>,
    /// One for chat; completions may give several, each with its own `n` choices.
    pub prompts: Vec<PromptInput>,
    pub n: usize,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    /// An extension (as vLLM's): each choice also carries its generated token ids.
    pub return_token_ids: bool,
}

/// Reads a request body for `endpoint`.
pub fn parse_completion(endpoint: Endpoint, body: &[u8]) -> Result<Completion, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::new(400, "the request body must be a JSON object"));
    };
    refuse_unsupported(&obj, endpoint)?;
    let prompts = match endpoint {
        Endpoint::Chat => vec![PromptInput::Messages(messages(&obj)?)],
        Endpoint::Completions => completion_prompts(&obj)?,
    };
    let n = opt_uint(&obj, "n")?.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::invalid(
            "n",
            format!("'n' must be in 1..={MAX_N}, got {n}"),
        ));
    }
    let max_tokens = match opt_uint(&obj, "max_completion_tokens")? {
        Some(m) => Some(m),
        None => opt_uint(&obj, "max_tokens")?,
    };
    let temperature = opt_number(&obj, "temperature")?;
    if let Some(t) = temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(ApiError::invalid(
            "temperature",
            format!("'temperature' must be in [0, 2], got {t}"),
        ));
    }
    let top_p = opt_number(&obj, "top_p")?;
    if let Some(p) = top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(ApiError::invalid(
            "top_p",
            format!("'top_p' must be in (0, 1], got {p}"),
        ));
    }
    let stream_options = match obj.get("stream_options") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => return Err(wrong_type("stream_options", "an object", other)),
    };
    let include_usage = match stream_options {
        Some(o) => opt_bool(o, "include_usage")?.unwrap_or(false),
        None => false,
    };
    Ok(Completion {
        model: opt_string(&obj, "model")?,
        prompts,
        n,
        max_tokens,
        temperature: temperature.map(|t| t as f32),
        top_p: top_p.map(|p| p as f32),
        top_k: opt_int(&obj, "top_k")?.map(|k| k.max(0) as usize),
        stop: stops(&obj)?,
        seed: opt_int(&obj, "seed")?.map(|s| s as u64),
        stream: opt_bool(&obj, "stream")?.unwrap_or(false),
        include_usage,
        return_token_ids: opt_bool(&obj, "return_token_ids")?.unwrap_or(false),
    })
}

/// Features of the API this server does not have, refused rather than ignored when a
/// request turns them on.
fn refuse_unsupported(obj: &Map<String, Value>, endpoint: Endpoint) -> Result<(), ApiError> {
    let on = |name: &str| {
        obj.get(name).is_some_and(|v| match v {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        })
    };
    let mut unsupported = vec![
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "tools",
        "functions",
        "presence_penalty",
        "frequency_penalty",
    ];
    if endpoint == Endpoint::Completions {
        unsupported.extend(["echo", "suffix"]);
    }
    if let Some(name) = unsupported.into_iter().find(|n| on(n)) {
        return Err(ApiError::invalid(
            name,
            format!("'{name}' is not supported by scotd serve"),
        ));
    }
    if obj
        .get("best_of")
        .and_then(Value::as_u64)
        .is_some_and(|b| b > 1)
    {
        return Err(ApiError::invalid(
            "best_of",
            "'best_of' > 1 is not supported",
        ));
    }
    match obj.get("response_format").and_then(|f| f.get("type")) {
        None => Ok(()),
        Some(t) if t == "text" => Ok(()),
        Some(t) => Err(ApiError::invalid(
            "response_format",
            format!("response_format {t} is not supported: only \"text\""),
        )),
    }
}

fn messages(obj: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let Some(value) = obj.get("messages") else {
        return Err(ApiError::invalid("messages", "'messages' is required"));
    };
    let Value::Array(items) = value else {
        return Err(wrong_type("messages", "an array of messages", value));
    };
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "'messages' is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, value: &Value) -> Result<Message, ApiError> {
    let field = |name: &str| format!("messages[{i}].{name}");
    let Value::Object(m) = value else {
        return Err(wrong_type(&format!("messages[{i}]"), "an object", value));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) => r.clone(),
        Some(other) => return Err(wrong_type(&field("role"), "a string", other)),
        None => {
            return Err(ApiError::invalid(
                &field("role"),
                format!("'{}' is required", field("role")),
            ))
        }
    };
    let content = match m.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) => c.clone(),
        Some(Value::Array(parts)) => text_parts(&field("content"), parts)?,
        Some(other) => {
            return Err(wrong_type(
                &field("content"),
                "a string or an array of text parts",
                other,
            ))
        }
    };
    Ok(Message { role, content })
}

/// The text of content parts `[{"type": "text", "text": ...}]`, joined.
fn text_parts(field: &str, parts: &[Value]) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match (part.get("type").and_then(Value::as_str), part.get("text")) {
            (Some("text"), Some(Value::String(t))) => text.push_str(t),
            (Some("text"), _) => {
                return Err(ApiError::invalid(
                    field,
                    format!("{field}[{j}].text must be a string"),
                ))
            }
            (kind, _) => {
                return Err(ApiError::invalid(
                    field,
                    format!("{field}[{j}] has type {kind:?}: only text parts are supported"),
                ))
            }
        }
    }
    Ok(text)
}

/// `prompt`: a string, an array of strings, an array of token ids, or an array of
/// arrays of token ids.
fn completion_prompts(obj: &Map<String, Value>) -> Result<Vec<PromptInput>, ApiError> {
    let expected = "a string, an array of strings, or an array of token ids (or of such arrays)";
    let value = obj
        .get("prompt")
        .ok_or_else(|| ApiError::invalid("prompt", "'prompt' is required"))?;
    let prompts = match value {
        Value::String(s) => vec![PromptInput::Text(s.clone())],
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::invalid("prompt", "'prompt' is empty"))
        }
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![PromptInput::Ids(token_ids(value)?)]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(PromptInput::Text(s.clone())),
                Value::Array(_) => Ok(PromptInput::Ids(token_ids(item)?)),
                other => Err(wrong_type("prompt", expected, other)),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(wrong_type("prompt", expected, other)),
    };
    if prompts.len() > MAX_N {
        return Err(ApiError::invalid(
            "prompt",
            format!("at most {MAX_N} prompts a request, got {}", prompts.len()),
        ));
    }
    Ok(prompts)
}

fn token_ids(value: &Value) -> Result<Vec<u32>, ApiError> {
    serde_json::from_value(value.clone())
        .map_err(|_| ApiError::invalid("prompt", "token ids must be integers in 0..2^32"))
}

fn stops(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match obj.get("stop") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| match s {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type("stop", "a string or an array of strings", other)),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(wrong_type("stop", "a string or an array of strings", other)),
    };
    if stops.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOPS} stop strings, got {}", stops.len()),
        ));
    }
    Ok(stops)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        field,
        format!("'{field}' must be {expected}, got {}", type_name(got)),
    )
}

fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn opt_number(obj: &Map<String, Value>, name: &str) -> Result<Option<f64>, ApiError> {
    present(obj, name)
        .map(|v| v.as_f64().ok_or_else(|| wrong_type(name, "a number", v)))
        .transpose()
}

fn opt_int(obj: &Map<String, Value>, name: &str) -> Result<Option<i64>, ApiError> {
    present(obj, name)
        .map(|v| match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_u64().map(|u| u as i64))
                .ok_or_else(|| wrong_type(name, "an integer", v)),
            other => Err(wrong_type(name, "an integer", other)),
        })
        .transpose()
}

fn opt_uint(obj: &Map<String, Value>, name: &str) -> Result<Option<usize>, ApiError> {
    match opt_int(obj, name)? {
        Some(i) if i < 0 => Err(ApiError::invalid(
            name,
            format!("'{name}' must be >= 0, got {i}"),
        )),
        other => Ok(other.map(|i| i as usize)),
    }
}

fn opt_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    present(obj, name)
        .map(|v| v.as_bool().ok_or_else(|| wrong_type(name, "a boolean", v)))
        .transpose()
}

fn opt_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    present(obj, name)
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| wrong_type(name, "a string", v))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Completion, ApiError> {
        parse_completion(Endpoint::Chat, body.as_bytes())
    }

    #[test]
    fn a_chat_request_reads_every_field() {
        let c = chat(
            r#"{"model":"m","messages":[{"role":"system","content":"s"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "n":3,"max_completion_tokens":7,"max_tokens":9,"temperature":0.5,"top_p":0.9,
                "top_k":4,"stop":"\n","seed":11,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(c.model.as_deref(), Some("m"));
        assert_eq!(
            c.prompts,
            vec![PromptInput::Messages(vec![
                Message::new("system", "s"),
                Message::new("user", "ab")
            ])]
        );
        assert_eq!(
            (c.n, c.max_tokens, c.top_k, c.seed),
            (3, Some(7), Some(4), Some(11))
        );
        assert_eq!((c.temperature, c.top_p), (Some(0.5), Some(0.9)));
        assert_eq!(c.stop, vec!["\n".to_string()]);
        assert!(c.stream && c.include_usage && !c.return_token_ids);
    }

    #[test]
    fn completion_prompts_take_every_openai_form() {
        let prompts = |p: &str| {
            parse_completion(
                Endpoint::Completions,
                format!(r#"{{"prompt":{p}}}"#).as_bytes(),
            )
            .map(|c| c.prompts)
        };
        assert_eq!(
            prompts(r#""hi""#).unwrap(),
            vec![PromptInput::Text("hi".into())]
        );
        assert_eq!(
            prompts("[1,2]").unwrap(),
            vec![PromptInput::Ids(vec![1, 2])]
        );
        assert_eq!(
            prompts(r#"["a",[3]]"#).unwrap(),
            vec![PromptInput::Text("a".into()), PromptInput::Ids(vec![3])]
        );
        for bad in ["[]", "[-1]", "[1.5]", "{}", r#"[["x"]]"#, "true"] {
            assert_eq!(prompts(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn wrong_types_and_ranges_name_the_field() {
        for (body, field, says) in [
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "temperature",
                "must be a number, got a string",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
                "in [0, 2]",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
                ">= 0",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":0}"#,
                "n",
                "1..=64",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stop":[1]}"#,
                "stop",
                "a string or an array of strings",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
                "a boolean",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true}"#,
                "logprobs",
                "not supported",
            ),
            (
                r#"{"messages":[{"role":"user"}],"top_p":0}"#,
                "top_p",
                "(0, 1]",
            ),
            (
                r#"{"messages":[{"content":"x"}]}"#,
                "messages[0].role",
                "required",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "messages[0].content",
                "only text parts",
            ),
            (
                r#"{"messages":"hi"}"#,
                "messages",
                "an array of messages, got a string",
            ),
            (r#"{"model":"m"}"#, "messages", "required"),
        ] {
            let err = chat(body).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), Some(field), "{body}");
            assert!(err.message.contains(says), "{body}: {}", err.message);
        }
        for body in ["", "{", "[1]", "null", "\u{0}"] {
            let err = chat(body).unwrap_err();
            assert_eq!(err.status, 400, "{body:?}");
            assert!(err.body()["error"]["message"].is_string());
        }
    }
}
