//! Answer extraction from model text: the last `\boxed{…}`, else GSM8K's `#### N`, else
//! "the answer is …", else the last number; once for the text after `</think>` and once
//! for the reasoning inside `<think>…</think>`. When the text after `</think>` states no
//! answer, the think block's last box comes before that text's last number. A `<think>`
//! never closed leaves no final text: the generation stopped before its answer.

/// How an answer was found (the first rule that matched, in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Boxed,
    Hashes,
    AnswerIs,
    /// The last `\boxed{}` of a closed think block, the text after it stating no answer.
    ThinkBoxed,
    LastNumber,
    /// No rule matched: the text holds no answer.
    NotFound,
}

/// The answers found in one model output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// From the text after the last `</think>`, or the whole text without think tags. None
    /// when a `<think>` is never closed: the model was cut off before its final answer.
    pub final_answer: Option<String>,
    /// From the reasoning inside the last think block, closed or not; None without one.
    pub think_answer: Option<String>,
    /// How `final_answer` was found.
    pub method: Method,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const BOXED: &str = "\\boxed";
const HASHES: &str = "####";

/// Extracts the final answer and the think block's answer of `text`.
pub fn extract(text: &str) -> Extracted {
    let (final_answer, method) = match find_final_answer(text) {
        Some((answer, method)) => (Some(answer), method),
        None => (None, Method::NotFound),
    };
    Extracted {
        final_answer,
        think_answer: think_text(text)
            .and_then(find_answer)
            .map(|(answer, _)| answer),
        method,
    }
}

/// The final answer of `text` alone, as [`extract`] finds it, without reading the think
/// block (verdicts need only this).
pub(super) fn final_answer(text: &str) -> Option<String> {
    find_final_answer(text).map(|(answer, _)| answer)
}

/// The final answer and its rule: an answer the final text states (a box, `####`, "the
/// answer is"), else the last box of a closed think block, else the final text's last
/// number. A boxed answer beats an unboxed number wherever it stands: a number after
/// `</think>` ("that took 2 steps") is no answer to a box inside it. A stated answer
/// after `</think>` beats the think block's box: the model may revise its answer there.
fn find_final_answer(text: &str) -> Option<(String, Method)> {
    let final_text = final_text(text)?;
    stated_answer(final_text)
        .or_else(|| last_boxed(think_text(text)?).map(|a| (a, Method::ThinkBoxed)))
        .or_else(|| last_number(final_text).map(|a| (a, Method::LastNumber)))
}

/// The text that holds the final answer: after the last `</think>`, or all of a text
/// without think tags. None after a `<think>` that is never closed (a generation cut off
/// mid-reasoning): unfinished reasoning holds no answer, boxed or not.
fn final_text(text: &str) -> Option<&str> {
    let after = rfind(text, THINK_CLOSE).map_or(text, |close| &text[close + THINK_CLOSE.len()..]);
    (!after.contains(THINK_OPEN)).then_some(after)
}

/// The reasoning of the last think block, closed or not; None without think tags. The
/// template may have put `<think>` in the prompt: then the reasoning starts the text.
fn think_text(text: &str) -> Option<&str> {
    match rfind(text, THINK_CLOSE) {
        Some(close) if !text[close..].contains(THINK_OPEN) => {
            after_last_open(&text[..close]).or(Some(&text[..close]))
        }
        _ => after_last_open(text),
    }
}

fn after_last_open(text: &str) -> Option<&str> {
    let open = rfind(text, THINK_OPEN)?;
    Some(&text[open + THINK_OPEN.len()..])
}

/// `text.rfind(needle)`, with texts that lack `needle` ruled out first by the forward
/// search, which is SIMD and several times faster than the backward one: a miss would
/// scan a whole reasoning trace backwards.
fn rfind(text: &str, needle: &str) -> Option<usize> {
    text.contains(needle).then(|| text.rfind(needle)).flatten()
}

/// The answer of one stretch of text and the rule that found it.
fn find_answer(text: &str) -> Option<(String, Method)> {
    stated_answer(text).or_else(|| last_number(text).map(|a| (a, Method::LastNumber)))
}

/// The answer the text states: its last box, else `#### N`, else "the answer is N".
fn stated_answer(text: &str) -> Option<(String, Method)> {
    last_boxed(text)
        .map(|a| (a, Method::Boxed))
        .or_else(|| after_hashes(text).map(|a| (a, Method::Hashes)))
        .or_else(|| after_answer_is(text).map(|a| (a, Method::AnswerIs)))
}

