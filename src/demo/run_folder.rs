//! The run folder: where each artefact of a demo run goes, its config, and the data
//! files every stage reads.

use std::path::{Path, PathBuf};

use super::chat_data::{chat_examples, write_alpaca_jsonl};
use super::problems::{generate_splits, write_jsonl, Problem};
use super::{tokenizer, vocabulary, DemoConfig};
use crate::io::write_atomic;
use crate::{Error, Result};

/// A demo run's folder (the table in the module documentation).
#[derive(Clone, Debug)]
pub struct RunFolder {
    root: PathBuf,
}

/// The generated problems of a run, in the files [`RunFolder::write_data`] wrote.
pub struct DemoData {
    pub teacher_train: Vec<Problem>,
    pub eval: Vec<Problem>,
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

    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer")
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.root.join("data").join(name)
    }

    /// A folder or file of the teacher stage.
    pub fn teacher(&self, name: &str) -> PathBuf {
        self.root.join("teacher").join(name)
    }

    /// Writes the tokenizer, the problems (disjoint splits) and the chat examples.
    pub fn write_data(&self, config: &DemoConfig) -> Result<DemoData> {
        tokenizer::write_tokenizer_files(&self.tokenizer(), &vocabulary()?)?;
        let splits = generate_splits(
            config.seed,
            config.difficulty,
            &[
                ("eval", config.eval_problems),
                ("teacher", config.teacher_problems),
            ],
        )?;
        let mut splits = splits.into_iter();
        let mut next = || splits.next().expect("one set per split asked");
        let (eval, teacher_train) = (next(), next());
        write_jsonl(&self.data("eval.jsonl"), &eval)?;
        write_jsonl(&self.data("teacher-train.jsonl"), &teacher_train)?;
        write_alpaca_jsonl(&self.data("chat.jsonl"), &chat_examples())?;
        Ok(DemoData {
            teacher_train,
            eval,
        })
    }
}
