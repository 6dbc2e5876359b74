//! Text ⇄ token ids for Hugging Face checkpoints, and chat templates.
//!
//! [`Tokenizer::from_dir`] loads a model folder's tokenizer.json with the `tokenizers`
//! crate and reads the files beside it the way transformers (v5) does:
//! - special tokens (bos/eos/pad) from tokenizer_config.json;
//! - every EOS id from generation_config.json, config.json and tokenizer_config.json;
//! - the chat template from chat_template.jinja or tokenizer_config.json.
//!
//! What `encode(.., add_special_tokens = true)` adds is up to tokenizer.json's
//! post-processor (DeepSeek's adds its BOS, Qwen's nothing). tokenizer_config.json's
//! `add_bos_token`/`add_eos_token` are ignored, as transformers v5 ignores them whenever
//! a tokenizer.json exists.
//!
//! Decoding does not apply `clean_up_tokenization_spaces`: transformers v5 ignores it for
//! BPE tokenizers, which are the ones this crate's models use.

mod chat;
mod config;
mod jinja;
mod stream;
mod strftime;

use std::path::{Path, PathBuf};

pub use chat::{ChatTemplate, Message};
pub use stream::StreamDecoder;

use crate::{Error, Result};
use config::{read_eos_ids, TokenizerConfig};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// tokenizer.json, to name in errors.
    path: PathBuf,
    eos_ids: Vec<u32>,
    bos: Option<(String, u32)>,
    eos_token: Option<String>,
    pad_id: Option<u32>,
    chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// Loads dir/tokenizer.json plus, when present, tokenizer_config.json,
    /// generation_config.json and config.json for special tokens, EOS ids and the chat
    /// template.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let inner = load_tokenizer_json(&path)?;
        let config = TokenizerConfig::read(dir)?;
        let bos = special_token(&inner, &config, "bos_token", config.bos_token.as_deref())?;
        let eos = special_token(&inner, &config, "eos_token", config.eos_token.as_deref())?;
        let pad = special_token(&inner, &config, "pad_token", config.pad_token.as_deref())?;
        let eos_ids = collect_eos_ids(&inner, dir, eos.as_ref().map(|(_, id)| *id))?;
        let chat_template = config.chat_template.map(|source| ChatTemplate::Jinja {
            source,
            bos_token: config.bos_token.clone().unwrap_or_default(),
            eos_token: config.eos_token.clone().unwrap_or_default(),
        });
        Ok(Tokenizer {
            inner,
            path,
            eos_ids,
            bos,
            eos_token: config.eos_token,
            pad_id: pad.map(|(_, id)| id),
            chat_template,
        })
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| Error::format(&self.path, "encode", e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids outside the vocabulary are an error (the `tokenizers` crate would drop them
    /// silently).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(Error::format(
                &self.path,
                "decode",
                format!(
                    "token id {bad} is not in the vocabulary ({} tokens)",
                    self.vocab_size()
                ),
            ));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::format(&self.path, "decode", e.to_string()))
    }

    /// Every id that ends generation: generation_config.json `eos_token_id` (int or list),
    /// config.json `eos_token_id`, tokenizer_config.json `eos_token`, deduplicated, in that
    /// order of precedence (a model may have several, e.g. <|endoftext|> and <|im_end|>).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The id of tokenizer_config.json's `bos_token`; None when it names none (Qwen), as
    /// transformers' `tokenizer.bos_token_id`.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(_, id)| *id)
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The number of tokens, added tokens included (transformers' `len(tokenizer)`); a
    /// model's embedding may have more rows than this.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The model's own chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The template a `--template` option names, or the model's own when it names none.
    /// A .jinja file gets this tokenizer's bos/eos strings, as the model's own template does.
    pub fn resolve_chat_template(&self, name_or_path: Option<&str>) -> Result<ChatTemplate> {
        let Some(name_or_path) = name_or_path else {
            return self.chat_template.clone().ok_or_else(|| {
                Error::format(
                    &self.path,
                    "chat_template",
                    "this model has no chat template: name one (chatml, deepseek, raw or a .jinja file)",
                )
            });
        };
        Ok(match ChatTemplate::from_name_or_path(name_or_path)? {
            ChatTemplate::Jinja { source, .. } => ChatTemplate::Jinja {
                source,
                bos_token: self.bos_token().unwrap_or_default().to_string(),
                eos_token: self.eos_token().unwrap_or_default().to_string(),
            },
            builtin => builtin,
        })
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|(token, _)| token.as_str())
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
}

/// A summary: the vocabulary itself would flood test failures and logs.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("eos_ids", &self.eos_ids)
            .field("bos", &self.bos)
            .field("eos_token", &self.eos_token)
            .field("pad_id", &self.pad_id)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn load_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            let expected = "not found: expected a Hugging Face fast-tokenizer file \
                            (tokenizer.json) in this folder, as save_pretrained writes it";
            Error::io(path, std::io::Error::new(e.kind(), expected))
        } else {
            Error::io(path, e)
        }
    })?;
    tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
        Error::format(
            path,
            "(json)",
            format!("not a tokenizer the `tokenizers` crate can load: {e}"),
        )
    })
}

/// A special token named in tokenizer_config.json, with its id; a token the vocabulary
/// does not have is an error (the model could never read or write it).
fn special_token(
    inner: &tokenizers::Tokenizer,
    config: &TokenizerConfig,
    field: &str,
    token: Option<&str>,
) -> Result<Option<(String, u32)>> {
    let Some(token) = token else {
        return Ok(None);
    };
    match inner.token_to_id(token) {
        Some(id) => Ok(Some((token.to_string(), id))),
        None => Err(config.err(field, format!("{token:?} is not a token of tokenizer.json"))),
    }
}

/// EOS ids in precedence order, deduplicated; each id must be in the vocabulary.
fn collect_eos_ids(
    inner: &tokenizers::Tokenizer,
    dir: &Path,
    config_eos: Option<u32>,
) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for listed in read_eos_ids(dir)? {
        for id in listed.ids {
            if inner.id_to_token(id).is_none() {
                return Err(listed.file.err(
                    "eos_token_id",
                    format!(
                        "id {id} is not in the vocabulary of tokenizer.json ({} tokens)",
                        inner.get_vocab_size(true)
                    ),
                ));
            }
            ids.push(id);
        }
    }
    ids.extend(config_eos);
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    Ok(ids)
}