/// The content of the last `\boxed{…}` (nested braces kept) or `\boxed 5` that holds
/// something, "last" by where `\boxed` starts. One pass from the first `\boxed`: a brace
/// counter pairs each box's `{` with its `}`, so nested or unclosed boxes cost no rescan.
fn last_boxed(text: &str) -> Option<String> {
    let first = text.find(BOXED)?;
    let mut scan = BoxScan::new(text);
    let bytes = text.as_bytes();
    let mut at = first;
    while at < bytes.len() {
        at = match bytes[at] {
            b'\\' if bytes[at..].starts_with(BOXED.as_bytes()) => scan.command(at),
            b'{' => scan.open(at),
            b'}' => scan.close(at),
            _ => at + 1,
        };
    }
    scan.best.map(|(_, content)| content.to_string())
}

/// The state of [`last_boxed`]'s pass.
struct BoxScan<'a> {
    text: &'a str,
    /// How many braces are open.
    depth: usize,
    /// The boxes whose `{` is open, innermost last: the depth inside the box's brace,
    /// where `\boxed` starts and where its content starts.
    open_boxes: Vec<(usize, usize, usize)>,
    /// The box holding something with the latest `\boxed`: where it starts, its content.
    best: Option<(usize, &'a str)>,
}

impl<'a> BoxScan<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            depth: 0,
            open_boxes: Vec::new(),
            best: None,
        }
    }

    /// A `\boxed` at `start`: its `{` opens a box; after spaces, a token is a box (`\boxed
    /// 5`), as TeX skips spaces before an argument. Returns where the pass goes on: at
    /// the argument, whose braces and commands count like any others.
    fn command(&mut self, start: usize) -> usize {
        let after = start + BOXED.len();
        let rest = &self.text[after..];
        let argument = rest.trim_start();
        let argument_at = self.text.len() - argument.len();
        if argument.starts_with('{') {
            self.depth += 1;
            self.open_boxes.push((self.depth, start, argument_at + 1));
            return argument_at + 1;
        }
        if argument.len() < rest.len() {
            let token = argument
                .split(|c: char| c.is_whitespace() || c == '$')
                .next()
                .unwrap_or("");
            self.offer(start, token);
        }
        argument_at
    }

    fn open(&mut self, at: usize) -> usize {
        self.depth += 1;
        at + 1
    }

    /// A `}` at `at`: closes the innermost box when its brace is the one open.
    fn close(&mut self, at: usize) -> usize {
        if self.depth == 0 {
            return at + 1;
        }
        if let Some(&(depth, start, content)) = self.open_boxes.last() {
            if depth == self.depth {
                self.open_boxes.pop();
                self.offer(start, &self.text[content..at]);
            }
        }
        self.depth -= 1;
        at + 1
    }

    /// A box's content, kept when it holds something and its `\boxed` is the latest.
    fn offer(&mut self, start: usize, content: &'a str) {
        let content = content.trim();
        let later = self.best.is_none_or(|(best_start, _)| start > best_start);
        if !content.is_empty() && later {
            self.best = Some((start, content));
        }
    }
}

/// The text up to the brace that closes an already opened `{`; None when it never closes.
pub(super) fn braced(inner: &str) -> Option<&str> {
    let mut depth = 0usize;
    for (i, c) in inner.bytes().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' if depth == 0 => return Some(&inner[..i]),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The rest of the line after the last `####`.
fn after_hashes(text: &str) -> Option<String> {
    let (_, rest) = text.split_at(rfind(text, HASHES)? + HASHES.len());
    non_empty(rest.lines().next().unwrap_or(""))
}

const ANSWER_IS: &[u8] = b"answer is";

/// The clause after the last "answer is" (any case) that holds a number. A later one
/// without a number ("let me check the answer is right") does not hide an earlier answer.
///
/// Linear however many there are: once a later clause is known to hold no digit, an
/// earlier clause running into it holds none past its start either (it ends at the same
/// place or before), so the earlier one is searched only up to there.
fn after_answer_is(text: &str) -> Option<String> {
    let mut end = text.len();
    let mut digit_free_from = text.len();
    while let Some(at) = rfind_ignore_ascii_case(&text.as_bytes()[..end], ANSWER_IS) {
        let rest_start = at + ANSWER_IS.len();
        let searched = &text[rest_start..digit_free_from];
        if answer_clause(searched).is_some() {
            return answer_clause(&text[rest_start..]);
        }
        // An "answer isn't" is refused before its clause is read: it proves no digit absent.
        if !searched.starts_with(char::is_alphanumeric) {
            digit_free_from = rest_start;
        }
        end = at;
    }
    None
}

/// Where the last occurrence of `needle` (lower case ASCII) starts, in any case.
fn rfind_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window.eq_ignore_ascii_case(needle))
}

