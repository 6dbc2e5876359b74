//! `scotd demo`: the whole method on a laptop CPU in minutes, with no download. Every
//! stage runs through the real code paths (the trainer, `scotd sample`'s sampler, the
//! verifier, `scotd eval`'s evaluator and the dataset readers), on data generated here:
//!
//! 1. **Teacher**: a small Qwen2 with random weights learns generated arithmetic word
//!    problems in GSM8K's format ([`problems`]), with this module's word-level tokenizer
//!    ([`tokenizer`]); then it is evaluated on held-out problems.
//! 2. **Sampling**: the teacher writes several traces (with temperature) for each of a
//!    set of new problems; the verifier keeps the correct ones.
//! 3. **Student before**: a smaller Qwen2 learns the chat examples ([`chat_data`]) alone.
//!    It stands in for the instruct model SCoTD starts from: it can chat, not reason.
//! 4. **Distillation**: the student learns the verified traces mixed 70/30 with the chat
//!    examples, and is evaluated before and after on the held-out problems (accuracy,
//!    `<think>` use) and on chat probes (does it still chat, or answer "Hello!" with
//!    math?).
//!
//! A run writes everything into one folder:
//!
//! | path | what |
//! |---|---|
//! | `config.json` | the [`DemoConfig`] of the run (a rerun with it continues the run) |
//! | `tokenizer/` | tokenizer.json and tokenizer_config.json (ChatML) |
//! | `data/eval.jsonl`, `data/sample.jsonl`, `data/teacher-train.jsonl` | the problems (GSM8K JSONL), three disjoint sets: held out, sampled, the teacher's |
//! | `data/chat.jsonl` | the chat examples (Alpaca JSONL) |
//! | `teacher/`, `student/chat/`, `student/distill/` | each training: `init/` (random weights), `training/` (the trainer's metrics.jsonl and final checkpoint), `loss.png` |
//! | `traces/sampled.jsonl`, `traces/verified.jsonl` | the teacher's traces, and the ones the verifier kept |
//! | `teacher/eval/`, `student/eval-before/`, `student/eval-after/` | the evaluator's answers.jsonl, report.json and report.md |
//! | `report.md`, `summary.json` | the results table, sampling counts, the evaluations side by side, the probes' replies |
//!
//! # Choosing the teacher
//!
//! Measured on the project's 2-core development machine while other builds ran (load
//! average 2-10, so the times are rough; one run at a time), 200 held-out
//! problems, greedy decoding, Qwen2 with tied embeddings, head_dim 32, intermediate
//! 3 × hidden, lr 3e-3 with 5 % warmup and cosine decay, batches of 8 × 256 packed tokens:
//!
//! | problems (steps, numbers ≤) | hidden × layers (heads/KV) | steps | train time | accuracy |
//! |---|---|--:|--:|--:|
//! | 2, 20 | 128 × 2 (4/2) | 600 | 102 s | 42.5 % |
//! | 2, 20 | 128 × 2 (4/2), lr 6e-3 | 600 | 137 s | 49.0 % |
//! | 2, 20 | 192 × 3 (6/2) | 600 | 291 s | 57.0 % |
//! | 2, 20 | 128 × 2 (4/2) | 1000 | 229 s | 69.5 % |
//! | 2, 10 | 128 × 2 (4/2) | 600 | 152 s | 78.0 % |
//! | 2, 10 | 128 × 2 (4/2), 16 rows a batch | 600 | 412 s | 98.0 % |
//! | 2, 10 | 128 × 3 (4/2) | 1000 | 435 s | 86.5 % |
//! | 2, 10 | 128 × 2 (4/2) | 700 | 120 s | 85.5 % |
//! | 2, 10 | 128 × 2 (4/2) | 1000 | 258 s | 99.0 % |
//! | 2, 15 | 128 × 2 (4/2) | 1000 | 99 s | 80.0 % |
//! | 3, 10 | 128 × 2 (4/2) | 1000 | 368 s | 96.0 % |
//! | 1, 6 (the reduced preset), 4 rows a batch | 128 × 2 (4/2) | 120 | 8-32 s | 73-95 % (4 seeds, 60 problems) |
//!
//! Smaller numbers helped far more than a bigger model; errors are arithmetic (copying
//! and the format are learnt within a few hundred steps). The default is the 1000-step
//! run on problems of up to 2 steps with numbers up to 10; in the demo itself (seed 0,
//! other problems, 64 of them held out for the evaluation loss) that teacher scores
//! 89.5 % and trains in 149 s, and the whole demo takes 4 min 14 s. The student (hidden
//! 96 × 2 layers, 3 heads / 1 KV head) goes from 0 % to 79.5 % in 800 distillation
//! steps (81 s); in the reduced preset, from 0 % to 33-42 % (4 seeds).

