//! The answer verifier: a committed corpus of (output, gold, verdict) cases covering each
//! extraction and normalisation rule, and `scotd verify --pairs` / `--filter` run as the
//! built binary on small fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scotd::verify::Method;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/verify")
        .join(name)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn scotd_verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scotd"))
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn corpus_verdicts_match() {
    let text = std::fs::read_to_string(fixture("cases.jsonl")).unwrap();
    let cases = json_lines(&text);
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter(|(_, case)| {
            let verdict = scotd::verify::is_correct(
                case["gold"].as_str().unwrap(),
                case["output"].as_str().unwrap(),
            );
            verdict != case["correct"].as_bool().unwrap()
        })
        .map(|(i, case)| format!("line {}: {}: {}", i + 1, case["note"], case["output"]))
        .collect();
    let agreed = cases.len() - failures.len();
    // Printed with --nocapture: the verifier's accuracy on the corpus.
    eprintln!(
        "verifier accuracy on the corpus: {agreed}/{} = {:.1}%",
        cases.len(),
        100.0 * agreed as f64 / cases.len() as f64
    );
    assert!(
        failures.is_empty(),
        "wrong verdicts:\n{}",
        failures.join("\n")
    );
}

#[test]
fn corpus_covers_both_verdicts_and_real_gsm8k_golds() {
    let text = std::fs::read_to_string(fixture("cases.jsonl")).unwrap();
    let cases = json_lines(&text);
    let wrong = cases.iter().filter(|c| c["correct"] == false).count();
    assert!(
        wrong >= 80 && cases.len() - wrong >= 80,
        "{wrong} of {}",
        cases.len()
    );
    let gsm8k_rows: std::collections::HashSet<&str> = cases
        .iter()
        .filter(|c| c["gold"].as_str().unwrap().contains("\n#### "))
        .filter_map(|c| c["question"].as_str())
        .collect();
    assert!(gsm8k_rows.len() >= 40, "{} GSM8K rows", gsm8k_rows.len());
    assert!(cases
        .iter()
        .all(|c| c["note"].as_str().is_some_and(|n| !n.is_empty())));
}

#[test]
fn think_and_final_answers_are_both_reported() {
    let disagree = scotd::verify::extract(
        "<think>\n9 * 2 = 18, so \\boxed{18}\n</think>\n\nOn reflection the answer is: 17",
    );
    assert_eq!(disagree.think_answer.as_deref(), Some("18"));
    assert_eq!(disagree.final_answer.as_deref(), Some("17"));
    assert_eq!(disagree.method, Method::AnswerIs);

    let cut_off = scotd::verify::extract("<think>\n16 - 7 = 9, 9 * 2 = 18");
    assert_eq!(cut_off.think_answer.as_deref(), Some("18"));
    assert_eq!(
        cut_off.final_answer, None,
        "no final answer before </think>"
    );
    assert_eq!(cut_off.method, Method::NotFound);

    let no_think = scotd::verify::extract("So \\boxed{18}.");
    assert_eq!(no_think.think_answer, None);
    assert_eq!(no_think.final_answer.as_deref(), Some("18"));
}

#[test]
fn pairs_are_annotated_with_answers_and_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("verdicts.jsonl");
    let run = scotd_verify(&[
        "--pairs",
        path_str(&fixture("pairs.jsonl")),
        "--out",
        path_str(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("2/4 = 50.0%"), "{}", stderr(&run));
    let lines = json_lines(&std::fs::read_to_string(out).unwrap());
    let verdicts: Vec<bool> = lines
        .iter()
        .map(|l| l["correct"].as_bool().unwrap())
        .collect();
    assert_eq!(verdicts, [true, true, false, false]);
    assert_eq!(lines[1]["final_answer"], "1{,}080");
    assert_eq!(lines[1]["think_answer"], "1000");
    assert_eq!(lines[2]["think_answer"], "0.75");
    assert_eq!(lines[3]["final_answer"], Value::Null);
    assert_eq!(lines[0]["id"], 1, "input fields are kept");
}

#[test]
fn pairs_go_to_stdout_without_out() {
    let run = scotd_verify(&["--pairs", path_str(&fixture("pairs.jsonl"))]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(json_lines(&String::from_utf8(run.stdout).unwrap()).len(), 4);
}

#[test]
fn malformed_pairs_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"gold\": 1, \"output\": \"1\"}\n\n{\"gold\": 2}\n",
    )
    .unwrap();
    let run = scotd_verify(&["--pairs", path_str(&pairs)]);
    assert!(!run.status.success());
    let message = stderr(&run);
    assert!(
        message.contains("pairs.jsonl:3: output: missing"),
        "{message}"
    );
}

#[test]
fn filter_keeps_reverified_correct_traces_and_counts_per_question() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kept.jsonl");
    let run = scotd_verify(&[
        "--filter",
        path_str(&fixture("traces.jsonl")),
        "--out",
        path_str(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let message = stderr(&run);
    for expected in [
        "a: 2/3",
        "b: 1/2",
        "c: 0/1",
        "kept 3/6 traces; 2/3 questions",
    ] {
        assert!(message.contains(expected), "{expected} not in {message}");
    }
    let kept = json_lines(&std::fs::read_to_string(out).unwrap());
    let samples: Vec<(&str, u64)> = kept
        .iter()
        .map(|l| (l["id"].as_str().unwrap(), l["sample"].as_u64().unwrap()))
        .collect();
    assert_eq!(samples, [("a", 0), ("a", 2), ("b", 0)]);
    assert!(kept.iter().all(|l| l["correct"] == true));
    assert_eq!(kept[2]["answer"], "1000 dollars");
}

#[test]
fn malformed_traces_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces.jsonl");
    std::fs::write(&traces, "{\"id\": 1, \"gold\": 5, \"trace\": \"5\"}\n").unwrap();
    let out = dir.path().join("kept.jsonl");
    let run = scotd_verify(&["--filter", path_str(&traces), "--out", path_str(&out)]);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("traces.jsonl:1: gold: expected a string"));
    assert!(!out.exists(), "no output on error");
}
