//! Paths shared by the integration tests: committed fixtures, and the real models that
//! tools/fetch-test-models.sh puts in the cache.

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// `${SCOTD_CACHE:-$HOME/.cache/scotd}`, where tools/fetch-test-models.sh puts things.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SCOTD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/scotd")))
        .expect("neither SCOTD_CACHE nor HOME is set")
}

/// `${SCOTD_CACHE:-$HOME/.cache/scotd}/models/<name>`; fails with the fix when absent.
pub fn real_model_dir(name: &str) -> PathBuf {
    let dir = cache_dir().join("models").join(name);
    assert!(
        dir.is_dir(),
        "{} is missing: run tools/fetch-test-models.sh first (the README's test command does)",
        dir.display()
    );
    dir
}

/// A model with random weights from an inline config.json text.
pub fn random_model(config_json: &str, seed: u64) -> scotd::model::Model {
    let config =
        scotd::model::ModelConfig::from_json(config_json, std::path::Path::new("inline")).unwrap();
    scotd::model::Model::random(config, seed)
}