pub mod chat_data;
mod config;
mod evaluation;
pub mod problems;
mod report;
mod run_folder;
mod sampling;
pub mod tokenizer;
mod training;

use std::path::{Path, PathBuf};

use crate::data::DataFormat;
use crate::eval::EvalReport;
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use crate::train::DatasetConfig;
use crate::Result;
use chat_data::CHAT_PROBES;
use evaluation::evaluate_model;
use problems::{Difficulty, MAX_STEPS};
use run_folder::{DemoProblems, DemoQuestions, CHAT, TEACHER_TRAIN};
use training::{train_stage, Start};

pub use config::{DemoConfig, ModelShape, Training};
pub use report::{sampling_line, summary_table};
pub use run_folder::RunFolder;
pub use sampling::Traces;
pub use training::Trained;

/// The student's mix, as in the reference run: reasoning traces 70 %, chat 30 %.
const TRACES_WEIGHT: f64 = 0.7;
const CHAT_WEIGHT: f64 = 0.3;
/// Teacher training problems held out for its evaluation loss.
const TEACHER_EVAL_ROWS: usize = 64;

/// What a demo run produced.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    pub teacher: Trained,
    pub teacher_eval: EvalReport,
    pub traces: Traces,
    /// The student after its chat training: the "before" of distillation.
    pub student_chat: Trained,
    pub student_before: EvalReport,
    pub student: Trained,
    pub student_after: EvalReport,
    /// report.md (summary.json is beside it).
    pub report: PathBuf,
}

/// Runs the demo into `out`, showing stage headers and progress bars when
/// `show_progress` is set. Rerunning with the same config continues where a previous
/// run stopped; another config is an error.
pub fn run(config: &DemoConfig, out: &Path, show_progress: bool) -> Result<DemoSummary> {
    config.validate()?;
    let problems = DemoProblems::generate(config)?;
    let folder = RunFolder::create(out, config)?;
    let questions = folder.write_data(&problems)?;
    let vocab_size = Tokenizer::from_dir(&folder.tokenizer())?.vocab_size();
    let demo = Demo {
        config,
        folder,
        questions,
        vocab_size,
        show_progress,
    };
    let (teacher, teacher_eval) = demo.teacher()?;
    let traces = demo.sample(&teacher)?;
    let (student_chat, student_before) = demo.student_before()?;
    let (student, student_after) = demo.distill(&student_chat, &traces)?;
    let summary = DemoSummary {
        teacher,
        teacher_eval,
        traces,
        student_chat,
        student_before,
        student,
        student_after,
        report: demo.folder.path("report.md"),
    };
    report::write(&demo.folder, config, &summary)?;
    Ok(summary)
}

/// A run in progress: what every stage needs.
struct Demo<'a> {
    config: &'a DemoConfig,
    folder: RunFolder,
    questions: DemoQuestions,
    vocab_size: usize,
    show_progress: bool,
}

