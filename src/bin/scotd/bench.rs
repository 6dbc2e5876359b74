//! `scotd bench train`: a training step of a model shape (config.json, random weights, no
//! download) on the GPU: tokens/s, MFU and peak memory. tools/bench_torch.py times the
//! same step in PyTorch + transformers on the same card.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use scotd::model::ModelConfig;
use scotd::train::bench::{bench_train, BenchDtype, TrainBenchOptions, TrainBenchReport};
use scotd::Device;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Time the full training step (forward, fused loss, backward, clipping, AdamW).
    Train(TrainArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// A Hugging Face config.json (or a folder holding one): the model's shape.
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

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Train(args) => train(args),
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let path = if args.model.is_dir() {
        args.model.join("config.json")
    } else {
        args.model.clone()
    };
    let config = ModelConfig::from_file(&path)?;
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
        scotd::io::write_atomic(json, &serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", json.display()))?;
    }
    Ok(())
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
