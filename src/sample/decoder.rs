//! The continuous-batching decoder behind [`super::decode`] and `scotd serve`: requests
//! join at any time, each with its own sampling settings and random stream; every step
//! admits waiting requests while the paged KV cache can reserve their whole length, runs
//! one `forward_step` over every sequence being decoded, and reports each new token.

use std::collections::VecDeque;

use super::{Event, Generated, StopReason};
use crate::model::{KvCache, Model, SeqId};
use crate::ops::{self, TokenChoice};
use crate::rng::Rng;
use crate::{Error, Result};

/// How one request is decoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestSettings {
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling, in (0, 1]; 1 is off.
    pub top_p: f32,
    /// Keep only the k most likely tokens (before top-p); 0 keeps them all.
    pub top_k: usize,
    /// The seed of the request's own random stream.
    pub seed: u64,
}

/// A request waiting for room in the cache.
struct Waiting {
    request: usize,
    prompt: Vec<u32>,
    settings: RequestSettings,
    /// Positions reserved for it: its prompt and every new token, within the context.
    reserve: usize,
}

/// One sequence being decoded.
struct Slot {
    request: usize,
    seq: SeqId,
    settings: RequestSettings,
    next_chunk: Vec<u32>,
    generated: Vec<u32>,
    rng: Rng,
}

/// Decodes the requests submitted to it, `batch_size` sequences at most in one step,
/// over a KV cache of a fixed number of positions.
pub struct Decoder<'m> {
    model: &'m Model,
    eos_ids: Vec<u32>,
    cache: KvCache,
    batch_size: usize,
    vocab_limit: usize,
    waiting: VecDeque<Waiting>,
    slots: Vec<Slot>,
}

