//! File helpers shared by everything that writes outputs: writes are atomic, so a crash
//! never leaves a torn checkpoint or report behind.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and
/// renamed into place, the folder synced after.
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
    remove_stale_staging(dir, &file_name);
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
    // The rename is durable only once the folder's entry is.
    sync_dir(dir)
}

/// A text file's contents: a UTF-8 byte-order mark dropped (editors on Windows write
/// one, and JSON parsers reject it as "expected value at line 1 column 1"), and invalid
/// UTF-8 reported with its line and byte.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_text(path, bytes)
}

fn decode_text(path: &Path, mut bytes: Vec<u8>) -> Result<String> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        Error::format(
            path,
            "(text)",
            format!("invalid UTF-8 at line {line}, byte {column} of the line: expected UTF-8 text"),
        )
    })
}

/// Builds the folder `dir` atomically: `fill` writes into a temporary sibling folder,
/// which is synced and renamed into place, so readers see the old folder or the whole
/// new one, never a half-written one. An older folder at `dir` is renamed away, the new
/// one renamed in, and only then the old one deleted.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (parent, name) = parent_and_name(dir)?;
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    remove_stale_staging(parent, name);
    let staging = parent.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
    let built = fill(&staging)
        .and_then(|()| sync_dir(&staging))
        .and_then(|()| replace_dir(&staging, dir, parent, name));
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    built
}

/// Removes the staging files and folders (`.NAME.tmpPID`, `.NAME.oldPID`) that atomic
/// writes of `name` interrupted by a crash left in `parent`: those whose process is gone
/// (or is this one, reusing a dead run's pid). The new write supersedes them. Best
/// effort: a leftover that cannot be listed or removed does not stop the write.
fn remove_stale_staging(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| staging_pid(n, name)) else {
            continue;
        };
        if pid == std::process::id() || !process_alive(pid) {
            let _ = remove_if_present(&entry.path());
        }
    }
}

/// The pid in `.NAME.tmpPID` or `.NAME.oldPID`, the names atomic writes stage under.
fn staging_pid(file_name: &str, name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(name)?;
    let pid = rest
        .strip_prefix(".tmp")
        .or_else(|| rest.strip_prefix(".old"))?;
    pid.parse().ok()
}

/// Whether a process has this pid; where that cannot be told (no /proc), assumed alive,
/// so another live writer's folder is never removed.
fn process_alive(pid: u32) -> bool {
    !Path::new("/proc/self").exists() || Path::new(&format!("/proc/{pid}")).exists()
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
            remove_if_present(&old)?;
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

fn remove_if_present(path: &Path) -> Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
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

/// A JSONL file that a long job appends to, one line per finished item, so that a rerun
/// after a crash skips what is done. Each line goes out in one write of the whole line
/// and its newline, so a crash can only leave a last line without its newline; opening
/// cuts such a torn tail off, and the file never holds a partial record.
pub struct AppendLog {
    file: std::fs::File,
    path: std::path::PathBuf,
}

/// The records already in an [`AppendLog`]'s file when it was opened.
pub struct Resumed<T> {
    pub records: Vec<T>,
    /// Bytes of a torn last line that were cut off (0 when the file was whole).
    pub cut_bytes: usize,
}

impl AppendLog {
    /// Opens `path` for appending, creating it (and its folder) if needed, and reads the
    /// records already there. A complete line that does not parse as `T` is an error
    /// naming its line: the file is someone else's, and nothing is appended to it. The
    /// log holds an exclusive advisory lock on the file while it lives: a second job on the
    /// same file is refused at once instead of writing every record twice.
    pub fn open<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(AppendLog, Resumed<T>)> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        lock_exclusively(&file, path)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(|e| Error::io(path, e))?;
        let text = decode_text(path, bytes)?;
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        let records = parse_lines(path, &text[..whole])?;
        let cut_bytes = text.len() - whole;
        if cut_bytes > 0 {
            file.set_len(whole as u64).map_err(|e| Error::io(path, e))?;
        }
        let log = AppendLog {
            file,
            path: path.to_path_buf(),
        };
        Ok((log, Resumed { records, cut_bytes }))
    }

    /// Appends one record as one line, written in one go.
    pub fn append(&mut self, record: &impl serde::Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(record)
            .map_err(|e| Error::format(&self.path, "(json)", e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Makes every appended line durable (the OS keeps them across a killed process
    /// anyway; this is for power loss).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

/// Records a job's settings (a JSON object) in `path`, or checks that the ones there
/// are these: a resumed job with other settings would mix two kinds of results in one
/// file, so it is refused, naming each setting that differs.
pub fn claim_settings(path: &Path, settings: &serde_json::Value) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = serde_json::to_vec_pretty(settings).expect("plain JSON");
            return write_atomic(path, &text);
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let recorded: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, "(settings)", format!("not a settings file: {e}")))?;
    let differences = differing_settings(&recorded, settings);
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::format(
        path,
        "(settings)",
        format!(
            "the results beside this file were made with other settings: {}; rerun with those, or choose another --out",
            differences.join(", ")
        ),
    ))
}

/// "name (was A, now B)" for each top-level setting that differs.
pub(crate) fn differing_settings(
    recorded: &serde_json::Value,
    now: &serde_json::Value,
) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> =
        setting_names(recorded).chain(setting_names(now)).collect();
    let null = serde_json::Value::Null;
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (
                recorded.get(name).unwrap_or(&null),
                now.get(name).unwrap_or(&null),
            );
            (a != b).then(|| format!("{name} (was {a}, now {b})"))
        })
        .collect()
}

