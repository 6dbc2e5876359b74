//! The demo models' tokenizer, built in code for the demo's closed world and written as
//! the tokenizer part of a Hugging Face folder (tokenizer.json, tokenizer_config.json)
//! that [`Tokenizer::from_dir`](crate::tokenizer::Tokenizer::from_dir) loads like any
//! other (the files follow transformers' format; not checked against transformers itself).
//!
//! It is word-level: spaces become `▁` (Metaspace, nothing prepended), then each word,
//! each digit and each other symbol is one piece with the space before it (`▁apples`,
//! `▁1` `2`, `▁+`, `\n`), and every piece of the demo's texts is one vocabulary entry.
//! One token a digit makes arithmetic learnable for a small model; word pieces keep the
//! sequences short. Decoding turns `▁` back into spaces, so decode(encode(text)) == text
//! for every text made of known pieces; an unknown piece becomes `<unk>`.
//!
//! Special tokens are Qwen's: ChatML's `<|im_start|>` / `<|im_end|>` (the end of a turn,
//! so the EOS), `<|endoftext|>` (padding), and `<think>` / `</think>`, which are added
//! tokens but not special, so decoding without special tokens keeps them, as Qwen3's do.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use crate::io::write_atomic;
use crate::{Error, Result};

/// The added tokens, in id order from 0, and whether each is special.
pub const ADDED_TOKENS: [(&str, bool); 5] = [
    ("<|endoftext|>", true),
    ("<|im_start|>", true),
    ("<|im_end|>", true),
    ("<think>", false),
    ("</think>", false),
];
pub const EOS_TOKEN: &str = "<|im_end|>";
pub const PAD_TOKEN: &str = "<|endoftext|>";
pub const UNK_TOKEN: &str = "<unk>";
const SPACE_MARK: &str = "▁";

/// One piece: a word, a digit or another symbol, each with an optional `▁` before it; a
/// whitespace character (newline, tab); or a `▁` alone (before whitespace or another `▁`).
const PIECE_PATTERN: &str = r"▁?\p{L}+|▁?\p{N}|▁?[^\p{L}\p{N}\s▁]|\s|▁";

/// ChatML as Qwen2.5 writes it, without the default system message.
const CHATML_TEMPLATE: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// Pieces every vocabulary has beside the corpus's: ChatML's role names and every
/// printable ASCII character, bare and after a space.
fn base_pieces() -> impl Iterator<Item = String> {
    let roles = ["system", "user", "assistant", "\n"].map(String::from);
    let ascii = (b'!'..=b'~').flat_map(|b| {
        let c = char::from(b);
        [c.to_string(), format!("{SPACE_MARK}{c}")]
    });
    roles.into_iter().chain(ascii)
}

fn pre_tokenizer_json() -> Value {
    json!({
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Metaspace", "replacement": SPACE_MARK, "prepend_scheme": "never", "split": false},
            {"type": "Split", "pattern": {"Regex": PIECE_PATTERN}, "behavior": "Isolated", "invert": false}
        ]
    })
}

/// The vocabulary for `texts`: the added tokens (ids 0-4), `<unk>`, then every piece of
/// the texts and of [`base_pieces`], each once, in sorted order. `words` are added both
/// bare and after a space, for words that may start a line as well as follow a space.
pub fn build_vocabulary<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    words: &[&str],
) -> Result<Vec<String>> {
    let pre_tokenizer: PreTokenizerWrapper =
        serde_json::from_value(pre_tokenizer_json()).map_err(|e| tokenizer_error(e.to_string()))?;
    let mut pieces: BTreeSet<String> = base_pieces().collect();
    let spaced_words = words.iter().flat_map(|w| [w.to_string(), format!(" {w}")]);
    for text in texts.into_iter().map(str::to_string).chain(spaced_words) {
        for part in without_added_tokens(&text) {
            pieces.extend(pre_tokenize(&pre_tokenizer, part)?);
        }
    }
    let fixed = ADDED_TOKENS
        .iter()
        .map(|(token, _)| token.to_string())
        .chain([UNK_TOKEN.to_string()]);
    Ok(fixed.chain(pieces).collect())
}

/// The stretches of `text` between added tokens (which are never pre-tokenized).
fn without_added_tokens(text: &str) -> Vec<&str> {
    ADDED_TOKENS.iter().fold(vec![text], |parts, (token, _)| {
        parts.iter().flat_map(|p| p.split(token)).collect()
    })
}

fn pre_tokenize(pre_tokenizer: &PreTokenizerWrapper, text: &str) -> Result<Vec<String>> {
    let mut split = PreTokenizedString::from(text);
    pre_tokenizer
        .pre_tokenize(&mut split)
        .map_err(|e| tokenizer_error(e.to_string()))?;
    Ok(split
        .get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(piece, _, _)| piece.to_string())
        .collect())
}

/// tokenizer.json for a vocabulary from [`build_vocabulary`].
pub fn tokenizer_json(vocabulary: &[String]) -> Value {
    let vocab: serde_json::Map<String, Value> = vocabulary
        .iter()
        .enumerate()
        .map(|(id, piece)| (piece.clone(), Value::from(id)))
        .collect();
    let added: Vec<Value> = ADDED_TOKENS
        .iter()
        .enumerate()
        .map(|(id, &(content, special))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": special})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer_json(),
        "post_processor": null,
        "decoder": {"type": "Metaspace", "replacement": SPACE_MARK, "prepend_scheme": "never", "split": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK_TOKEN}
    })
}