/// The answer after "answer is", up to the end of its line, sentence or clause, when it
/// holds a digit. "answer isn't" is not "answer is".
fn answer_clause(rest: &str) -> Option<String> {
    if rest.starts_with(char::is_alphanumeric) {
        return None;
    }
    let rest = rest.trim_start_matches([':', ' ', '*']);
    let line = rest.lines().next().unwrap_or("");
    let answer = clause(line).trim_end_matches(['*', ' ', '.']);
    answer
        .contains(|c: char| c.is_ascii_digit())
        .then(|| answer.trim().to_string())
}

/// Where a clause ends: a full stop, comma or semicolon before a space, or a parenthesis
/// (`18, because 9 eggs…`, `18 (9 eggs at $2)`). `1,080` and `7.5` hold no space.
const CLAUSE_ENDS: [&str; 4] = [". ", ", ", "; ", " ("];

/// `line` up to the end of its first clause.
fn clause(line: &str) -> &str {
    let end = CLAUSE_ENDS
        .iter()
        .filter_map(|end| line.find(end))
        .min()
        .unwrap_or(line.len());
    &line[..end]
}

/// `\frac` spellings whose `{a}{b}` may hold the last number.
const FRACTIONS: [&str; 3] = ["\\frac{", "\\dfrac{", "\\tfrac{"];
/// Currency signs that may stand between a minus and its number (`-$4`).
const CURRENCY: [&str; 4] = ["\\$", "$", "€", "£"];

/// The last number in the text as written: digits with `,` or `{,}` separators and a
/// decimal part (`.5` too), with the fraction it is the denominator of (`3/4`,
/// `\frac{3}{4}`) and its minus sign.
fn last_number(text: &str) -> Option<String> {
    let end = text.bytes().rposition(|b| b.is_ascii_digit())? + 1;
    let start = number_start(text, end);
    let (start, end) = match latex_fraction_around(text, start, end) {
        Some(span) => span,
        None => (slash_numerator_start(text, start).unwrap_or(start), end),
    };
    Some(text[signed_start(text, start)..end].to_string())
}

/// Where the number ending at `end` (just after a digit) starts: its first digit, or the
/// `.` of a leading-dot decimal.
fn number_start(text: &str, end: usize) -> usize {
    let run = run_start(text, end);
    let bytes = text.as_bytes();
    let first_digit = run
        + bytes[run..end]
            .iter()
            .take_while(|b| !b.is_ascii_digit())
            .count();
    if first_digit > run && bytes[first_digit - 1] == b'.' {
        first_digit - 1
    } else {
        first_digit
    }
}

/// The start of the run of digits, `,`, `.` and `{,}` that ends at `end`.
fn run_start(text: &str, end: usize) -> usize {
    let bytes = text.as_bytes();
    let mut start = end;
    loop {
        if start > 0 && matches!(bytes[start - 1], b'0'..=b'9' | b',' | b'.') {
            start -= 1;
        } else if bytes[..start].ends_with(b"{,}") {
            start -= 3;
        } else {
            return start;
        }
    }
}

/// The span of `\frac{a}{b}` when the number at `start..end` is its `b`.
fn latex_fraction_around(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(end) != Some(&b'}') || !bytes[..start].ends_with(b"}{") {
        return None;
    }
    let numerator_end = start - 2;
    let numerator_start = run_start(text, numerator_end);
    let command = FRACTIONS
        .iter()
        .find(|command| bytes[..numerator_start].ends_with(command.as_bytes()))?;
    (numerator_start < numerator_end).then(|| (numerator_start - command.len(), end + 1))
}

/// The start of `a/b` when the number at `start` is its `b`.
fn slash_numerator_start(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let numerator_end = start.checked_sub(1).filter(|&i| bytes[i] == b'/')?;
    let has_numerator = numerator_end > 0 && bytes[numerator_end - 1].is_ascii_digit();
    has_numerator.then(|| number_start(text, numerator_end))
}

