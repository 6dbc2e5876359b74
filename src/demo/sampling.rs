//! Teacher sampling and the verifier: several traces of every sampling problem from the
//! teacher (`scotd sample`'s library, resumable), then only the correct ones kept (`scotd
//! verify --filter`'s library) for the student to learn from.

use std::path::PathBuf;

use super::evaluation::DECODE_BATCH;
use super::run_folder::RunFolder;
use super::DemoConfig;
use crate::data::Question;
use crate::io::write_atomic;
use crate::model::Model;
use crate::sample::{sample_traces, Prompter, SampleOptions, SamplingConfig};
use crate::tokenizer::Tokenizer;
use crate::verify::filter_traces;
use crate::{Error, Result};

/// What sampling and filtering gave.
#[derive(Clone, Debug)]
pub struct Traces {
    pub questions: usize,
    /// Traces sampled, in all runs of this folder.
    pub sampled: usize,
    /// Of those, the ones the verifier kept.
    pub kept: usize,
    /// Questions with at least one kept trace.
    pub solved: usize,
    /// All traces, and the kept ones.
    pub sampled_file: PathBuf,
    pub verified_file: PathBuf,
}

pub fn sample_and_verify(
    config: &DemoConfig,
    teacher_dir: &std::path::Path,
    questions: &[Question],
    folder: &RunFolder,
    show_progress: bool,
) -> Result<Traces> {
    let model = Model::load(teacher_dir)?;
    let tokenizer = Tokenizer::from_dir(teacher_dir)?;
    let prompter = Prompter::new(&tokenizer, None, None, None)?;
    let options = SampleOptions {
        samples_per_question: config.samples_per_problem,
        sampling: SamplingConfig {
            max_new_tokens: config.max_new_tokens,
            temperature: config.sample_temperature,
            seed: config.seed,
            batch_size: DECODE_BATCH,
            vocab_limit: Some(tokenizer.vocab_size()),
            ..SamplingConfig::default()
        },
        settings: None,
    };
    let sampled_file = folder.path("traces/sampled.jsonl");
    sample_traces(
        &model,
        &tokenizer,
        &prompter,
        questions,
        &options,
        &sampled_file,
        show_progress,
    )?;
    let filtered = filter_traces(&sampled_file)?;
    if filtered.kept() == 0 {
        return Err(Error::format(
            &sampled_file,
            "correct",
            "the verifier kept none of the teacher's traces: train the teacher longer \
             (--teacher-steps) or make the problems easier (--max-number, --max-steps)",
        ));
    }
    let verified_file = folder.path("traces/verified.jsonl");
    write_atomic(&verified_file, filtered.jsonl.as_bytes())?;
    Ok(Traces {
        questions: questions.len(),
        sampled: filtered.total(),
        kept: filtered.kept(),
        solved: filtered.solved(),
        sampled_file,
        verified_file,
    })
}
