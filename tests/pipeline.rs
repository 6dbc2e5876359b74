//! The distillation pipeline's sampling and evaluation commands, run as the built binary
//! on the real SmolLM2-135M-Instruct from the test-model cache: `scotd sample` killed
//! with SIGKILL mid-run and resumed (on the CPU and on the emulator), `sample` →
//! `verify --filter` → `eval` end to end with every reported number recomputed from the
//! written JSONL, and bad input.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn smollm2() -> String {
    path_arg(&common::real_model_dir("smollm2-135m-instruct"))
}

fn questions() -> String {
    path_arg(&common::fixture("data/gsm8k_test40.jsonl"))
}

fn path_arg(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn scotd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(args)
        .output()
        .unwrap()
}

fn succeed(args: &[&str]) -> String {
    let out = scotd(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "scotd {args:?} failed:\n{stderr}");
    stderr
}

fn fail(args: &[&str]) -> String {
    let out = scotd(args);
    assert!(!out.status.success(), "scotd {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn sample_args<'a>(out: &'a str, limit: &'a str, model: &'a str, data: &'a str) -> Vec<&'a str> {
    sample_args_on(("cpu", "40"), out, limit, model, data)
}

/// `scotd sample` on a device, with at most this many new tokens a trace.
fn sample_args_on<'a>(
    (device, max_new_tokens): (&'a str, &'a str),
    out: &'a str,
    limit: &'a str,
    model: &'a str,
    data: &'a str,
) -> Vec<&'a str> {
    vec![
        "sample",
        "--device",
        device,
        "--teacher",
        model,
        "--data",
        data,
        "--limit",
        limit,
        "--out",
        out,
        "--max-new-tokens",
        max_new_tokens,
        "--batch-size",
        "4",
    ]
}

/// The (question id, sample) pairs of trace lines, each once.
fn trace_pairs(lines: &[Value]) -> HashSet<String> {
    lines
        .iter()
        .map(|l| format!("{}/{}", l["id"], l["sample"]))
        .collect()
}