/// Where the number at `start` starts with its minus sign (`-`, `−`), also one before a
/// currency sign (`-$4`). A `-` right after a letter or digit is a hyphen (`COVID-19`).
fn signed_start(text: &str, start: usize) -> usize {
    let before = &text[..start];
    let before = CURRENCY
        .iter()
        .find_map(|sign| before.strip_suffix(sign))
        .unwrap_or(before);
    match ["-", "−"]
        .iter()
        .find_map(|minus| before.strip_suffix(minus))
    {
        Some(rest) if !rest.ends_with(|c: char| c.is_ascii_alphanumeric()) => rest.len(),
        _ => start,
    }
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
    fn boxed_allows_spaces_before_its_brace() {
        assert_eq!(final_of("$\\boxed {18}$"), (some("18"), Method::Boxed));
    }

    #[test]
    fn answer_is_takes_the_clause_holding_a_number() {
        assert_eq!(
            final_of("The answer is 18, because 9 * 2 = 18."),
            (some("18"), Method::AnswerIs)
        );
        assert_eq!(after_answer_is("the answer is 18 (9 eggs)"), some("18"));
        assert_eq!(
            after_answer_is("The answer is 7. Check: the answer is right."),
            some("7")
        );
        assert_eq!(after_answer_is("the answer isn't 7"), None);
        assert_eq!(after_answer_is("The Final ANSWER IS: 5"), some("5"));
    }

    #[test]
    fn last_number_keeps_separators_and_signs_but_not_hyphens() {
        assert_eq!(last_number("it is -3."), some("-3"));
        assert_eq!(last_number("total 14{,}916 cm"), some("14{,}916"));
        assert_eq!(last_number("COVID-19"), some("19"));
        assert_eq!(last_number("left with -$4."), some("-$4"));
        assert_eq!(last_number("down to −5"), some("−5"));
        assert_eq!(last_number("no digits"), None);
    }

    #[test]
    fn last_number_takes_leading_dots_and_whole_fractions() {
        assert_eq!(last_number("p = .5"), some(".5"));
        assert_eq!(last_number("items,5"), some("5"));
        assert_eq!(last_number("gets 3/4 of it"), some("3/4"));
        assert_eq!(last_number("ate $-\\dfrac{3}{4}$."), some("-\\dfrac{3}{4}"));
        assert_eq!(last_number("{3}{4}"), some("4"));
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

    #[test]
    fn a_think_box_beats_a_stray_number_after_the_think_block() {
        let stray = "<think>so \\boxed{18}</think>That took 2 steps.";
        assert_eq!(final_of(stray), (some("18"), Method::ThinkBoxed));
        let nothing_after = "<think>first \\boxed{3}, then \\boxed{4}</think>";
        assert_eq!(final_of(nothing_after), (some("4"), Method::ThinkBoxed));
        let close_only = "reasoning \\boxed{6}</think> in 3 steps";
        assert_eq!(final_of(close_only), (some("6"), Method::ThinkBoxed));
    }

    #[test]
    fn an_answer_stated_after_the_think_block_beats_its_box() {
        let revised = "<think>\\boxed{18}</think>So the answer is 17.";
        assert_eq!(final_of(revised), (some("17"), Method::AnswerIs));
        let hashes = "<think>\\boxed{18}</think>\n#### 17";
        assert_eq!(final_of(hashes), (some("17"), Method::Hashes));
        let boxed = "<think>\\boxed{18}</think>\\boxed{17}";
        assert_eq!(final_of(boxed), (some("17"), Method::Boxed));
        let unboxed_think = "<think>it is 18</think>That took 2 steps.";
        assert_eq!(final_of(unboxed_think), (some("2"), Method::LastNumber));
    }

    #[test]
    fn an_unclosed_think_block_has_no_final_answer() {
        let e = extract("<think>so far 12");
        assert_eq!((e.think_answer, e.final_answer), (some("12"), None));
        let e = extract("<think>a</think> 5 <think>then 7");
        assert_eq!((e.think_answer, e.final_answer), (some("7"), None));
        assert_eq!(final_answer("reasoning 3</think> so 4"), some("4"));
        assert_eq!(extract("reasoning 3</think> so 4").think_answer, some("3"));
    }
}
