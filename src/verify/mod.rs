//! The answer verifier: extracts a model's final answer (and its think block's answer),
//! normalises answers and compares them with the gold answer, and checks files of
//! output/gold pairs or sampled traces (`scotd verify`).
//!
//! # Rules
//!
//! - **Extraction** (`extract`), by precedence: in the text after `</think>` (all of a
//!   text without think tags), its last `\boxed{…}` that holds something, else GSM8K's
//!   `#### N`, else "the answer is …"; when that text states none of these, the last box
//!   of the closed think block; else that text's last number. A boxed answer beats an
//!   unboxed number wherever it stands, so a stray number after `</think>` ("that took 2
//!   steps") does not overrule a box inside it; an answer stated after `</think>` does,
//!   as the model may revise its reasoning's answer there. A `<think>` never closed
//!   leaves no final answer, boxed or not. Each rule's time is linear in the output (one
//!   pass with a brace counter finds the last box; text already known to hold no digit
//!   is not read again for "the answer is").
//! - **Braces** that enclose a whole answer group nothing and are dropped: `\boxed{{5}}`
//!   is 5 (`{5}{6}` keeps its braces).
//! - **Numbers** are parsed into exact decimals and fractions of them (`exact`), of any
//!   length: `1e999`, `10^{400}` and 10,000-digit numbers keep every digit. Two numbers
//!   that are exactly equal are equal.
//! - **Closed forms** are evaluated, exactly where the value is rational: a power with
//!   a whole exponent (`2^{10}`, `2^10`, `2^{-1}`), a product of up to eight factors
//!   (`3 \times 4`, `3 \cdot 4`, `3*4`, `2\sqrt{3}`, `1.5 \times 10^{6}`, read left to
//!   right with `/`), and a square root (`\sqrt{16}` is exactly 4, `\sqrt{2.25}` 1.5). A
//!   root that is not rational (`\sqrt{2}`), and anything computed from one, is an f64,
//!   compared only within the tolerance. Sums and differences (`3 + 4`) are not
//!   evaluated, nor other roots (`\sqrt[3]{27}`), nor the root of a negative number.
//! - **Tolerance**, as before exact parsing: when two numbers are not exactly equal but
//!   both fit an f64 (below about 1.8e308), whole numbers below 2^53 must be equal, and
//!   other values may differ by a relative 1e-6 (absolute 1e-9 near zero), which absorbs
//!   rounded decimals (`0.333333` for `1/3`). A value past the f64 range gets no
//!   tolerance: it is equal only exactly. Infinity and NaN never arise from a number.
//! - **Not finite**: an answer spelling infinity or NaN (`inf`, `-infinity`, `NaN`,
//!   `\infty`, `∞`) is never equal to anything, itself included: no gold can be matched
//!   by it, and no such gold makes an answer correct.
//! - **Bounds**: an answer or gold longer than [`MAX_ANSWER_BYTES`] or with braces nested
//!   deeper than [`MAX_NESTING_DEPTH`] is not compared: the verdict is
//!   [`Verdict::NotVerified`] with the reason, never a recursion as deep as the input.
//!   A number whose exact value needs a multiplication of more than
//!   `exact::MAX_MULTIPLY_WORK` digit products (`7^{100000}`), a power of ten past
//!   10^±10^12, or a product of more than eight factors, is not evaluated and is
//!   compared as text; a comparison of fractions needing that much is not verified. A
//!   square root is sought exactly for up to 38 significant digits, else approximated.
//! - **Text**: answers that are not numbers compare by canonical text (LaTeX wrappers,
//!   spacing and case dropped). A number never equals a text.
//! - **Percentages**: a number followed by `%`, `\%` or the word "percent" matches that
//!   number (GSM8K writes percentages as bare numbers: `25%` is `25`) and its fraction
//!   of 100 (`25%` is `0.25`), as answer or as gold; two percentages match when their
//!   numbers do (`50%` is not `0.5%`).

mod exact;
mod extract;
mod files;
mod normalize;
mod value;

use std::fmt;

pub use exact::Rational;
use extract::final_answer;
pub use extract::{extract, Extracted, Method};
pub use files::{filter_traces, verify_pairs, FilterReport, PairsReport};
pub use normalize::normalize;
use normalize::Number;
pub use value::Value;

const RELATIVE_TOLERANCE: f64 = 1e-6;
const ABSOLUTE_TOLERANCE: f64 = 1e-9;
/// Whole numbers below this are exact in an f64.
const EXACT_WHOLE_NUMBERS: f64 = 9_007_199_254_740_992.0;

/// The longest answer (or gold answer) compared, in bytes: ten times a 10,000-digit
/// number, far past any real answer, small enough that parsing it is quick.
pub const MAX_ANSWER_BYTES: usize = 100_000;
/// The deepest brace nesting of an answer that is parsed: `\frac` arguments are read
/// recursively, one level per brace, so this bounds the parser's stack.
pub const MAX_NESTING_DEPTH: usize = 64;

/// The outcome of comparing two answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Equal,
    NotEqual,
    /// The answers were not compared, and so are not taken as equal.
    NotVerified(Unverifiable),
}

