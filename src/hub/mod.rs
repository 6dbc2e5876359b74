//! Model arguments that name a Hugging Face Hub model instead of a folder.
//!
//! [`resolve_model`] turns a model argument into a local folder: an existing path is used
//! as it is; `org/name` or `org/name@revision` (a branch, a tag or a commit hash) is looked
//! up in the Hugging Face cache in the layout `huggingface_hub` writes
//! (`models--org--name/snapshots/<commit>/`, `refs/<revision>` holding the commit), and,
//! when absent there and the network is allowed (`HF_HUB_OFFLINE` unset), downloaded into
//! that cache with the `hf-hub` crate (resumable, with a progress bar). Anything else is
//! returned unchanged, so that a path that does not exist fails where it is read, naming
//! the file.

mod cache;
mod download;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What a command reads from the model folder, so that only that is downloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// config.json alone (the benchmarks build a model of its shape).
    Config,
    /// config.json and the tokenizer files (counting tokens).
    Tokenizer,
    /// config.json, the tokenizer files and the safetensors weights.
    Model,
}

/// The local folder of a model argument: the path itself when it exists, the cached
/// (or just downloaded) snapshot when it is a Hub id, otherwise the argument unchanged.
pub fn resolve_model(arg: &Path, needs: Needs) -> Result<PathBuf> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    match arg.to_str().and_then(HubId::parse) {
        Some(id) => HubSettings::from_env()?.resolve(&id, needs),
        None => Ok(arg.to_path_buf()),
    }
}

/// A Hub model id and the revision asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// A branch, a tag or a 40-hex commit hash; `None` means `main`.
    pub revision: Option<String>,
}

impl HubId {
    /// `org/name` or `org/name@revision`, each part as the Hub allows it: ASCII letters,
    /// digits, `-`, `_` and `.`, at most 96 of them, not starting or ending with `-` or
    /// `.`, and without `--` or `..`. Anything else is not an id (`None`).
    pub fn parse(text: &str) -> Option<HubId> {
        let (repo, revision) = match text.split_once('@') {
            Some((repo, revision)) => (repo, Some(revision)),
            None => (text, None),
        };
        let (org, name) = repo.split_once('/')?;
        let revision_ok =
            |r: &str| !r.is_empty() && !r.contains("..") && !r.starts_with('/') && !r.contains(' ');
        if !(valid_part(org) && valid_part(name) && revision.is_none_or(revision_ok)) {
            return None;
        }
        Some(HubId {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
        })
    }

