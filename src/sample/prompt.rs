//! How a question becomes a teacher's (or an evaluated model's) prompt: the question put
//! into a user-turn format, rendered with a chat template, and tokenized. DeepSeek-math-
//! instruct's published prompt is the DeepSeek template with the user turn
//! `{question}\nPlease reason step by step, and put your final answer within \boxed{}.`,
//! which renders as `User: {question}\nPlease reason ... \boxed{}.\n\nAssistant:`.

use std::path::Path;

use crate::tokenizer::{ChatTemplate, Message, Tokenizer};
use crate::{Error, Result};

const PLACEHOLDER: &str = "{question}";
const DEEPSEEK_MATH: &str =
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.";

/// A question's prompt recipe; the chat template also serves plain chat messages (probes).
#[derive(Clone, Debug)]
pub struct Prompter {
    pub template: ChatTemplate,
    pub system: Option<String>,
    /// The user turn, holding `{question}` once.
    pub question_format: String,
}

impl Prompter {
    /// `prompt`: "plain" (the question alone, the default), "deepseek-math", or a path to
    /// a text file holding `{question}`. `template`: a chat template name or .jinja path
    /// (see [`Tokenizer::resolve_chat_template`]); by default the model's own, except for
    /// "deepseek-math", whose default is the DeepSeek template.
    pub fn new(
        tokenizer: &Tokenizer,
        prompt: Option<&str>,
        template: Option<&str>,
        system: Option<String>,
    ) -> Result<Prompter> {
        let (question_format, default_template) = match prompt.unwrap_or("plain") {
            "plain" => (PLACEHOLDER.to_string(), None),
            "deepseek-math" => (DEEPSEEK_MATH.to_string(), Some("deepseek")),
            path => (read_format(Path::new(path))?, None),
        };
        let template = tokenizer.resolve_chat_template(template.or(default_template))?;
        Ok(Prompter {
            template,
            system,
            question_format,
        })
    }

    /// The prompt ids of a question, ready for the reply.
    pub fn question_ids(&self, tokenizer: &Tokenizer, question: &str) -> Result<Vec<u32>> {
        let user = self.question_format.replacen(PLACEHOLDER, question, 1);
        self.message_ids(tokenizer, &user)
    }

    /// The prompt ids of one user message (with the system message, if any).
    pub fn message_ids(&self, tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
        let system = self
            .system
            .iter()
            .map(|s| Message::new("system", s.as_str()));
        let messages: Vec<Message> = system.chain([Message::new("user", text)]).collect();
        self.conversation_ids(tokenizer, &messages)
    }

    /// The prompt ids of a whole conversation (its own system message, if any), ready for
    /// the assistant's next reply.
    pub fn conversation_ids(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
    ) -> Result<Vec<u32>> {
        let rendered = self.template.render(messages, true)?;
        tokenizer.encode(&rendered, self.template.add_special_tokens())
    }
}

fn read_format(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::format(
                path,
                "prompt",
                "no such file: expected \"plain\", \"deepseek-math\" or a text file holding {question}",
            )
        } else {
            Error::io(path, e)
        }
    })?;
    if text.matches(PLACEHOLDER).count() != 1 {
        return Err(Error::format(
            path,
            "prompt",
            format!("expected exactly one {PLACEHOLDER} placeholder"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepseek_math_renders_the_published_prompt() {
        let user = DEEPSEEK_MATH.replacen(PLACEHOLDER, "What is 2+3?", 1);
        let text = ChatTemplate::DeepSeek
            .render(&[Message::new("user", user)], true)
            .unwrap();
        assert_eq!(
            text,
            "User: What is 2+3?\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant:"
        );
    }

    #[test]
    fn a_format_file_needs_one_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.txt");
        std::fs::write(&path, "Solve: {question} {question}").unwrap();
        let err = read_format(&path).unwrap_err().to_string();
        assert!(
            err.contains("p.txt") && err.contains("exactly one"),
            "{err}"
        );
        let err = read_format(&dir.path().join("nope.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("deepseek-math"), "{err}");
    }
}
