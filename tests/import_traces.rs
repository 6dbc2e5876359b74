//! `scotd import-traces` run as a user runs it: foreign question/output rows (field-name
//! variants, OpenAI responses, a `messages` list, with and without gold or id) joined to
//! the committed GSM8K fixture, verified into trace JSONL that `scotd verify --filter`
//! and the trainer's trace reader accept.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scotd::data::{read_rows, BadLines, DataFormat, ReasoningFormat, TraceRecord};
use scotd::tokenizer::Tokenizer;
use serde_json::{json, Value};

fn tokenizer_dir() -> PathBuf {
    common::real_model_dir("smollm2-135m-instruct")
}

fn answers() -> PathBuf {
    common::fixture("import/answers.jsonl")
}

fn bad_answers() -> PathBuf {
    common::fixture("import/more_answers_bad.jsonl")
}

fn gsm8k() -> PathBuf {
    common::fixture("data/gsm8k.jsonl")
}

fn import(inputs: &[&Path], out: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scotd"))
        .arg("import-traces")
        .args(inputs)
        .arg("--out")
        .arg(out)
        .arg("--tokenizer")
        .arg(tokenizer_dir())
        .args(flags)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn gsm8k_question(line: usize) -> String {
    let text = std::fs::read_to_string(gsm8k()).unwrap();
    let row: Value = serde_json::from_str(text.lines().nth(line - 1).unwrap()).unwrap();
    row["question"].as_str().unwrap().to_string()
}

/// The expected line of a trace, its `tokens` counted by the tokenizer the command got.
fn expected(
    id: Value,
    question: &str,
    gold: &str,
    sample: u64,
    (trace, answer, correct): (&str, &str, bool),
) -> Value {
    let tokenizer = Tokenizer::from_dir(&tokenizer_dir()).unwrap();
    let tokens = tokenizer.encode(trace, false).unwrap().len();
    json!({"id": id, "question": question, "gold": gold, "sample": sample, "trace": trace,
           "answer": answer, "correct": correct, "tokens": tokens})
}

fn expected_traces() -> Vec<Value> {
    let q = gsm8k_question;
    vec![
        expected(json!(1), &q(1), "72", 0, ("In May she sold 48/2 = 24 clips, so 48 + 24 = 72 in all.\n\\boxed{72}", "72", true)),
        expected(json!(1), &q(1), "72", 1, ("She sold 48 in April and 22 in May. The answer is 70.", "70", false)),
        expected(json!("weng"), &q(2), "10", 0, ("12/60 = 0.2 dollars a minute; 0.2 * 50 = 10.\n\\boxed{10}", "10", true)),
        expected(json!(3), &q(3), "5", 0, ("<think>She has 50, parents give 15, grandparents 30: 95.</think>\nShe still needs \\boxed{5}.", "5", true)),
        expected(json!(4), &q(4), "42", 0, ("Today 24 pages, 84 left, half is 42.\n\\boxed{42}", "42", true)),
        expected(json!("james-1"), &q(5), "624", 0, ("3 * 2 * 2 = 12 pages a week, 12 * 52 = 624.\n\\boxed{624}", "624", true)),
        expected(json!("answers.jsonl:8"), "What is 3 + 1?", "4", 0, ("3 + 1 = 4, so \\boxed{4}", "4", true)),
        expected(json!(9), &q(9), "1,080", 0, ("Taxes take $4 a day, so $36 a day and $1,080 over 30 days. The answer is $1,080.", "$1,080", true)),
        expected(json!(10), &q(10), "1,000,000", 0, (" Women are 3 million, a third have cats.\n\\boxed{1,000,000}", "1,000,000", true)),
    ]
}

#[test]
fn foreign_rows_become_exactly_the_expected_verified_traces() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces.jsonl");
    let gsm8k = gsm8k();
    let run = import(&[&answers()], &out, &["--gsm8k", gsm8k.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let got = lines(&out);
    let want = expected_traces();
    assert_eq!(got.len(), want.len());
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got, want);
    }
    let log = stderr(&run);
    assert!(
        log.contains("10 rows read, 6 golds joined from GSM8K, 8/9 correct, 9 written; skipped: 1 without gold, 0 bad lines"),
        "{log}"
    );
    assert!(log.contains("answers.jsonl:7: What is 2 + 2?"), "{log}");
}

