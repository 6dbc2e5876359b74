//! Answer extraction from model text: the last `\boxed{…}`, else GSM8K's `#### N`, else
//! "the answer is …", else the last number; once for the text after `</think>` and once
//! for the reasoning inside `<think>…</think>`.

/// How an answer was found (the first rule that matched, in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Boxed,
    Hashes,
    AnswerIs,
    LastNumber,
    /// No rule matched: the text holds no answer.
    NotFound,
}

/// The answers found in one model output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// From the text after the last `</think>` if there is one, else from the whole text.
    pub final_answer: Option<String>,
    /// From the reasoning inside `<think>…</think>`; None without a closed think block.
    pub think_answer: Option<String>,
    /// How `final_answer` was found.
    pub method: Method,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Extracts the final answer and the think block's answer of `text`.
pub fn extract(text: &str) -> Extracted {
    let (think, after) = match text.rfind(THINK_CLOSE) {
        Some(close) => {
            let inside = &text[..close];
            let start = inside.rfind(THINK_OPEN).map_or(0, |i| i + THINK_OPEN.len());
            (Some(&inside[start..]), &text[close + THINK_CLOSE.len()..])
        }
        None => (None, text),
    };
    let (final_answer, method) = match find_answer(after) {
        Some((answer, method)) => (Some(answer), method),
        None => (None, Method::NotFound),
    };
    Extracted {
        final_answer,
        think_answer: think.and_then(find_answer).map(|(answer, _)| answer),
        method,
    }
}

/// The answer of one stretch of text and the rule that found it.
fn find_answer(text: &str) -> Option<(String, Method)> {
    last_boxed(text)
        .map(|a| (a, Method::Boxed))
        .or_else(|| after_hashes(text).map(|a| (a, Method::Hashes)))
        .or_else(|| after_answer_is(text).map(|a| (a, Method::AnswerIs)))
        .or_else(|| last_number(text).map(|a| (a, Method::LastNumber)))
}

/// The content of the last `\boxed{…}` (nested braces kept) or `\boxed 5` with any content.
fn last_boxed(text: &str) -> Option<String> {
    text.rmatch_indices("\\boxed")
        .find_map(|(i, cmd)| boxed_content(&text[i + cmd.len()..]))
}

fn boxed_content(rest: &str) -> Option<String> {
    let content = match rest.strip_prefix('{') {
        Some(inner) => braced(inner)?,
        None if rest.starts_with(char::is_whitespace) => rest
            .trim_start()
            .split(|c: char| c.is_whitespace() || c == '$')
            .next()?,
        None => return None,
    };
    let content = content.trim();
    (!content.is_empty()).then(|| content.to_string())
}

/// The text up to the brace that closes an already opened `{`; None when it never closes.
pub(super) fn braced(inner: &str) -> Option<&str> {
    let mut depth = 0usize;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(&inner[..i]),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The rest of the line after the last `####`.
fn after_hashes(text: &str) -> Option<String> {
    let (_, rest) = text.rsplit_once("####")?;
    non_empty(rest.lines().next().unwrap_or(""))
}

/// The sentence after the last "the answer is" (any case), up to a full stop or line end.
fn after_answer_is(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    // Lowercasing can change byte lengths outside ASCII; only search when it did not.
    if lower.len() != text.len() {
        return None;
    }
    let start = lower.rfind("answer is")? + "answer is".len();
    let rest = text[start..].trim_start_matches([':', ' ', '*']);
    let line = rest.lines().next().unwrap_or("");
    non_empty(sentence(line).trim_end_matches(['*', ' ', '.']))
}

/// `line` up to its first full stop that ends a sentence (one followed by a space).
fn sentence(line: &str) -> &str {
    line.find(". ").map_or(line, |i| &line[..i])
}

/// The last number in the text: digits with `,` separators and a decimal part, signed.
fn last_number(text: &str) -> Option<String> {
    let text = text.replace("{,}", ",");
    let bytes = text.as_bytes();
    let end = bytes.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|b| !(b.is_ascii_digit() || *b == b',' || *b == b'.'))
        .map_or(0, |i| i + 1);
    let digits = text[start..end].trim_start_matches([',', '.']);
    let negative = start > 0 && bytes[start - 1] == b'-' && !preceded_by_word(bytes, start - 1);
    Some(format!("{}{digits}", if negative { "-" } else { "" }))
}

/// Whether the byte before `i` is a letter or digit (so a `-` there is a hyphen or minus).
fn preceded_by_word(bytes: &[u8], i: usize) -> bool {
    i > 0 && bytes[i - 1].is_ascii_alphanumeric()
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_of(text: &str) -> (Option<String>, Method) {
        let e = extract(text);
        (e.final_answer, e.method)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn boxed_keeps_nested_braces_and_takes_the_last() {
        let text = "first \\boxed{1} then \\boxed{\\frac{1}{2}} done";
        assert_eq!(final_of(text), (some("\\frac{1}{2}"), Method::Boxed));
    }

    #[test]
    fn boxed_without_braces_takes_one_token() {
        assert_eq!(final_of("so $\\boxed 5$."), (some("5"), Method::Boxed));
    }

    #[test]
    fn unclosed_or_empty_boxes_fall_through() {
        assert_eq!(final_of("\\boxed{} is 7"), (some("7"), Method::LastNumber));
        assert_eq!(final_of("\\boxed{3 and 4"), (some("4"), Method::LastNumber));
    }

    #[test]
    fn hashes_then_answer_is_then_last_number() {
        assert_eq!(final_of("x\n#### 1,080\n"), (some("1,080"), Method::Hashes));
        assert_eq!(
            final_of("So the answer is 42. Done 7."),
            (some("42"), Method::AnswerIs)
        );
        assert_eq!(
            final_of("The Answer is: **$12.50**."),
            (some("$12.50"), Method::AnswerIs)
        );
        assert_eq!(final_of("3 then 4.5."), (some("4.5"), Method::LastNumber));
    }

    #[test]
    fn last_number_keeps_separators_and_signs_but_not_hyphens() {
        assert_eq!(last_number("it is -3."), some("-3"));
        assert_eq!(last_number("total 14{,}916 cm"), some("14,916"));
        assert_eq!(last_number("COVID-19"), some("19"));
        assert_eq!(last_number("no digits"), None);
    }

    #[test]
    fn think_and_final_answers_are_both_reported() {
        let e = extract("<think>maybe \\boxed{4}</think>The answer is \\boxed{5}");
        assert_eq!(e.think_answer, some("4"));
        assert_eq!(e.final_answer, some("5"));
        let e = extract("<think>I get 12</think>");
        assert_eq!((e.think_answer, e.final_answer), (some("12"), None));
        assert_eq!(e.method, Method::NotFound);
        assert_eq!(extract("no think 3").think_answer, None);
    }
}
