//! The SFT loop: mixed, tokenized, packed micro-batches → loss (the mean over every
//! supervised token of the whole step) → accumulated gradients → clipping → AdamW, with
//! metrics, evaluation, checkpoints and exact resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::checkpoints::{self, TrainerState};
use super::config::{GpuPrecision, SaveDtype, TrainConfig, TrainDevice};
use super::gpu::GpuTrainer;
use super::metrics::{EvalMetrics, MetricsLog, StepMetrics};
use crate::autograd::{no_grad, Gradients};
use crate::backend::cuda::Gpu;
use crate::data::{
    self, BatchBuilder, BatchStats, DatasetSource, Example, MixedExamples, Mixer, ReasoningFormat,
    Row,
};
use crate::model::gpu::DeviceBatch;
use crate::model::{Batch, Model};
use crate::ops::Reduction;
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, Schedule};
use crate::rng::Rng;
use crate::tokenizer::{ChatTemplate, Tokenizer};

use crate::{DType, Error, Result};
use half::bf16;

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub final_loss: f32,
    pub final_dir: PathBuf,
    pub metrics: PathBuf,
}

struct Run<'a> {
    config: TrainConfig,
    model: Model,
    params: Vec<(String, crate::Tensor)>,
    tokenizer: &'a Tokenizer,
    examples: MixedExamples<'a>,
    eval_examples: Vec<Example>,
    optimizer: AdamW,
    schedule: Schedule,
    /// The GPU step's state when the run trains on a GPU; `model` and `optimizer` then
    /// mirror it on the host for evaluation and checkpoints.
    gpu: Option<GpuRun>,
}

struct GpuRun {
    gpu: Gpu,
    trainer: GpuTrainer,
    /// Whether the device has steps the host mirror has not seen yet.
    host_stale: bool,
}

/// Runs (or resumes) the training described by `config`.
pub fn train(config: TrainConfig, show_progress: bool) -> Result<TrainSummary> {
    let tokenizer = Tokenizer::from_dir(&config.model)?;
    let template = tokenizer.resolve_chat_template(config.template.as_deref())?;
    let mut run = Run::prepare(config, &tokenizer, &template, show_progress)?;
    let resumed = run.resume()?;
    let start = resumed.map_or(0, |s| s.step);
    let mut optimizer_steps = resumed.map_or(0, |s| s.optimizer_steps);
    let out = run.config.output_dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let mut log = MetricsLog::open(&out.join("metrics.jsonl"), start)?;
    let bar = progress_bar(show_progress, start, run.config.steps);
    let mut last_loss = log.last_loss.unwrap_or(f32::NAN);
    for step in start..run.config.steps {
        let m = run.step(step)?;
        let done = step + 1;
        let evaluating = run.config.eval_every > 0
            && done % run.config.eval_every == 0
            && !run.eval_examples.is_empty();
        let saving = done == run.config.steps
            || (run.config.save_every > 0 && done % run.config.save_every == 0);
        if evaluating || saving {
            run.sync_host()?;
        }
        if !m.skipped {
            optimizer_steps += 1;
        }
        last_loss = m.loss;
        log.write(&m)?;
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s",
            m.loss, m.lr, m.tokens_per_s
        ));
        bar.inc(1);
        if evaluating {
            log.write(&run.evaluate(done)?)?;
        }
        if saving {
            run.save(done, optimizer_steps)?;
        }
    }
    bar.finish_and_clear();
    let steps = run.config.steps;
    let final_dir = checkpoints::checkpoint_dir(&out, steps);
    Ok(TrainSummary {
        steps,
        resumed_from: resumed.map(|s| s.step),
        final_loss: last_loss,
        final_dir,
        metrics: out.join("metrics.jsonl"),
    })
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

