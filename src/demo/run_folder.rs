//! The run folder: its config, where each artefact of a demo run goes, and the data
//! files every stage reads.

use std::path::{Path, PathBuf};

use super::chat_data::{chat_examples, write_alpaca_jsonl};
use super::problems::{generate_splits, write_jsonl, Problem};
use super::{tokenizer, vocabulary, DemoConfig};
use crate::data::{read_questions, Question};
use crate::io::write_atomic;
use crate::{Error, Result};

/// A demo run's folder (the table in the module documentation).
#[derive(Clone, Debug)]
pub struct RunFolder {
    root: PathBuf,
}

/// The questions the stages after the teacher's training use, read back from the files
/// [`RunFolder::write_data`] wrote, by the same reader `scotd sample` and `scotd eval` use.
pub struct DemoQuestions {
    /// The teacher is sampled on these; the student learns from its correct traces.
    pub sample: Vec<Question>,
    /// Held out from every training set.
    pub eval: Vec<Question>,
}

impl RunFolder {
    /// Opens `root` for a run of `config`: writes config.json, or checks that the one
    /// already there is the same config (a rerun continues the run).
    pub fn create(root: &Path, config: &DemoConfig) -> Result<RunFolder> {
        let path = root.join("config.json");
        let mut json = serde_json::to_vec_pretty(config).expect("the config serialises");
        json.push(b'\n');
        match std::fs::read(&path) {
            Ok(existing) if existing == json => {}
            Ok(_) => {
                return Err(Error::format(
                    &path,
                    "(config)",
                    "this folder holds a demo run with other settings: choose another \
                     folder (--out) or delete this one",
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomic(&path, &json)?,
            Err(e) => return Err(Error::io(path, e)),
        }
        Ok(RunFolder {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file or folder of the run, by its path inside the run folder.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub fn tokenizer(&self) -> PathBuf {
        self.path("tokenizer")
    }

    /// Writes the tokenizer, the problems and the chat examples.
    pub fn write_data(&self, problems: &DemoProblems) -> Result<DemoQuestions> {
        tokenizer::write_tokenizer_files(&self.tokenizer(), &vocabulary()?)?;
        write_jsonl(&self.path(EVAL), &problems.eval)?;
        write_jsonl(&self.path(SAMPLE), &problems.sample)?;
        write_jsonl(&self.path(TEACHER_TRAIN), &problems.teacher_train)?;
        write_alpaca_jsonl(&self.path(CHAT), &chat_examples())?;
        Ok(DemoQuestions {
            sample: read_questions(&self.path(SAMPLE))?,
            eval: read_questions(&self.path(EVAL))?,
        })
    }
}

/// A run's problems: three disjoint sets.
pub struct DemoProblems {
    eval: Vec<Problem>,
    sample: Vec<Problem>,
    teacher_train: Vec<Problem>,
}

impl DemoProblems {
    /// Generates the sets `config` asks for (before anything is written, so a difficulty
    /// too small for them fails early).
    pub fn generate(config: &DemoConfig) -> Result<DemoProblems> {
        let splits = generate_splits(
            config.seed,
            config.difficulty,
            &[
                ("eval", config.eval_problems),
                ("sample", config.sample_problems),
                ("teacher", config.teacher_problems),
            ],
        )?;
        let mut splits = splits.into_iter();
        let mut next = || splits.next().unwrap_or_default();
        Ok(DemoProblems {
            eval: next(),
            sample: next(),
            teacher_train: next(),
        })
    }
}

pub const EVAL: &str = "data/eval.jsonl";
pub const SAMPLE: &str = "data/sample.jsonl";
pub const TEACHER_TRAIN: &str = "data/teacher-train.jsonl";
pub const CHAT: &str = "data/chat.jsonl";
