//! `scotd logits`: the last-position logits of prompts (the top ids and values, and the
//! log-sum-exp over the whole vocabulary), as JSON. It exists to compare the engine with
//! other implementations: tools/check_checkpoint_with_transformers.py reads its output.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use scotd::autograd::no_grad;
use scotd::model::{Batch, Model};
use scotd::tokenizer::{ChatTemplate, Message};
use serde::Serialize;

use crate::prompts::{conversation, load_model, DeviceArgs, Loaded};

#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json), or a
    /// Hub id (org/name or org/name@revision): from the Hugging Face cache, downloaded into
    /// it when absent (unless HF_HUB_OFFLINE=1).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    placement: DeviceArgs,
    /// Prompt texts, each one user message rendered through the chat template.
    #[arg(long = "prompt", required = true, num_args = 1..)]
    prompts: Vec<String>,
    /// Encode the prompt text as it is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Chat template: the model's own by default; or chatml, deepseek, raw, or a .jinja file.
    #[arg(long)]
    template: Option<String>,
    /// A system message put before the user's.
    #[arg(long)]
    system: Option<String>,
    /// How many of the largest logits to report per prompt.
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// Where to write the JSON (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    model: PathBuf,
    prompts: Vec<PromptLogits>,
}

#[derive(Serialize)]
struct PromptLogits {
    prompt: String,
    ids: Vec<u32>,
    /// The largest logits of the last position, largest first, with their token ids.
    top_ids: Vec<u32>,
    top_logits: Vec<f32>,
    /// log Σ exp(logit) over the vocabulary: with the top logits it gives their
    /// log-probabilities.
    logsumexp: f64,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = load(&args)?;
    let mut prompts = Vec::new();
    for text in &args.prompts {
        let ids = prompt_ids(&loaded, &args, text)?;
        let logits = last_position_logits(&loaded.model, &ids)?;
        let (top_ids, top_logits) = top_k(&logits, args.top_k);
        prompts.push(PromptLogits {
            prompt: text.clone(),
            ids,
            top_ids,
            top_logits,
            logsumexp: logsumexp(&logits),
        });
    }
    let report = Report {
        model: args.model.clone(),
        prompts,
    };
    let mut json = serde_json::to_vec_pretty(&report)?;
    json.push(b'\n');
    match &args.out {
        Some(path) => scotd::io::write_atomic(path, &json)?,
        None => std::io::stdout().write_all(&json)?,
    }
    Ok(())
}

fn load(args: &Args) -> Result<Loaded> {
    let (model, tokenizer) = load_model(&args.model, &args.placement)?;
    // --raw uses no template, so a model without one works then.
    let template = if args.raw {
        ChatTemplate::Raw
    } else {
        tokenizer.resolve_chat_template(args.template.as_deref())?
    };
    Ok(Loaded {
        model,
        tokenizer,
        template,
    })
}

fn prompt_ids(loaded: &Loaded, args: &Args, text: &str) -> Result<Vec<u32>> {
    if args.raw {
        return Ok(loaded.tokenizer.encode(text, true)?);
    }
    let user = Message::new("user", text);
    loaded.chat_ids(&conversation(args.system.as_deref(), &[user]))
}

fn last_position_logits(model: &Model, ids: &[u32]) -> Result<Vec<f32>> {
    anyhow::ensure!(!ids.is_empty(), "the prompt encodes to no tokens");
    let _g = no_grad();
    let logits = model
        .forward(&Batch::new(ids.to_vec(), 1, ids.len())?)?
        .to_vec_f32()?;
    Ok(logits[logits.len() - model.config.vocab_size..].to_vec())
}

/// The k largest values with their indices, largest first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    let ids = order.iter().map(|&i| i as u32).collect();
    (ids, order.iter().map(|&i| values[i]).collect())
}

/// In f64, shifted by the maximum, so large logits neither overflow nor lose digits.
fn logsumexp(values: &[f32]) -> f64 {
    let max = values
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = values.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}
