//! The SFT loop: mixed, tokenized, packed micro-batches → loss (the mean over every
//! supervised token of the whole step) → accumulated gradients → clipping → AdamW, with
//! metrics, evaluation, checkpoints and exact resume.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::checkpoints::{self, TrainerState};
use super::config::{GpuPrecision, ResumeFrom, SaveDtype, TrainConfig};
use super::epochs;
use super::metrics::{EvalMetrics, MetricsLog, StepMetrics};
use super::step::{train_step, MicroBatch};
use crate::autograd::no_grad;
use crate::data::{
    self, BatchBuilder, BatchStats, DatasetSource, Example, MixedExamples, Mixer, ReasoningFormat,
    Row,
};
use crate::model::{Batch, Model, ModelConfig, ParamStore};
use crate::ops::Reduction;
use crate::optim::{AdamW, AdamWConfig, Schedule};
use crate::rng::Rng;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{DType, Device, Error, Result};

/// What a finished (or interrupted) run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    /// The step a stop request ended the run at, its checkpoint written.
    pub interrupted_at: Option<u64>,
    pub final_loss: f32,
    /// The checkpoint of the last step run: `steps`, or `interrupted_at`.
    pub final_dir: PathBuf,
    pub metrics: PathBuf,
}

struct Run<'a> {
    config: TrainConfig,
    /// The student's parameters, gradients and compute copy, on the run's device.
    store: ParamStore,
    optimizer: AdamW,
    tokenizer: &'a Tokenizer,
    examples: MixedExamples<'a>,
    /// Held-out examples and the index of the dataset each came from.
    eval_examples: Vec<(usize, Example)>,
    schedule: Schedule,
    /// `steps`, or counted from `epochs` ([`TrainConfig::total_steps`]).
    total_steps: u64,
}

/// Runs (or resumes) the training described by `config`.
pub fn train(config: TrainConfig, show_progress: bool) -> Result<TrainSummary> {
    train_until_stopped(config, show_progress, &AtomicBool::new(false))
}

/// [`train`], ending early once `stop` is set (by a signal handler, say): the step in
/// progress is finished and checkpointed, so a rerun resumes right after it.
pub fn train_until_stopped(
    mut config: TrainConfig,
    show_progress: bool,
    stop: &AtomicBool,
) -> Result<TrainSummary> {
    // A Hub id becomes its snapshot folder, so a resume checks it is the same commit.
    config.model = crate::hub::resolve_model(&config.model, crate::hub::Needs::Model)?;
    check_settings(&config)?;
    // Held to the end: a second run on this output_dir is refused before it reads a thing.
    let _one_run_at_a_time = crate::io::lock_folder(&config.output_dir)?;
    for leftover in checkpoints::remove_leftovers(&config.output_dir)? {
        eprintln!(
            "removed {}, left by an interrupted save",
            leftover.display()
        );
    }
    let tokenizer = Tokenizer::from_dir(&config.model)?;
    let template = tokenizer.resolve_chat_template(config.template.as_deref())?;
    let mut run = Run::prepare(config, &tokenizer, &template, show_progress)?;
    let resumed = run.resume()?;
    let start = resumed.map_or(0, |s| s.step);
    let mut optimizer_steps = resumed.map_or(0, |s| s.optimizer_steps);
    let out = run.config.output_dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let mut log = MetricsLog::open(&out.join("metrics.jsonl"), resumed.map(|s| s.step))?;
    let total_steps = run.total_steps;
    let progress = Progress::new(show_progress, start, run.config.log_every, total_steps);
    if start == 0 && run.config.eval_every > 0 && !run.eval_examples.is_empty() {
        // The held-out loss before any step: where the curves start from.
        run.log_evaluation(&mut log, 0)?;
    }
    let mut last_loss = log.last_loss.unwrap_or(f32::NAN);
    let mut interrupted_at = None;
    for step in start..total_steps {
        let m = run.step(step)?;
        let done = step + 1;
        if !m.skipped {
            optimizer_steps += 1;
        }
        last_loss = m.loss;
        log.write(&m)?;
        progress.show(done, &m);
        let evaluating = run.config.eval_every > 0
            && done % run.config.eval_every == 0
            && !run.eval_examples.is_empty();
        if evaluating {
            run.log_evaluation(&mut log, done)?;
        }
        // Checked after the step's evaluation, so the metrics of a run stopped and
        // resumed are those of one that was not.
        let stopping = stop.load(Ordering::SeqCst) && done < total_steps;
        let saving =
            done == total_steps || (run.config.save_every > 0 && done % run.config.save_every == 0);
        if saving || stopping {
            run.save(done, optimizer_steps)?;
        }
        if stopping {
            interrupted_at = Some(done);
            break;
        }
    }
    progress.finish();
    let final_dir = checkpoints::checkpoint_dir(&out, interrupted_at.unwrap_or(total_steps));
    Ok(TrainSummary {
        steps: total_steps,
        resumed_from: resumed.map(|s| s.step),
        interrupted_at,
        final_loss: last_loss,
        final_dir,
        metrics: out.join("metrics.jsonl"),
    })
}