/// Lines of a file, waiting until it has at least `n` (or `limit` passes).
fn wait_for_lines(path: &Path, n: usize, limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        let lines = std::fs::read_to_string(path)
            .map(|t| t.matches('\n').count())
            .unwrap_or(0);
        if lines >= n || start.elapsed() > limit {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sample_resumes_after_kill_9_with_no_duplicate_or_torn_line() {
    sample_resumes_after_kill_9(KillRun {
        device: "cpu",
        questions: 12,
        max_new_tokens: "40",
    });
}

#[test]
fn sample_resumes_after_kill_9_on_the_emulator() {
    // The emulator decodes about 15 times slower than the CPU: a smaller run.
    sample_resumes_after_kill_9(KillRun {
        device: "emulator",
        questions: 8,
        max_new_tokens: "16",
    });
}

/// Two `scotd sample` on one --out: the second is refused at once (the first holds the
/// trace file's lock) and writes nothing, so no trace is sampled twice.
#[test]
fn a_second_sample_on_one_trace_file_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (smollm2(), questions());
    let out = dir.path().join("traces.jsonl");
    let out_arg = path_arg(&out);
    let args = sample_args_on(("cpu", "40"), &out_arg, "12", &model, &data);
    let mut first = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(&args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let before = wait_for_lines(&out, 1, Duration::from_secs(120));
    let stderr = fail(&args);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(before >= 1, "the first run wrote nothing");
    assert!(stderr.contains("another scotd job"), "{stderr}");
    let lines = json_lines(&out);
    assert_eq!(
        trace_pairs(&lines).len(),
        lines.len(),
        "a trace was written twice"
    );
}

/// A `scotd sample` run of the kill -9 test: its device, and a size that keeps it going
/// there long enough to be killed in the middle.
struct KillRun {
    device: &'static str,
    questions: usize,
    max_new_tokens: &'static str,
}

/// `scotd sample` killed with SIGKILL mid-run, a torn line appended, and rerun: the file
/// ends up holding exactly an uninterrupted run's lines, on the same device.
fn sample_resumes_after_kill_9(run: KillRun) {
    let dir = tempfile::tempdir().unwrap();
    let (model, data, n) = (smollm2(), questions(), run.questions);
    let reference = path_arg(&dir.path().join("reference.jsonl"));
    let resumed = dir.path().join("resumed.jsonl");
    let resumed_arg = path_arg(&resumed);
    let (on, limit) = ((run.device, run.max_new_tokens), n.to_string());
    let resumed_args = sample_args_on(on, &resumed_arg, &limit, &model, &data);
    succeed(&sample_args_on(on, &reference, &limit, &model, &data));

    let mut child = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(&resumed_args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let at_kill = wait_for_lines(&resumed, 3, Duration::from_secs(120));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");
    assert!((3..n).contains(&at_kill), "{at_kill} lines when killed");
    // A write cut short mid-line, as a crash during the write leaves it.
    let mut text = std::fs::read_to_string(&resumed).unwrap();
    text.push_str("{\"id\":12,\"question\":\"Tor");
    std::fs::write(&resumed, &text).unwrap();

    let stderr = succeed(&resumed_args);
    assert!(stderr.contains("cut a torn last line"), "{stderr}");
    let lines = json_lines(&resumed);
    let pairs = trace_pairs(&lines);
    assert_eq!(lines.len(), n);
    assert_eq!(pairs.len(), n, "duplicate (id, sample) pairs");
    // Greedy decoding does not depend on batch composition, so the resumed file holds
    // exactly the uninterrupted run's lines (in another order).
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(|l| l["id"].as_i64());
        v
    };
    assert_eq!(sorted(lines), sorted(json_lines(Path::new(&reference))));
    // A third run finds nothing to do.
    let stderr = succeed(&resumed_args);
    assert!(
        stderr.contains(&format!("{n} traces were already in")),
        "{stderr}"
    );
    assert!(stderr.contains("0 generated"), "{stderr}");
}

#[test]
fn several_samples_per_question_are_seeded_per_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (smollm2(), questions());
    let run = |name: &str, batch: &str| {
        let out = path_arg(&dir.path().join(name));
        succeed(&[
            "sample",
            "--teacher",
            &model,
            "--data",
            &data,
            "--limit",
            "2",
            "--out",
            &out,
            "--n",
            "3",
            "--temperature",
            "0.9",
            "--top-p",
            "0.95",
            "--seed",
            "5",
            "--max-new-tokens",
            "16",
            "--batch-size",
            batch,
        ]);
        let mut lines = json_lines(Path::new(&out));
        lines.sort_by_key(|l| (l["id"].as_i64(), l["sample"].as_u64()));
        lines
    };
    let a = run("a.jsonl", "6");
    assert_eq!(a.len(), 6);
    let traces: HashSet<&str> = a.iter().map(|l| l["trace"].as_str().unwrap()).collect();
    assert!(traces.len() >= 4, "samples barely differ: {traces:?}");
    assert_eq!(a, run("b.jsonl", "2"), "traces depend on the batch");
}

/// The Wilson 95% interval, written out here to check the report's.
fn wilson(k: f64, n: f64) -> (f64, f64) {
    let z = 1.959_963_985_f64;
    let p = k / n;
    let center = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (center - half, center + half)
}

#[test]
fn sample_filter_and_eval_end_to_end_with_numbers_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (smollm2(), questions());
    let traces = dir.path().join("traces.jsonl");
    let stderr = succeed(&[
        "sample",
        "--teacher",
        &model,
        "--data",
        &data,
        "--limit",
        "20",
        "--out",
        &path_arg(&traces),
        "--max-new-tokens",
        "160",
    ]);
    let lines = json_lines(&traces);
    assert_eq!(lines.len(), 20);
    let mut correct = 0;
    for l in &lines {
        let trace = l["trace"].as_str().unwrap();
        let verdict = scotd::verify::is_correct(l["gold"].as_str().unwrap(), trace);
        assert_eq!(l["correct"].as_bool(), Some(verdict), "{l}");
        let answer = scotd::verify::extract(trace).final_answer;
        assert_eq!(l["answer"].as_str(), answer.as_deref());
        assert!(l["tokens"].as_u64().unwrap() > 0);
        correct += verdict as usize;
    }
    assert!(
        stderr.contains(&format!("20 generated ({correct} correct")),
        "{stderr}"
    );

    let kept = dir.path().join("kept.jsonl");
    succeed(&[
        "verify",
        "--filter",
        &path_arg(&traces),
        "--out",
        &path_arg(&kept),
    ]);
    let kept_lines = json_lines(&kept);
    assert_eq!(kept_lines.len(), correct);
    assert!(kept_lines.iter().all(|l| l["correct"] == true));

    // Evaluate on the 20 other questions.
    let held_out = dir.path().join("held_out.jsonl");
    let text = std::fs::read_to_string(&data).unwrap();
    let others: Vec<&str> = text.lines().skip(20).collect();
    std::fs::write(&held_out, others.join("\n") + "\n").unwrap();
    let probes = dir.path().join("probes.txt");
    std::fs::write(&probes, "Hello!\nWhat is the capital of France?\n").unwrap();
    let eval_dir = dir.path().join("eval");
    succeed(&[
        "eval",
        "--model",
        &model,
        "--data",
        &path_arg(&held_out),
        "--out",
        &path_arg(&eval_dir),
        "--max-new-tokens",
        "160",
        "--probes",
        &path_arg(&probes),
    ]);
    let answers = json_lines(&eval_dir.join("answers.jsonl"));
    assert_eq!(answers.len(), 20);
    let n = answers.len() as f64;
    let correct = answers
        .iter()
        .filter(|a| {
            scotd::verify::is_correct(a["gold"].as_str().unwrap(), a["output"].as_str().unwrap())
        })
        .count();
    let think = answers
        .iter()
        .filter(|a| a["output"].as_str().unwrap().contains("think>"))
        .count();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["questions"], 20);
    assert_eq!(report["accuracy"]["count"].as_u64(), Some(correct as u64));
    assert!((report["accuracy"]["rate"].as_f64().unwrap() - correct as f64 / n).abs() < 1e-12);
    let (lo, hi) = wilson(correct as f64, n);
    assert!((report["accuracy_ci95"][0].as_f64().unwrap() - lo.max(0.0)).abs() < 1e-9);
    assert!((report["accuracy_ci95"][1].as_f64().unwrap() - hi.min(1.0)).abs() < 1e-9);
    assert_eq!(report["think"]["count"].as_u64(), Some(think as u64));
    let probe_replies = report["probes"].as_array().unwrap();
    assert_eq!(probe_replies.len(), 2);
    assert!(probe_replies[1]["reply"]
        .as_str()
        .unwrap()
        .contains("Paris"));
    let markdown = std::fs::read_to_string(eval_dir.join("report.md")).unwrap();
    let accuracy_cell = format!("{:.1}% (", 100.0 * correct as f64 / n);
    assert!(markdown.contains(&accuracy_cell), "{markdown}");

    let out = scotd(&[
        "eval",
        "--compare",
        &path_arg(&eval_dir),
        &path_arg(&eval_dir),
    ]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        table
            .lines()
            .nth(3)
            .unwrap()
            .matches(&accuracy_cell)
            .count(),
        2,
        "{table}"
    );
    let paired_row = format!("| 20 | {correct} | 0 | 0 | 1.000 |");
    assert!(table.contains(&paired_row), "{table}");
}

