//! `scotd bench train`: a training step of a model shape (config.json, random weights, no
//! download) on the GPU: tokens/s, MFU and peak memory. tools/bench_torch.py times the
//! same step in PyTorch + transformers on the same card.
//! `scotd bench generate`: greedy decoding through the library's decoder at a model shape:
//! prefill time, decode tokens/s, the memory roofline and plan. tools/bench_generate.py
//! times transformers' `generate` on the same job.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use scotd::bench::generate::{bench_generate, GenerateBenchOptions, GenerateBenchReport};
use scotd::model::ModelConfig;
use scotd::train::bench::{bench_train, BenchDtype, TrainBenchOptions, TrainBenchReport};
use scotd::Device;

use crate::prompts::parse_byte_size;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Time the full training step (forward, fused loss, backward, clipping, AdamW).
    Train(TrainArgs),
    /// Time greedy generation: prefill, decode tokens/s, fraction of the memory roofline.
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// A Hugging Face config.json (or a folder holding one, or a Hub id org/name[@revision]
    /// whose config.json alone is fetched): the model's shape.
    #[arg(long)]
    model: PathBuf,
    /// Rows per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 1024)]
    seq: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, value_enum, default_value_t = BenchDtype::Bf16)]
    dtype: BenchDtype,
    /// Recompute each layer's activations in the backward instead of keeping them.
    #[arg(long)]
    recompute: bool,
    /// Side of the square bf16 GEMM whose rate is the MFU's peak (as PyTorch's baseline).
    #[arg(long, default_value_t = 8192)]
    peak_gemm: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The GPU: cuda (device 0), cuda:N, or emulator (the CPU emulator: tiny shapes).
    #[arg(long, default_value = "cuda")]
    device: Device,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A Hugging Face config.json (or a folder holding one, or a Hub id org/name[@revision]
    /// whose config.json alone is fetched): the model's shape.
    #[arg(long)]
    model: PathBuf,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tokens of each (random) prompt.
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Tokens generated per sequence, exactly (no end-of-sequence id stops one).
    #[arg(long = "new", default_value_t = 256)]
    new_tokens: usize,
    /// New tokens of the untimed warm-up decode first (0: none).
    #[arg(long, default_value_t = 4)]
    warmup: usize,
    #[arg(long, value_enum, default_value_t = BenchDtype::Bf16)]
    precision: BenchDtype,
    /// The most memory the KV cache may take: bytes, or a size such as 512MiB, 8GiB, 2GB
    /// [default: what the batch needs].
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    kv_budget: Option<u64>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The GPU: cuda (device 0), cuda:N, or emulator (the CPU emulator: tiny shapes).
    #[arg(long, default_value = "cuda")]
    device: Device,
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Train(args) => train(args),
        What::Generate(args) => generate(args),
    }
}

/// The config.json at `model`, or in it when it is a folder or a Hub id.
fn read_config(model: &std::path::Path) -> Result<ModelConfig> {
    let model = scotd::hub::resolve_model(model, scotd::hub::Needs::Config)?;
    let path = if model.is_dir() {
        model.join("config.json")
    } else {
        model
    };
    Ok(ModelConfig::from_file(&path)?)
}

fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> Result<()> {
    scotd::io::write_atomic(path, &serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn train(args: TrainArgs) -> Result<()> {
    let config = read_config(&args.model)?;
    let options = TrainBenchOptions {
        batch: args.batch,
        seq: args.seq,
        warmup: args.warmup,
        steps: args.steps,
        dtype: args.dtype,
        recompute: args.recompute,
        peak_gemm_size: args.peak_gemm,
    };
    let bar = ProgressBar::new((args.warmup + args.steps) as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps (warm-up first) [{elapsed}]")
            .expect("a valid template"),
    );
    let report = bench_train(args.device, &config, &options, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    println!("{}", summary(&report));
    if let Some(json) = &args.json {
        write_json(json, &report)?;
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<()> {
    let config = read_config(&args.model)?;
    let options = GenerateBenchOptions {
        batch: args.batch,
        prompt_len: args.prompt_len,
        new_tokens: args.new_tokens,
        warmup_tokens: args.warmup,
        precision: args.precision,
        kv_budget: args.kv_budget,
    };
    let bar = ProgressBar::new(args.new_tokens as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps (after the warm-up) [{elapsed}]")
            .expect("a valid template"),
    );
    let report = bench_generate(args.device, &config, &options, |step| {
        bar.set_position(step as u64)
    })?;
    bar.finish_and_clear();
    println!("{}", generate_summary(&report));
    if let Some(json) = &args.json {
        write_json(json, &report)?;
    }
    Ok(())
}

/// Bytes in the largest decimal unit that leaves a number of at least 1.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

fn generate_summary(r: &GenerateBenchReport) -> String {
    let median = r
        .decode_step_ms_median
        .map_or("-".to_string(), |m| format!("{m:.2} ms"));
    format!(
        "{}: {:.1}M parameters, {}, batch {}, prompt {}, {} new tokens each\n\
         prefill {:.1} ms ({:.0} tokens/s); decode {:.2} ms a step (median {median}), \
         {:.1} tokens/s over {} tokens\n{}\n{}",
        r.device,
        r.params as f64 / 1e6,
        format!("{:?}", r.precision).to_lowercase(),
        r.batch,
        r.prompt_len,
        r.new_tokens,
        r.prefill_ms,
        r.prefill_tokens_per_s,
        r.decode_ms_per_step,
        r.decode_tokens_per_s,
        r.decode_tokens,
        roofline_line(r),
        memory_line(r),
    )
}

fn roofline_line(r: &GenerateBenchReport) -> String {
    let roof = &r.roofline;
    let limit = match (roof.copy_gb_per_s, roof.step_ms_at_limit, roof.fraction) {
        (Some(bw), Some(ms), Some(fraction)) => format!(
            "{ms:.2} ms a step at {bw:.0} GB/s (device copy): {:.1}% of the roofline",
            100.0 * fraction
        ),
        _ => "no bandwidth limit on the emulator".to_string(),
    };
    format!(
        "roofline: {} a step (weights {} + KV {} at mean context {}), {limit}",
        size(roof.bytes_per_step),
        size(roof.weight_bytes_per_step),
        size(roof.kv_bytes_per_step),
        roof.mean_context,
    )
}

fn memory_line(r: &GenerateBenchReport) -> String {
    let m = &r.memory;
    let mut line = format!(
        "memory: weights {}, KV {} reserved ({} a token)",
        size(m.weight_bytes),
        size(m.kv_bytes_reserved),
        size(m.kv_bytes_per_token)
    );
    if let (Some(free), Some(total)) = (m.device_free_bytes, m.device_total_bytes) {
        line += &format!(", device {} free of {}", size(free), size(total));
    }
    if let Some(peak) = m.peak_bytes {
        line += &format!(", peak {}", size(peak));
    }
    line
}

fn summary(r: &TrainBenchReport) -> String {
    let memory = r
        .peak_memory_gib
        .map_or("n/a (emulator)".to_string(), |g| format!("{g:.2} GiB"));
    format!(
        "{device}: {params:.1}M parameters, batch {b} x {t}, {dtype:?}{recompute}\n\
         step {ms:.1} ms (median of {n}), {tps:.0} tokens/s, {tf:.1} TFLOP/s, \
         MFU {mfu:.1}% of {peak:.1} TFLOP/s (bf16 GEMM {gemm}^3), peak memory {memory}\n\
         losses: {first:.4} ... {last:.4}",
        device = r.device,
        params = r.params as f64 / 1e6,
        b = r.batch,
        t = r.seq,
        dtype = r.dtype,
        recompute = if r.recompute { ", recomputing" } else { "" },
        ms = r.step_ms_median,
        n = r.step_ms_all.len(),
        tps = r.tokens_per_s,
        tf = r.tflops,
        mfu = 100.0 * r.mfu,
        peak = r.peak_gemm_tflops,
        gemm = r.peak_gemm_size,
        first = r.losses[0],
        last = r.losses[r.losses.len() - 1],
    )
}