impl Demo<'_> {
    fn announce(&self, text: String) {
        if self.show_progress {
            eprintln!("{text}");
        }
    }

    /// Random weights of `shape` with the run's tokenizer.
    fn random<'s>(&self, shape: &'s ModelShape, seed: u64) -> Start<'s> {
        Start::Random {
            shape,
            vocab_size: self.vocab_size,
            max_positions: self.config.max_positions(),
            seed,
            tokenizer: self.folder.tokenizer(),
        }
    }

    fn train(
        &self,
        start: Start,
        datasets: Vec<DatasetConfig>,
        training: &Training,
        eval_rows: usize,
        dir: &str,
    ) -> Result<Trained> {
        let dir = self.folder.path(dir);
        train_stage(
            start,
            datasets,
            training,
            eval_rows,
            self.config.seed,
            &dir,
            self.show_progress,
        )
    }

    fn evaluate(
        &self,
        model: &Trained,
        name: &str,
        probes: &[&str],
        dir: &str,
    ) -> Result<EvalReport> {
        self.announce(format!(
            "  evaluating the {name} on {} held-out problems",
            self.questions.eval.len()
        ));
        evaluate_model(
            &model.model_dir,
            name,
            &self.questions.eval,
            probes,
            self.config.max_new_tokens,
            &self.folder.path(dir),
            self.show_progress,
        )
    }

    fn teacher(&self) -> Result<(Trained, EvalReport)> {
        let c = self.config;
        self.announce(format!(
            "[1/4] teacher: a {}-layer Qwen2 (hidden {}) learns {} generated problems in {} steps",
            c.teacher.layers, c.teacher.hidden_size, c.teacher_problems, c.teacher_training.steps
        ));
        let problems = dataset(
            "problems",
            self.folder.path(TEACHER_TRAIN),
            DataFormat::Gsm8k,
            1.0,
        );
        let teacher = self.train(
            self.random(&c.teacher, c.seed),
            vec![problems],
            &c.teacher_training,
            TEACHER_EVAL_ROWS,
            "teacher",
        )?;
        let eval = self.evaluate(&teacher, "teacher", &[], "teacher/eval")?;
        Ok((teacher, eval))
    }

    fn sample(&self, teacher: &Trained) -> Result<Traces> {
        let c = self.config;
        self.announce(format!(
            "[2/4] sampling: {} traces of each of {} new problems from the teacher (temperature {}); the verifier keeps the correct ones",
            c.samples_per_problem, self.questions.sample.len(), c.sample_temperature
        ));
        sampling::sample_and_verify(
            c,
            &teacher.model_dir,
            &self.questions.sample,
            &self.folder,
            self.show_progress,
        )
    }

    fn student_before(&self) -> Result<(Trained, EvalReport)> {
        let c = self.config;
        self.announce(format!(
            "[3/4] student before: a {}-layer Qwen2 (hidden {}) learns the {} chat examples in {} steps",
            c.student.layers, c.student.hidden_size, chat_data::chat_examples().len(), c.student_chat_training.steps
        ));
        let chat = dataset("chat", self.folder.path(CHAT), DataFormat::Alpaca, 1.0);
        let start = self.random(&c.student, c.seed.wrapping_add(1));
        let student = self.train(
            start,
            vec![chat],
            &c.student_chat_training,
            0,
            "student/chat",
        )?;
        let eval = self.evaluate(
            &student,
            "student before",
            &CHAT_PROBES,
            "student/eval-before",
        )?;
        Ok((student, eval))
    }

    fn distill(&self, student_chat: &Trained, traces: &Traces) -> Result<(Trained, EvalReport)> {
        let c = self.config;
        self.announce(format!(
            "[4/4] distillation: the student learns the {} verified traces mixed 70/30 with the chat examples in {} steps",
            traces.kept, c.student_training.steps
        ));
        let datasets = vec![
            dataset(
                "traces",
                traces.verified_file.clone(),
                DataFormat::Traces,
                TRACES_WEIGHT,
            ),
            dataset(
                "chat",
                self.folder.path(CHAT),
                DataFormat::Alpaca,
                CHAT_WEIGHT,
            ),
        ];
        let student = self.train(
            Start::From(&student_chat.model_dir),
            datasets,
            &c.student_training,
            0,
            "student/distill",
        )?;
        let eval = self.evaluate(
            &student,
            "student after",
            &CHAT_PROBES,
            "student/eval-after",
        )?;
        Ok((student, eval))
    }
}

fn dataset(name: &str, path: PathBuf, format: DataFormat, weight: f64) -> DatasetConfig {
    DatasetConfig {
        name: name.into(),
        path,
        format: Some(format),
        weight,
    }
}

/// Problems generated to collect the words of the problem templates: each template shows
/// up many times in a few hundred.
const VOCABULARY_SAMPLE: usize = 500;

/// The demo's vocabulary: every piece of its problems (any seed, any difficulty), of its
/// chat examples and of the replies the reasoning format writes.
pub fn vocabulary() -> Result<Vec<String>> {
    let hardest = Difficulty {
        max_steps: MAX_STEPS,
        max_number: 20,
    };
    let mut rng = Rng::new(0);
    let sample: Vec<_> = (0..VOCABULARY_SAMPLE)
        .map(|_| problems::generate(&mut rng, hardest))
        .collect();
    let chat = chat_data::chat_examples();
    let problem_texts = sample
        .iter()
        .flat_map(|p| [p.question.as_str(), p.answer.as_str()]);
    let chat_texts = chat
        .iter()
        .flat_map(|e| [e.instruction.as_str(), e.input.as_str(), e.output.as_str()]);
    let replies = [" \\boxed{0}"];
    tokenizer::build_vocabulary(
        problem_texts.chain(chat_texts).chain(replies),
        &problems::lexicon(),
    )
}
