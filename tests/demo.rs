//! `scotd demo` end to end on the reduced preset: distillation must clearly raise the
//! student's held-out accuracy, and every number is recomputed from the files the run
//! wrote (answers, traces, problems), not taken from the summary.

use std::collections::HashSet;
use std::path::Path;

use scotd::demo::{self, DemoConfig};
use scotd::eval::wilson_interval;
use scotd::verify::is_correct;
use serde_json::Value;

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap()
}

/// Correct answers in an evaluation folder's answers.jsonl, re-verified.
fn correct_answers(eval_dir: &Path) -> (usize, usize) {
    let answers = json_lines(&eval_dir.join("answers.jsonl"));
    let correct = answers
        .iter()
        .filter(|a| is_correct(text(a, "gold"), text(a, "output")))
        .count();
    (correct, answers.len())
}

fn questions(path: &Path) -> HashSet<String> {
    json_lines(path)
        .iter()
        .map(|p| text(p, "question").to_string())
        .collect()
}

#[test]
fn distillation_clearly_raises_the_students_held_out_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = DemoConfig::reduced();
    demo::run(&config, &out, false).unwrap();

    let (before, n) = correct_answers(&out.join("student/eval-before"));
    let (after, n_after) = correct_answers(&out.join("student/eval-after"));
    assert_eq!((n, n_after), (config.eval_problems, config.eval_problems));
    let before_upper = wilson_interval(before, n)[1];
    let after_lower = wilson_interval(after, n)[0];
    assert!(
        after_lower > before_upper && after >= before + n / 10,
        "held-out accuracy before {before}/{n}, after {after}/{n}"
    );

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["student_before"]["correct"], before);
    assert_eq!(summary["student_after"]["correct"], after);

    let sampled = json_lines(&out.join("traces/sampled.jsonl"));
    assert_eq!(
        sampled.len(),
        config.sample_problems * config.samples_per_problem
    );
    let verified = json_lines(&out.join("traces/verified.jsonl"));
    let kept = sampled
        .iter()
        .filter(|t| is_correct(text(t, "gold"), text(t, "trace")))
        .count();
    assert_eq!(verified.len(), kept);
    assert!(verified
        .iter()
        .all(|t| is_correct(text(t, "gold"), text(t, "trace"))));
    assert_eq!(summary["traces"]["kept"], kept);

    let held_out = questions(&out.join("data/eval.jsonl"));
    for trained_on in ["data/teacher-train.jsonl", "data/sample.jsonl"] {
        let overlap = held_out
            .intersection(&questions(&out.join(trained_on)))
            .count();
        assert_eq!(
            overlap, 0,
            "{trained_on} shares questions with the held-out set"
        );
    }
    for file in ["report.md", "student/distill/loss.png", "teacher/loss.png"] {
        assert!(out.join(file).is_file(), "{file} is missing");
    }

    let again = demo::run(&config, &out, false).unwrap();
    assert_eq!(again.student_after.accuracy.count, after);
    let other = DemoConfig { seed: 1, ..config };
    let err = demo::run(&other, &out, false).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}
