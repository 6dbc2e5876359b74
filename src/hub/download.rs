//! Downloading a model into the Hugging Face cache with the `hf-hub` crate's blocking
//! client: the repo's file list and commit from the Hub's API, then each file the model
//! needs that the commit's snapshot lacks (hf-hub resumes a partial download and shows a
//! progress bar on a terminal), and `refs/<revision>` pointing at the commit.

use std::io::IsTerminal;
use std::path::PathBuf;

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use super::cache::{self, is_commit_hash, WEIGHTS, WEIGHTS_INDEX};
use super::{HubId, HubSettings, Needs};
use crate::Result;

/// Files read beside config.json when the repo has them: the tokenizer's, the generation
/// settings and the chat template transformers may keep apart.
const MODEL_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

pub(super) fn fetch(settings: &HubSettings, id: &HubId, needs: Needs) -> Result<PathBuf> {
    let failed = |e: ApiError| settings.download_failed(id, &explain(&e));
    let repo = api_repo(settings, id).map_err(failed)?;
    let info = repo.info().map_err(failed)?;
    let listed: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let snapshot = cache::repo_dir(&settings.cache, id)
        .join("snapshots")
        .join(&info.sha);
    let fetch_file = |file: &str| -> Result<()> {
        if !snapshot.join(file).is_file() {
            repo.download(file).map_err(failed)?;
        }
        Ok(())
    };
    eprintln!(
        "downloading {id} (commit {}) into {}",
        info.sha,
        settings.cache.display()
    );
    for file in files_to_fetch(settings, id, &listed, needs)? {
        fetch_file(file)?;
    }
    if needs == Needs::Model && !listed.contains(&WEIGHTS) {
        for shard in cache::shard_names(&snapshot.join(WEIGHTS_INDEX))? {
            fetch_file(&shard)?;
        }
    }
    write_ref(settings, id, &info.sha)?;
    let missing = cache::missing_files(&snapshot, needs);
    if !missing.is_empty() {
        return Err(settings.download_failed(
            id,
            &format!(
                "the snapshot {} still lacks {}",
                snapshot.display(),
                missing.join(", ")
            ),
        ));
    }
    Ok(snapshot)
}

fn api_repo(settings: &HubSettings, id: &HubId) -> std::result::Result<ApiRepo, ApiError> {
    let mut builder = ApiBuilder::from_cache(Cache::new(settings.cache.clone()))
        .with_progress(std::io::stderr().is_terminal());
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let repo = Repo::with_revision(id.repo.clone(), RepoType::Model, id.revision().to_string());
    Ok(builder.build()?.repo(repo))
}

/// The repo's files that `needs` asks for, the weights as one file or as the index
/// (its shards are read from it once it is downloaded).
fn files_to_fetch<'a>(
    settings: &HubSettings,
    id: &HubId,
    listed: &[&'a str],
    needs: Needs,
) -> Result<Vec<&'a str>> {
    let refuse = |what: &str| {
        let files = listed.join(", ");
        Err(settings.download_failed(id, &format!("the repo has {what} (its files: {files})")))
    };
    let Some(config) = listed.iter().find(|f| **f == "config.json") else {
        return refuse("no config.json: it is not a transformers model");
    };
    let mut files = vec![*config];
    if needs == Needs::Config {
        return Ok(files);
    }
    files.extend(listed.iter().filter(|f| MODEL_FILES.contains(f)));
    if needs == Needs::Tokenizer {
        return Ok(files);
    }
    match [WEIGHTS, WEIGHTS_INDEX].iter().find(|w| listed.contains(w)) {
        Some(weights) => files.push(weights),
        None => return refuse("no safetensors weights (model.safetensors or its index)"),
    }
    Ok(files)
}

/// `refs/<revision>` holds the commit, as `huggingface_hub` writes it (a commit hash
/// revision names its snapshot itself and gets no ref).
fn write_ref(settings: &HubSettings, id: &HubId, commit: &str) -> Result<()> {
    if is_commit_hash(id.revision()) {
        return Ok(());
    }
    let path = cache::repo_dir(&settings.cache, id)
        .join("refs")
        .join(id.revision());
    crate::io::write_atomic(&path, commit.as_bytes())
}

/// The Hub's or the network's answer in words, with what to do about it.
fn explain(error: &ApiError) -> String {
    let ApiError::RequestError(request) = error else {
        return error.to_string();
    };
    match request.as_ref() {
        ureq::Error::Status(401 | 403, _) => {
            "the Hub refused access (a gated or private model: accept its terms on the Hub \
             and set HF_TOKEN)"
                .to_string()
        }
        ureq::Error::Status(404, _) => "the Hub has no such model or revision".to_string(),
        ureq::Error::Status(code, _) => format!("the Hub answered HTTP {code}"),
        ureq::Error::Transport(transport) => {
            format!(
                "the network refused ({transport}; working offline? HF_HUB_OFFLINE=1 uses the cache alone)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HubSettings {
        HubSettings {
            cache: PathBuf::from("/cache"),
            offline: false,
        }
    }

    #[test]
    fn a_model_needs_its_config_tokenizer_and_weights_only() {
        let id = HubId::parse("org/name").unwrap();
        let listed = [
            ".gitattributes",
            "README.md",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "onnx/model.onnx",
            "pytorch_model.bin",
            "tokenizer.json",
            "tokenizer_config.json",
        ];
        let files = files_to_fetch(&settings(), &id, &listed, Needs::Model).unwrap();
        assert_eq!(
            files,
            [
                "config.json",
                "generation_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "model.safetensors"
            ]
        );
        let sharded = [
            "config.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
        ];
        let files = files_to_fetch(&settings(), &id, &sharded, Needs::Model).unwrap();
        assert_eq!(files, ["config.json", "model.safetensors.index.json"]);
        let config = files_to_fetch(&settings(), &id, &listed, Needs::Config).unwrap();
        assert_eq!(config, ["config.json"]);
    }

    #[test]
    fn a_repo_without_config_or_safetensors_is_refused_naming_its_files() {
        let id = HubId::parse("org/name").unwrap();
        let err = files_to_fetch(
            &settings(),
            &id,
            &["config.json", "pytorch_model.bin"],
            Needs::Model,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no safetensors weights") && err.contains("pytorch_model.bin"),
            "{err}"
        );
        let err = files_to_fetch(&settings(), &id, &["model.gguf"], Needs::Config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no config.json") && err.contains("org/name"),
            "{err}"
        );
    }
}