/// Why two answers were not compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unverifiable {
    /// Longer than [`MAX_ANSWER_BYTES`].
    AnswerTooLong,
    /// Braces nested deeper than [`MAX_NESTING_DEPTH`].
    NestingTooDeep,
    /// Infinity or NaN.
    NotFinite,
    /// Fractions whose exact comparison needs products too long to compute.
    TooLargeToCompare,
}

impl fmt::Display for Unverifiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnswerTooLong => write!(f, "answer too long (over {MAX_ANSWER_BYTES} bytes)"),
            Self::NestingTooDeep => write!(
                f,
                "nesting too deep (braces over {MAX_NESTING_DEPTH} levels)"
            ),
            Self::NotFinite => write!(f, "not a finite number"),
            Self::TooLargeToCompare => write!(f, "numbers too large to compare exactly"),
        }
    }
}

/// Whether two answers are the same: numerically when both are numbers, else as text.
pub fn equivalent(a: &str, b: &str) -> bool {
    compare(a, b) == Verdict::Equal
}

/// Compares two answers by the rules of this module.
pub fn compare(a: &str, b: &str) -> Verdict {
    match comparable(a, b) {
        Ok(verdict) => verdict,
        Err(reason) => Verdict::NotVerified(reason),
    }
}

fn comparable(a: &str, b: &str) -> Result<Verdict, Unverifiable> {
    let equal = match (normalize::parse_number(a)?, normalize::parse_number(b)?) {
        (Some(x), Some(y)) => numbers_match(&x, &y)?,
        // Infinity and NaN are words, never numbers: only a text may spell them.
        (Some(_), None) => finite_text(b).map(|_| false)?,
        (None, Some(_)) => finite_text(a).map(|_| false)?,
        (None, None) => finite_text(a)? == finite_text(b)?,
    };
    Ok(if equal {
        Verdict::Equal
    } else {
        Verdict::NotEqual
    })
}

/// Checks an answer against [`MAX_ANSWER_BYTES`] and [`MAX_NESTING_DEPTH`] in one pass,
/// before anything parses it.
fn within_bounds(answer: &str) -> Result<(), Unverifiable> {
    if answer.len() > MAX_ANSWER_BYTES {
        return Err(Unverifiable::AnswerTooLong);
    }
    let mut depth = 0usize;
    for byte in answer.bytes() {
        match byte {
            b'{' if depth == MAX_NESTING_DEPTH => return Err(Unverifiable::NestingTooDeep),
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Spellings of values that are not finite numbers.
const NON_FINITE: [&str; 5] = ["nan", "inf", "infinity", "\\infty", "∞"];

/// The canonical text of an answer that is not a number; NotFinite when it spells
/// infinity or NaN.
fn finite_text(answer: &str) -> Result<String, Unverifiable> {
    let text = normalize::canonical_text(answer);
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(&text);
    if NON_FINITE.contains(&unsigned) {
        return Err(Unverifiable::NotFinite);
    }
    Ok(text)
}

/// A percentage `p%` matches the number `p` (GSM8K writes percentages as bare numbers)
/// and the fraction `p/100`; two percentages match when their numbers do (`50%` is not
/// `0.5%`).
fn numbers_match(x: &Number, y: &Number) -> Result<bool, Unverifiable> {
    let (percentage, other) = match (x.percent, y.percent) {
        (true, false) => (x, y),
        (false, true) => (y, x),
        _ => return values_equal(&x.value, &y.value),
    };
    if values_equal(&percentage.value, &other.value)? {
        return Ok(true);
    }
    match percentage.value.hundredth() {
        Some(fraction) => values_equal(&fraction, &other.value),
        None => Ok(false),
    }
}

/// Exact values by [`numbers_equal`]; an approximate one (`\sqrt{2}`) only by
/// [`numbers_close`].
fn values_equal(x: &Value, y: &Value) -> Result<bool, Unverifiable> {
    match (x, y) {
        (Value::Exact(x), Value::Exact(y)) => numbers_equal(x, y),
        _ => Ok(x
            .to_f64()
            .zip(y.to_f64())
            .is_some_and(|(x, y)| numbers_close(x, y))),
    }
}

/// Exactly equal, or close by [`numbers_close`] when both fit an f64.
fn numbers_equal(x: &Rational, y: &Rational) -> Result<bool, Unverifiable> {
    if x.exactly_equals(y).ok_or(Unverifiable::TooLargeToCompare)? {
        return Ok(true);
    }
    Ok(match (x.to_f64(), y.to_f64()) {
        (Some(x), Some(y)) => numbers_close(x, y),
        _ => false,
    })
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
    verdict(gold, output) == Verdict::Equal
}

/// The verdict on the final answer of `output` against `gold`; NotEqual when either has
/// no answer.
pub fn verdict(gold: &str, output: &str) -> Verdict {
    gold_verdict(gold, final_answer(output).as_deref())
}

/// The verdict on an extracted answer (None when there was none) against `gold`.
fn gold_verdict(gold: &str, answer: Option<&str>) -> Verdict {
    match (gold_answer(gold), answer) {
        (Some(gold), Some(answer)) => compare(gold, answer),
        _ => Verdict::NotEqual,
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
