//! Chat messages and the templates that turn a conversation into prompt text: a model's
//! own Hugging Face Jinja template, or one of the built-in ChatML, DeepSeek and raw formats.

use std::path::Path;

use minijinja::{context, Value};

use super::jinja;
use crate::{Error, Result};

/// One turn of a conversation. Roles are free strings ("system", "user", "assistant", ...)
/// because templates decide which ones they accept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// DeepSeek's end-of-sentence token, which closes each assistant turn in its template.
const DEEPSEEK_EOS: &str = "<｜end▁of▁sentence｜>";

#[derive(Clone, Debug)]
pub enum ChatTemplate {
    /// A Hugging Face Jinja template (from tokenizer_config.json `chat_template`, a string
    /// or the "default" of a list of `{name, template}`, or from chat_template.jinja), with
    /// the bos/eos token strings it may reference. It renders exactly what transformers'
    /// `apply_chat_template(tokenize=False)` renders, special tokens such as a BOS included.
    Jinja {
        source: String,
        bos_token: String,
        eos_token: String,
    },
    /// ChatML as Qwen uses it: `<|im_start|>{role}\n{content}<|im_end|>\n` per message and
    /// `<|im_start|>assistant\n` as the generation prompt. No system message is added when
    /// the conversation has none, so the prompt is exactly what the caller gave; Qwen2.5's
    /// own template adds "You are Qwen, created by Alibaba Cloud. ..." instead, which the
    /// Jinja variant reproduces when the model's template is used.
    ChatMl,
    /// DeepSeek-LLM / DeepSeek-math-instruct, as in their tokenizer_config.json:
    /// `{system}\n\n`, `User: {user}\n\n`, `Assistant: {assistant}<｜end▁of▁sentence｜>`,
    /// and `Assistant:` as the generation prompt. DeepSeek's template starts with the BOS
    /// `<｜begin▁of▁sentence｜>`; here the tokenizer adds it (`encode(.., true)`), which is
    /// what DeepSeek's model card describes for prompts written without the template.
    DeepSeek,
    /// No template: the contents of the user messages concatenated as they are (for base
    /// models and plain-text prompts); other roles and the generation prompt are ignored.
    Raw,
}

impl ChatTemplate {
    /// "chatml" | "deepseek" | "raw" | a path to a .jinja file (any existing file is read
    /// as a Jinja template; a missing one must end in .jinja to be taken for a path, so a
    /// mistyped name reads as an unknown name). A file template has no
    /// bos/eos strings of its own: they are empty here, and
    /// [`Tokenizer::resolve_chat_template`](super::Tokenizer::resolve_chat_template) fills
    /// in the tokenizer's.
    pub fn from_name_or_path(s: &str) -> Result<ChatTemplate> {
        match s {
            "chatml" => Ok(ChatTemplate::ChatMl),
            "deepseek" => Ok(ChatTemplate::DeepSeek),
            "raw" => Ok(ChatTemplate::Raw),
            _ => Self::from_file(Path::new(s)),
        }
    }

    fn from_file(path: &Path) -> Result<ChatTemplate> {
        let is_jinja_file = path.extension().is_some_and(|e| e == "jinja");
        if !is_jinja_file && !path.is_file() {
            return Err(Error::format(
                path,
                "chat template",
                "unknown template name: expected \"chatml\", \"deepseek\", \"raw\" or a path to a .jinja file",
            ));
        }
        let source = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        jinja::check_syntax(&source, path)?;
        Ok(ChatTemplate::Jinja {
            source,
            bos_token: String::new(),
            eos_token: String::new(),
        })
    }

    /// The conversation as prompt text, ending with the assistant's turn opener when
    /// `add_generation_prompt` is set.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(self.error("the conversation is empty: expected at least one message"));
        }
        match self {
            ChatTemplate::Jinja {
                source,
                bos_token,
                eos_token,
            } => jinja::render(
                source,
                context! {
                    messages => messages_value(messages),
                    add_generation_prompt,
                    bos_token,
                    eos_token,
                    // transformers passes these as None when not given; templates test
                    // `tools is not none`, which an undefined value would pass.
                    tools => Value::from(()),
                    documents => Value::from(()),
                },
                input_bytes(messages) + bos_token.len() + eos_token.len(),
            ),
            ChatTemplate::ChatMl => Ok(render_chatml(messages, add_generation_prompt)),
            ChatTemplate::DeepSeek => self.render_deepseek(messages, add_generation_prompt),
            ChatTemplate::Raw => self.render_raw(messages),
        }
    }

    /// The `add_special_tokens` to encode this template's output with: false for Jinja
    /// templates, which write their own special tokens (transformers' tokenizing
    /// `apply_chat_template` does the same), true for the built-ins, which leave a BOS to
    /// the tokenizer.
    pub fn add_special_tokens(&self) -> bool {
        !matches!(self, ChatTemplate::Jinja { .. })
    }

    fn render_deepseek(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut out = String::new();
        for m in messages {
            match m.role.as_str() {
                "system" => out.push_str(&format!("{}\n\n", m.content)),
                "user" => out.push_str(&format!("User: {}\n\n", m.content)),
                "assistant" => out.push_str(&format!("Assistant: {}{DEEPSEEK_EOS}", m.content)),
                other => {
                    return Err(self.error(format!(
                        "role {other:?} is not supported: expected \"system\", \"user\" or \"assistant\""
                    )))
                }
            }
        }
        if add_generation_prompt {
            out.push_str("Assistant:");
        }
        Ok(out)
    }

    fn render_raw(&self, messages: &[Message]) -> Result<String> {
        let mut user_turns = messages.iter().filter(|m| m.role == "user").peekable();
        if user_turns.peek().is_none() {
            return Err(self.error("no user message: the raw template renders user messages only"));
        }
        Ok(user_turns.map(|m| m.content.as_str()).collect())
    }

    fn error(&self, msg: impl Into<String>) -> Error {
        let name = match self {
            ChatTemplate::Jinja { .. } => jinja::TEMPLATE_NAME,
            ChatTemplate::ChatMl => "chat template chatml",
            ChatTemplate::DeepSeek => "chat template deepseek",
            ChatTemplate::Raw => "chat template raw",
        };
        Error::format(name, "messages", msg)
    }
}

/// Messages as transformers hands them to templates: a list of `{"role", "content"}`
/// maps, keys in that order (it shows in `tojson`).
fn messages_value(messages: &[Message]) -> Value {
    let as_map = |m: &Message| {
        Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())])
    };
    Value::from(messages.iter().map(as_map).collect::<Vec<_>>())
}

/// The bytes of a conversation's text, which bound what rendering it may cost.
fn input_bytes(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum()
}

fn render_chatml(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out: String = messages
        .iter()
        .map(|m| format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content))
        .collect();
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}