impl<'m> Decoder<'m> {
    /// A decoder whose KV cache holds `pool_tokens` positions (rounded up to blocks), all
    /// allocated now; ids at or past `vocab_limit` (clamped to the model's vocabulary)
    /// are never chosen.
    pub fn new(
        model: &'m Model,
        eos_ids: &[u32],
        pool_tokens: usize,
        batch_size: usize,
        vocab_limit: Option<usize>,
    ) -> Result<Decoder<'m>> {
        let vocab = model.config.vocab_size;
        if batch_size == 0 {
            return Err(Error::shape("generate", "batch_size must be at least 1"));
        }
        check_vocab_limit(vocab_limit)?;
        Ok(Decoder {
            model,
            eos_ids: eos_ids.to_vec(),
            cache: KvCache::for_model(model, pool_tokens)?,
            batch_size,
            vocab_limit: vocab_limit.unwrap_or(vocab).min(vocab),
            waiting: VecDeque::new(),
            slots: Vec::new(),
        })
    }

    /// Positions a request of `prompt` tokens may fill: the prompt and `max_new_tokens`,
    /// within the model's context.
    pub fn reservation(model: &Model, prompt: usize, max_new_tokens: usize) -> usize {
        let end = prompt + max_new_tokens;
        model
            .config
            .max_position_embeddings
            .map_or(end, |m| end.min(m))
    }

    /// Queues a request under the caller's id `request` (reported back in its events);
    /// an error, and nothing queued, when its prompt or settings are invalid or its
    /// length can never fit the cache.
    pub fn submit(
        &mut self,
        request: usize,
        prompt: Vec<u32>,
        settings: RequestSettings,
    ) -> Result<()> {
        check_settings(&settings)?;
        check_prompt(self.model, request, &prompt)?;
        let reserve = Self::reservation(self.model, prompt.len(), settings.max_new_tokens);
        if KvCache::blocks_for(reserve) > self.cache.blocks() {
            return Err(Error::shape(
                "generate",
                format!(
                    "request {request} needs {reserve} positions (its {} prompt tokens and max_new_tokens {}); \
                     the KV cache holds {}: raise the KV budget or lower max_new_tokens",
                    prompt.len(),
                    settings.max_new_tokens,
                    self.cache.blocks() * crate::model::KV_BLOCK
                ),
            ));
        }
        self.waiting.push_back(Waiting {
            request,
            prompt,
            settings,
            reserve,
        });
        Ok(())
    }

    /// Drops request `request`, waiting or being decoded (its blocks back in the pool),
    /// without a `Finished` event; false when it is not there.
    pub fn cancel(&mut self, request: usize) -> bool {
        if let Some(i) = self.waiting.iter().position(|w| w.request == request) {
            self.waiting.remove(i);
            return true;
        }
        match self.slots.iter().position(|s| s.request == request) {
            Some(i) => {
                let slot = self.slots.swap_remove(i);
                self.cache.remove_sequence(slot.seq);
                true
            }
            None => false,
        }
    }

    /// Whether no request is waiting or being decoded.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.is_empty()
    }

    /// Sequences being decoded now.
    pub fn active(&self) -> usize {
        self.slots.len()
    }

    /// Admits what fits, then decodes one token of every sequence: reports it, and the
    /// sequences that finished with it. An error from `on_event` stops and is returned.
    pub fn step(&mut self, mut on_event: impl FnMut(Event) -> Result<()>) -> Result<()> {
        self.admit(&mut on_event)?;
        if self.slots.is_empty() {
            return Ok(());
        }
        let chunks: Vec<(SeqId, &[u32])> = self
            .slots
            .iter()
            .map(|s| (s.seq, s.next_chunk.as_slice()))
            .collect();
        let logits = self.model.forward_step(&chunks, &mut self.cache)?;
        let tokens = self.next_tokens(&logits)?;
        for (slot, token) in self.slots.iter_mut().zip(tokens) {
            slot.generated.push(token);
            slot.next_chunk = vec![token];
            on_event(Event::Token {
                request: slot.request,
                id: token,
            })?;
        }
        let mut i = 0;
        while i < self.slots.len() {
            match self.stop_reason(&self.slots[i])? {
                Some(stop) => {
                    let slot = self.slots.swap_remove(i);
                    self.cache.remove_sequence(slot.seq);
                    let result = Generated {
                        ids: slot.generated,
                        stop,
                    };
                    on_event(Event::Finished {
                        request: slot.request,
                        result,
                    })?;
                }
                None => i += 1,
            }
        }
        Ok(())
    }

    /// Moves waiting requests into free slots, in order, while the cache has room to
    /// reserve each one's whole length (so no sequence runs out mid-decode); a request
    /// of no new tokens finishes at once.
    fn admit(&mut self, on_event: &mut impl FnMut(Event) -> Result<()>) -> Result<()> {
        while self.slots.len() < self.batch_size {
            let Some(front) = self.waiting.front() else {
                break;
            };
            if front.settings.max_new_tokens > 0
                && KvCache::blocks_for(front.reserve) > self.cache.free_blocks()
            {
                break;
            }
            let w = self.waiting.pop_front().expect("front exists");
            if w.settings.max_new_tokens == 0 {
                let result = Generated {
                    ids: vec![],
                    stop: StopReason::MaxNewTokens,
                };
                on_event(Event::Finished {
                    request: w.request,
                    result,
                })?;
                continue;
            }
            self.slots.push(Slot {
                request: w.request,
                seq: self.cache.add_sequence(w.reserve)?,
                settings: w.settings,
                next_chunk: w.prompt,
                generated: Vec::new(),
                rng: Rng::new(w.settings.seed),
            });
        }
        Ok(())
    }

    /// Each slot's next token from its row of `logits`, chosen where the logits are (only
    /// the ids come back from a GPU) under the slot's own settings; a sampling slot draws
    /// its uniform from its own stream.
    fn next_tokens(&mut self, logits: &crate::Tensor) -> Result<Vec<u32>> {
        let choices: Vec<TokenChoice> = self
            .slots
            .iter_mut()
            .map(|slot| {
                let s = slot.settings;
                TokenChoice {
                    temperature: s.temperature,
                    top_k: s.top_k,
                    top_p: s.top_p,
                    uniform: if s.temperature > 0.0 {
                        slot.rng.uniform()
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        ops::choose_tokens(logits, &choices, self.vocab_limit)
    }

    fn stop_reason(&self, slot: &Slot) -> Result<Option<StopReason>> {
        let Some(&last) = slot.generated.last() else {
            return Ok(None);
        };
        let cached = self.cache.len(slot.seq)?;
        Ok(if self.eos_ids.contains(&last) {
            Some(StopReason::Eos)
        } else if slot.generated.len() >= slot.settings.max_new_tokens {
            Some(StopReason::MaxNewTokens)
        } else if self
            .model
            .config
            .max_position_embeddings
            .is_some_and(|m| cached + 1 >= m)
        {
            // The new token is not cached yet: prompt + generated now fill the context.
            Some(StopReason::ContextFull)
        } else {
            None
        })
    }
}

pub(super) fn check_settings(s: &RequestSettings) -> Result<()> {
    let fail = |msg: String| Err(Error::shape("generate", msg));
    if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
        return fail(format!("temperature must be >= 0, got {}", s.temperature));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return fail(format!("top_p must be in (0, 1], got {}", s.top_p));
    }
    Ok(())
}

/// Checks that prompt `i` can be decoded: not empty, every id in the vocabulary, and
/// shorter than the model's context.
pub(super) fn check_vocab_limit(vocab_limit: Option<usize>) -> Result<()> {
    if vocab_limit == Some(0) {
        return Err(Error::shape(
            "generate",
            "vocab_limit must leave at least one id to choose",
        ));
    }
    Ok(())
}

pub(super) fn check_prompt(model: &Model, i: usize, prompt: &[u32]) -> Result<()> {
    let fail = |msg: String| Err(Error::shape("generate", msg));
    let vocab = model.config.vocab_size as u32;
    if prompt.is_empty() {
        return fail(format!("prompt {i} is empty"));
    }
    if let Some(&bad) = prompt.iter().find(|&&id| id >= vocab) {
        return fail(format!(
            "prompt {i} holds token id {bad}, past the vocabulary of {vocab}"
        ));
    }
    if let Some(max) = model
        .config
        .max_position_embeddings
        .filter(|&m| prompt.len() >= m)
    {
        return fail(format!(
            "prompt {i} has {} tokens; the model's context is {max}, leaving no room to generate",
            prompt.len()
        ));
    }
    Ok(())
}
