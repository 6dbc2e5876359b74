//! `scotd probe`: look inside a model. Record sites to safetensors, draw attention maps,
//! read the logit lens, train linear probes per layer, patch activations.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use scotd::model::Model;
use scotd::probe::lens::logit_lens;
use scotd::probe::linear::{markdown, probe_layers, probed_sites, residual_features, Pooling};
use scotd::probe::patch::{patch, PATCHED_KINDS};
use scotd::probe::plot::{heatmap, line, Heatmap};
use scotd::probe::record::{read_prompts, record, write_recordings, Recorded};
use scotd::probe::{Site, SiteKind};
use scotd::sample::Prompter;
use scotd::tokenizer::Tokenizer;
use scotd::Device;

use crate::prompts::{load_model, DeviceArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Record sites of every prompt of a file into DIR/activations.safetensors + index.json.
    Record(RecordArgs),
    /// Attention heat maps per layer and head for one prompt, tokens on the axes (PNG).
    Attention(PromptArgs),
    /// The top tokens the residual stream predicts after every layer, at every position.
    LogitLens(LensArgs),
    /// A logistic-regression probe per layer separating two prompt sets; held-out accuracy.
    Linear(LinearArgs),
    /// Patch prompt A's last position from prompt B's, site by site: the change in the
    /// probability of a token (default `<think>`) as A's next token.
    Patch(PatchArgs),
}

/// The model and how prompts become tokens.
#[derive(clap::Args)]
struct ModelArgs {
    /// A Hugging Face checkpoint folder, or a Hub id (org/name[@revision]), as --model of
    /// `scotd generate`.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    placement: DeviceArgs,
    /// Chat template for the prompts: the model's own by default; chatml, deepseek, a
    /// .jinja file, or raw (the text as it is).
    #[arg(long)]
    template: Option<String>,
    /// A system message before each prompt.
    #[arg(long)]
    system: Option<String>,
}

#[derive(clap::Args)]
struct RecordArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL (or JSON array) of objects with a prompt, question or instruction.
    #[arg(long)]
    prompts: PathBuf,
    /// Sites: resid_pre, q, k, attn_probs, attn_heads, attn_out, resid_mid, mlp_out,
    /// resid_post (each all layers, or .N for one), final_norm, logits; comma-separated.
    #[arg(long, default_value = "resid_post")]
    sites: String,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct PromptArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// Layers to draw: all by default, or a comma-separated list.
    #[arg(long)]
    layers: Option<String>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct LensArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// Tokens per position in lens.json.
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct LinearArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The first prompt set (e.g. GSM8K questions).
    #[arg(long)]
    a: PathBuf,
    /// The second (e.g. Alpaca instructions).
    #[arg(long)]
    b: PathBuf,
    /// Prompts taken from each set at most.
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// The residual stream at the last position (where the reply starts) or the mean
    /// over positions.
    #[arg(long, value_enum, default_value_t = Pooling::Last)]
    pool: Pooling,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct PatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt that is run and patched.
    #[arg(long)]
    prompt_a: String,
    /// The prompt the patched values come from.
    #[arg(long)]
    prompt_b: String,
    /// The token whose probability is measured, as the tokenizer spells it.
    #[arg(long, default_value = "<think>")]
    token: String,
    /// Also patch every head of every layer (attn_heads), one at a time.
    #[arg(long)]
    heads: bool,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Record(a) => run_record(a),
        What::Attention(a) => run_attention(a),
        What::LogitLens(a) => run_lens(a),
        What::Linear(a) => run_linear(a),
        What::Patch(a) => run_patch(a),
    }
}

/// The model, its tokenizer, and the prompt renderer.
struct Loaded {
    model: Model,
    tokenizer: Tokenizer,
    prompter: Prompter,
}

impl ModelArgs {
    fn load(&self) -> Result<Loaded> {
        let (model, tokenizer) = load_model(&self.model, &self.placement)?;
        let prompter = Prompter::new(
            &tokenizer,
            None,
            self.template.as_deref(),
            self.system.clone(),
        )?;
        Ok(Loaded {
            model,
            tokenizer,
            prompter,
        })
    }
}