#[test]
fn bad_input_is_refused_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = (smollm2(), questions());
    let out = dir.path().join("traces.jsonl");
    let out_arg = path_arg(&out);
    succeed(&sample_args(&out_arg, "2", &model, &data));
    let before = std::fs::read(&out).unwrap();
    let bad_data = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path_arg(&path)
    };

    let err = fail(&sample_args(&out_arg, "2", "/no/such/teacher", &data));
    assert!(err.contains("/no/such/teacher"), "{err}");
    let no_question = bad_data(
        "q.jsonl",
        "{\"question\": \"A?\", \"answer\": \"#### 1\"}\n{\"answer\": \"#### 2\"}\n",
    );
    let err = fail(&sample_args(&out_arg, "2", &model, &no_question));
    assert!(
        err.contains("q.jsonl:2") && err.contains("question"),
        "{err}"
    );
    let wordy_gold = bad_data(
        "g.jsonl",
        "{\"question\": \"A?\", \"answer\": \"so\\n#### five\"}\n",
    );
    let err = fail(&sample_args(&out_arg, "2", &model, &wordy_gold));
    assert!(
        err.contains("g.jsonl:1") && err.contains("not a number"),
        "{err}"
    );
    let other = bad_data(
        "other.jsonl",
        "{\"question\": \"Other?\", \"answer\": \"#### 3\"}\n",
    );
    let err = fail(&sample_args(&out_arg, "2", &model, &other));
    assert!(
        err.contains("run.json")
            && err.contains("data (was")
            && err.contains("choose another --out"),
        "{err}"
    );
    let mut hotter = sample_args(&out_arg, "2", &model, &data);
    hotter.extend(["--temperature", "0.5", "--system", "Be brief."]);
    let err = fail(&hotter);
    assert!(
        err.contains("temperature (was 0.0, now 0.5)")
            && err.contains(r#"system (was null, now "Be brief.")"#),
        "{err}"
    );
    let mut greedy_many = sample_args(&out_arg, "2", &model, &data);
    greedy_many.extend(["--n", "2"]);
    let err = fail(&greedy_many);
    assert!(err.contains("temperature"), "{err}");
    let mut bad_budget = sample_args(&out_arg, "2", &model, &data);
    bad_budget.extend(["--kv-budget", "8 parsecs"]);
    let err = fail(&bad_budget);
    assert!(
        err.contains("--kv-budget") && err.contains("512MiB"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "the trace file changed"
    );

    let eval_dir = path_arg(&dir.path().join("eval"));
    let eval = |data: &str, tokens: &str| {
        scotd(&[
            "eval",
            "--model",
            &model,
            "--data",
            data,
            "--limit",
            "1",
            "--out",
            &eval_dir,
            "--max-new-tokens",
            tokens,
            "--probes",
            "none",
        ])
    };
    assert!(eval(&data, "8").status.success());
    let out = eval(&data, "9");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("run.json") && err.contains("another --out"),
        "{err}"
    );
}
