//! The Hugging Face cache as `huggingface_hub` lays it out:
//!
//! ```text
//! <cache>/models--org--name/
//!     refs/main                      the commit hash that `main` points at
//!     snapshots/<commit>/config.json a symbolic link into blobs/
//!     blobs/<etag>                   the file contents
//! ```

use std::path::{Path, PathBuf};

use super::{HubId, Needs};

/// What the cache holds for an id.
pub(super) enum Lookup {
    /// The snapshot, with every file needed.
    Complete(PathBuf),
    /// The snapshot exists but lacks these files.
    Incomplete {
        snapshot: PathBuf,
        missing: Vec<String>,
    },
    /// No snapshot: why (the folder, ref or snapshot that is not there).
    Absent(String),
}

impl Lookup {
    /// Where the cache `cache` stands for the id, in words.
    pub(super) fn describe(&self, cache: &Path) -> String {
        let cache = cache.display();
        match self {
            Lookup::Complete(snapshot) => format!("complete at {}", snapshot.display()),
            Lookup::Incomplete { snapshot, missing } => format!(
                "in the Hugging Face cache {cache}, but its snapshot {} lacks {}",
                snapshot.display(),
                missing.join(", ")
            ),
            Lookup::Absent(why) => format!("not in the Hugging Face cache {cache} ({why})"),
        }
    }
}

pub(super) fn lookup(cache: &Path, id: &HubId, needs: Needs) -> Lookup {
    let repo = repo_dir(cache, id);
    if !repo.is_dir() {
        return Lookup::Absent(format!("no folder {}", repo.display()));
    }
    let commit = match commit_of(&repo, id.revision()) {
        Ok(commit) => commit,
        Err(why) => return Lookup::Absent(why),
    };
    let snapshot = repo.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Lookup::Absent(format!("no snapshot folder {}", snapshot.display()));
    }
    let missing = missing_files(&snapshot, needs);
    if missing.is_empty() {
        Lookup::Complete(snapshot)
    } else {
        Lookup::Incomplete { snapshot, missing }
    }
}

pub(super) fn repo_dir(cache: &Path, id: &HubId) -> PathBuf {
    cache.join(id.folder_name())
}

/// A full commit hash names its snapshot itself; a branch or tag is read from `refs/`.
fn commit_of(repo: &Path, revision: &str) -> std::result::Result<String, String> {
    if is_commit_hash(revision) {
        return Ok(revision.to_string());
    }
    let reference = repo.join("refs").join(revision);
    let text = std::fs::read_to_string(&reference)
        .map_err(|e| format!("cannot read {}: {e}", reference.display()))?;
    let commit = text.trim();
    if !is_commit_hash(commit) {
        return Err(format!(
            "{} holds {commit:?}, not a 40-hex commit hash",
            reference.display()
        ));
    }
    Ok(commit.to_string())
}

pub(super) fn is_commit_hash(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The files `dir` lacks for `needs` (a link whose blob is gone counts as missing).
pub(super) fn missing_files(dir: &Path, needs: Needs) -> Vec<String> {
    let required: &[&str] = match needs {
        Needs::Config => &["config.json"],
        Needs::Tokenizer | Needs::Model => &["config.json", "tokenizer.json"],
    };
    let mut missing: Vec<String> = required
        .iter()
        .filter(|file| !dir.join(file).is_file())
        .map(|file| file.to_string())
        .collect();
    if needs == Needs::Model {
        missing.extend(missing_weights(dir));
    }
    missing
}

pub(super) const WEIGHTS: &str = "model.safetensors";
pub(super) const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

fn missing_weights(dir: &Path) -> Vec<String> {
    if dir.join(WEIGHTS).is_file() {
        return Vec::new();
    }
    let index = dir.join(WEIGHTS_INDEX);
    if !index.is_file() {
        return vec![format!("{WEIGHTS} (or {WEIGHTS_INDEX} and its shards)")];
    }
    match shard_names(&index) {
        Ok(shards) => shards
            .into_iter()
            .filter(|shard| !dir.join(shard).is_file())
            .collect(),
        Err(e) => vec![format!("a readable {WEIGHTS_INDEX} ({e})")],
    }
}

/// The shard files an index names, relative to its folder.
pub(super) fn shard_names(index: &Path) -> crate::Result<Vec<String>> {
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(crate::model::shard_paths(index)?
        .iter()
        .map(|path| {
            path.strip_prefix(dir)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned()
        })
        .collect())
}
