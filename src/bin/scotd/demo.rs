//! `scotd demo`: the whole distillation method on generated data, on a CPU in minutes,
//! with no download. Every artefact goes into one run folder, printed at the end.

use std::path::PathBuf;

use anyhow::Result;
use scotd::demo::{self, DemoConfig, DemoSummary};

#[derive(clap::Args)]
pub struct Args {
    /// The run folder; rerunning the same command there continues the run.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The small preset the tests run (seconds, not minutes; the models learn less).
    #[arg(long)]
    quick: bool,
    /// Problems the teacher trains on.
    #[arg(long)]
    teacher_problems: Option<usize>,
    /// Teacher training steps.
    #[arg(long)]
    teacher_steps: Option<u64>,
    /// Held-out problems the models are evaluated on.
    #[arg(long)]
    eval_problems: Option<usize>,
    /// Most operations in a problem (1-3).
    #[arg(long)]
    max_steps: Option<usize>,
    /// The largest number a problem states (at least 4).
    #[arg(long)]
    max_number: Option<u32>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl Args {
    fn config(&self) -> DemoConfig {
        let mut config = if self.quick {
            DemoConfig::reduced()
        } else {
            DemoConfig::default()
        };
        config.seed = self.seed;
        set(&mut config.teacher_problems, self.teacher_problems);
        set(&mut config.teacher_training.steps, self.teacher_steps);
        set(&mut config.eval_problems, self.eval_problems);
        set(&mut config.difficulty.max_steps, self.max_steps);
        set(&mut config.difficulty.max_number, self.max_number);
        config
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

pub fn run(args: Args) -> Result<()> {
    let config = args.config();
    eprintln!(
        "scotd demo → {} (seed {}; problems of up to {} steps, numbers up to {})",
        args.out.display(),
        config.seed,
        config.difficulty.max_steps,
        config.difficulty.max_number
    );
    eprintln!(
        "[1/1] teacher: a {}-layer Qwen2 (hidden {}) trained on {} generated problems for {} steps",
        config.teacher.layers,
        config.teacher.hidden_size,
        config.teacher_problems,
        config.teacher_training.steps
    );
    let summary = demo::run(&config, &args.out, !args.quiet)?;
    print_table(&summary);
    eprintln!("run folder: {}", args.out.display());
    Ok(())
}

fn print_table(summary: &DemoSummary) {
    let t = &summary.teacher;
    println!("| model | parameters | train time | final loss | held-out accuracy |");
    println!("|---|--:|--:|--:|--:|");
    println!(
        "| teacher | {:.2} M | {:.0} s | {:.4} | {}/{} = {:.1} % |",
        t.parameters as f64 / 1e6,
        t.train_seconds,
        t.final_loss,
        t.accuracy.correct,
        t.accuracy.total,
        100.0 * t.accuracy.accuracy()
    );
}
