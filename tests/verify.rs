//! The answer verifier: a committed corpus of (output, gold, verdict) cases covering each
//! extraction and normalisation rule, and `scotd verify --pairs` / `--filter` run as the
//! built binary on small fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use scotd::verify::{compare, equivalent, is_correct, Method, Unverifiable, Verdict};
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

// Hostile input (issue 17): numbers past f64, deep nesting and huge outputs.

#[test]
fn numbers_past_f64_are_never_equal_to_anything_but_themselves() {
    assert!(!equivalent("1e999", "5"));
    assert!(!is_correct("1e999", "\\boxed{5}"), "an overflowing gold");
    assert!(!is_correct("5", "\\boxed{1e999}"), "an overflowing answer");
    assert!(is_correct("1e999", "The answer is 1e999."));
    assert!(!equivalent("1e999", "1e998"));
    assert!(!equivalent("-1e999", "1e999"));
    let four_hundred_digits = format!("1{}", "0".repeat(400));
    assert!(!equivalent(&four_hundred_digits, "7"));
    assert!(equivalent(&four_hundred_digits, "10^{400}"));
}

#[test]
fn powers_past_f64_compare_exactly() {
    assert!(equivalent("10^{400}", "10^{400}"));
    assert!(!equivalent("10^{400}", "10^{401}"));
    assert!(is_correct("10^{400}", "so \\boxed{10^{400}}"));
    assert!(equivalent("2^{2000}", "4^{1000}"));
    assert!(!equivalent("2^{2000}", "4^{1000} + 1"));
    assert!(equivalent("1.5 \\times 10^{500}", "15 \\times 10^{499}"));
    assert!(equivalent("\\frac{10^{400}}{10^{399}}", "10"));
}

#[test]
fn ten_thousand_digit_numbers_compare_digit_by_digit() {
    let digits: String = (0..10_000)
        .map(|i| char::from(b'1' + (i % 9) as u8))
        .collect();
    assert!(equivalent(&digits, &digits));
    assert!(is_correct(&digits, &format!("\\boxed{{{digits}}}")));
    let mut last_differs = digits.clone();
    last_differs.pop();
    last_differs.push('0');
    assert!(!equivalent(&digits, &last_differs));
    assert!(!is_correct(&digits, &format!("\\boxed{{{last_differs}}}")));
}

#[test]
fn nan_and_infinity_spellings_are_never_equal() {
    for spelling in [
        "NaN",
        "nan",
        "inf",
        "-inf",
        "+Infinity",
        "\\infty",
        "-\\infty",
        "∞",
    ] {
        assert_eq!(
            compare(spelling, spelling),
            Verdict::NotVerified(Unverifiable::NotFinite),
            "{spelling}"
        );
        assert!(!equivalent(spelling, "5"), "{spelling}");
        assert!(!is_correct(spelling, &format!("\\boxed{{{spelling}}}")));
        assert!(!is_correct("7", &format!("\\boxed{{{spelling}}}")));
    }
}

/// `n` levels of `\frac{…}{2}` around a 1.
fn nested_fractions(levels: usize) -> String {
    format!("{}1{}", "\\frac{".repeat(levels), "}{2}".repeat(levels))
}

/// Runs `check` on a thread with a 256 KB stack: a recursion as deep as the input
/// would overflow it and abort the test process.
fn on_small_stack(check: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(check)
        .unwrap()
        .join()
        .expect("the check finished on a 256 KB stack");
}

#[test]
fn deeply_nested_fractions_get_a_verdict_without_deep_recursion() {
    on_small_stack(|| {
        let half_megabyte = nested_fractions(500_000 / 10);
        assert!(half_megabyte.len() >= 500_000);
        let boxed = format!("\\boxed{{{half_megabyte}}}");
        assert!(!is_correct("1", &boxed));
        assert!(!is_correct(&half_megabyte, "\\boxed{1}"), "as the gold");
        assert!(
            is_correct("2", &half_megabyte),
            "unboxed: the last denominator"
        );
        assert_eq!(
            compare(&half_megabyte, &half_megabyte),
            Verdict::NotVerified(Unverifiable::AnswerTooLong)
        );
        let deep_but_short = nested_fractions(5_000);
        assert!(deep_but_short.len() < scotd::verify::MAX_ANSWER_BYTES);
        assert_eq!(
            compare(&deep_but_short, "1"),
            Verdict::NotVerified(Unverifiable::NestingTooDeep)
        );
        assert!(scotd::verify::normalize(&deep_but_short).is_none());
    });
}

#[test]
fn nesting_within_the_bound_still_parses() {
    assert!(equivalent(&nested_fractions(3), "0.125"));
    let depth = scotd::verify::MAX_NESTING_DEPTH - 1;
    let power_of_two = format!("\\frac{{1}}{{{}}}", 1u64 << depth);
    assert!(equivalent(&nested_fractions(depth), &power_of_two));
}

