//! Model arguments given as Hugging Face Hub ids, resolved from a Hugging Face cache that
//! each test lays out as `huggingface_hub` does (blobs, snapshot links into them, refs),
//! holding the real SmolLM2-135M-Instruct. HF_HUB_OFFLINE=1 throughout: no test downloads.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const DEV: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// The files a model snapshot holds, each a link to its blob as in the real cache.
const MODEL_FILES: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// A Hugging Face cache in a temporary folder.
struct HfCache {
    dir: tempfile::TempDir,
}

impl HfCache {
    fn new() -> Self {
        HfCache {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn repo(&self, id: &str) -> PathBuf {
        self.path()
            .join(format!("models--{}", id.replace('/', "--")))
    }

    /// Snapshot `commit` of `id` with the model's `files`: each a blob (itself a link to
    /// the fetched test model's file, to copy nothing) and a relative link to it.
    fn snapshot(&self, id: &str, commit: &str, files: &[&str]) {
        let (repo, model) = (self.repo(id), smollm2());
        let snapshot = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        for file in files {
            let blob = format!("{commit}-{}", file.replace('.', "-"));
            std::os::unix::fs::symlink(model.join(file), repo.join("blobs").join(&blob)).unwrap();
            let link = Path::new("../../blobs").join(&blob);
            std::os::unix::fs::symlink(link, snapshot.join(file)).unwrap();
        }
    }

    fn point(&self, id: &str, reference: &str, commit: &str) {
        let refs = self.repo(id).join("refs");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join(reference), commit).unwrap();
    }

    /// `scotd generate` of one short greedy continuation, with this cache and offline.
    fn generate(&self, model: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_scotd"))
            .args(["generate", "--model", model, "What is 12 * 7?"])
            .args(["--max-new-tokens", "6"])
            .env("HF_HUB_CACHE", self.path())
            .env("HF_HUB_OFFLINE", "1")
            // Were anything to try the network regardless, it would find nothing here.
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .output()
            .unwrap()
    }
}

fn smollm2() -> PathBuf {
    common::real_model_dir("smollm2-135m-instruct")
}

fn stdout_of(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scotd failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn stderr_of_failure(out: Output) -> String {
    assert!(!out.status.success(), "scotd should have failed");
    String::from_utf8(out.stderr).unwrap()
}

fn from_the_folder() -> String {
    let cache = HfCache::new();
    stdout_of(cache.generate(smollm2().to_str().unwrap()))
}

#[test]
fn a_hub_id_in_the_cache_generates_as_its_folder_does() {
    let cache = HfCache::new();
    cache.snapshot("HuggingFaceTB/SmolLM2-135M-Instruct", MAIN, &MODEL_FILES);
    cache.point("HuggingFaceTB/SmolLM2-135M-Instruct", "main", MAIN);
    let by_id = stdout_of(cache.generate("HuggingFaceTB/SmolLM2-135M-Instruct"));
    assert!(by_id.contains("\"text\""), "{by_id}");
    assert_eq!(by_id, from_the_folder());
}

#[test]
fn a_revision_picks_its_branch_or_its_commit_and_not_main() {
    // main's snapshot has no config.json: only the revision's snapshot can generate.
    let cache = HfCache::new();
    let id = "test-org/smollm2";
    cache.snapshot(id, MAIN, &MODEL_FILES[1..]);
    cache.point(id, "main", MAIN);
    cache.snapshot(id, DEV, &MODEL_FILES);
    cache.point(id, "dev", DEV);
    let expected = from_the_folder();
    assert_eq!(stdout_of(cache.generate(&format!("{id}@dev"))), expected);
    // A commit hash names its snapshot directly, with no ref of its own.
    assert_eq!(stdout_of(cache.generate(&format!("{id}@{DEV}"))), expected);
    let err = stderr_of_failure(cache.generate(id));
    let snapshot = cache.repo(id).join("snapshots").join(MAIN);
    assert!(
        err.contains(&format!(
            "in the Hugging Face cache {}, but its snapshot {} lacks config.json",
            cache.path().display(),
            snapshot.display()
        )),
        "{err}"
    );
}

#[test]
fn an_id_absent_from_the_cache_offline_says_what_to_do() {
    let cache = HfCache::new();
    let err = stderr_of_failure(cache.generate("test-org/absent-model"));
    for words in [
        "test-org/absent-model: model: not a folder",
        &format!(
            "not in the Hugging Face cache {} (no folder {})",
            cache.path().display(),
            cache.repo("test-org/absent-model").display()
        ),
        "HF_HUB_OFFLINE is set",
        "Run `huggingface-cli download test-org/absent-model`",
        "unset HF_HUB_OFFLINE",
        "pass the model's folder",
    ] {
        assert!(err.contains(words), "missing {words:?} in:\n{err}");
    }
    // A revision the cache has no ref for is named, and so is the command for it.
    cache.snapshot("test-org/smollm2", MAIN, &MODEL_FILES);
    cache.point("test-org/smollm2", "main", MAIN);
    let err = stderr_of_failure(cache.generate("test-org/smollm2@v2"));
    let reference = cache.repo("test-org/smollm2").join("refs/v2");
    assert!(
        err.contains(&format!("cannot read {}", reference.display())),
        "{err}"
    );
    assert!(
        err.contains("huggingface-cli download test-org/smollm2 --revision v2"),
        "{err}"
    );
}

#[test]
fn a_snapshot_whose_blob_is_gone_names_the_missing_weights() {
    let cache = HfCache::new();
    let id = "test-org/smollm2";
    cache.snapshot(id, MAIN, &MODEL_FILES);
    cache.point(id, "main", MAIN);
    let blob = cache
        .repo(id)
        .join("blobs")
        .join(format!("{MAIN}-model-safetensors"));
    std::fs::remove_file(blob).unwrap();
    let err = stderr_of_failure(cache.generate(id));
    assert!(err.contains("lacks model.safetensors"), "{err}");
}
