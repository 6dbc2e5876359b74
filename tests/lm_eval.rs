//! scotd's lm-evaluation-harness gsm8k scoring against the answers lm-eval's own regular
//! expressions give (tools/lm_eval_gsm8k_golden.py, Python's `re`) on committed outputs,
//! and `scotd eval --lm-eval-fewshot` end to end on the real SmolLM2-135M-Instruct.

mod common;

use std::process::Command;

use scotd::data::read_gsm8k_examples;
use scotd::eval::lm_eval::{
    cut_at_stop, fewshot_prompt, score, LmEvalAnswer, LmEvalScore, FLEXIBLE_PROTOCOL,
    STOP_SEQUENCES, STRICT_PROTOCOL,
};
use scotd::eval::{EvalReport, SCOTD_PROTOCOL};

#[derive(serde::Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    output: String,
    reference: String,
    #[serde(flatten)]
    expected: LmEvalScore,
}

#[test]
fn strict_and_flexible_exact_match_agree_with_lm_eval_regexes_on_every_fixture() {
    let text = std::fs::read_to_string("tests/fixtures/lm_eval/gsm8k_golden.json").unwrap();
    let golden: Golden = serde_json::from_str(&text).unwrap();
    assert!(golden.cases.len() >= 50, "{} cases", golden.cases.len());
    let wrong: Vec<String> = golden
        .cases
        .iter()
        .filter_map(|case| {
            let ours = score(&case.output, &case.reference);
            (ours != case.expected).then(|| {
                format!(
                    "{:?} vs {:?}: ours {ours:?}, lm-eval {:?}",
                    case.output, case.reference, case.expected
                )
            })
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The fixture exercises both verdicts of both filters.
    for pick in [
        |s: &LmEvalScore| s.strict_exact_match,
        |s: &LmEvalScore| s.flexible_exact_match,
    ] {
        let passing = golden.cases.iter().filter(|c| pick(&c.expected)).count();
        assert!(passing > 0 && passing < golden.cases.len());
    }
}

#[test]
fn the_five_shot_prompt_is_the_one_python_renders_from_the_first_five_examples() {
    let examples = read_gsm8k_examples(&common::fixture("data/gsm8k.jsonl")).unwrap();
    let shots: Vec<(&str, &str)> = examples[..5]
        .iter()
        .map(|(q, a)| (q.as_str(), a.as_str()))
        .collect();
    let expected = std::fs::read_to_string(common::fixture("lm_eval/gsm8k_prompt.txt")).unwrap();
    assert_eq!(fewshot_prompt(&shots, &examples[5].0), expected);
}

#[test]
fn eval_reports_both_protocols_each_by_name_on_smollm2() {
    let model = common::real_model_dir("smollm2-135m-instruct");
    let gsm8k = common::fixture("data/gsm8k.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let questions = dir.path().join("questions.jsonl");
    let held_out: Vec<String> = std::fs::read_to_string(&gsm8k)
        .unwrap()
        .lines()
        .skip(5)
        .take(3)
        .map(str::to_string)
        .collect();
    std::fs::write(&questions, held_out.join("\n") + "\n").unwrap();
    let out = dir.path().join("eval");
    let status = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args([
            "eval",
            "--probes",
            "none",
            "--max-new-tokens",
            "48",
            "--model",
        ])
        .arg(&model)
        .arg("--data")
        .arg(&questions)
        .arg("--out")
        .arg(&out)
        .arg("--lm-eval-fewshot")
        .arg(&gsm8k)
        .status()
        .unwrap();
    assert!(status.success());

    let report = EvalReport::read(&out).unwrap();
    assert_eq!(report.accuracy_protocol, SCOTD_PROTOCOL);
    let lm_eval = report.lm_eval.expect("the lm-eval numbers");
    assert_eq!(
        (
            lm_eval.strict_protocol.as_str(),
            lm_eval.flexible_protocol.as_str()
        ),
        (STRICT_PROTOCOL, FLEXIBLE_PROTOCOL)
    );
    let answers: Vec<LmEvalAnswer> = std::fs::read_to_string(out.join("lm_eval_answers.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 3);
    assert!(
        answers.iter().any(|a| a.output.contains("####")),
        "{answers:?}"
    );
    for answer in &answers {
        assert_eq!(cut_at_stop(&answer.output), answer.output);
        assert!(STOP_SEQUENCES.iter().all(|s| !answer.output.contains(s)));
        assert_eq!(
            answer.score,
            score(&answer.output, &format!("#### {}", answer.gold))
        );
    }
    let strict = answers
        .iter()
        .filter(|a| a.score.strict_exact_match)
        .count();
    let flexible = answers
        .iter()
        .filter(|a| a.score.flexible_exact_match)
        .count();
    assert_eq!(
        (lm_eval.strict_match.count, lm_eval.flexible_extract.count),
        (strict, flexible)
    );
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    for protocol in [SCOTD_PROTOCOL, STRICT_PROTOCOL, FLEXIBLE_PROTOCOL] {
        assert!(
            markdown.contains(protocol),
            "{protocol} missing from {markdown}"
        );
    }
    let run = std::fs::read_to_string(out.join("run.json")).unwrap();
    assert!(run.contains("lm_eval_fewshot"), "{run}");
}
