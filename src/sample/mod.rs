//! Batched decoding on the model's device: greedy by default, temperature / top-k /
//! top-p sampling seeded per sequence for several traces per question (SCoTD samples
//! many). Prompts of any lengths share a batch without padding (a paged KV cache,
//! reserved up front within `kv_budget`); a finished sequence frees its slot and blocks
//! for the next waiting prompt (continuous batching), and the next tokens are chosen
//! where the logits are, so only their ids come back from a GPU.

use indicatif::{ProgressBar, ProgressStyle};

mod decoder;
mod import;
mod prompt;
mod solutions;
mod traces;

pub use decoder::{Decoder, RequestSettings};
pub use import::{import_traces, ImportOptions, ImportSummary, Keep, MissingGold};
pub use prompt::Prompter;
pub use solutions::{solution_traces, write_traces};
pub(crate) use traces::trace_seed;
pub use traces::{sample_traces, SampleOptions, SampleSummary};

use crate::model::{KvCache, Model, KV_BLOCK};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    pub top_p: f32,
    /// Keep only the k most likely tokens (before top-p); 0 keeps them all.
    pub top_k: usize,
    pub seed: u64,
    /// Sequences decoded together at most.
    pub batch_size: usize,
    /// Ids at or past this are never chosen: a config vocabulary padded past the
    /// tokenizer's (Qwen2.5: 151,936 rows for 151,665 tokens). `None`: every row.
    pub vocab_limit: Option<usize>,
    /// Bytes the KV cache may take at most (reserved up front); `None`: what the batch
    /// needs at its longest.
    pub kv_budget: Option<u64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            batch_size: 8,
            vocab_limit: None,
            kv_budget: None,
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

impl Generated {
    /// The generated ids without the end-of-sequence id that stopped them.
    pub fn reply_ids(&self) -> &[u32] {
        match self.stop {
            StopReason::Eos => &self.ids[..self.ids.len() - 1],
            _ => &self.ids,
        }
    }
}

/// One sequence to decode: its prompt ids and the seed of its own random stream, so a
/// sampled continuation depends on neither its batch neighbours nor its position.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub prompt: &'a [u32],
    pub seed: u64,
}

/// What [`decode`] reports as it goes; `request` indexes the requests given.
pub enum Event {
    Token { request: usize, id: u32 },
    Finished { request: usize, result: Generated },
}

/// Generates a continuation of every prompt. `on_token(prompt_index, id)` sees each
/// token as it is chosen (for streaming). Results are in prompt order and do not depend
/// on `batch_size`. Prompt p's random stream is seeded from `cfg.seed` and p.
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    eos_ids: &[u32],
    cfg: &SamplingConfig,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Generated>> {
    let requests: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(p, prompt)| Request {
            prompt,
            seed: cfg.seed ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        })
        .collect();
    let mut results: Vec<Option<Generated>> = vec![None; prompts.len()];
    decode(model, &requests, eos_ids, cfg, |event| {
        match event {
            Event::Token { request, id } => on_token(request, id),
            Event::Finished { request, result } => results[request] = Some(result),
        }
        Ok(())
    })?;
    Ok(results
        .into_iter()
        .map(|r| r.expect("every prompt finishes"))
        .collect())
}

/// Decodes every request, reporting each token and each finished sequence as soon as it
/// is known (a long job can save results as they come); an error from `on_event` stops
/// decoding and is returned. `cfg.seed` is not used: each request brings its own.
pub fn decode(
    model: &Model,
    requests: &[Request],
    eos_ids: &[u32],
    cfg: &SamplingConfig,
    mut on_event: impl FnMut(Event) -> Result<()>,
) -> Result<()> {
    validate(model, requests, cfg)?;
    if cfg.max_new_tokens == 0 {
        for request in 0..requests.len() {
            let result = Generated {
                ids: vec![],
                stop: StopReason::MaxNewTokens,
            };
            on_event(Event::Finished { request, result })?;
        }
        return Ok(());
    }
    let needs: Vec<usize> = requests
        .iter()
        .map(|r| Decoder::reservation(model, r.prompt.len(), cfg.max_new_tokens))
        .collect();
    let pool = pool_tokens(model, &needs, cfg)?;
    let mut decoder = Decoder::new(model, eos_ids, pool, cfg.batch_size, cfg.vocab_limit)?;
    for (i, r) in requests.iter().enumerate() {
        decoder.submit(i, r.prompt.to_vec(), cfg.settings(r.seed))?;
    }
    while !decoder.is_idle() {
        decoder.step(&mut on_event)?;
    }
    Ok(())
}

