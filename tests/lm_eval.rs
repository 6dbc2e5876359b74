//! scotd's lm-evaluation-harness gsm8k scoring against the answers lm-eval's own regular
//! expressions give (tools/lm_eval_gsm8k_golden.py, Python's `re`) on committed outputs.

use scotd::eval::lm_eval::{score, LmEvalScore};

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
