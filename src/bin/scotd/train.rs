//! `scotd train --config run.toml`: supervised fine-tuning. Every field of the config
//! is also a flag (`--lr 2e-5`, `--steps 500`, `--datasets '[{name="x", path="x.jsonl",
//! weight=1.0}]'`, or `--dataset name=x,path=x.jsonl` repeated), and so is each
//! transformers / TRL name of one (`--learning-rate`, also spelt `--learning_rate`);
//! flags override the file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use scotd::train::{field_help, hf_names, train_until_stopped, TrainConfig};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

pub struct Args {
    config: Option<PathBuf>,
    overrides: Vec<(String, String)>,
    quiet: bool,
}

impl clap::Args for Args {
    fn augment_args(cmd: Command) -> Command {
        let cmd = cmd
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_name("RUN.toml")
                    .help("The run's TOML configuration"),
            )
            .arg(
                Arg::new("quiet")
                    .long("quiet")
                    .action(ArgAction::SetTrue)
                    .help("No progress bar"),
            );
        let cmd = cmd.arg(
            Arg::new("dataset")
                .long("dataset")
                .value_name("name=N,path=P[,weight=W][,format=F]")
                .action(ArgAction::Append)
                .help(
                    "One dataset of the mix (repeat for more; together they replace the file's \
                     datasets): a path alone, or key=value pairs; name defaults to the file's \
                     stem, weight to 1, format to detected",
                ),
        );
        let ours = TrainConfig::field_names()
            .into_iter()
            .map(|field| (field.clone(), field_help::flag_help(&field)));
        let theirs = hf_names::HF_NAMES.iter().map(|(hf, field)| {
            let help = format!(
                "transformers / TRL's name for --{}",
                field.replace('_', "-")
            );
            (hf.to_string(), help)
        });
        ours.chain(theirs).fold(cmd, |cmd, (name, help)| {
            let flag = name.replace('_', "-");
            let arg = Arg::new(name.clone())
                .long(flag.clone())
                .value_name("VALUE")
                // `--lr -1e-5` is a value (that validation then refuses with its
                // range), not a flag; allow_negative_numbers would miss `-1e-5`.
                .allow_hyphen_values(true)
                .help(help);
            // Also as transformers' HfArgumentParser spells them: `--learning_rate`.
            cmd.arg(if flag == name { arg } else { arg.alias(name) })
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Args {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let names = TrainConfig::field_names()
            .into_iter()
            .chain(hf_names::HF_NAMES.iter().map(|(hf, _)| hf.to_string()));
        let mut overrides: Vec<(String, String)> = names
            .filter_map(|f| m.get_one::<String>(&f).map(|v| (f.clone(), v.clone())))
            .collect();
        let datasets = m.get_many::<String>("dataset").into_iter().flatten();
        overrides.extend(datasets.map(|d| ("dataset".to_string(), d.clone())));
        Ok(Args {
            config: m.get_one::<String>("config").map(PathBuf::from),
            overrides,
            quiet: m.get_flag("quiet"),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let config = TrainConfig::load(args.config.as_deref(), &args.overrides)?;
    let signals = TerminationSignals::install()?;
    let length = match (config.steps, config.epochs) {
        (Some(steps), _) => format!("{steps} steps"),
        (None, Some(epochs)) => format!("{epochs} epochs"),
        (None, None) => format!("{} steps", scotd::train::DEFAULT_STEPS),
    };
    eprintln!(
        "training {} for {length} → {}",
        config.model.display(),
        config.output_dir.display()
    );
    let summary = train_until_stopped(config, !args.quiet, &signals.received)?;
    if let Some(step) = summary.interrupted_at {
        eprintln!(
            "interrupted at step {step}: checkpoint written to {}; rerun the same command to resume",
            summary.final_dir.display()
        );
        std::process::exit(signals.exit_status());
    }
    match summary.resumed_from {
        Some(step) if step >= summary.steps => {
            eprintln!("already trained to step {step}: raise --steps to continue");
            return Ok(());
        }
        Some(step) => eprintln!("resumed from step {step}"),
        None => {}
    }
    eprintln!(
        "done: {} steps, final loss {:.4}\n  model:   {}\n  metrics: {}",
        summary.steps,
        summary.final_loss,
        summary.final_dir.display(),
        summary.metrics.display()
    );
    Ok(())
}

/// SIGINT and SIGTERM (which cluster schedulers send before they kill a job): the first
/// sets `received`, so the loop checkpoints after the step in progress; a second exits
/// at once, for a user who cannot wait for that step.
struct TerminationSignals {
    received: Arc<AtomicBool>,
    /// The number of the last one received.
    signal: Arc<AtomicUsize>,
}

impl TerminationSignals {
    fn install() -> Result<Self> {
        let signals = TerminationSignals {
            received: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
        };
        for signal in [SIGINT, SIGTERM] {
            // Actions run in the order registered: the exit sees the flag as the signal
            // before left it, and the number is stored before the loop can see the flag.
            flag::register_conditional_shutdown(
                signal,
                128 + signal,
                Arc::clone(&signals.received),
            )?;
            flag::register_usize(signal, Arc::clone(&signals.signal), signal as usize)?;
            flag::register(signal, Arc::clone(&signals.received))?;
        }
        Ok(signals)
    }

    /// The shell's status for a process the signal ended: 130 for SIGINT, 143 for SIGTERM.
    fn exit_status(&self) -> i32 {
        128 + self.signal.load(Ordering::SeqCst) as i32
    }
}
