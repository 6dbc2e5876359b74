//! GSM8K as lm-evaluation-harness scores it (its `gsm8k` task): a 5-shot completion
//! prompt of `Question: …\nAnswer: …` blocks, greedy generation until `Question:`,
//! `</s>` or `<|im_end|>`, and `exact_match` of the gold `#### N` under two filters:
//! strict-match (the first `#### N` of the output) and flexible-extract (the last number
//! of the output). The regular expressions and the normalisation below are lm-eval's
//! settings, as data; tools/lm_eval_gsm8k_golden.py applies the same settings with
//! Python's `re` to committed outputs, and a test checks that this module agrees.
//!
//! Where ours differs: lm-eval draws its five examples from the train split at random
//! (a fixed seed); [`fewshot_prompt`] takes the examples it is given, in order (by
//! convention the first five of the train file), so the prompts are of the same shape
//! but not byte-identical.

use std::sync::LazyLock;

use regex::Regex;

/// What lm-eval's `until` stops generation at; the output is cut before the first.
pub const STOP_SEQUENCES: [&str; 3] = ["Question:", "</s>", "<|im_end|>"];
/// lm-eval's `num_fewshot` for gsm8k.
pub const FEWSHOT: usize = 5;
/// What a filter yields when its pattern matches nothing (lm-eval's fallback).
pub const INVALID: &str = "[invalid]";

/// strict-match: `#### (\-?[0-9\.\,]+)`, the first match.
static STRICT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"#### (\-?[0-9\.\,]+)").expect("valid pattern"));
/// flexible-extract: `(-?[$0-9.,]{2,})|(-?[0-9]+)`, the last match.
static FLEXIBLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").expect("valid pattern"));
/// exact_match's `regexes_to_ignore`, removed in this order from both sides; the last,
/// `\.$`, is [`without_final_period`] (Python's `$` also matches before a final newline,
/// which Rust's does not).
static IGNORED: LazyLock<[Regex; 3]> =
    LazyLock::new(|| [",", r"\$", r"(?s).*#### "].map(|p| Regex::new(p).expect("valid pattern")));

/// One question's prompt: the examples' `Question: q\nAnswer: a` blocks (the answer as
/// GSM8K writes it, calculator notes and `#### N` included) and the question's open
/// block, joined by blank lines.
pub fn fewshot_prompt(examples: &[(&str, &str)], question: &str) -> String {
    let mut prompt = String::new();
    for (q, a) in examples {
        prompt.push_str(&format!("Question: {q}\nAnswer: {a}\n\n"));
    }
    prompt.push_str(&format!("Question: {question}\nAnswer:"));
    prompt
}

/// The generation up to (not including) the first stop sequence.
pub fn cut_at_stop(output: &str) -> &str {
    let end = STOP_SEQUENCES
        .iter()
        .filter_map(|s| output.find(s))
        .min()
        .unwrap_or(output.len());
    &output[..end]
}

/// The strict-match filter: the number after the first `#### `, trimmed.
pub fn strict_match(output: &str) -> String {
    STRICT
        .captures(output)
        .and_then(|c| c.get(1))
        .map_or(INVALID.to_string(), |m| m.as_str().trim().to_string())
}

/// The flexible-extract filter: the last number-like run of the output, trimmed.
pub fn flexible_extract(output: &str) -> String {
    FLEXIBLE
        .captures_iter(output)
        .last()
        .and_then(|c| c.get(1).or_else(|| c.get(2)))
        .map_or(INVALID.to_string(), |m| m.as_str().trim().to_string())
}

/// lm-eval's exact_match for gsm8k: both sides with the ignored patterns removed and
/// lower-cased (ignore_case true, ignore_punctuation false), then equal. `reference` is
/// the GSM8K answer whole (its worked solution ending in `#### N`).
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    normalised(prediction) == normalised(reference)
}

fn normalised(text: &str) -> String {
    let mut text = text.to_string();
    for pattern in IGNORED.iter() {
        text = pattern.replace_all(&text, "").into_owned();
    }
    without_final_period(&text).to_lowercase()
}

/// Python's `re.sub(r"\.$", "", text)`: a period at the end, or just before a final
/// newline, removed.
fn without_final_period(text: &str) -> String {
    if let Some(body) = text.strip_suffix(".\n") {
        format!("{body}\n")
    } else {
        text.strip_suffix('.').unwrap_or(text).to_string()
    }
}

/// Both filters' answers to one output and their verdicts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LmEvalScore {
    pub strict_match: String,
    pub strict_exact_match: bool,
    pub flexible_extract: String,
    pub flexible_exact_match: bool,
}

/// Scores one generation (already cut at the stop sequences) against the GSM8K answer.
pub fn score(output: &str, reference: &str) -> LmEvalScore {
    let strict = strict_match(output);
    let flexible = flexible_extract(output);
    LmEvalScore {
        strict_exact_match: exact_match(&strict, reference),
        flexible_exact_match: exact_match(&flexible, reference),
        strict_match: strict,
        flexible_extract: flexible,
    }
}

/// The protocol names of the two numbers, as the report shows them.
pub const STRICT_PROTOCOL: &str = "exact_match, lm-eval gsm8k 5-shot, strict-match";
pub const FLEXIBLE_PROTOCOL: &str = "exact_match, lm-eval gsm8k 5-shot, flexible-extract";

/// One question answered under lm-eval's protocol, a line of `lm_eval_answers.jsonl`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LmEvalAnswer {
    pub id: crate::data::TraceId,
    pub gold: String,
    /// The generation cut at the first stop sequence.
    pub output: String,
    #[serde(flatten)]
    pub score: LmEvalScore,
}

/// The two exact_match rates of the lm-eval protocol, in `report.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LmEvalReport {
    pub strict_protocol: String,
    pub strict_match: super::Rate,
    pub flexible_protocol: String,
    pub flexible_extract: super::Rate,
}

impl LmEvalReport {
    pub fn new(answers: &[LmEvalAnswer]) -> Self {
        let count = |f: fn(&LmEvalScore) -> bool| answers.iter().filter(|a| f(&a.score)).count();
        LmEvalReport {
            strict_protocol: STRICT_PROTOCOL.into(),
            strict_match: super::Rate::of(count(|s| s.strict_exact_match), answers.len()),
            flexible_protocol: FLEXIBLE_PROTOCOL.into(),
            flexible_extract: super::Rate::of(count(|s| s.flexible_exact_match), answers.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_blocks_joined_by_blank_lines() {
        let prompt = fewshot_prompt(&[("1+1?", "1+1=2\n#### 2"), ("2+2?", "#### 4")], "3+3?");
        assert_eq!(
            prompt,
            "Question: 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: 2+2?\nAnswer: #### 4\n\nQuestion: 3+3?\nAnswer:"
        );
    }

    #[test]
    fn generation_is_cut_at_the_first_stop_sequence() {
        assert_eq!(
            cut_at_stop(" 4\n#### 4\n\nQuestion: next</s>"),
            " 4\n#### 4\n\n"
        );
        assert_eq!(cut_at_stop("x<|im_end|>Question:"), "x");
        assert_eq!(cut_at_stop("no stop"), "no stop");
    }

    #[test]
    fn a_final_period_goes_before_a_final_newline_too() {
        assert_eq!(without_final_period("72."), "72");
        assert_eq!(without_final_period("72.\n"), "72\n");
        assert_eq!(without_final_period("7.2"), "7.2");
    }
}
