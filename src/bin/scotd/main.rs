//! The scotd command line. Each subcommand lives in its own module; this file only
//! parses arguments and reports errors.

mod bench;
mod chat;
mod demo;
mod eval;
mod generate;
mod gpu_bench;
mod import_traces;
mod logits;
mod plot;
mod probe;
mod prompts;
mod sample;
mod serve;
mod solution_traces;
mod train;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "scotd",
    version,
    about = "Reasoning distillation for Qwen2/Llama models, from scratch in Rust"
)]
struct Cli {
    /// At exit, print each GPU kernel the command launched with its count and, on a
    /// CUDA device, its total device time (each launch timed between two events, which
    /// slows the run down a little); on the emulator, counts only.
    #[arg(long, global = true)]
    profile: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole method in minutes on a CPU, no download: a teacher learns generated
    /// arithmetic problems, and its verified traces train a student (see README).
    Demo(demo::Args),
    /// Generate continuations of prompts (arguments or a JSONL file) and write JSONL.
    Generate(generate::Args),
    /// Talk to a model interactively; replies stream as they are produced.
    Chat(chat::Args),
    /// Benchmarks: `bench train` times the GPU training step of a model shape.
    Bench(bench::Args),
    /// Time our CUDA kernels at Qwen2.5-0.5B shapes, beside PyTorch's numbers for the card.
    GpuBench(gpu_bench::Args),
    /// Print the last-position logits of prompts (top-k and log-sum-exp) as JSON.
    ///
    /// For comparing the engine with another implementation:
    /// tools/check_checkpoint_with_transformers.py compares it with transformers.
    Logits(logits::Args),
    /// Look inside a model: record sites, attention maps, logit lens, linear probes,
    /// activation patching.
    Probe(probe::Args),
    /// Draw the loss, eval loss and learning rate of a metrics JSONL file into a PNG.
    Plot(plot::Args),
    /// Sample a teacher's step-by-step traces of every question, verify each against the
    /// gold answer and append them to a trace JSONL; a rerun resumes where it stopped.
    Sample(sample::Args),
    /// Write a GSM8K file's own worked solutions as a trace JSONL (calculator notes
    /// removed, `#### N` as `\boxed{N}`, verified): the teacher when no model can be one.
    SolutionTraces(solution_traces::Args),
    /// Verify question/output rows written by another engine (vLLM, an API) into a trace
    /// JSONL, gold answers their own or joined from a GSM8K file by question text.
    ImportTraces(import_traces::Args),
    /// Evaluate a model on held-out questions (accuracy, think tags) and chat probes;
    /// or put earlier reports side by side (--compare).
    Eval(eval::Args),
    /// Fine-tune a student on mixed datasets (SFT); resumes from its last checkpoint.
    Train(train::Args),
    /// Serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions,
    /// /v1/completions, /v1/models), every client's requests decoded together.
    Serve(serve::Args),
    /// Check answers against gold: annotate output/gold pairs with a verdict (--pairs),
    /// or keep only the correct traces of a trace file (--filter).
    Verify(verify::Args),
}

fn main() {
    let cli = Cli::parse();
    if cli.profile {
        scotd::backend::cuda::profile::enable();
    }
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Chat(args) => chat::run(args),
        Command::GpuBench(args) => gpu_bench::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Sample(args) => sample::run(args),
        Command::SolutionTraces(args) => solution_traces::run(args),
        Command::ImportTraces(args) => import_traces::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Train(args) => train::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Verify(args) => verify::run(args),
    };
    if let Some(report) = scotd::backend::cuda::profile::report() {
        eprintln!("{report}");
    }
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
