//! Model arguments given as Hugging Face Hub ids, resolved from a Hugging Face cache that
//! each test lays out as `huggingface_hub` does (blobs, snapshot links into them, refs),
//! holding the real SmolLM2-135M-Instruct. HF_HUB_OFFLINE=1, except where a test
//! downloads from a Hub of its own on 127.0.0.1 (`fake_hub`): never from the network.

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

/// A Hub on 127.0.0.1 holding one repo at one commit, answering as huggingface.co answers
/// hf-hub: the revision's file list (`/api/models/ID/revision/main`), and each file
/// (`/ID/resolve/main/FILE`) by byte range with its commit and etag headers. Returns the
/// endpoint; the server thread lives until the test process ends.
fn fake_hub(id: &'static str, commit: &'static str, folder: PathBuf) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            answer(stream.unwrap(), id, commit, &folder);
        }
    });
    endpoint
}

fn answer(mut stream: std::net::TcpStream, id: &str, commit: &str, folder: &Path) {
    use std::io::{BufRead, Read, Seek, Write};
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mut range_start = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some(range) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (start, end) = range.trim().split_once('-').unwrap();
            range_start = Some((start.parse::<u64>().unwrap(), end.parse::<u64>().ok()));
        }
    }
    let head = |status: &str, extra: &str, length: u64| {
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {length}\r\nConnection: close\r\n\r\n")
    };
    if path == format!("/api/models/{id}/revision/main") {
        let siblings: Vec<_> = MODEL_FILES
            .iter()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({ "sha": commit, "siblings": siblings }).to_string();
        let response = head(
            "200 OK",
            "Content-Type: application/json\r\n",
            body.len() as u64,
        );
        stream
            .write_all(format!("{response}{body}").as_bytes())
            .unwrap();
        return;
    }
    let file = path
        .strip_prefix(&format!("/{id}/resolve/main/"))
        .filter(|f| MODEL_FILES.contains(f));
    let Some(file) = file else {
        stream
            .write_all(head("404 Not Found", "", 0).as_bytes())
            .unwrap();
        return;
    };
    let mut data = std::fs::File::open(folder.join(file)).unwrap();
    let size = data.metadata().unwrap().len();
    let (start, end) = range_start.unwrap_or((0, None));
    let end = end.unwrap_or(size - 1).min(size - 1);
    let headers = format!(
        "X-Repo-Commit: {commit}\r\nETag: \"{}\"\r\nContent-Range: bytes {start}-{end}/{size}\r\n",
        file.replace('.', "-")
    );
    let response = head("206 Partial Content", &headers, end + 1 - start);
    stream.write_all(response.as_bytes()).unwrap();
    data.seek(std::io::SeekFrom::Start(start)).unwrap();
    let _ = std::io::copy(&mut data.take(end + 1 - start), &mut stream);
}

/// Online and absent from the cache: the model comes from the Hub (here a local one, by
/// HF_ENDPOINT) into the cache's standard layout, generates as its folder does, and is
/// then found offline.
#[test]
fn an_id_absent_from_the_cache_is_downloaded_then_found_offline() {
    let cache = HfCache::new();
    let id = "test-org/downloaded";
    let endpoint = fake_hub(id, MAIN, smollm2());
    let online = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(["generate", "--model", id, "What is 12 * 7?"])
        .args(["--max-new-tokens", "6"])
        .env("HF_HUB_CACHE", cache.path())
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &endpoint)
        .output()
        .unwrap();
    let expected = from_the_folder();
    assert_eq!(stdout_of(online), expected);
    let snapshot = cache.repo(id).join("snapshots").join(MAIN);
    for file in MODEL_FILES {
        assert!(
            snapshot.join(file).is_file(),
            "{file} missing from {}",
            snapshot.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(cache.repo(id).join("refs/main"))
            .unwrap()
            .trim(),
        MAIN
    );
    assert_eq!(stdout_of(cache.generate(id)), expected);
}