impl Loaded {
    fn ids(&self, prompt: &str) -> Result<Vec<u32>> {
        anyhow::ensure!(!prompt.trim().is_empty(), "the prompt is empty");
        Ok(self.prompter.message_ids(&self.tokenizer, prompt)?)
    }

    fn token_texts(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.tokenizer.id_to_token(id).unwrap_or_default())
            .collect()
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {what} [{{elapsed}} < {{eta}}]"
        ))
        .expect("a valid template"),
    )
}

fn create(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    Ok(scotd::io::write_atomic(path, text.as_bytes())?)
}

fn run_record(args: RecordArgs) -> Result<()> {
    let m = args.model.load()?;
    let sites = Site::parse_list(&args.sites, m.model.config.num_hidden_layers)?;
    let prompts = read_prompts(&args.prompts)?;
    let progress = bar(prompts.len(), "prompts");
    let mut recordings = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.into_iter().enumerate() {
        let ids = m
            .ids(&prompt)
            .with_context(|| format!("{}: prompt {}", args.prompts.display(), i + 1))?;
        // Moved to the host as they come: the recordings of many prompts must not fill a
        // GPU's memory, and they are written from the host.
        let sites = record(&m.model, &ids, &sites)?
            .into_iter()
            .map(|(site, t)| Ok((site, t.to(Device::Cpu)?)))
            .collect::<Result<_>>()?;
        recordings.push(Recorded { prompt, ids, sites });
        progress.inc(1);
    }
    progress.finish_and_clear();
    write_recordings(&args.out, &recordings, &m.tokenizer)?;
    println!(
        "{} prompts recorded into {}",
        recordings.len(),
        args.out.display()
    );
    Ok(())
}