/// A micro-batch and its targets (one per token, -100 where unsupervised).
type MicroBatch = (Batch, Vec<i64>);

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
            .map(|row| data::tokenize_row(tokenizer, template, &row.messages))
            .collect::<Result<Vec<_>>>()?;
        let params = model.parameters();
        let adamw = AdamWConfig {
            lr: config.lr,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
        };
        let gpu = GpuRun::open(config.device, &model, &adamw)?;
        let optimizer = AdamW::new(&params, adamw, crate::optim::default_decay);
        let schedule = Schedule {
            peak_lr: config.lr,
            warmup_steps: config.warmup_steps,
            total_steps: config.steps,
            decay: config.decay,
            min_lr_ratio: config.min_lr_ratio,
        };
        Ok(Run {
            config,
            model,
            params,
            tokenizer,
            examples: MixedExamples::new(mixer, tokenizer, template),
            eval_examples,
            optimizer,
            schedule,
            gpu,
        })
    }

    /// Continues from the newest complete checkpoint in the output folder, if any.
    fn resume(&mut self) -> Result<Option<Resumed>> {
        let Some((_, dir)) = checkpoints::completed(&self.config.output_dir)?.pop() else {
            return Ok(None);
        };
        let state = checkpoints::load(&dir, &self.model, &mut self.optimizer)?;
        if let Some(g) = &mut self.gpu {
            g.trainer.load(&g.gpu, &self.model, &self.optimizer)?;
        }
        if state.config != self.config_json() {
            return Err(Error::format(
                dir.join(checkpoints::STATE_FILE),
                "config",
                "the checkpoint was written by a run with other settings; use a new output_dir or the same config",
            ));
        }
        self.examples.restore(&state.mixer)?;
        Ok(Some(Resumed {
            step: state.step,
            optimizer_steps: state.optimizer_steps,
        }))
    }

    /// The settings that must not change across a resume: everything but `steps`, which
    /// a user may raise to train longer, and where and how precisely the steps run.
    fn config_json(&self) -> serde_json::Value {
        let mut c = serde_json::to_value(&self.config).expect("config serialises");
        let fields = c.as_object_mut().expect("an object");
        for free in ["steps", "device", "gpu_precision", "recompute"] {
            fields.remove(free);
        }
        c
    }

    /// The step's micro-batches, drawn before any compute so the loss can be normalised
    /// by the supervised tokens of the whole step.
    fn draw_micro_batches(&mut self) -> Result<(Vec<MicroBatch>, BatchStats)> {
        let c = &self.config;
        let builder = BatchBuilder::new(
            c.micro_batch_rows,
            c.seq_len,
            c.packing,
            c.overlong,
            pad_id(self.tokenizer),
        );
        let mut total = BatchStats::default();
        let mut batches = Vec::with_capacity(c.grad_accum);
        for _ in 0..c.grad_accum {
            let (batch, targets, stats) = builder.build(&mut self.examples)?;
            total += stats;
            batches.push((batch, targets));
        }
        Ok((batches, total))
    }

    fn step(&mut self, step: u64) -> Result<StepMetrics> {
        let started = Instant::now();
        let lr = self.schedule.lr(step);
        let (batches, stats) = self.draw_micro_batches()?;
        let normaliser = stats.supervised_tokens.max(1) as f32;
        let (loss, grad_norm, skipped) = match &mut self.gpu {
            Some(g) => g.step(&self.config, &batches, lr)?,
            None => self.cpu_step(&batches, normaliser, stats.supervised_tokens, lr)?,
        };
        let tokens = batches.iter().map(|(b, _)| b.num_tokens()).sum();
        Ok(StepMetrics {
            step: step + 1,
            loss,
            lr,
            grad_norm,
            tokens,
            supervised_tokens: stats.supervised_tokens,
            tokens_per_s: tokens as f32 / started.elapsed().as_secs_f32(),
            truncated: stats.truncated,
            dropped: stats.dropped,
            skipped,
        })
    }

    /// The step on the CPU: (loss, gradient norm, skipped).
    fn cpu_step(
        &mut self,
        batches: &[MicroBatch],
        normaliser: f32,
        supervised: usize,
        lr: f32,
    ) -> Result<(f32, f32, bool)> {
        let mut grads = Gradients::default();
        let mut loss = 0.0f32;
        for (batch, targets) in batches {
            let l = self
                .model
                .loss(batch, targets, Reduction::MeanOver(normaliser))?;
            loss += l.to_scalar()?;
            grads.add_from(l.backward()?)?;
        }
        let max_norm = if self.config.max_grad_norm > 0.0 {
            self.config.max_grad_norm
        } else {
            f32::INFINITY
        };
        let grad_norm = clip_grad_norm(&self.params, &mut grads, max_norm)?;
        let skipped = !grad_norm.is_finite() || supervised == 0;
        if !skipped {
            self.optimizer.step(&self.params, &grads, lr)?;
        }
        Ok((loss, grad_norm, skipped))
    }

    /// Brings the host's model and optimizer up to the GPU's (before an evaluation or a
    /// checkpoint); nothing to do on the CPU.
    fn sync_host(&mut self) -> Result<()> {
        if let Some(g) = &mut self.gpu {
            if g.host_stale {
                g.trainer.store(&g.gpu, &self.model, &mut self.optimizer)?;
                g.host_stale = false;
            }
        }
        Ok(())
    }

    /// Mean loss over the supervised tokens of the held-out examples.
    fn evaluate(&self, step: u64) -> Result<EvalMetrics> {
        let _no_tape = no_grad();
        let (mut sum, mut count) = (0.0f64, 0usize);
        for ex in &self.eval_examples {
            let n = ex.input_ids.len().min(self.config.seq_len);
            let batch = Batch::new(ex.input_ids[..n].to_vec(), 1, n)?;
            let supervised = ex.targets[..n]
                .iter()
                .filter(|&&t| t != crate::ops::IGNORE_INDEX)
                .count();
            if supervised == 0 {
                continue;
            }
            sum += self
                .model
                .loss(&batch, &ex.targets[..n], Reduction::Sum)?
                .to_scalar()? as f64;
            count += supervised;
        }
        Ok(EvalMetrics {
            step,
            eval_loss: (sum / count.max(1) as f64) as f32,
            eval_tokens: count,
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
            &self.model,
            &self.optimizer,
            &state,
            &self.config.model,
            dtype,
            self.config.keep_last,
        )?;
        Ok(())
    }
}