    /// The revision to resolve: the one asked for, else `main`.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The cache folder of the repo: `models--org--name`.
    fn folder_name(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    /// The command that downloads it with Hugging Face's own client.
    fn download_command(&self) -> String {
        match &self.revision {
            Some(revision) => format!(
                "huggingface-cli download {} --revision {revision}",
                self.repo
            ),
            None => format!("huggingface-cli download {}", self.repo),
        }
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.revision {
            Some(revision) => write!(f, "{}@{revision}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

fn valid_part(part: &str) -> bool {
    (1..=96).contains(&part.len())
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !part.starts_with(['-', '.'])
        && !part.ends_with(['-', '.'])
        && !part.contains("--")
        && !part.contains("..")
}

/// Where Hub models are cached and whether the network may be used, read from the
/// environment as `huggingface_hub` reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSettings {
    /// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache: PathBuf,
    /// `HF_HUB_OFFLINE` set to 1 (or true, yes, on): the cache only, no download.
    pub offline: bool,
}

impl HubSettings {
    pub fn from_env() -> Result<HubSettings> {
        HubSettings::from_vars(|name| std::env::var_os(name))
    }

    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<HubSettings> {
        let set = |name: &str| {
            var(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        let cache = set("HF_HUB_CACHE")
            .or_else(|| set("HF_HOME").map(|home| home.join("hub")))
            .or_else(|| set("XDG_CACHE_HOME").map(|cache| cache.join("huggingface/hub")))
            .or_else(|| set("HOME").map(|home| home.join(".cache/huggingface/hub")))
            .ok_or_else(|| {
                Error::format(
                    "(environment)",
                    "HF_HUB_CACHE",
                    "no Hugging Face cache folder: set HF_HUB_CACHE, HF_HOME or HOME",
                )
            })?;
        let offline = var("HF_HUB_OFFLINE").is_some_and(|value| {
            let value = value.to_string_lossy().to_ascii_lowercase();
            matches!(value.as_str(), "1" | "true" | "yes" | "on")
        });
        Ok(HubSettings { cache, offline })
    }

    /// The snapshot folder of `id` holding what `needs` asks for: from the cache, else
    /// downloaded (unless offline).
    pub fn resolve(&self, id: &HubId, needs: Needs) -> Result<PathBuf> {
        match cache::lookup(&self.cache, id, needs) {
            cache::Lookup::Complete(snapshot) => Ok(snapshot),
            found if self.offline => Err(self.unavailable(id, &found.describe(&self.cache))),
            _ => download::fetch(self, id, needs),
        }
    }

    /// The error for a model that is neither a folder nor usable from the cache offline.
    fn unavailable(&self, id: &HubId, found: &str) -> Error {
        Error::format(
            id.to_string(),
            "model",
            format!(
                "not a folder, and {found}; HF_HUB_OFFLINE is set, so it is not downloaded. \
                 Run `{}`, unset HF_HUB_OFFLINE to let scotd download it, or pass the \
                 model's folder",
                id.download_command()
            ),
        )
    }

    /// The error for a download that failed (`why`: the Hub's or the network's answer).
    fn download_failed(&self, id: &HubId, why: &str) -> Error {
        Error::format(
            id.to_string(),
            "model",
            format!(
                "not a folder, not (complete) in the Hugging Face cache {}, and downloading it failed: \
                 {why}. Run `{}` where the Hub can be reached (HF_HUB_CACHE or HF_HOME \
                 pointing at that cache), or pass the model's folder",
                self.cache.display(),
                id.download_command()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_org_slash_name_with_an_optional_revision() {
        let id = HubId::parse("Qwen/Qwen2.5-0.5B-Instruct").unwrap();
        assert_eq!(id.repo, "Qwen/Qwen2.5-0.5B-Instruct");
        assert_eq!(id.revision(), "main");
        assert_eq!(id.folder_name(), "models--Qwen--Qwen2.5-0.5B-Instruct");
        let pinned = HubId::parse("HuggingFaceTB/SmolLM2-135M-Instruct@v1.0_rc").unwrap();
        assert_eq!(pinned.revision(), "v1.0_rc");
        assert_eq!(
            pinned.to_string(),
            "HuggingFaceTB/SmolLM2-135M-Instruct@v1.0_rc"
        );
        for not_an_id in [
            "model",
            "runs/v1/final",
            "/abs/path",
            "./org/name",
            "../org/name",
            "~/models/x",
            "org/",
            "org/name@",
            "org--x/name",
            "org/name-",
            "org/na me",
        ] {
            assert_eq!(HubId::parse(not_an_id), None, "{not_an_id}");
        }
    }

    #[test]
    fn the_cache_folder_and_offline_mode_follow_huggingface_hubs_variables() {
        let settings = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, OsString)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect();
            HubSettings::from_vars(|name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
        };
        let all = [
            ("HF_HUB_CACHE", "/c"),
            ("HF_HOME", "/h"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(settings(&all).unwrap().cache, PathBuf::from("/c"));
        assert_eq!(settings(&all[1..]).unwrap().cache, PathBuf::from("/h/hub"));
        assert_eq!(
            settings(&all[2..]).unwrap().cache,
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        assert_eq!(
            settings(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")])
                .unwrap()
                .cache,
            PathBuf::from("/x/huggingface/hub")
        );
        let err = settings(&[]).unwrap_err().to_string();
        assert!(err.contains("set HF_HUB_CACHE, HF_HOME or HOME"), "{err}");
        for (value, offline) in [("1", true), ("TRUE", true), ("on", true), ("0", false)] {
            let s = settings(&[("HOME", "/u"), ("HF_HUB_OFFLINE", value)]).unwrap();
            assert_eq!(s.offline, offline, "HF_HUB_OFFLINE={value}");
        }
        assert!(!settings(&[("HOME", "/u")]).unwrap().offline);
    }

    #[test]
    fn an_existing_path_or_a_non_id_is_returned_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let org_name = dir.path().join("org/name");
        std::fs::create_dir_all(&org_name).unwrap();
        assert_eq!(resolve_model(&org_name, Needs::Model).unwrap(), org_name);
        let missing = Path::new("no/such/folder/here");
        assert_eq!(resolve_model(missing, Needs::Model).unwrap(), missing);
    }
}
