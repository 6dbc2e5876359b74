//! A conversation rendered with the student's chat template and tokenized, with the loss
//! mask: only the assistant's tokens are supervised, its end-of-turn token included so the
//! student learns to stop.
//!
//! How the assistant's part is found: for each assistant turn, the conversation before it
//! is rendered with the generation prompt (`…<|im_start|>assistant\n`), and the
//! conversation through it without; the assistant's part is what the second adds to the
//! first (`{content}<|im_end|>\n` for ChatML). Whitespace at the end of that part is the
//! template's separator between turns (the `\n` after `<|im_end|>`), not something the
//! model writes before stopping, so it is left unsupervised.
//!
//! The pieces are tokenized separately and concatenated. Their boundaries sit next to
//! special tokens or newlines, where the tokenizers of our models never merge, so this
//! equals tokenizing the whole rendering (the tests check it on the fixture and on the
//! real SmolLM2 tokenizer).
//!
//! A template that rewrites earlier turns once a later one is added (Qwen3's drops the
//! thinking of past assistant turns) cannot be split that way: when the rendering before
//! a turn does not extend the rendering so far, everything before that turn becomes
//! prompt, and only that turn and the later ones are supervised, in the context the
//! template gives them at inference.

use crate::ops::IGNORE_INDEX;
use crate::tokenizer::{ChatTemplate, Message, Tokenizer};
use crate::{Error, Result};

/// One tokenized conversation. `targets[t]` is what position `t` must predict (the token at
/// `t + 1`) or [`IGNORE_INDEX`]: already shifted, so `cross_entropy(logits, targets)` is
/// the causal LM loss. The last position has nothing to predict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub targets: Vec<i64>,
}

impl Example {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    pub fn supervised_tokens(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE_INDEX).count()
    }
}

/// A piece of the rendered conversation and whether its tokens are learned.
struct Piece {
    text: String,
    supervised: bool,
}

pub fn tokenize_row(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
) -> Result<Example> {
    let pieces = split_rendering(template, messages)?;
    let mut input_ids = Vec::new();
    let mut supervised = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let add_special_tokens = i == 0 && template.add_special_tokens();
        let ids = tokenizer.encode(&piece.text, add_special_tokens)?;
        supervised.extend(std::iter::repeat_n(piece.supervised, ids.len()));
        input_ids.extend(ids);
    }
    let targets = shifted_targets(&input_ids, &supervised);
    if targets.iter().all(|&t| t == IGNORE_INDEX) {
        return Err(error("the assistant's reply tokenizes to nothing"));
    }
    Ok(Example { input_ids, targets })
}

/// Position t predicts token t+1, which counts when token t+1 is supervised.
fn shifted_targets(input_ids: &[u32], supervised: &[bool]) -> Vec<i64> {
    let next_labels = input_ids
        .iter()
        .zip(supervised)
        .skip(1)
        .map(|(&id, &learned)| if learned { id as i64 } else { IGNORE_INDEX });
    next_labels
        .chain(std::iter::once(IGNORE_INDEX))
        .take(input_ids.len())
        .collect()
}

/// The rendered conversation as alternating prompt and reply pieces (module docs).
fn split_rendering(template: &ChatTemplate, messages: &[Message]) -> Result<Vec<Piece>> {
    if messages.last().is_none_or(|m| m.role != "assistant") {
        return Err(error("the conversation must end with an assistant turn"));
    }
    let mut pieces = Vec::new();
    let mut rendered = String::new();
    let mut prompt = String::new();
    for (turn, message) in messages.iter().enumerate() {
        if message.role != "assistant" {
            continue;
        }
        if turn == 0 {
            return Err(error("an assistant turn needs a message before it"));
        }
        let before = template.render(&messages[..turn], true)?;
        let through = template.render(&messages[..=turn], false)?;
        let reply = through.strip_prefix(&before).ok_or_else(|| {
            error(format!(
                "turn {turn}: the template's rendering of the assistant turn does not start \
                 with its generation prompt, so the reply cannot be told apart"
            ))
        })?;
        match before.strip_prefix(&rendered) {
            Some(new_prompt) => prompt.push_str(new_prompt),
            None => {
                pieces.clear();
                prompt = before.clone();
            }
        }
        let learned = reply.trim_end();
        if learned.is_empty() {
            return Err(error(format!(
                "turn {turn}: the template renders nothing for the assistant's reply"
            )));
        }
        pieces.push(Piece {
            text: std::mem::take(&mut prompt),
            supervised: false,
        });
        pieces.push(Piece {
            text: learned.to_string(),
            supervised: true,
        });
        prompt.push_str(&reply[learned.len()..]);
        rendered = through;
    }
    pieces.push(Piece {
        text: prompt,
        supervised: false,
    });
    pieces.retain(|p| !p.text.is_empty());
    Ok(pieces)
}

fn error(msg: impl Into<String>) -> Error {
    Error::format("chat template", "messages", msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_next_supervised_token() {
        let ids = [10, 11, 12, 13, 14];
        let supervised = [false, false, true, true, false];
        assert_eq!(
            shifted_targets(&ids, &supervised),
            [IGNORE_INDEX, 12, 13, IGNORE_INDEX, IGNORE_INDEX]
        );
        assert!(shifted_targets(&[], &[]).is_empty());
    }

    #[test]
    fn chatml_splits_into_prompt_reply_and_separator() {
        let messages = [
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
            Message::new("user", "Bye"),
            Message::new("assistant", "Bye!"),
        ];
        let pieces = split_rendering(&ChatTemplate::ChatMl, &messages).unwrap();
        let shown: Vec<(&str, bool)> = pieces
            .iter()
            .map(|p| (p.text.as_str(), p.supervised))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                    false
                ),
                ("Hello<|im_end|>", true),
                (
                    "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
                    false
                ),
                ("Bye!<|im_end|>", true),
                ("\n", false),
            ]
        );
    }
}