impl GpuRun {
    /// The GPU state of a run on `device`; None on the CPU.
    fn open(device: TrainDevice, model: &Model, adamw: &AdamWConfig) -> Result<Option<GpuRun>> {
        let gpu = match device {
            TrainDevice::Cpu => return Ok(None),
            TrainDevice::Emulator => Gpu::emulated()?,
            TrainDevice::Cuda => cuda_device()?,
        };
        let trainer = GpuTrainer::new(&gpu, model, adamw.clone())?;
        Ok(Some(GpuRun {
            gpu,
            trainer,
            host_stale: false,
        }))
    }

    /// One step of `batches` on the device: (loss, gradient norm, skipped).
    fn step(
        &mut self,
        config: &TrainConfig,
        batches: &[MicroBatch],
        lr: f32,
    ) -> Result<(f32, f32, bool)> {
        let model_config = &self.trainer.model.config;
        let device_batches = batches
            .iter()
            .map(|(b, t)| DeviceBatch::new(&self.gpu, model_config, b, t))
            .collect::<Result<Vec<_>>>()?;
        let (gpu, trainer) = (&self.gpu, &mut self.trainer);
        let (max_norm, recompute) = (config.max_grad_norm, config.recompute);
        let step = match config.gpu_precision {
            GpuPrecision::Bf16 => {
                trainer.step::<bf16>(gpu, &device_batches, lr, max_norm, recompute)
            }
            GpuPrecision::F32 => trainer.step::<f32>(gpu, &device_batches, lr, max_norm, recompute),
        }?;
        self.host_stale = true;
        Ok((step.loss, step.grad_norm, step.skipped))
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Gpu> {
    Gpu::cuda(0)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Gpu> {
    Err(Error::Gpu(
        "device = \"cuda\" needs scotd built with --features cuda (or device = \"emulator\" to check the GPU path on the CPU)".into(),
    ))
}

fn pad_id(tokenizer: &Tokenizer) -> u32 {
    tokenizer
        .pad_id()
        .or_else(|| tokenizer.eos_ids().first().copied())
        .unwrap_or(0)
}

/// Every dataset's rows, each split into training rows and `eval_rows` held-out rows
/// (chosen by a seeded shuffle, so the split is the same on every run).
/// Every dataset's rows, split into training and held-out; with `verbose`, what each
/// file held (and the lines skipped) on stderr.
fn read_datasets(config: &TrainConfig, verbose: bool) -> Result<(Vec<DatasetSource>, Vec<Row>)> {
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
        eval.extend(held_out);
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
