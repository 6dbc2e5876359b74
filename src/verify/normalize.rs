//! Answer normalisation: LaTeX, currency, separators, units and `x =` stripped down to an
//! exact numeric value, or to a canonical string when the answer is not a number.

use super::exact::{Decimal, Rational};
use super::extract::braced;
use super::value::Value;
use super::{within_bounds, Unverifiable};

/// LaTeX commands whose braced argument is kept as plain text.
const TEXT_COMMANDS: [&str; 5] = ["\\text", "\\textbf", "\\mathrm", "\\mbox", "\\mathbf"];

/// Spellings removed outright: LaTeX math delimiters, spacing and sizing, degrees,
/// currency, emphasis.
const NOISE: [&str; 24] = [
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "\\displaystyle",
    "\\qquad",
    "\\quad",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "\\left",
    "\\right",
    "^{\\circ}",
    "^\\circ",
    "°",
    "\\$",
    "$",
    "€",
    "£",
    "¥",
    "**",
    "~",
];

/// The numeric value of an answer: `70,000`, `14{,}916`, `$1,234.50`, `5 apples`, `50%`
/// (as 50), `-3`, `\frac{3}{4}`, `\frac34`, `3/4`, `2\frac{1}{2}`, `x = 5`, `2e3`,
/// `1.5 \times 10^{6}`, `2^{10}`, `3 \cdot 4`, `\sqrt{2}`, `{5}`. None when it is not one
/// number, when evaluating it exactly would take too long (`7^{100000}`), or when it is
/// past the verifier's bounds (see the module `verify`).
pub fn normalize(answer: &str) -> Option<Value> {
    parse_number(answer)
        .ok()
        .flatten()
        .map(|number| number.value)
}

/// A numeric answer: its value as written, and whether a percent sign followed it.
pub(super) struct Number {
    pub value: Value,
    pub percent: bool,
}

/// [`normalize`], telling an answer past the bounds apart from one that is no number,
/// and keeping its percent sign.
pub(super) fn parse_number(answer: &str) -> Result<Option<Number>, Unverifiable> {
    within_bounds(answer)?;
    Ok(bounded_number(answer))
}

/// The number of an answer already checked against the bounds: its brace depth bounds
/// the recursion through `\frac` and `\sqrt` arguments.
fn bounded_number(answer: &str) -> Option<Number> {
    let cleaned = clean(answer);
    let value_part = cleaned.rsplit('=').next().unwrap_or("");
    let (value, rest) = signed_value(value_part.trim())?;
    let (percent, rest) = percent_sign(rest);
    trailing_words_only(rest).then_some(Number { value, percent })
}

/// Whether `rest` starts with `%` or the word "percent", and what follows it.
fn percent_sign(rest: &str) -> (bool, &str) {
    let rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('%') {
        return (true, after);
    }
    match rest.strip_prefix("percent") {
        Some(after) if !after.starts_with(char::is_alphabetic) => (true, after),
        _ => (false, rest),
    }
}

