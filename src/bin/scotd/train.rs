//! `scotd train --config run.toml`: supervised fine-tuning. Every field of the config
//! is also a flag (`--lr 2e-5`, `--steps 500`, `--datasets '[{name="x", path="x.jsonl",
//! weight=1.0}]'`); flags override the file.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use scotd::train::{train, TrainConfig};

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
        TrainConfig::field_names()
            .into_iter()
            .fold(cmd, |cmd, field| {
                let flag = field.replace('_', "-");
                cmd.arg(
                    Arg::new(field.clone())
                        .long(flag)
                        .value_name("VALUE")
                        .help(format!(
                            "Overrides `{field}` of the config file (a TOML value)"
                        )),
                )
            })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Args {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let overrides = TrainConfig::field_names()
            .into_iter()
            .filter_map(|f| m.get_one::<String>(&f).map(|v| (f.clone(), v.clone())))
            .collect();
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
    eprintln!(
        "training {} for {} steps → {}",
        config.model.display(),
        config.steps,
        config.output_dir.display()
    );
    let summary = train(config, !args.quiet)?;
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
