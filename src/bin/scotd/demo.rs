//! `scotd demo`: the whole distillation method on generated data, on a CPU in minutes,
//! with no download: a teacher learns arithmetic word problems, its verified traces
//! train a student, and the student is evaluated before and after. Every artefact goes
//! into one run folder, printed at the end.

use std::path::PathBuf;

use anyhow::{Context, Result};
use scotd::demo::{self, DemoConfig};

#[derive(clap::Args)]
pub struct Args {
    /// The run folder; rerunning the same command there continues the run.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The small preset the tests run (about a minute; the models learn less).
    #[arg(long)]
    quick: bool,
    /// Problems the teacher trains on.
    #[arg(long)]
    teacher_problems: Option<usize>,
    /// Teacher training steps.
    #[arg(long)]
    teacher_steps: Option<u64>,
    /// Problems the teacher is sampled on (the student's questions).
    #[arg(long)]
    sample_problems: Option<usize>,
    /// Traces sampled per problem.
    #[arg(long)]
    samples_per_problem: Option<usize>,
    /// Distillation (student training) steps.
    #[arg(long)]
    student_steps: Option<u64>,
    /// Held-out problems the models are evaluated on.
    #[arg(long)]
    eval_problems: Option<usize>,
    /// Most operations in a problem (1-3).
    #[arg(long)]
    max_steps: Option<usize>,
    /// The largest number a problem states (at least 4).
    #[arg(long)]
    max_number: Option<u32>,
    /// No stage headers or progress bars.
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
        set(&mut config.sample_problems, self.sample_problems);
        set(&mut config.samples_per_problem, self.samples_per_problem);
        set(&mut config.student_training.steps, self.student_steps);
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
    if !args.quiet {
        eprintln!(
            "scotd demo → {} (seed {}; problems of at most {} operations on numbers up to {})",
            args.out.display(),
            config.seed,
            config.difficulty.max_steps,
            config.difficulty.max_number
        );
    }
    let summary = demo::run(&config, &args.out, !args.quiet)
        .with_context(|| format!("the demo in {}", args.out.display()))?;
    println!(
        "\n{}\n{}\n",
        demo::summary_table(&summary),
        demo::sampling_line(&summary)
    );
    println!("report: {}", summary.report.display());
    println!("run folder: {}", args.out.display());
    Ok(())
}