/// The canonical text of an answer, for comparing answers that are not numbers.
pub fn canonical_text(answer: &str) -> String {
    clean(answer)
        .trim_end_matches('.')
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Spellings replaced by the one the parser reads.
const SYNONYMS: [(&str, &str); 5] = [
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("{,}", ","),
    ("\\%", "%"),
    ("−", "-"),
];

/// The answer without LaTeX wrappers, spacing, currency and with `{,}` as `,`.
fn clean(answer: &str) -> String {
    let mut text = answer.trim().to_string();
    // Every spelling above holds one of these bytes: most answers (`18`, `1,080`) hold
    // none and skip the searches.
    if !text
        .bytes()
        .any(|b| matches!(b, b'\\' | b'{' | b'$' | b'*' | b'~' | b'^') || !b.is_ascii())
    {
        return text;
    }
    if !text.is_ascii() {
        text = ascii_forms(&text);
    }
    for (spelling, replacement) in SYNONYMS {
        replace_in_place(&mut text, spelling, replacement);
    }
    for command in TEXT_COMMANDS {
        if text.contains(command) {
            text = unwrap_command(&text, command);
        }
    }
    for noise in NOISE {
        replace_in_place(&mut text, noise, "");
    }
    without_enclosing_braces(text.trim()).to_string()
}

/// `text` with fullwidth forms (`１２`, `－５`, `３．５`, which models write in Chinese
/// text) as their ASCII characters, as Unicode's NFKC maps them.
fn ascii_forms(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

/// `text` without the brace pairs that enclose all of it (`{{5}}` → `5`, `{ {5} }` → `5`,
/// but `{5}{6}` stays): a box's extra braces group nothing. One pass: a pair encloses
/// everything when the depth never drops below its level between the leading braces
/// and the trailing ones.
fn without_enclosing_braces(text: &str) -> &str {
    let leading = brace_run(text.bytes(), b'{');
    let trailing = brace_run(text.bytes().rev(), b'}');
    let (Some(&start), Some(&end)) = (leading.last(), trailing.last()) else {
        return text;
    };
    if start >= text.len() - end {
        return text;
    }
    let mut depth = leading.len();
    let mut enclosing = leading.len().min(trailing.len());
    for byte in text[start..text.len() - end].bytes() {
        match byte {
            b'{' => depth += 1,
            b'}' if depth == 0 => return text,
            b'}' => depth -= 1,
            _ => {}
        }
        enclosing = enclosing.min(depth);
    }
    if depth != trailing.len() || enclosing == 0 {
        return text;
    }
    let inner_start = leading[enclosing - 1];
    let inner_end = text.len() - trailing[enclosing - 1];
    text[inner_start..inner_end].trim()
}

/// For each `brace` in the run of braces and spaces that `bytes` starts with: how many
/// bytes lead up to it, itself included.
fn brace_run(bytes: impl Iterator<Item = u8>, brace: u8) -> Vec<usize> {
    bytes
        .take_while(|&b| b == brace || b.is_ascii_whitespace())
        .enumerate()
        .filter(|&(_, b)| b == brace)
        .map(|(at, _)| at + 1)
        .collect()
}

/// `str::replace` that allocates only when `from` occurs (it seldom does).
fn replace_in_place(text: &mut String, from: &str, to: &str) {
    if text.contains(from) {
        *text = text.replace(from, to);
    }
}

/// Replaces each `\command{arg}` by ` arg` (a space, so `5\text{apples}` stays two words).
fn unwrap_command(text: &str, command: &str) -> String {
    let opening = format!("{command}{{");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(&opening) {
        let inner = &rest[start + opening.len()..];
        let Some(arg) = braced(inner) else { break };
        out.push_str(&rest[..start]);
        out.push(' ');
        out.push_str(arg);
        rest = &inner[arg.len() + 1..];
    }
    out.push_str(rest);
    out
}

/// A signed product, number, fraction or `\frac` at the start of `text`, and what
/// follows it.
fn signed_value(text: &str) -> Option<(Value, &str)> {
    let (negative, unsigned) = sign(text);
    let (value, rest) = product(unsigned)?;
    Some((if negative { value.negated() } else { value }, rest))
}

/// Whether `text` starts with a minus, and the text after its sign and spaces.
fn sign(text: &str) -> (bool, &str) {
    match text.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, text.strip_prefix('+').unwrap_or(text).trim_start()),
    }
}

/// The most factors of a product that is evaluated: each multiplication is bounded, and
/// this bounds their number; a longer product is no number.
const MAX_FACTORS: usize = 8;

