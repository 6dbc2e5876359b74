//! Reads the Hugging Face files that sit beside tokenizer.json: tokenizer_config.json
//! (special token strings, the chat template),
//! generation_config.json and config.json (EOS ids) and chat_template.jinja. Each file is
//! optional; a file that is present must be well formed, and errors name file and field.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Error, Result};

/// One parsed JSON object file, kept with its path so errors can name it.
pub(super) struct JsonFile {
    pub path: PathBuf,
    obj: Map<String, Value>,
}

impl JsonFile {
    /// Reads `dir/name`, or `Ok(None)` when the file does not exist.
    pub fn read_optional(dir: &Path, name: &str) -> Result<Option<JsonFile>> {
        let path = dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&path, "(json)", e.to_string()))?;
        match value {
            Value::Object(obj) => Ok(Some(JsonFile { path, obj })),
            _ => Err(Error::format(path, "(json)", "expected a JSON object")),
        }
    }

    pub fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::format(&self.path, field, msg)
    }

    /// The field's value; JSON null counts as absent, as it does for transformers.
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    /// A special token: a plain string, or an AddedToken object `{"content": "...", ...}`.
    pub fn token_string(&self, field: &str) -> Result<Option<String>> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let content = match value {
            Value::String(s) => Some(s.as_str()),
            Value::Object(obj) => obj.get("content").and_then(Value::as_str),
            _ => None,
        };
        content.map(|s| Some(s.to_string())).ok_or_else(|| {
            self.err(
                field,
                format!("expected a string or an object with a \"content\" string, got {value}"),
            )
        })
    }

    /// Token ids given as one integer or a list of integers (eos_token_id).
    pub fn token_ids(&self, field: &str) -> Result<Vec<u32>> {
        let as_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        let ids = match self.get(field) {
            None => Some(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(as_id).collect(),
            Some(single) => as_id(single).map(|id| vec![id]),
        };
        ids.ok_or_else(|| {
            let got = self.get(field).map(Value::to_string).unwrap_or_default();
            self.err(
                field,
                format!("expected a token id or a list of token ids, got {got}"),
            )
        })
    }

    /// `chat_template`: a string, or a list of `{"name", "template"}` where "default" is
    /// the one transformers uses when none is named.
    fn chat_template(&self) -> Result<Option<String>> {
        const FIELD: &str = "chat_template";
        match self.get(FIELD) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(named)) => self.default_named_template(named).map(Some),
            Some(other) => Err(self.err(
                FIELD,
                format!("expected a string or a list of {{\"name\", \"template\"}}, got {other}"),
            )),
        }
    }

    fn default_named_template(&self, named: &[Value]) -> Result<String> {
        const FIELD: &str = "chat_template";
        let mut names = Vec::new();
        for entry in named {
            let name = entry.get("name").and_then(Value::as_str);
            let template = entry.get("template").and_then(Value::as_str);
            let (Some(name), Some(template)) = (name, template) else {
                return Err(self.err(
                    FIELD,
                    format!("expected {{\"name\": string, \"template\": string}}, got {entry}"),
                ));
            };
            if name == "default" {
                return Ok(template.to_string());
            }
            names.push(name);
        }
        Err(self.err(
            FIELD,
            format!("a list of named templates needs one named \"default\", found only {names:?}"),
        ))
    }
}

/// What tokenizer_config.json (and chat_template.jinja) say about special tokens and chat.
pub(super) struct TokenizerConfig {
    /// The file the fields came from (for errors); None when there is no tokenizer_config.json.
    pub file: Option<JsonFile>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub chat_template: Option<String>,
}

impl TokenizerConfig {
    pub fn read(dir: &Path) -> Result<TokenizerConfig> {
        let file = JsonFile::read_optional(dir, "tokenizer_config.json")?;
        let field = |name| file.as_ref().map_or(Ok(None), |f| f.token_string(name));
        let embedded_template = file.as_ref().map_or(Ok(None), JsonFile::chat_template)?;
        Ok(TokenizerConfig {
            bos_token: field("bos_token")?,
            eos_token: field("eos_token")?,
            pad_token: field("pad_token")?,
            // transformers saves the template as its own file since 4.43, and that file
            // wins over the field when both are present.
            chat_template: read_template_file(dir)?.or(embedded_template),
            file,
        })
    }

    pub fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        match &self.file {
            Some(file) => file.err(field, msg),
            None => Error::format("tokenizer_config.json", field, msg),
        }
    }
}

fn read_template_file(dir: &Path) -> Result<Option<String>> {
    let path = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// EOS ids listed by one file, in the order the file gives them.
pub(super) struct EosIds {
    pub file: JsonFile,
    pub ids: Vec<u32>,
}

/// `eos_token_id` from generation_config.json, then config.json, where present.
pub(super) fn read_eos_ids(dir: &Path) -> Result<Vec<EosIds>> {
    let mut found = Vec::new();
    for name in ["generation_config.json", "config.json"] {
        if let Some(file) = JsonFile::read_optional(dir, name)? {
            let ids = file.token_ids("eos_token_id")?;
            found.push(EosIds { file, ids });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> JsonFile {
        let Value::Object(obj) = serde_json::from_str(json).unwrap() else {
            panic!("test JSON must be an object")
        };
        JsonFile {
            path: "t.json".into(),
            obj,
        }
    }

    #[test]
    fn special_tokens_are_strings_or_added_token_objects() {
        let f =
            file(r#"{"a": "<s>", "b": {"content": "</s>", "special": true}, "c": null, "d": 3}"#);
        assert_eq!(f.token_string("a").unwrap().as_deref(), Some("<s>"));
        assert_eq!(f.token_string("b").unwrap().as_deref(), Some("</s>"));
        assert_eq!(f.token_string("c").unwrap(), None);
        assert_eq!(f.token_string("missing").unwrap(), None);
        let err = f.token_string("d").unwrap_err().to_string();
        assert!(
            err.contains("t.json") && err.contains("d:") && err.contains("got 3"),
            "{err}"
        );
    }

    #[test]
    fn token_ids_are_an_int_or_a_list() {
        let f = file(r#"{"one": 7, "many": [1, 2], "bad": [1, "x"], "neg": -1}"#);
        assert_eq!(f.token_ids("one").unwrap(), vec![7]);
        assert_eq!(f.token_ids("many").unwrap(), vec![1, 2]);
        assert_eq!(f.token_ids("missing").unwrap(), Vec::<u32>::new());
        assert!(f.token_ids("bad").is_err());
        assert!(f.token_ids("neg").is_err());
    }

    #[test]
    fn named_templates_pick_default() {
        let f = file(
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        );
        assert_eq!(f.chat_template().unwrap().as_deref(), Some("D"));
        let f = file(r#"{"chat_template": [{"name": "tool_use", "template": "T"}]}"#);
        let err = f.chat_template().unwrap_err().to_string();
        assert!(
            err.contains("\"default\"") && err.contains("tool_use"),
            "{err}"
        );
        assert!(file(r#"{"chat_template": 5}"#).chat_template().is_err());
    }
}
