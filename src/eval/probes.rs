//! The chat-forgetting probe: ordinary, non-math requests whose replies should hold no
//! math. A student over-fitted on reasoning traces answers "Hello!" with a worked
//! equation or a `\boxed{}` answer, or opens a `<think>` block; these checks catch that.

/// The default probes: greetings, facts, creative and practical requests.
pub const DEFAULT_PROBES: &[&str] = &[
    "Hello!",
    "What is the capital of France?",
    "Tell me a joke.",
    "Write a haiku about autumn.",
    "What colour is the sky on a clear day?",
    "Give me three tips for staying healthy.",
    "Translate 'good morning' into Spanish.",
    "Who wrote Romeo and Juliet?",
];

/// Whether a reply to a non-math prompt shows math it was not asked for: a `\boxed`
/// answer, GSM8K's `####`, or an arithmetic equation such as `3 + 4 = 7`.
pub fn has_math(reply: &str) -> bool {
    reply.contains("\\boxed") || reply.contains("####") || has_equation(reply)
}

/// Whether a reply opens or closes a think block.
pub fn has_think(reply: &str) -> bool {
    reply.contains("<think>") || reply.contains("</think>")
}

/// An `=` preceded by `number operator number` (spaces allowed), e.g. `12 * 3 =`.
fn has_equation(text: &str) -> bool {
    text.match_indices('=').any(|(i, _)| {
        let before: Vec<char> = text[..i].chars().rev().filter(|c| *c != ' ').collect();
        let after_number = skip_number(&before, 0);
        after_number > 0
            && before
                .get(after_number)
                .is_some_and(|c| "+-*/×÷".contains(*c))
            && skip_number(&before, after_number + 1) > after_number + 1
    })
}

/// Index just past the run of digits (with `.` and `,`) starting at `from` in `chars`
/// read backwards; `from` itself when there is no digit there.
fn skip_number(chars: &[char], from: usize) -> usize {
    let mut i = from;
    while i < chars.len() && (chars[i].is_ascii_digit() || (i > from && ".,".contains(chars[i]))) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn math_is_found_in_equations_boxes_and_hashes() {
        assert!(has_math("Sure! 3 + 4 = 7."));
        assert!(has_math("She has 12*3= 36 eggs"));
        assert!(has_math("It costs 1,200 / 4 = 300 dollars"));
        assert!(has_math("The answer is \\boxed{5}"));
        assert!(has_math("#### 5"));
        assert!(!has_math("Hello! How can I help you today?"));
        assert!(!has_math(
            "The capital of France is Paris. It has 2 million people."
        ));
        assert!(!has_math("Set x = y in the config"));
        assert!(!has_math("a-b = c"));
    }

    #[test]
    fn think_tags_are_found() {
        assert!(has_think("<think>hmm</think> Hi"));
        assert!(has_think("Hi</think>"));
        assert!(!has_think("Hi, I think so."));
    }
}
