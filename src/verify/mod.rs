//! The answer verifier: extracts a model's final answer (and its think block's answer),
//! normalises answers and compares them with the gold answer, and checks files of
//! output/gold pairs or sampled traces (`scotd verify`).
//!
//! Comparison is numeric when both answers are numbers (relative tolerance 1e-6, absolute
//! 1e-9 near zero; whole numbers exactly), else by canonical text. A percent sign is
//! dropped, so `50%` equals `50`: GSM8K writes percentages as bare numbers.

mod extract;
mod files;
mod normalize;

use extract::final_answer;
pub use extract::{extract, Extracted, Method};
pub use files::{filter_traces, verify_pairs, FilterReport, PairsReport};
pub use normalize::normalize;

const RELATIVE_TOLERANCE: f64 = 1e-6;
const ABSOLUTE_TOLERANCE: f64 = 1e-9;
/// Whole numbers below this are exact in an f64.
const EXACT_WHOLE_NUMBERS: f64 = 9_007_199_254_740_992.0;

/// Whether two answers are the same: numerically when both are numbers, else as text.
pub fn equivalent(a: &str, b: &str) -> bool {
    match (normalize(a), normalize(b)) {
        (Some(x), Some(y)) => numbers_close(x, y),
        (None, None) => normalize::canonical_text(a) == normalize::canonical_text(b),
        _ => false,
    }
}

/// The tolerance absorbs rounded decimals (`0.333333` for `1/3`); two whole numbers
/// cannot differ by rounding, so `1450001` is not `1450000`. Past 2^53, where an f64 no
/// longer holds every whole number, the tolerance applies again.
fn numbers_close(x: f64, y: f64) -> bool {
    let scale = x.abs().max(y.abs());
    if x.fract() == 0.0 && y.fract() == 0.0 && scale < EXACT_WHOLE_NUMBERS {
        return x == y;
    }
    (x - y).abs() <= (RELATIVE_TOLERANCE * scale).max(ABSOLUTE_TOLERANCE)
}

/// The reference answer of a gold field: the text after the last `####` of a full GSM8K
/// answer, else the trimmed text itself. None when it is empty.
pub fn gold_answer(gold: &str) -> Option<&str> {
    let answer = gold.rsplit_once("####").map_or(gold, |(_, answer)| answer);
    let answer = answer.trim();
    (!answer.is_empty()).then_some(answer)
}

/// Whether the final answer of `output` (after `</think>`) matches `gold`.
pub fn is_correct(gold: &str, output: &str) -> bool {
    matches_gold(gold, final_answer(output).as_deref())
}

/// Whether an extracted answer (None when there was none) matches `gold`.
fn matches_gold(gold: &str, answer: Option<&str>) -> bool {
    match (gold_answer(gold), answer) {
        (Some(gold), Some(answer)) => equivalent(gold, answer),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_compares_numbers_with_tolerance_and_text_exactly() {
        assert!(equivalent("0.75", "\\frac34"));
        assert!(equivalent("1000000", "1000000.0001"));
        assert!(!equivalent("1000", "1001"));
        assert!(!equivalent("123456789012", "123456789013"));
        assert!(equivalent("1e20", "100,000,000,000,000,000,000"));
        assert!(equivalent("0", "-0.0000000001"));
        assert!(!equivalent("0", "0.001"));
        assert!(equivalent("\\text{Blue}", "blue"));
        assert!(!equivalent("5", "five"));
    }

    #[test]
    fn gold_answer_reads_bare_numbers_and_gsm8k_answers() {
        assert_eq!(gold_answer(" 42 "), Some("42"));
        assert_eq!(gold_answer("So 3*360=1080.\n#### 1,080"), Some("1,080"));
        assert_eq!(gold_answer("#### "), None);
        assert_eq!(gold_answer(""), None);
    }

    #[test]
    fn is_correct_uses_the_final_answer_only() {
        assert!(is_correct("#### 5", "<think>4</think> \\boxed{5}"));
        assert!(!is_correct("4", "<think>4</think> \\boxed{5}"));
        assert!(!is_correct("4", "<think>4</think>"));
        assert!(!is_correct("", "4"));
    }
}
