//! Answer normalisation: LaTeX, currency, separators, units and `x =` stripped down to a
//! numeric value, or to a canonical string when the answer is not a number.

use super::extract::braced;

/// LaTeX commands whose braced argument is kept as plain text.
const TEXT_COMMANDS: [&str; 5] = ["\\text", "\\textbf", "\\mathrm", "\\mbox", "\\mathbf"];

/// Spellings removed outright: LaTeX spacing and sizing, currency, emphasis.
const NOISE: [&str; 14] = [
    "\\!", "\\,", "\\;", "\\:", "\\ ", "\\left", "\\right", "\\$", "$", "€", "£", "¥", "**", "~",
];

/// The numeric value of an answer: `70,000`, `14{,}916`, `$1,234.50`, `5 apples`, `50%`
/// (as 50), `-3`, `\frac{3}{4}`, `\frac34`, `3/4`, `x = 5`. None when it is not a number.
pub fn normalize(answer: &str) -> Option<f64> {
    let cleaned = clean(answer);
    let value_part = cleaned.rsplit('=').next().unwrap_or("");
    let (value, rest) = signed_value(value_part.trim())?;
    trailing_words_only(rest).then_some(value)
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

/// The answer without LaTeX wrappers, spacing, currency and with `{,}` as `,`.
fn clean(answer: &str) -> String {
    let mut text = answer
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
        .replace("{,}", ",")
        .replace("\\%", "%")
        .replace('−', "-");
    for command in TEXT_COMMANDS {
        text = unwrap_command(&text, command);
    }
    for noise in NOISE {
        text = text.replace(noise, "");
    }
    text.trim().to_string()
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

/// A signed number, fraction or `\frac` at the start of `text`, and what follows it.
fn signed_value(text: &str) -> Option<(f64, &str)> {
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest.trim_start()),
        None => (1.0, text.strip_prefix('+').unwrap_or(text).trim_start()),
    };
    let (value, rest) = match unsigned.strip_prefix("\\frac") {
        Some(args) => latex_fraction(args)?,
        None => slash_fraction(unsigned)?,
    };
    let rest = rest.trim_start();
    Some((sign * value, rest.strip_prefix('%').unwrap_or(rest)))
}

/// `{3}{4}` or `34` after `\frac`.
fn latex_fraction(args: &str) -> Option<(f64, &str)> {
    let (numerator, rest) = latex_argument(args.trim_start())?;
    let (denominator, rest) = latex_argument(rest.trim_start())?;
    let numerator = whole_number(numerator)?;
    let denominator = whole_number(denominator)?;
    (denominator != 0.0).then_some((numerator / denominator, rest))
}

/// One `\frac` argument: a braced group or a single character.
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

/// A string that is exactly one signed number.
fn whole_number(text: &str) -> Option<f64> {
    let (value, rest) = signed_value(text.trim())?;
    rest.is_empty().then_some(value)
}

/// A decimal, optionally followed by `/ decimal`.
fn slash_fraction(text: &str) -> Option<(f64, &str)> {
    let (numerator, rest) = decimal(text)?;
    let Some(after_slash) = rest.trim_start().strip_prefix('/') else {
        return Some((numerator, rest));
    };
    match decimal(after_slash.trim_start()) {
        Some((denominator, rest)) if denominator != 0.0 => Some((numerator / denominator, rest)),
        _ => None,
    }
}

/// Digits with optional `,` thousands separators (groups of three) and a decimal part.
fn decimal(text: &str) -> Option<(f64, &str)> {
    let integer_end = integer_length(text);
    let fraction_end = match text[integer_end..].strip_prefix('.') {
        Some(after) if after.starts_with(|c: char| c.is_ascii_digit()) => {
            integer_end + 1 + digit_count(after)
        }
        _ => integer_end,
    };
    let digits: String = text[..fraction_end].chars().filter(|&c| c != ',').collect();
    let value = digits.parse().ok()?;
    Some((value, &text[fraction_end..]))
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
fn trailing_words_only(rest: &str) -> bool {
    let rest = rest.trim();
    rest.is_empty()
        || rest.starts_with(char::is_alphabetic)
        || rest.chars().all(|c| ".,;:!".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_currency_and_units() {
        assert_eq!(normalize("70,000"), Some(70000.0));
        assert_eq!(normalize("14{,}916"), Some(14916.0));
        assert_eq!(normalize("$1,234.50"), Some(1234.5));
        assert_eq!(normalize("€5"), Some(5.0));
        assert_eq!(normalize("5 apples."), Some(5.0));
        assert_eq!(normalize("12\\text{ dollars}"), Some(12.0));
        assert_eq!(normalize("\\$\\ 5"), Some(5.0));
        assert_eq!(normalize("18.00"), Some(18.0));
    }

    #[test]
    fn signs_percent_and_equations() {
        assert_eq!(normalize("-3"), Some(-3.0));
        assert_eq!(normalize("-$4"), Some(-4.0));
        assert_eq!(normalize("50\\%"), Some(50.0));
        assert_eq!(normalize("x = 5"), Some(5.0));
    }

    #[test]
    fn fractions() {
        assert_eq!(normalize("\\frac{3}{4}"), Some(0.75));
        assert_eq!(normalize("\\dfrac{1}{2}"), Some(0.5));
        assert_eq!(normalize("\\frac34"), Some(0.75));
        assert_eq!(normalize("-\\frac{1}{4}"), Some(-0.25));
        assert_eq!(normalize("3/4"), Some(0.75));
        assert_eq!(normalize("\\frac{1}{0}"), None);
    }

    #[test]
    fn non_numbers() {
        assert_eq!(normalize("3 + 4"), None);
        assert_eq!(normalize("x^2"), None);
        assert_eq!(normalize("1,23"), None);
        assert_eq!(normalize(""), None);
    }

    #[test]
    fn canonical_text_ignores_case_spacing_and_wrappers() {
        assert_eq!(canonical_text("\\text{Blue Car}."), "bluecar");
        assert_eq!(canonical_text("x^{2} + 1"), "x^{2}+1");
    }
}