impl SamplingConfig {
    /// The settings of one request decoded under this config, with its own seed.
    pub fn settings(&self, seed: u64) -> RequestSettings {
        RequestSettings {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed,
        }
    }
}

/// Positions of the KV cache: what the `batch_size` longest requests need together,
/// within `cfg.kv_budget`; an error when the budget cannot hold even the longest alone.
fn pool_tokens(model: &Model, needs: &[usize], cfg: &SamplingConfig) -> Result<usize> {
    let per_token = KvCache::bytes_per_token(&model.config, model.activation_dtype()) as u64;
    let affordable = cfg
        .kv_budget
        .map(|budget| (budget / (per_token * KV_BLOCK as u64)) as usize);
    let longest = needs
        .iter()
        .map(|&n| KvCache::blocks_for(n))
        .max()
        .unwrap_or(0);
    if let Some(affordable) = affordable.filter(|&a| a < longest) {
        let budget = cfg.kv_budget.expect("affordable comes from the budget");
        let (r, need) = needs
            .iter()
            .enumerate()
            .max_by_key(|(_, &n)| n)
            .expect("a request");
        return Err(Error::shape(
            "generate",
            format!(
                "the KV budget of {budget} bytes holds {} positions ({per_token} bytes each); \
                 request {r} needs {need} (its prompt and max_new_tokens {}): raise the budget or lower max_new_tokens",
                affordable * KV_BLOCK,
                cfg.max_new_tokens
            ),
        ));
    }
    Ok(kv_pool_blocks(needs, cfg.batch_size, affordable) * KV_BLOCK)
}

/// Blocks of the KV cache [`decode`] reserves for requests needing `needs` positions
/// each: what the `batch_size` longest need together, at most `affordable` (the budget's
/// blocks, when there is one).
pub fn kv_pool_blocks(needs: &[usize], batch_size: usize, affordable: Option<usize>) -> usize {
    let mut blocks: Vec<usize> = needs.iter().map(|&n| KvCache::blocks_for(n)).collect();
    blocks.sort_unstable_by(|a, b| b.cmp(a));
    let wanted: usize = blocks.iter().take(batch_size.max(1)).sum();
    affordable.map_or(wanted, |a| wanted.min(a))
}

/// The decoder's own checks, made before anything is sized or allocated (and for
/// `max_new_tokens` 0, which needs no decoder).
fn validate(model: &Model, requests: &[Request], cfg: &SamplingConfig) -> Result<()> {
    decoder::check_settings(&cfg.settings(0))?;
    decoder::check_vocab_limit(cfg.vocab_limit)?;
    for (i, r) in requests.iter().enumerate() {
        decoder::check_prompt(model, i, r.prompt)?;
    }
    Ok(())
}

/// The text of a generated reply: its ids up to (not including) a final end-of-sequence
/// id, decoded with special tokens kept, since `<think>` is one in some vocabularies.
pub fn reply_text(tokenizer: &Tokenizer, generated: &Generated) -> Result<String> {
    tokenizer.decode(generated.reply_ids(), false)
}

/// A progress bar over questions (hidden when `show` is false), `done` of them already
/// finished.
pub(crate) fn questions_bar(show: bool, total: usize, done: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} questions {msg} [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    bar.set_position(done as u64);
    bar.reset_eta();
    bar
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