/// Every setting, alone and against the student's config.json, before the tokenizer,
/// the data or the model is read (and before anything is written).
fn check_settings(config: &TrainConfig) -> Result<()> {
    let label = Path::new("(train config)");
    config.validate(label)?;
    let model = ModelConfig::from_file(&config.model.join("config.json"))?;
    config.validate_for_model(&model, label)
}

/// How a run shows its steps: a progress bar on a terminal, else (a log file, a CI job;
/// indicatif draws nothing there) a plain line every `log_every` steps; nothing when not
/// shown.
struct Progress {
    bar: ProgressBar,
    log_every: u64,
    steps: u64,
    started: Instant,
}

impl Progress {
    fn new(show: bool, start: u64, log_every: u64, steps: u64) -> Self {
        let on_terminal = std::io::stderr().is_terminal();
        let log_every = if show && !on_terminal { log_every } else { 0 };
        Progress {
            bar: progress_bar(show && on_terminal, start, steps),
            log_every,
            steps,
            started: Instant::now(),
        }
    }

    fn show(&self, done: u64, m: &StepMetrics) {
        self.bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s",
            m.loss, m.lr, m.tokens_per_s
        ));
        self.bar.inc(1);
        if self.log_every > 0 && (done.is_multiple_of(self.log_every) || done == self.steps) {
            eprintln!("{}", log_line(done, self.steps, m, self.started.elapsed()));
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn progress_bar(show: bool, start: u64, steps: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    bar.set_position(start);
    bar
}

/// The progress bar's content as one line, for a log: `step 120/1000 loss 1.2345 lr
/// 2.00e-5 131 tok/s elapsed 12m03s`.
fn log_line(done: u64, steps: u64, m: &StepMetrics, elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!(
        "step {done}/{steps} loss {:.4} lr {:.2e} {:.0} tok/s elapsed {}m{:02}s",
        m.loss,
        m.lr,
        m.tokens_per_s,
        secs / 60,
        secs % 60
    )
}

/// A resumed run's position.
#[derive(Clone, Copy)]
struct Resumed {
    step: u64,
    optimizer_steps: u64,
}

impl<'a> Run<'a> {
    fn prepare(
        config: TrainConfig,
        tokenizer: &'a Tokenizer,
        template: &'a ChatTemplate,
        verbose: bool,
    ) -> Result<Run<'a>> {
        let model = Model::load(&config.model)?;
        let (sources, eval_rows) = read_datasets(&config, verbose)?;
        let mixer = Mixer::new(sources, config.seed)?;
        let eval_examples = eval_rows
            .iter()
            .map(|(source, row)| {
                Ok((
                    *source,
                    data::tokenize_row(tokenizer, template, &row.messages)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let dtype = match (config.device, config.gpu_precision) {
            (Device::Cpu, _) | (_, GpuPrecision::F32) => DType::F32,
            (_, GpuPrecision::Bf16) => DType::BF16,
        };
        let store = ParamStore::new(&model, config.device, dtype)?;
        drop(model);
        let adamw = AdamWConfig {
            lr: config.lr,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
        };
        let optimizer = AdamW::new(&store.flat, adamw)?;
        let mut examples = MixedExamples::new(mixer, tokenizer, template);
        let total_steps = config.total_steps(|| {
            let builder = batch_builder(&config, tokenizer);
            let per_epoch = epochs::steps_per_epoch(&mut examples, &builder, config.grad_accum)?;
            if verbose {
                eprintln!("one epoch: {per_epoch} steps");
            }
            Ok(per_epoch)
        })?;
        let schedule = Schedule {
            peak_lr: config.lr,
            warmup_steps: config.warmup(total_steps),
            total_steps,
            decay: config.decay,
            min_lr_ratio: config.min_lr_ratio,
        };
        Ok(Run {
            config,
            store,
            optimizer,
            tokenizer,
            examples,
            eval_examples,
            schedule,
            total_steps,
        })
    }

    /// Continues from the checkpoint `resume_from_checkpoint` names: by default the newest
    /// complete one in the output folder, if any.
    fn resume(&mut self) -> Result<Option<Resumed>> {
        let out = &self.config.output_dir;
        let newest = checkpoints::completed(out)?.pop();
        let Some(dir) =
            checkpoint_to_resume(self.config.resume_from_checkpoint.as_ref(), out, &newest)?
        else {
            return Ok(None);
        };
        let state = checkpoints::load(&dir, &self.store, &mut self.optimizer)?;
        if let Some((step, newer)) = newest.filter(|(step, _)| *step > state.step) {
            return Err(Error::format(
                &dir,
                "resume_from_checkpoint",
                format!(
                    "{} (step {step}) is newer: a resumed run would overwrite or prune it; use a new output_dir, or remove the newer checkpoints",
                    newer.display()
                ),
            ));
        }
        let config = self.config_json();
        let saved = without_free_settings(state.config.clone());
        if saved != config {
            let differences = crate::io::differing_settings(&saved, &config);
            return Err(Error::format(
                dir.join(checkpoints::STATE_FILE),
                "config",
                format!(
                    "the checkpoint was written by a run with other settings: {}; use a new output_dir or the same config",
                    differences.join(", ")
                ),
            ));
        }
        self.examples.restore(&state.mixer)?;
        Ok(Some(Resumed {
            step: state.step,
            optimizer_steps: state.optimizer_steps,
        }))
    }

    /// The settings that must not change across a resume.
    fn config_json(&self) -> serde_json::Value {
        without_free_settings(serde_json::to_value(&self.config).expect("config serialises"))
    }

    /// The step's micro-batches, drawn before any compute so the loss can be normalised
    /// by the supervised tokens of the whole step.
    fn draw_micro_batches(&mut self) -> Result<(Vec<MicroBatch>, BatchStats)> {
        let c = &self.config;
        let builder = batch_builder(c, self.tokenizer);
        let mut total = BatchStats::default();
        let mut batches = Vec::with_capacity(c.grad_accum);
        for _ in 0..c.grad_accum {
            let (batch, targets, stats) = builder.build(&mut self.examples)?;
            total += stats;
            batches.push((batch, targets));
        }
        Ok((batches, total))
    }

    /// One optimizer step on the run's device ([`train_step`]).
    fn step(&mut self, step: u64) -> Result<StepMetrics> {
        let started = Instant::now();
        let lr = self.schedule.lr(step);
        let (batches, stats) = self.draw_micro_batches()?;
        let c = &self.config;
        let result = train_step(
            (&self.store, &mut self.optimizer),
            &batches,
            lr,
            c.max_grad_norm,
            c.recompute,
        )?;
        let tokens = batches.iter().map(|(b, _)| b.num_tokens()).sum();
        let drawn = self.examples.state();
        Ok(StepMetrics {
            step: step + 1,
            loss: result.loss,
            lr,
            grad_norm: result.outcome.grad_norm,
            epoch: drawn.draws() as f64 / drawn.rows().max(1) as f64,
            tokens,
            supervised_tokens: stats.supervised_tokens,
            tokens_per_s: tokens as f32 / started.elapsed().as_secs_f32(),
            truncated: stats.truncated,
            dropped: stats.dropped,
            skipped: result.outcome.skipped,
        })
    }

    /// Logs the held-out loss, unless no held-out token is left within `seq_len` (a loss of
    /// nothing would read as a perfect 0).
    fn log_evaluation(&self, log: &mut MetricsLog, step: u64) -> Result<()> {
        let metrics = self.evaluate(step)?;
        if metrics.eval_tokens > 0 {
            log.write(&metrics)?;
        }
        Ok(())
    }

    /// Mean loss over the supervised tokens of the held-out examples, on the run's device:
    /// of all of them, and of each dataset's.
    fn evaluate(&self, step: u64) -> Result<EvalMetrics> {
        let _no_tape = no_grad();
        let datasets = self.config.datasets.len();
        let (mut sums, mut counts) = (vec![0.0f64; datasets], vec![0usize; datasets]);
        for (source, ex) in &self.eval_examples {
            let n = ex.input_ids.len().min(self.config.seq_len);
            let batch = Batch::new(ex.input_ids[..n].to_vec(), 1, n)?;
            let supervised = ex.targets[..n]
                .iter()
                .filter(|&&t| t != crate::ops::IGNORE_INDEX)
                .count();
            if supervised == 0 {
                continue;
            }
            sums[*source] += self
                .store
                .model
                .loss(&batch, &ex.targets[..n], Reduction::Sum)?
                .to_scalar()? as f64;
            counts[*source] += supervised;
        }
        let mean = |sum: f64, count: usize| (sum / count.max(1) as f64) as f32;
        let by_dataset = self
            .config
            .datasets
            .iter()
            .zip(sums.iter().zip(&counts))
            .filter(|(_, (_, &count))| count > 0)
            .map(|(d, (&sum, &count))| (d.name.clone(), mean(sum, count)))
            .collect();
        let count = counts.iter().sum();
        Ok(EvalMetrics {
            step,
            eval_loss: mean(sums.iter().sum(), count),
            eval_tokens: count,
            eval_loss_by_dataset: by_dataset,
        })
    }

    fn save(&self, step: u64, optimizer_steps: u64) -> Result<()> {
        let state = TrainerState {
            step,
            optimizer_steps,
            mixer: self.examples.state(),
            config: self.config_json(),
        };
        let dtype = match self.config.save_dtype {
            SaveDtype::F32 => DType::F32,
            SaveDtype::Bf16 => DType::BF16,
        };
        checkpoints::save(
            &self.config.output_dir,
            (&self.store, &self.optimizer),
            &state,
            &self.config.model,
            dtype,
            self.config.keep_last,
        )?;
        Ok(())
    }
}

/// Everything but what may change across a resume: `steps` and `epochs` (raised to train
/// longer), where and how precisely the steps run, where the run started from and where it
/// writes (a run may continue in a new folder from another's checkpoint).
fn without_free_settings(mut config: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = config.as_object_mut() {
        for free in [
            "steps",
            "epochs",
            "device",
            "gpu_precision",
            "recompute",
            "resume_from_checkpoint",
            "output_dir",
        ] {
            fields.remove(free);
        }
    }
    config
}

/// The checkpoint a run starts from (HF's `resume_from_checkpoint`), given the newest
/// complete one in `output_dir`; an error for `true` without one and `false` with one.
fn checkpoint_to_resume(
    resume: Option<&ResumeFrom>,
    output_dir: &Path,
    newest: &Option<(u64, PathBuf)>,
) -> Result<Option<PathBuf>> {
    let newest_dir = newest.as_ref().map(|(_, dir)| dir.clone());
    match resume {
        None => Ok(newest_dir),
        Some(ResumeFrom::Newest(true)) => newest_dir.map(Some).ok_or_else(|| {
            Error::format(
                output_dir,
                "resume_from_checkpoint = true",
                "no complete checkpoint-N folder here to resume from",
            )
        }),
        Some(ResumeFrom::Newest(false)) => match newest_dir {
            Some(dir) => Err(Error::format(
                output_dir,
                "resume_from_checkpoint = false",
                format!(
                    "it holds {}: use a new output_dir, or remove its checkpoints to start afresh",
                    dir.display()
                ),
            )),
            None => Ok(None),
        },
        Some(ResumeFrom::Checkpoint(dir)) if dir.join(checkpoints::STATE_FILE).is_file() => {
            Ok(Some(dir.clone()))
        }
        Some(ResumeFrom::Checkpoint(dir)) => Err(Error::format(
            dir,
            "resume_from_checkpoint",
            format!(
                "not a complete checkpoint: no {} (a scotd checkpoint-N folder is needed)",
                checkpoints::STATE_FILE
            ),
        )),
    }
}

fn batch_builder(config: &TrainConfig, tokenizer: &Tokenizer) -> BatchBuilder {
    BatchBuilder::new(
        config.micro_batch_rows,
        config.seq_len,
        config.packing,
        config.overlong,
        pad_id(tokenizer),
    )
}

fn pad_id(tokenizer: &Tokenizer) -> u32 {
    tokenizer
        .pad_id()
        .or_else(|| tokenizer.eos_ids().first().copied())
        .unwrap_or(0)
}

/// A held-out row and the index of the dataset it came from.
type HeldOutRow = (usize, Row);

/// Every dataset's rows, each split into training rows and `eval_rows` held-out rows
/// (chosen by a seeded shuffle, so the split is the same on every run); with `verbose`,
/// what each file held (and the lines skipped) on stderr.
fn read_datasets(
    config: &TrainConfig,
    verbose: bool,
) -> Result<(Vec<DatasetSource>, Vec<HeldOutRow>)> {
    let reasoning = ReasoningFormat {
        template: config.reasoning_format.clone(),
    };
    let mut sources = Vec::new();
    let mut eval = Vec::new();
    for (i, d) in config.datasets.iter().enumerate() {
        let format = match d.format {
            Some(f) => f,
            None => data::detect(&d.path)?,
        };
        let (rows, report) = data::read_rows(
            &d.path,
            format,
            &reasoning,
            config.system_prompt.as_deref(),
            config.bad_lines,
        )?;
        if verbose {
            eprintln!("{}: {report}", d.name);
            for skipped in &report.skipped {
                eprintln!("  skipped {}", skipped.error);
            }
        }
        let (train_rows, held_out) =
            split_eval(rows, config.eval_rows, config.seed ^ i as u64, &d.path)?;
        eval.extend(held_out.into_iter().map(|row| (i, row)));
        sources.push(DatasetSource {
            name: d.name.clone(),
            rows: train_rows,
            weight: d.weight,
        });
    }
    Ok((sources, eval))
}

fn split_eval(
    mut rows: Vec<Row>,
    eval_rows: usize,
    seed: u64,
    path: &Path,
) -> Result<(Vec<Row>, Vec<Row>)> {
    // Never hold out more than a tenth of a dataset.
    let n_eval = eval_rows.min(rows.len() / 10);
    let mut rng = Rng::new(seed);
    for i in (1..rows.len()).rev() {
        rows.swap(i, rng.below(i + 1));
    }
    let train = rows.split_off(n_eval);
    if train.is_empty() {
        return Err(Error::format(path, "(rows)", "no rows left to train on"));
    }
    Ok((train, rows))
}
