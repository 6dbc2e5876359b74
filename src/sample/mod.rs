//! Batched decoding with the KV cache: greedy by default, temperature / top-p sampling
//! with a seed for several traces per question (SCoTD samples many). Prompts of any
//! lengths share a batch without padding; a finished sequence frees its slot for the
//! next waiting prompt.

use std::collections::VecDeque;

use crate::model::{KvCache, Model};
use crate::rng::Rng;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    pub top_p: f32,
    pub seed: u64,
    /// Sequences decoded together at most.
    pub batch_size: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            batch_size: 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced one of the end-of-sequence ids (kept as the last id).
    Eos,
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// The sequence reached the model's context length.
    ContextFull,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub ids: Vec<u32>,
    pub stop: StopReason,
}

/// One sequence being decoded.
struct Slot {
    prompt: usize,
    next_chunk: Vec<u32>,
    generated: Vec<u32>,
    rng: Rng,
}

/// Generates a continuation of every prompt. `on_token(prompt_index, id)` sees each
/// token as it is chosen (for streaming). Results are in prompt order and do not depend
/// on `batch_size`.
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    eos_ids: &[u32],
    cfg: &SamplingConfig,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generated>> {
    validate(model, prompts, cfg)?;
    let mut results: Vec<Option<Generated>> = vec![None; prompts.len()];
    let mut waiting: VecDeque<usize> = (0..prompts.len()).collect();
    let mut slots: Vec<Slot> = Vec::new();
    let mut caches: Vec<KvCache> = Vec::new();
    if cfg.max_new_tokens == 0 {
        let empty = Generated {
            ids: vec![],
            stop: StopReason::MaxNewTokens,
        };
        return Ok(vec![empty; prompts.len()]);
    }
    loop {
        while slots.len() < cfg.batch_size.max(1) {
            let Some(p) = waiting.pop_front() else { break };
            slots.push(Slot {
                prompt: p,
                next_chunk: prompts[p].clone(),
                generated: Vec::new(),
                rng: Rng::new(cfg.seed ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            });
            caches.push(KvCache::new(&model.config));
        }
        if slots.is_empty() {
            break;
        }
        let chunks: Vec<&[u32]> = slots.iter().map(|s| s.next_chunk.as_slice()).collect();
        let logits = model.forward_step(&chunks, &mut caches)?;
        let logits = logits.read_f32()?;
        let vocab = model.config.vocab_size;
        for (i, slot) in slots.iter_mut().enumerate() {
            let token = choose(&logits[i * vocab..(i + 1) * vocab], cfg, &mut slot.rng);
            slot.generated.push(token);
            slot.next_chunk = vec![token];
            on_token(slot.prompt, token);
        }
        let mut i = 0;
        while i < slots.len() {
            match stop_reason(model, &slots[i], &caches[i], eos_ids, cfg) {
                Some(stop) => {
                    let slot = slots.swap_remove(i);
                    caches.swap_remove(i);
                    results[slot.prompt] = Some(Generated {
                        ids: slot.generated,
                        stop,
                    });
                }
                None => i += 1,
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every prompt finishes"))
        .collect())
}

fn validate(model: &Model, prompts: &[Vec<u32>], cfg: &SamplingConfig) -> Result<()> {
    let fail = |msg: String| Err(Error::shape("generate", msg));
    if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
        return fail(format!("temperature must be >= 0, got {}", cfg.temperature));
    }
    if !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
        return fail(format!("top_p must be in (0, 1], got {}", cfg.top_p));
    }
    let vocab = model.config.vocab_size as u32;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return fail(format!("prompt {i} is empty"));
        }
        if let Some(&bad) = p.iter().find(|&&id| id >= vocab) {
            return fail(format!(
                "prompt {i} holds token id {bad}, past the vocabulary of {vocab}"
            ));
        }
        if let Some(max) = model
            .config
            .max_position_embeddings
            .filter(|&m| p.len() >= m)
        {
            return fail(format!(
                "prompt {i} has {} tokens; the model's context is {max}, leaving no room to generate",
                p.len()
            ));
        }
    }
    Ok(())
}

fn stop_reason(
    model: &Model,
    slot: &Slot,
    cache: &KvCache,
    eos_ids: &[u32],
    cfg: &SamplingConfig,
) -> Option<StopReason> {
    let last = *slot.generated.last()?;
    if eos_ids.contains(&last) {
        Some(StopReason::Eos)
    } else if slot.generated.len() >= cfg.max_new_tokens {
        Some(StopReason::MaxNewTokens)
    } else if model
        .config
        .max_position_embeddings
        .is_some_and(|m| cache.len() + 1 >= m)
    {
        // The new token is not cached yet: prompt + generated now fill the context.
        Some(StopReason::ContextFull)
    } else {
        None
    }
}

/// The next token from one row of logits.
fn choose(logits: &[f32], cfg: &SamplingConfig, rng: &mut Rng) -> u32 {
    if cfg.temperature == 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv_t = 1.0 / cfg.temperature as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l - max) as f64 * inv_t).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    // Most likely first; ties by id so the order (and so the draw) is deterministic.
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0;
    let mut mass = 0.0;
    while kept < probs.len() && (kept == 0 || mass < cfg.top_p as f64 * total) {
        mass += probs[kept].1;
        kept += 1;
    }
    let mut target = rng.uniform() * mass;
    for &(id, p) in &probs[..kept] {
        if target < p {
            return id;
        }
        target -= p;
    }
    probs[kept - 1].0
}

/// Index of the largest logit; the first one on ties, as torch.argmax.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}