/// A product of numbers: `3 \times 4`, `3 \cdot 4`, `3*4`, `2\sqrt{3}` and scientific
/// notation (`1.5 \times 10^{6}`). Its first factor may be a mixed number, later ones
/// may carry a minus sign (`2 \times -3`).
fn product(text: &str) -> Option<(Value, &str)> {
    let (mut value, mut rest) = match text.strip_prefix("\\frac") {
        Some(args) => latex_fraction(args)?,
        None => mixed_number(text)?,
    };
    let mut factors = 1;
    while let Some(after) = multiplication(rest) {
        if factors == MAX_FACTORS {
            return None;
        }
        let (negative, unsigned) = sign(after);
        let (factor, after_factor) = factor(unsigned)?;
        let factor = if negative { factor.negated() } else { factor };
        value = value.times(&factor)?;
        (rest, factors) = (after_factor, factors + 1);
    }
    Some((value, rest))
}

/// Spellings of multiplication.
const TIMES: [&str; 5] = ["\\times", "\\cdot", "×", "·", "*"];

/// The text after a multiplication sign at the start of `text`, or `text` itself when a
/// root follows without one (`2\sqrt{3}`); None when no factor follows.
fn multiplication(text: &str) -> Option<&str> {
    let text = text.trim_start();
    match TIMES.iter().find_map(|op| text.strip_prefix(op)) {
        Some(after) => Some(after.trim_start()),
        None => text.starts_with(SQRT).then_some(text),
    }
}

/// A factor after the first: a `\frac` or a number, root or power, optionally over another.
fn factor(text: &str) -> Option<(Value, &str)> {
    match text.strip_prefix("\\frac") {
        Some(args) => latex_fraction(args),
        None => slash_fraction(text),
    }
}

/// `{3}{4}` or `34` after `\frac`.
fn latex_fraction(args: &str) -> Option<(Value, &str)> {
    let (numerator, rest) = latex_argument(args.trim_start())?;
    let (denominator, rest) = latex_argument(rest.trim_start())?;
    let numerator = whole_number(numerator)?;
    let denominator = whole_number(denominator)?;
    Some((numerator.ratio(&denominator)?, rest))
}

/// One `\frac` or `\sqrt` argument: a braced group or a single character.
fn latex_argument(text: &str) -> Option<(&str, &str)> {
    match text.strip_prefix('{') {
        Some(inner) => {
            let arg = braced(inner)?;
            Some((arg, &inner[arg.len() + 1..]))
        }
        None => {
            let first = text.chars().next()?;
            Some(text.split_at(first.len_utf8()))
        }
    }
}

/// A string that is exactly one signed value.
fn whole_number(text: &str) -> Option<Value> {
    let (value, rest) = signed_value(text.trim())?;
    rest.is_empty().then_some(value)
}

/// A number, or a whole number and a proper fraction: `2\frac{1}{2}`, `2 1/2` (2.5).
/// The whole part is written as a whole number: `4/2 1/2` is no mixed number.
fn mixed_number(text: &str) -> Option<(Value, &str)> {
    let (value, rest) = slash_fraction(text)?;
    let written_whole = text.starts_with(|c: char| c.is_ascii_digit());
    let whole = value.exact().filter(|v| v.is_whole() && written_whole);
    match whole.and_then(|whole| Some((whole, proper_fraction(rest)?))) {
        Some((whole, (fraction, rest))) => {
            Some((Value::Exact(whole.plus_non_negative(&fraction)?), rest))
        }
        None => Some((value, rest)),
    }
}

/// A fraction strictly between 0 and 1 after spaces: `\frac{1}{2}` or digits `/` digits.
fn proper_fraction(text: &str) -> Option<(Rational, &str)> {
    let text = text.trim_start();
    let (fraction, rest) = match text.strip_prefix("\\frac") {
        Some(args) => latex_fraction(args)?,
        None => {
            let numerator = digit_count(text);
            let slash = numerator > 0 && text[numerator..].starts_with('/');
            slash.then(|| slash_fraction(text)).flatten()?
        }
    };
    let fraction = fraction.exact().filter(|f| f.is_proper_fraction())?;
    Some((fraction.clone(), rest))
}

