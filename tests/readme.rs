//! The README is true: every `scotd <command>` in its code blocks exists with every
//! `--flag` it is given (checked against `scotd <command> --help`, so commands added later
//! are covered), and every repository path it names in backquotes exists.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The lines of fenced `sh` blocks, continuation lines joined.
fn shell_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let code = line.split(" #").next().unwrap_or("").trim();
        current.push_str(code.trim_end_matches('\\'));
        current.push(' ');
        if !code.ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

/// `scotd [--profile] SUB [SUB2] ...` → (the command words, its flags).
fn scotd_invocation(command: &str) -> Option<(Vec<String>, Vec<String>)> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "scotd" || w.ends_with("/scotd"))?;
    let rest: Vec<&str> = words[at + 1..]
        .iter()
        .copied()
        .filter(|w| *w != "--profile")
        .collect();
    // `cd scotd && ...` names the folder, not the binary.
    let first = *rest
        .first()
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))?;
    let mut sub = vec![first.to_string()];
    // Two-level commands (probe record, bench train): the second word is lowercase.
    if let Some(second) = rest.get(1) {
        if matches!(first, "probe" | "bench") {
            sub.push(second.to_string());
        }
    }
    let flags = rest
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect();
    Some((sub, flags))
}

fn help(sub: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(sub)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scotd {} --help failed",
        sub.join(" ")
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `--flag` stands whole in the help (`--flag <V>`, or `[alias: --flag]`), not as the
/// start of a longer one.
fn names_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let next = help[at + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn every_scotd_command_and_flag_in_the_readme_exists() {
    let mut helps: HashMap<Vec<String>, String> = HashMap::new();
    let mut checked = 0;
    for command in shell_commands(&readme()) {
        let Some((sub, flags)) = scotd_invocation(&command) else {
            continue;
        };
        let help = helps.entry(sub.clone()).or_insert_with(|| help(&sub));
        for flag in flags {
            assert!(
                names_flag(help, &flag),
                "README: `scotd {}` has no {flag} (in: {command})",
                sub.join(" ")
            );
            checked += 1;
        }
    }
    assert!(
        checked > 30,
        "only {checked} flags found: is the parser still right?"
    );
}

/// Paths of the repository the README names in backquotes: those under its top-level
/// folders. Paths a user creates are not repository paths and start elsewhere
/// (`runs/`, `eval-v1`), so they are not matched.
#[test]
fn every_repository_path_in_the_readme_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = readme();
    let mut checked = 0;
    for (i, quoted) in text.split('`').enumerate() {
        // Odd pieces lie between backquotes; `(... .md)` links are checked too.
        let candidates: Vec<&str> = if i % 2 == 1 {
            quoted.split_whitespace().collect()
        } else {
            quoted
                .split(['(', ')'])
                .filter(|p| p.ends_with(".md") && !p.contains(' '))
                .collect()
        };
        for path in candidates {
            let path = path.trim_end_matches([',', ':', '.']);
            let top = [
                "src/", "tools/", "docs/", "tests/", "configs/", "benches/", "kernels/", "fuzz/",
            ];
            if !top.iter().any(|t| path.starts_with(t)) || path.contains(['<', '*', '{', '$']) {
                continue;
            }
            assert!(
                root.join(path).exists(),
                "README names {path}, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} paths found");
}