fn run_attention(args: PromptArgs) -> Result<()> {
    let m = args.model.load()?;
    let c = &m.model.config;
    let layers: Vec<usize> = match &args.layers {
        Some(spec) => Site::parse_list(&layer_spec("attn_probs", spec), c.num_hidden_layers)?
            .iter()
            .filter_map(|s| s.layer)
            .collect(),
        None => (0..c.num_hidden_layers).collect(),
    };
    let ids = m.ids(&args.prompt)?;
    let sites: Vec<Site> = layers
        .iter()
        .map(|&l| Site::layer(SiteKind::AttnProbs, l))
        .collect();
    let recorded = record(&m.model, &ids, &sites)?;
    let tokens = m.token_texts(&ids);
    create(&args.out)?;
    let (heads, t) = (c.num_attention_heads, ids.len());
    let progress = bar(sites.len() * heads, "maps");
    for site in &sites {
        let probs = recorded[site].to_vec_f32()?;
        for h in 0..heads {
            let title = format!("attention, layer {} head {h}", site.layer.unwrap_or(0));
            let map = Heatmap {
                title: &title,
                values: &probs[h * t * t..(h + 1) * t * t],
                row_labels: &tokens,
                col_labels: &tokens,
                cell_text: None,
            };
            heatmap(
                &args.out.join(format!(
                    "layer{:02}_head{h:02}.png",
                    site.layer.unwrap_or(0)
                )),
                &map,
            )?;
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    println!(
        "{} maps (rows: queries, columns: keys) in {}",
        sites.len() * heads,
        args.out.display()
    );
    Ok(())
}

/// "0,3" as a site list of one kind.
fn layer_spec(kind: &str, layers: &str) -> String {
    layers
        .split(',')
        .map(|l| format!("{kind}.{}", l.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn run_lens(args: LensArgs) -> Result<()> {
    let m = args.model.load()?;
    let ids = m.ids(&args.prompt)?;
    let lens = logit_lens(&m.model, &ids, args.top.max(1))?;
    create(&args.out)?;
    let table = lens.markdown(&m.tokenizer);
    write(&args.out.join("lens.md"), &table)?;
    let json: Vec<Vec<Vec<(String, f32)>>> = lens
        .top
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(|top| {
                    top.iter()
                        .map(|&(id, p)| (m.token_texts(&[id])[0].clone(), p))
                        .collect()
                })
                .collect()
        })
        .collect();
    write(
        &args.out.join("lens.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    let top1: Vec<f32> = lens.top.iter().flatten().map(|top| top[0].1).collect();
    let text: Vec<String> = lens
        .top
        .iter()
        .flatten()
        .map(|top| m.token_texts(&[top[0].0])[0].clone())
        .collect();
    let layers: Vec<String> = (0..lens.top.len()).map(|l| format!("layer {l}")).collect();
    let map = Heatmap {
        title: "logit lens: top token and its probability",
        values: &top1,
        row_labels: &layers,
        col_labels: &m.token_texts(&ids),
        cell_text: Some(&text),
    };
    heatmap(&args.out.join("lens.png"), &map)?;
    println!("{table}");
    Ok(())
}

fn run_linear(args: LinearArgs) -> Result<()> {
    let m = args.model.load()?;
    let sets = [&args.a, &args.b]
        .map(|path| read_prompts(path).map(|p| p.into_iter().take(args.limit).collect::<Vec<_>>()));
    let [a, b] = sets;
    let (a, b) = (a?, b?);
    let progress = bar(a.len() + b.len(), "prompts");
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (set, prompts) in [(true, &a), (false, &b)] {
        for prompt in prompts {
            features.push(residual_features(&m.model, &m.ids(prompt)?, args.pool)?);
            labels.push(set);
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    let sites: Vec<String> = probed_sites(m.model.config.num_hidden_layers)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let probes = probe_layers(&features, &labels, &sites, args.seed)?;
    let name = |p: &Path| {
        p.file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned())
    };
    let table = markdown(&probes, (&name(&args.a), &name(&args.b)), args.pool);
    create(&args.out)?;
    write(&args.out.join("linear.md"), &table)?;
    write(
        &args.out.join("linear.json"),
        &serde_json::to_string_pretty(&probes)?,
    )?;
    // x = 0 is the embeddings (the control), x = L + 1 the output of layer L.
    let points: Vec<(f64, f64)> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64, p.held_out_accuracy))
        .collect();
    let axes = ("layers applied (0: the embeddings)", "held-out accuracy");
    line(
        &args.out.join("linear.png"),
        "linear probe per layer",
        axes,
        &points,
    )?;
    println!("{} + {} prompts\n\n{table}", a.len(), b.len());
    Ok(())
}

fn run_patch(args: PatchArgs) -> Result<()> {
    let m = args.model.load()?;
    let target = m
        .tokenizer
        .token_to_id(&args.token)
        .with_context(|| format!("--token {}: not a token of this tokenizer", args.token))?;
    let (a, b) = (m.ids(&args.prompt_a)?, m.ids(&args.prompt_b)?);
    let report = patch(&m.model, (&a, &b), target, args.heads)?;
    create(&args.out)?;
    let table = report.markdown(&args.token);
    write(&args.out.join("patch.md"), &table)?;
    write(
        &args.out.join("patch.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    let layers: Vec<String> = (0..report.patched[0].len())
        .map(|l| l.to_string())
        .collect();
    let mut rows: Vec<String> = PATCHED_KINDS.iter().map(|k| k.name().to_string()).collect();
    let mut values: Vec<f32> = report
        .patched
        .iter()
        .flatten()
        .map(|p| p - report.probability_a)
        .collect();
    if let Some(heads) = &report.heads {
        for h in 0..heads[0].len() {
            rows.push(format!("head {h}"));
            values.extend(heads.iter().map(|layer| layer[h] - report.probability_a));
        }
    }
    let title = format!("change in P({}) when A takes B's value", args.token);
    let map = Heatmap {
        title: &title,
        values: &values,
        row_labels: &rows,
        col_labels: &layers,
        cell_text: None,
    };
    heatmap(&args.out.join("patch.png"), &map)?;
    println!("{table}");
    Ok(())
}