/// tokenizer_config.json: the special tokens and the ChatML chat template.
fn tokenizer_config_json() -> Value {
    let decoder: serde_json::Map<String, Value> = ADDED_TOKENS
        .iter()
        .enumerate()
        .map(|(id, &(content, special))| {
            let token = json!({"content": content, "lstrip": false, "normalized": false,
                               "rstrip": false, "single_word": false, "special": special});
            (id.to_string(), token)
        })
        .collect();
    json!({
        "added_tokens_decoder": decoder,
        "bos_token": null,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "PreTrainedTokenizerFast"
    })
}

/// Writes tokenizer.json and tokenizer_config.json for `vocabulary` into `dir`.
pub fn write_tokenizer_files(dir: &Path, vocabulary: &[String]) -> Result<()> {
    let write = |name: &str, value: &Value| {
        let mut bytes = serde_json::to_vec_pretty(value).expect("a JSON value serialises");
        bytes.push(b'\n');
        write_atomic(&dir.join(name), &bytes)
    };
    write("tokenizer.json", &tokenizer_json(vocabulary))?;
    write("tokenizer_config.json", &tokenizer_config_json())
}

fn tokenizer_error(msg: String) -> Error {
    Error::format("demo tokenizer", "pre_tokenizer", msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::chat_data::chat_examples;
    use crate::demo::problems::{self, Difficulty};
    use crate::rng::Rng;
    use crate::tokenizer::{Message, Tokenizer};

    fn tokenizer_for(texts: &[&str], words: &[&str]) -> (tempfile::TempDir, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let vocabulary = build_vocabulary(texts.iter().copied(), words).unwrap();
        write_tokenizer_files(dir.path(), &vocabulary).unwrap();
        let tokenizer = Tokenizer::from_dir(dir.path()).unwrap();
        (dir, tokenizer)
    }

    fn pieces(tokenizer: &Tokenizer, text: &str) -> Vec<String> {
        let ids = tokenizer.encode(text, false).unwrap();
        ids.iter()
            .map(|&id| tokenizer.id_to_token(id).unwrap())
            .collect()
    }

    #[test]
    fn pieces_are_words_digits_and_symbols_with_their_space() {
        let (_dir, tokenizer) = tokenizer_for(&["Mia has 12 apples.\nThen"], &[]);
        assert_eq!(
            pieces(&tokenizer, "Mia has 12 apples.\nThen 3 + 4"),
            [
                "Mia",
                "▁has",
                "▁1",
                "2",
                "▁apples",
                ".",
                "\n",
                "Then",
                "▁3",
                "▁+",
                "▁4"
            ]
        );
        let ids = tokenizer
            .encode("<|im_start|>user\n<think>1</think><|im_end|>", false)
            .unwrap();
        let id = |piece: &str| tokenizer.token_to_id(piece).unwrap();
        assert_eq!(ids, [1, id("user"), id("\n"), 3, id("1"), 4, 2]);
    }

    #[test]
    fn special_tokens_and_the_template_load_as_qwen_does() {
        let (_dir, tokenizer) = tokenizer_for(&["Hi"], &[]);
        assert_eq!(tokenizer.eos_ids(), &[2]);
        assert_eq!(tokenizer.pad_id(), Some(0));
        assert_eq!(tokenizer.bos_id(), None);
        let template = tokenizer.resolve_chat_template(None).unwrap();
        let rendered = template
            .render(&[Message::new("user", "Hi")], true)
            .unwrap();
        assert_eq!(
            rendered,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let ids = tokenizer
            .encode("<think>Hi</think><|im_end|>", false)
            .unwrap();
        assert_eq!(tokenizer.decode(&ids, true).unwrap(), "<think>Hi</think>");
    }

    #[test]
    fn unknown_words_become_unk() {
        let (_dir, tokenizer) = tokenizer_for(&["Mia has apples"], &[]);
        let ids = tokenizer.encode("Mia has zebras", false).unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[2], tokenizer.token_to_id(UNK_TOKEN).unwrap());
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), "Mia has<unk>");
    }

    #[test]
    fn demo_texts_round_trip_exactly() {
        let vocabulary = crate::demo::vocabulary().unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer_files(dir.path(), &vocabulary).unwrap();
        let tokenizer = Tokenizer::from_dir(dir.path()).unwrap();
        let template = tokenizer.resolve_chat_template(None).unwrap();
        let unk = tokenizer.token_to_id(UNK_TOKEN).unwrap();
        let mut rng = Rng::new(99);
        let mut texts: Vec<String> = Vec::new();
        for max_steps in 1..=3 {
            let difficulty = Difficulty {
                max_steps,
                max_number: 30,
            };
            for _ in 0..1500 {
                let p = problems::generate(&mut rng, difficulty);
                let split = crate::data::split_gsm8k_answer(&p.answer).unwrap();
                let reply = format!(
                    "<think>{}</think> \\boxed{{{}}}",
                    split.reasoning, split.final_answer
                );
                let chat = [
                    Message::new("user", &p.question),
                    Message::new("assistant", reply),
                ];
                texts.push(template.render(&chat, false).unwrap());
                texts.extend([p.question, p.answer]);
            }
        }
        for e in chat_examples() {
            let user = format!("{}\n\n{}", e.instruction, e.input);
            let chat = [
                Message::new("user", user),
                Message::new("assistant", &e.output),
            ];
            texts.push(template.render(&chat, true).unwrap());
        }
        let mut longest = 0;
        for text in &texts {
            let ids = tokenizer.encode(text, false).unwrap();
            assert!(!ids.contains(&unk), "unknown piece in {text:?}");
            assert_eq!(&tokenizer.decode(&ids, false).unwrap(), text);
            longest = longest.max(ids.len());
        }
        assert!(longest < 160, "the longest demo text has {longest} tokens");
    }
}
