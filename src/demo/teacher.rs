//! The teacher stage: a Qwen2 model with random weights, trained by the real trainer on
//! generated problems (GSM8K format, so replies are `<think>steps</think> \boxed{N}`),
//! then asked the held-out problems greedily and checked by the verifier.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::problems::Problem;
use super::run_folder::{DemoData, RunFolder};
use super::DemoConfig;
use crate::data::DataFormat;
use crate::io::write_atomic;
use crate::model::{save_checkpoint, Model};
use crate::sample::{generate, SamplingConfig};
use crate::tokenizer::{Message, Tokenizer};
use crate::train::plot::{plot_metrics, read_metrics};
use crate::train::{train, DatasetConfig, TrainConfig};
use crate::verify::is_correct;
use crate::DType;
use crate::Result;

/// Sequences decoded together when evaluating.
const EVAL_BATCH: usize = 16;
/// Held-out rows for the trainer's evaluation loss, and how many times it is measured.
const EVAL_LOSS_ROWS: usize = 64;
const EVAL_LOSS_POINTS: u64 = 10;
/// Checkpoints per run, so an interrupted run resumes near where it stopped.
const CHECKPOINTS: u64 = 4;
/// The loss plot's width and height in pixels.
const PLOT_SIZE: (u32, u32) = (1000, 800);

/// What the teacher stage produced.
#[derive(Clone, Debug)]
pub struct TeacherStage {
    /// The trained teacher: a Hugging Face checkpoint folder.
    pub model_dir: PathBuf,
    pub parameters: usize,
    /// The last step's loss, as metrics.jsonl logs it (so also after a rerun that had
    /// nothing left to train).
    pub final_loss: f64,
    pub train_seconds: f64,
    pub metrics: PathBuf,
    pub accuracy: Evaluation,
}

/// How many held-out problems a model answered correctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub correct: usize,
    pub total: usize,
}

impl Evaluation {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

pub(super) fn run(
    config: &DemoConfig,
    folder: &RunFolder,
    data: &DemoData,
    show_progress: bool,
) -> Result<TeacherStage> {
    let vocab_size = Tokenizer::from_dir(&folder.tokenizer())?.vocab_size();
    let model_config = config.teacher.config(vocab_size, config.max_positions())?;
    let parameters = model_config.num_parameters();
    let init = folder.teacher("init");
    let model = Model::random(model_config, config.seed);
    save_checkpoint(&model, Some(&folder.tokenizer()), &init, DType::F32)?;
    let started = Instant::now();
    let summary = train(trainer_config(config, folder, init), show_progress)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let metrics = read_metrics(&summary.metrics)?;
    plot_metrics(&metrics, &folder.teacher("loss.png"), PLOT_SIZE)?;
    let accuracy = evaluate(
        &summary.final_dir,
        &data.eval,
        config.max_new_tokens,
        &folder.teacher("eval.jsonl"),
        show_progress,
    )?;
    Ok(TeacherStage {
        model_dir: summary.final_dir,
        parameters,
        final_loss: metrics.loss.last().map_or(f64::NAN, |&(_, loss)| loss),
        train_seconds,
        metrics: summary.metrics,
        accuracy,
    })
}

fn trainer_config(config: &DemoConfig, folder: &RunFolder, init: PathBuf) -> TrainConfig {
    let t = &config.teacher_training;
    TrainConfig {
        model: init,
        output_dir: folder.teacher("training"),
        datasets: vec![DatasetConfig {
            name: "problems".into(),
            path: folder.data("teacher-train.jsonl"),
            format: Some(DataFormat::Gsm8k),
            weight: 1.0,
        }],
        eval_rows: EVAL_LOSS_ROWS,
        seq_len: t.seq_len,
        micro_batch_rows: t.batch_rows,
        grad_accum: 1,
        steps: t.steps,
        lr: t.lr,
        warmup_steps: t.steps / 20,
        weight_decay: 0.0,
        seed: config.seed,
        eval_every: (t.steps / EVAL_LOSS_POINTS).max(1),
        save_every: (t.steps / CHECKPOINTS).max(1),
        keep_last: 1,
        ..TrainConfig::default()
    }
}

/// One evaluated answer, as written to the answers file.
#[derive(serde::Serialize)]
struct Answer<'a> {
    id: &'a str,
    question: &'a str,
    gold: &'a str,
    output: String,
    correct: bool,
}

/// Asks the model in `model_dir` every problem (greedy, through its chat template), checks
/// each reply with the verifier, and writes the replies and verdicts to `answers` as JSONL.
pub fn evaluate(
    model_dir: &Path,
    problems: &[Problem],
    max_new_tokens: usize,
    answers: &Path,
    show_progress: bool,
) -> Result<Evaluation> {
    let model = Model::load(model_dir)?;
    let tokenizer = Tokenizer::from_dir(model_dir)?;
    let template = tokenizer.resolve_chat_template(None)?;
    let prompts = problems
        .iter()
        .map(|p| {
            let text = template.render(&[Message::new("user", &p.question)], true)?;
            tokenizer.encode(&text, template.add_special_tokens())
        })
        .collect::<Result<Vec<_>>>()?;
    let sampling = SamplingConfig {
        max_new_tokens,
        batch_size: EVAL_BATCH,
        ..SamplingConfig::default()
    };
    let bar = answers_bar(show_progress, problems.len());
    let eos = tokenizer.eos_ids();
    let generated = generate(&model, &prompts, eos, &sampling, |_, id| {
        if eos.contains(&id) {
            bar.inc(1);
        }
    })?;
    bar.finish_and_clear();
    let mut lines = String::new();
    let mut correct = 0;
    for (problem, reply) in problems.iter().zip(generated) {
        let output = tokenizer.decode(&reply.ids, true)?;
        let answer = Answer {
            id: &problem.id,
            question: &problem.question,
            gold: &problem.answer,
            correct: is_correct(&problem.answer, &output),
            output,
        };
        correct += usize::from(answer.correct);
        lines.push_str(&serde_json::to_string(&answer).expect("strings serialise"));
        lines.push('\n');
    }
    write_atomic(answers, lines.as_bytes())?;
    Ok(Evaluation {
        correct,
        total: problems.len(),
    })
}

fn answers_bar(show: bool, total: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} answers [{elapsed} < {eta}]")
            .expect("valid template"),
    )
}
