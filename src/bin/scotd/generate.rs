//! `scotd generate`: continuations of many prompts in batches, written as JSONL.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use scotd::sample::{generate, StopReason};
use scotd::tokenizer::Message;
use serde::Serialize;
use serde_json::Value;

use crate::prompts::{conversation, load, Loaded, ModelArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompts as text (each one user message, rendered through the chat template).
    prompts: Vec<String>,
    /// A JSONL file whose lines hold `prompt` (text), `messages` ([{role, content}]) or
    /// `prompt_ids` (token ids used as they are).
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// Encode prompt text as it is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Where to write the JSONL results (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One prompt as given, and its token ids.
struct Prompt {
    text: Option<String>,
    ids: Vec<u32>,
}

#[derive(Serialize)]
struct Output<'a> {
    index: usize,
    prompt: Option<&'a str>,
    prompt_ids: &'a [u32],
    ids: &'a [u32],
    text: String,
    stop: StopReason,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = load(&args.model)?;
    let mut prompts: Vec<Prompt> = Vec::new();
    for text in &args.prompts {
        prompts.push(prompt_from_text(&loaded, &args, text)?);
    }
    if let Some(path) = &args.prompts_file {
        prompts.extend(read_prompts_file(&loaded, &args, path)?);
    }
    if prompts.is_empty() {
        bail!("no prompts: give them as arguments or with --prompts-file FILE.jsonl");
    }
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} tokens generated, {per_sec}, {elapsed}")
            .expect("valid template"),
    );
    let results = generate(
        &loaded.model,
        &ids,
        loaded.tokenizer.eos_ids(),
        &args.model.decoding.sampling(&loaded.tokenizer),
        |_, _| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let mut out = Vec::new();
    for (index, (p, g)) in prompts.iter().zip(&results).enumerate() {
        let line = Output {
            index,
            prompt: p.text.as_deref(),
            prompt_ids: &p.ids,
            ids: &g.ids,
            text: loaded.tokenizer.decode(&g.ids, true)?,
            stop: g.stop,
        };
        serde_json::to_writer(&mut out, &line)?;
        out.push(b'\n');
    }
    match &args.out {
        Some(path) => scotd::io::write_atomic(path, &out)?,
        None => std::io::stdout().write_all(&out)?,
    }
    Ok(())
}

fn prompt_from_text(loaded: &Loaded, args: &Args, text: &str) -> Result<Prompt> {
    let ids = if args.raw {
        loaded.tokenizer.encode(text, true)?
    } else {
        let user = Message {
            role: "user".into(),
            content: text.into(),
        };
        loaded.chat_ids(&conversation(
            args.model.decoding.system.as_deref(),
            &[user],
        ))?
    };
    Ok(Prompt {
        text: Some(text.to_string()),
        ids,
    })
}

fn read_prompts_file(loaded: &Loaded, args: &Args, path: &Path) -> Result<Vec<Prompt>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut prompts = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let value: Value =
            serde_json::from_str(&line).with_context(|| format!("{}: not valid JSON", at()))?;
        prompts.push(prompt_from_json(loaded, args, &value).with_context(at)?);
    }
    Ok(prompts)
}

fn prompt_from_json(loaded: &Loaded, args: &Args, v: &Value) -> Result<Prompt> {
    if let Some(ids) = v.get("prompt_ids") {
        let ids: Vec<u32> = serde_json::from_value(ids.clone())
            .context("prompt_ids: expected an array of token ids")?;
        return Ok(Prompt { text: None, ids });
    }
    if let Some(messages) = v.get("messages") {
        let messages: Vec<Message> = serde_json::from_value(messages.clone())
            .context("messages: expected an array of {\"role\", \"content\"}")?;
        let ids = loaded.chat_ids(&conversation(
            args.model.decoding.system.as_deref(),
            &messages,
        ))?;
        return Ok(Prompt { text: None, ids });
    }
    match v.get("prompt").and_then(Value::as_str) {
        Some(text) => prompt_from_text(loaded, args, text),
        None => bail!("expected a \"prompt\" (text), \"messages\" or \"prompt_ids\" field"),
    }
}