/// A power, optionally followed by `/ power`.
fn slash_fraction(text: &str) -> Option<(Value, &str)> {
    let (numerator, rest) = power(text)?;
    let Some(after_slash) = rest.trim_start().strip_prefix('/') else {
        return Some((numerator, rest));
    };
    let (denominator, rest) = power(after_slash.trim_start())?;
    Some((numerator.ratio(&denominator)?, rest))
}

const SQRT: &str = "\\sqrt";

/// A decimal or a square root, with an optional power: `2`, `2^{10}`, `10^6`,
/// `\sqrt{2}`, `\sqrt2`.
fn power(text: &str) -> Option<(Value, &str)> {
    let (base, rest) = match text.strip_prefix(SQRT) {
        Some(argument) => square_root(argument)?,
        None => decimal(text).map(|(value, rest)| (Value::from(value), rest))?,
    };
    match exponent(rest) {
        Some((exponent, rest)) => Some((base.pow(exponent)?, rest)),
        None => Some((base, rest)),
    }
}

/// The root of the argument after `\sqrt`, and what follows it.
fn square_root(argument: &str) -> Option<(Value, &str)> {
    let (radicand, rest) = latex_argument(argument.trim_start())?;
    Some((whole_number(radicand)?.sqrt()?, rest))
}

/// The exponent of `^{-2}` or `^3` at the start of `text`, and what follows it.
fn exponent(text: &str) -> Option<(i32, &str)> {
    let after = text.strip_prefix('^')?;
    let (exponent, rest) = match after.strip_prefix('{') {
        Some(inner) => {
            let arg = braced(inner)?;
            (arg.trim(), &inner[arg.len() + 1..])
        }
        None => after.split_at(digit_count(after)),
    };
    Some((exponent.parse().ok()?, rest))
}

/// Digits with optional `,` thousands separators (groups of three), a decimal part (`5.`
/// and `.5` too) and an `e` exponent (`2e3`).
fn decimal(text: &str) -> Option<(Decimal, &str)> {
    let integer_end = integer_length(text);
    let fraction_end = match text[integer_end..].strip_prefix('.') {
        Some(after) if after.starts_with(|c: char| c.is_ascii_digit()) => {
            integer_end + 1 + digit_count(after)
        }
        _ => integer_end,
    };
    if fraction_end == 0 {
        return None;
    }
    let end = fraction_end + exponent_length(&text[fraction_end..]);
    let fraction = text.get(integer_end + 1..fraction_end).unwrap_or("");
    // An exponent too large for an i64 (`1e99999999999999999999`) is no number we read.
    let exponent = match &text[fraction_end..end] {
        "" => 0,
        written => written[1..].parse().ok()?,
    };
    let value = Decimal::parse(&text[..integer_end], fraction, exponent)?;
    Some((value, &text[end..]))
}

/// The length of an `e3`, `E-4` exponent at the start of `text`; 0 when there is none
/// (`5 eggs`, `5em`).
fn exponent_length(text: &str) -> usize {
    let Some(after_e) = text.strip_prefix(['e', 'E']) else {
        return 0;
    };
    let sign = usize::from(after_e.starts_with(['+', '-']));
    match digit_count(&after_e[sign..]) {
        0 => 0,
        digits => 1 + sign + digits,
    }
}

/// The length of the leading digits, including `,` separators followed by three digits.
fn integer_length(text: &str) -> usize {
    let mut end = digit_count(text);
    while end > 0 && text[end..].starts_with(',') {
        let group = digit_count(&text[end + 1..]);
        if group != 3 {
            break;
        }
        end += 1 + group;
    }
    end
}

fn digit_count(text: &str) -> usize {
    text.bytes().take_while(u8::is_ascii_digit).count()
}