#[test]
fn imported_traces_are_read_by_verify_filter_and_the_trainer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces.jsonl");
    let gsm8k = gsm8k();
    let run = import(&[&answers()], &out, &["--gsm8k", gsm8k.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));

    let kept = dir.path().join("kept.jsonl");
    let filter = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(["verify", "--filter"])
        .arg(&out)
        .arg("--out")
        .arg(&kept)
        .output()
        .unwrap();
    assert!(filter.status.success(), "{}", stderr(&filter));
    assert!(
        stderr(&filter).contains("kept 8/9 traces"),
        "{}",
        stderr(&filter)
    );
    let kept_lines = lines(&kept);
    assert!(kept_lines.iter().all(|line| line["correct"] == json!(true)));
    for line in &kept_lines {
        serde_json::from_value::<TraceRecord>(line.clone()).unwrap();
    }

    let (rows, report) = read_rows(
        &out,
        DataFormat::Traces,
        &ReasoningFormat::default(),
        None,
        BadLines::Fail,
    )
    .unwrap();
    assert_eq!(rows.len(), 8, "{report}");
    assert_eq!(report.incorrect_traces, 1);
    assert_eq!(rows[0].id, "1");
}

#[test]
fn keep_correct_writes_only_the_traces_the_verifier_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces.jsonl");
    let gsm8k = gsm8k();
    let run = import(
        &[&answers()],
        &out,
        &["--gsm8k", gsm8k.to_str().unwrap(), "--keep", "correct"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let want: Vec<Value> = expected_traces()
        .into_iter()
        .filter(|t| t["correct"] == json!(true))
        .collect();
    assert_eq!(lines(&out), want);
}

#[test]
fn without_gsm8k_rows_lacking_gold_are_skipped_or_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces.jsonl");
    let run = import(&[&answers()], &out, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let ids: Vec<Value> = lines(&out).iter().map(|l| l["id"].clone()).collect();
    assert_eq!(
        ids,
        [
            json!("weng"),
            json!("answers.jsonl:4"),
            json!("answers.jsonl:8")
        ]
    );
    assert!(
        stderr(&run).contains("skipped: 7 without gold"),
        "{}",
        stderr(&run)
    );

    let fail = import(&[&answers()], &out, &["--missing-gold", "fail"]);
    assert!(!fail.status.success());
    assert!(
        stderr(&fail).contains("answers.jsonl:1: gold"),
        "{}",
        stderr(&fail)
    );
}

#[test]
fn a_bad_line_names_its_file_and_line_and_stops_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces.jsonl");
    let gsm8k = gsm8k();
    let gsm8k_flag = ["--gsm8k", gsm8k.to_str().unwrap()];
    let fail = import(&[&answers(), &bad_answers()], &out, &gsm8k_flag);
    assert!(!fail.status.success());
    let log = stderr(&fail);
    assert!(
        log.contains("more_answers_bad.jsonl:2: output: missing"),
        "{log}"
    );
    assert!(!out.exists(), "nothing is written when the import stops");

    let skip = import(
        &[&answers(), &bad_answers()],
        &out,
        &[gsm8k_flag[0], gsm8k_flag[1], "--skip-bad-lines"],
    );
    assert!(skip.status.success(), "{}", stderr(&skip));
    let log = stderr(&skip);
    assert!(
        log.contains("skipped ") && log.contains("more_answers_bad.jsonl:2"),
        "{log}"
    );
    assert!(
        log.contains("12 rows read") && log.contains("1 bad lines"),
        "{log}"
    );
    let ids: Vec<Value> = lines(&out).iter().map(|l| l["id"].clone()).collect();
    assert_eq!(ids[9..], [json!(7), json!(6)]);
}

#[test]
fn a_gsm8k_question_twice_with_different_golds_names_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let conflicting = dir.path().join("gsm8k.jsonl");
    std::fs::write(
        &conflicting,
        concat!(
            "{\"question\": \"What is 2 + 2?\", \"answer\": \"#### 4\"}\n",
            "{\"question\": \"What is 3 + 3?\", \"answer\": \"#### 6\"}\n",
            "{\"question\": \" What is  2 + 2?\", \"answer\": \"#### 5\"}\n",
        ),
    )
    .unwrap();
    let out = dir.path().join("traces.jsonl");
    let run = import(
        &[&answers()],
        &out,
        &["--gsm8k", conflicting.to_str().unwrap()],
    );
    assert!(!run.status.success());
    let log = stderr(&run);
    assert!(
        log.contains("gsm8k.jsonl:3") && log.contains("line 1"),
        "{log}"
    );
}
