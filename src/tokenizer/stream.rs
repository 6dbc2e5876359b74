//! Incremental decoding for printing tokens as they are generated.
//!
//! A token can end in the middle of a UTF-8 character (byte-level BPE splits an emoji
//! into several byte tokens), and some decoders treat the first token of a text
//! differently (SentencePiece drops its leading space). So each step decodes a short
//! window that starts a little before the new tokens, compares it with the same window
//! without them, and emits the difference only once it no longer ends in the U+FFFD that
//! lossy decoding writes for an incomplete character (the scheme of Hugging Face's
//! text-generation-inference). Decoding stays O(1) per token.

use super::Tokenizer;
use crate::Result;

/// Turns a stream of generated ids into text deltas, holding back bytes of an incomplete
/// UTF-8 character or a partial token merge, so `chat` can print tokens as they come (the
/// concatenation of all deltas equals decode(all ids)).
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the window decoded for context; its text up to `read_offset` is emitted.
    prefix_offset: usize,
    /// Ids before this have been emitted.
    read_offset: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        StreamDecoder {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds one id; returns the text it completes, possibly empty.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let (emitted, window) = self.decode_window()?;
        if window.ends_with(char::REPLACEMENT_CHARACTER) || !window.starts_with(&emitted) {
            return Ok(String::new());
        }
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(window[emitted.len()..].to_string())
    }

    /// The text still held back (an incomplete character decodes as U+FFFD, as it does in
    /// `decode`).
    pub fn finish(self) -> Result<String> {
        let (emitted, window) = self.decode_window()?;
        Ok(window
            .strip_prefix(emitted.as_str())
            .unwrap_or(&window)
            .to_string())
    }

    /// The window's already-emitted text and its full text.
    fn decode_window(&self) -> Result<(String, String)> {
        let decode = |ids: &[u32]| self.tokenizer.decode(ids, self.skip_special_tokens);
        Ok((
            decode(&self.ids[self.prefix_offset..self.read_offset])?,
            decode(&self.ids[self.prefix_offset..])?,
        ))
    }
}