/// Whether what follows a number is nothing, punctuation, or words (units, "dollars").
/// Words holding another number (`5 or 6`, `3 hours 20 minutes`) make the answer more
/// than one number.
fn trailing_words_only(rest: &str) -> bool {
    let rest = rest.trim();
    let words = rest.starts_with(char::is_alphabetic) && !holds_number(rest);
    rest.is_empty() || words || rest.chars().all(|c| ".,;:!".contains(c))
}

/// Whether `text` holds a digit that is not a unit's exponent (`cm^2`, `m^{3}`).
fn holds_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| {
        let exponent = bytes[..i].ends_with(b"^") || bytes[..i].ends_with(b"^{");
        bytes[i].is_ascii_digit() && !exponent
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value as an f64, as the tests spell it.
    fn value(answer: &str) -> Option<f64> {
        normalize(answer).map(|n| n.to_f64().expect("an f64-sized value"))
    }

    #[test]
    fn separators_currency_and_units() {
        assert_eq!(value("70,000"), Some(70000.0));
        assert_eq!(value("14{,}916"), Some(14916.0));
        assert_eq!(value("$1,234.50"), Some(1234.5));
        assert_eq!(value("€5"), Some(5.0));
        assert_eq!(value("5 apples."), Some(5.0));
        assert_eq!(value("12\\text{ dollars}"), Some(12.0));
        assert_eq!(value("\\$\\ 5"), Some(5.0));
        assert_eq!(value("18.00"), Some(18.0));
    }

    #[test]
    fn signs_percent_and_equations() {
        assert_eq!(value("-3"), Some(-3.0));
        assert_eq!(value("-$4"), Some(-4.0));
        assert_eq!(value("50\\%"), Some(50.0));
        assert_eq!(value("x = 5"), Some(5.0));
        assert_eq!(value("−7"), Some(-7.0));
    }

    #[test]
    fn fullwidth_forms_read_as_ascii() {
        assert_eq!(value("１２"), Some(12.0));
        assert_eq!(value("－５"), Some(-5.0));
        assert_eq!(value("３．５％"), Some(3.5));
        assert_eq!(value("１，０８０\u{3000}元"), Some(1080.0));
    }

    #[test]
    fn fractions() {
        assert_eq!(value("\\frac{3}{4}"), Some(0.75));
        assert_eq!(value("\\dfrac{1}{2}"), Some(0.5));
        assert_eq!(value("\\frac34"), Some(0.75));
        assert_eq!(value("-\\frac{1}{4}"), Some(-0.25));
        assert_eq!(value("3/4"), Some(0.75));
        assert_eq!(value("\\frac{1}{0}"), None);
    }

    #[test]
    fn scientific_notation_and_powers() {
        assert_eq!(value("2e3"), Some(2000.0));
        assert_eq!(value("1.5E-1"), Some(0.15));
        assert_eq!(value("1.5 \\times 10^{6}"), Some(1_500_000.0));
        assert_eq!(value("3 \\cdot 10^2 m"), Some(300.0));
        assert_eq!(value("10^6"), Some(1e6));
        assert_eq!(value("5 eggs"), Some(5.0));
        assert_eq!(value("2^{10}"), Some(1024.0));
        assert_eq!(value("2^10"), Some(1024.0));
        assert_eq!(value("2^{-1}"), Some(0.5));
        assert_eq!(value("2^{1/2}"), None);
    }

    #[test]
    fn products_of_numbers() {
        assert_eq!(value("3 \\times 4"), Some(12.0));
        assert_eq!(value("3 \\cdot 4"), Some(12.0));
        assert_eq!(value("3*4"), Some(12.0));
        assert_eq!(value("3 × 4 · 5"), Some(60.0));
        assert_eq!(value("2 \\times -3"), Some(-6.0));
        assert_eq!(value("-2 \\times 3"), Some(-6.0));
        assert_eq!(value("\\frac{1}{2} \\times 4"), Some(2.0));
        assert_eq!(value("6/2 \\times 3"), Some(9.0), "left to right");
        assert_eq!(value("3 \\times"), None);
        assert_eq!(value("3 \\times x"), None);
        let eight = ["2"; 8].join(" \\times ");
        assert_eq!(value(&eight), Some(256.0));
        assert_eq!(value(&format!("{eight} \\times 2")), None, "nine factors");
    }

    #[test]
    fn square_roots() {
        assert_eq!(value("\\sqrt{16}"), Some(4.0));
        assert!(matches!(normalize("\\sqrt{16}"), Some(Value::Exact(_))));
        assert_eq!(value("\\sqrt{2}"), Some(std::f64::consts::SQRT_2));
        assert_eq!(value("\\sqrt2"), Some(std::f64::consts::SQRT_2));
        assert_eq!(value("\\sqrt{\\frac{9}{4}}"), Some(1.5));
        assert_eq!(value("2\\sqrt{3}"), Some(2.0 * 3f64.sqrt()));
        assert_eq!(value("-\\sqrt{4}"), Some(-2.0));
        assert_eq!(value("\\sqrt{2}^{2}"), Some(2.0000000000000004));
        assert_eq!(value("\\sqrt{-4}"), None);
        assert_eq!(value("\\sqrt[3]{27}"), None, "no cube roots");
        assert_eq!(value("\\sqrt{x}"), None);
    }

    #[test]
    fn percent_signs_are_kept_apart_from_the_value() {
        let percent = |answer: &str| parse_number(answer).unwrap().map(|n| n.percent);
        assert_eq!(percent("50\\%"), Some(true));
        assert_eq!(percent("12.5 \\text{ percent}"), Some(true));
        assert_eq!(percent("12.5 percentage points"), Some(false));
        assert_eq!(percent("50"), Some(false));
    }

    #[test]
    fn extra_braces_around_an_answer_are_dropped() {
        assert_eq!(value("{5}"), Some(5.0));
        assert_eq!(value("{{{5}}}"), Some(5.0));
        assert_eq!(value("{ {5} }"), Some(5.0));
        assert_eq!(value("{\\frac{1}{2}}"), Some(0.5));
        assert_eq!(value("{5}{6}"), None);
        assert_eq!(value("{{5}"), None);
        assert_eq!(canonical_text("{{\\text{Blue}}}"), "blue");
        assert_eq!(without_enclosing_braces("{{5}+{6}}"), "{5}+{6}");
        assert_eq!(without_enclosing_braces("{}"), "{}");
    }

    #[test]
    fn mixed_numbers() {
        assert_eq!(value("2\\frac{1}{2}"), Some(2.5));
        assert_eq!(value("2 1/2 hours"), Some(2.5));
        assert_eq!(value("-2\\dfrac{1}{2}"), Some(-2.5));
        assert_eq!(value("2 0.5"), None);
        assert_eq!(value("2.5 \\frac{1}{2}"), None);
        assert_eq!(value("2 \\frac{3}{2}"), None);
    }

    #[test]
    fn one_number_with_words_but_not_two() {
        assert_eq!(value("12\\text{ cm}^2"), Some(12.0));
        assert_eq!(value("90^\\circ"), Some(90.0));
        assert_eq!(value("\\(18\\)"), Some(18.0));
        assert_eq!(value("18 \\quad \\text{dollars}"), Some(18.0));
        assert_eq!(value("5 \\text{ or } 6"), None);
        assert_eq!(value("3 hours 20 minutes"), None);
    }

    #[test]
    fn non_numbers() {
        assert_eq!(value("3 + 4"), None);
        assert_eq!(value("x^2"), None);
        assert_eq!(value("1,23"), None);
        assert_eq!(value(""), None);
    }

    #[test]
    fn canonical_text_ignores_case_spacing_and_wrappers() {
        assert_eq!(canonical_text("\\text{Blue Car}."), "bluecar");
        assert_eq!(canonical_text("x^{2} + 1"), "x^{2}+1");
    }
}