/// The top-level names of a settings object (none when it is not an object).
fn setting_names(settings: &serde_json::Value) -> impl Iterator<Item = &String> {
    settings
        .as_object()
        .into_iter()
        .flat_map(|fields| fields.keys())
}

/// Creates `dir` if needed and takes the exclusive advisory lock of its `.lock` file for
/// as long as the returned file lives: one job at a time writes the folder, a second one
/// is refused at once.
pub fn lock_folder(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    lock_exclusively(&file, dir)?;
    Ok(file)
}

/// Takes `file`'s exclusive advisory lock (released when the file is closed, also by a
/// killed process); an error naming `path` when another job holds it.
fn lock_exclusively(file: &std::fs::File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::format(
            path,
            "(lock)",
            "another scotd job is writing this (it holds the lock): wait for it to finish, or write elsewhere",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

/// Every record of a JSONL file that an [`AppendLog`] wrote (blank lines skipped), read
/// without opening it for appending; a line that does not parse as `T` is an error naming
/// its line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = read_text(path)?;
    parse_lines(path, &text)
}

fn parse_lines<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<Vec<T>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::format(
                    format!("{}:{}", path.display(), i + 1),
                    "(json)",
                    format!("not a record of this file's kind: {e}"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Item {
        n: u32,
    }

    #[test]
    fn append_log_resumes_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/log.jsonl");
        let (mut log, resumed) = AppendLog::open::<Item>(&path).unwrap();
        assert!(resumed.records.is_empty());
        log.append(&Item { n: 1 }).unwrap();
        log.append(&Item { n: 2 }).unwrap();
        drop(log);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"n\": 3");
        std::fs::write(&path, &text).unwrap();
        let (mut log, resumed) = AppendLog::open::<Item>(&path).unwrap();
        assert_eq!(resumed.records, vec![Item { n: 1 }, Item { n: 2 }]);
        assert_eq!(resumed.cut_bytes, 7);
        log.append(&Item { n: 3 }).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    }

    #[test]
    fn a_second_log_on_one_file_is_refused_while_the_first_lives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let (mut first, _) = AppendLog::open::<Item>(&path).unwrap();
        let err = AppendLog::open::<Item>(&path).err().unwrap().to_string();
        assert!(
            err.contains("log.jsonl") && err.contains("another scotd job"),
            "{err}"
        );
        first.append(&Item { n: 1 }).unwrap();
        drop(first);
        let (_, resumed) = AppendLog::open::<Item>(&path).unwrap();
        assert_eq!(resumed.records, vec![Item { n: 1 }]);
    }

    #[test]
    fn a_save_removes_what_crashed_saves_of_its_folder_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dead_pid = 4_000_000_000u32; // above any pid_max
        let live_pid = 1; // init: always running
        let leftovers = [
            format!(".model.tmp{dead_pid}"),
            format!(".model.old{dead_pid}"),
            format!(".model.tmp{}", std::process::id()),
        ];
        let kept = [
            format!(".model.tmp{live_pid}"),
            format!(".other.tmp{dead_pid}"),
            ".model.tmpX".to_string(),
        ];
        for name in leftovers.iter().chain(&kept) {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
            std::fs::write(tmp.path().join(name).join("config.json"), "{}").unwrap();
        }
        std::fs::write(tmp.path().join(format!(".report.json.tmp{dead_pid}")), "{").unwrap();
        write_atomic(&tmp.path().join("report.json"), b"{}").unwrap();
        let dir = tmp.path().join("model");
        write_dir_atomic(&dir, |staging| write_atomic(&staging.join("a"), b"1")).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut expected: Vec<String> = kept.to_vec();
        expected.extend(["model".into(), "report.json".into()]);
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn a_folder_is_locked_by_one_job_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let held = lock_folder(&run).unwrap();
        let err = lock_folder(&run).unwrap_err().to_string();
        assert!(
            err.contains("run") && err.contains("another scotd job"),
            "{err}"
        );
        drop(held);
        lock_folder(&run).unwrap();
    }

    #[test]
    fn settings_are_recorded_then_each_difference_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let first = serde_json::json!({"model": "a", "temperature": 0.7, "n": 4});
        claim_settings(&path, &first).unwrap();
        claim_settings(&path, &first).unwrap();
        let other = serde_json::json!({"model": "b", "temperature": 0.7, "top_k": 5});
        let err = claim_settings(&path, &other).unwrap_err().to_string();
        for named in [
            r#"model (was "a", now "b")"#,
            "n (was 4, now null)",
            "top_k (was null, now 5)",
        ] {
            assert!(err.contains(named), "{named}: {err}");
        }
        assert!(!err.contains("temperature"), "{err}");
    }

    #[test]
    fn text_loses_its_byte_order_mark_and_bad_utf8_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, b"\xEF\xBB\xBF{\"n\":1}\n").unwrap();
        assert_eq!(read_jsonl::<Item>(&path).unwrap(), vec![Item { n: 1 }]);
        std::fs::write(&path, b"{\"n\":1}\n{\"n\":\xFF2}\n").unwrap();
        let err = read_text(&path).unwrap_err().to_string();
        assert!(
            err.contains("a.jsonl") && err.contains("line 2, byte 6"),
            "{err}"
        );
    }

    #[test]
    fn append_log_refuses_a_file_of_another_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"m\":2}\n").unwrap();
        let err = AppendLog::open::<Item>(&path).err().unwrap().to_string();
        assert!(err.contains("log.jsonl:2"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"m\":2}\n"
        );
    }
}