/// Asserts `check` runs in well under a second (2 s, for a loaded machine).
fn quickly(what: &str, check: impl FnOnce()) {
    let start = Instant::now();
    check();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "{what} took {took:?}");
}

#[test]
fn a_megabyte_of_boxes_is_read_in_linear_time() {
    let unclosed = "\\boxed{".repeat((1 << 20) / 7);
    quickly("unclosed boxes", || assert!(!is_correct("5", &unclosed)));
    let levels = (1 << 20) / 8;
    let nested = format!("{}5{}", "\\boxed{".repeat(levels), "}".repeat(levels));
    quickly("nested boxes", || assert!(is_correct("5", &nested)));
    let spaced = "\\boxed ".repeat((1 << 20) / 7);
    quickly("boxes without braces", || {
        assert!(!is_correct("5", &spaced))
    });
}

#[test]
fn a_megabyte_of_other_answer_markers_is_read_in_linear_time() {
    let answer_is = format!(
        "the answer is 5. {}",
        "and the answer is ".repeat((1 << 20) / 18)
    );
    quickly("answer is", || assert!(is_correct("5", &answer_is)));
    let hashes = "#### ".repeat((1 << 20) / 5);
    quickly("hashes", || assert!(!is_correct("5", &hashes)));
    let digits = format!("{}5", "1,".repeat(1 << 19));
    quickly("a long number", || assert!(!is_correct("5", &digits)));
}

#[test]
fn closed_forms_past_the_bounds_are_refused_quickly() {
    let long_product = vec!["9"; 49_000].join("*");
    quickly("a 49,000-factor product", || {
        assert!(!is_correct("9", &format!("\\boxed{{{long_product}}}")))
    });
    let big_powers = ["7^{1700}"; 8].join(" \\times ");
    quickly("a product of large powers", || {
        assert!(!is_correct("7", &format!("\\boxed{{{big_powers}}}")))
    });
    quickly("a huge exponent", || {
        assert!(!is_correct("2", "\\boxed{2^{2147483647}}"));
        assert!(
            is_correct("2^{2147483647}", "\\boxed{2^{2147483647}}"),
            "as text"
        );
    });
    let depth = scotd::verify::MAX_NESTING_DEPTH - 2;
    let nested_roots = format!("{}16{}", "\\sqrt{".repeat(depth), "}".repeat(depth));
    quickly("nested roots", || {
        assert!(!is_correct("16", &format!("\\boxed{{{nested_roots}}}")))
    });
    let long_root = format!("\\sqrt{{{}}}", "9".repeat(90_000));
    quickly("the root of a 90,000-digit number", || {
        assert!(!is_correct("3", &format!("\\boxed{{{long_root}}}")))
    });
}

#[test]
fn new_closed_forms_percentages_and_braces_are_compared() {
    assert!(equivalent("\\sqrt{10^{400}}", "10^{200}"), "exact past f64");
    assert!(!equivalent("\\sqrt{10^{400}}", "10^{200} + 1"));
    assert!(equivalent(
        "3 \\times 10^{400} \\cdot 2",
        "6 \\times 10^{400}"
    ));
    assert!(equivalent("\\sqrt{2} \\times \\sqrt{2}", "2"));
    assert!(!equivalent("\\sqrt{2}", "\\sqrt{3}"));
    assert!(equivalent("25%", "0.25") && equivalent("0.25", "25%"));
    assert!(equivalent("25%", "25") && !equivalent("25%", "0.0025"));
    assert!(
        !equivalent("1e999%", "5"),
        "a hundredth past f64 is still exact"
    );
    assert!(is_correct("5", "\\boxed{{5}}") && !is_correct("6", "\\boxed{{5}}"));
    assert!(is_correct(
        "5",
        "<think>\\boxed{5}</think> 2 checks passed."
    ));
}

#[test]
fn pairs_name_why_a_pair_was_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.jsonl");
    let lines = [
        serde_json::json!({"gold": "inf", "output": "\\boxed{inf}"}),
        serde_json::json!({"gold": "1", "output": format!("\\boxed{{{}}}", nested_fractions(100))}),
        serde_json::json!({"gold": "1e999", "output": "\\boxed{5}"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&pairs, text).unwrap();
    let run = scotd_verify(&["--pairs", path_str(&pairs)]);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = json_lines(&String::from_utf8(run.stdout).unwrap());
    assert_eq!(out[0]["not_verified"], "not a finite number");
    assert!(out[1]["not_verified"]
        .as_str()
        .unwrap()
        .starts_with("nesting too deep"));
    assert_eq!(out[2]["not_verified"], Value::Null, "compared: not equal");
    assert!(out.iter().all(|l| l["correct"] == false));
}
