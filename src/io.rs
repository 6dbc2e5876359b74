//! File helpers shared by everything that writes outputs: writes are atomic, so a crash
//! never leaves a torn checkpoint or report behind.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and
/// renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Builds the folder `dir` atomically: `fill` writes into a temporary sibling folder,
/// which is synced and renamed into place, so readers see the old folder or the whole
/// new one, never a half-written one. An older folder at `dir` is renamed away, the new
/// one renamed in, and only then the old one deleted.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (parent, name) = parent_and_name(dir)?;
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let staging = parent.join(format!(".{name}.tmp{}", std::process::id()));
    // A leftover from a crashed run that had our pid: never a folder anyone reads.
    remove_dir_if_present(&staging)?;
    std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
    let built = fill(&staging)
        .and_then(|()| sync_dir(&staging))
        .and_then(|()| replace_dir(&staging, dir, parent, name));
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    built
}

fn parent_and_name(dir: &Path) -> Result<(&Path, &str)> {
    let name = dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::format(
            dir,
            "(path)",
            "expected a folder path ending in a UTF-8 name",
        )
    })?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent, name))
}

/// Moves the finished `staging` folder to `dir`, replacing any folder there.
fn replace_dir(staging: &Path, dir: &Path, parent: &Path, name: &str) -> Result<()> {
    let old = parent.join(format!(".{name}.old{}", std::process::id()));
    let had_old = match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_file() => {
            return Err(Error::format(
                dir,
                "(path)",
                "exists and is a file, expected a folder to replace",
            ))
        }
        Ok(_) => {
            remove_dir_if_present(&old)?;
            std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(dir, e)),
    };
    if let Err(e) = std::fs::rename(staging, dir) {
        if had_old {
            // Put the previous folder back: a failed save must not lose it.
            let _ = std::fs::rename(&old, dir);
        }
        return Err(Error::io(dir, e));
    }
    sync_dir(parent)?;
    if had_old {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

/// Makes a folder's entries (created or renamed files) durable, as fsync on each file
/// does not.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}
