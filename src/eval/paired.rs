//! Paired comparison of two evaluations on the same questions: which questions only one
//! of them answers correctly, and the exact McNemar test of whether the two are equally
//! accurate. Two models' accuracy intervals can overlap while the paired test, which
//! looks only at the questions where they differ, still tells them apart (or does not).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::report::Answer;
use crate::data::TraceId;

/// Two evaluations' verdicts on the questions both answered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Questions both evaluations answered.
    pub questions: usize,
    pub both_correct: usize,
    /// Correct in the first evaluation only.
    pub only_first: usize,
    /// Correct in the second evaluation only.
    pub only_second: usize,
    /// Two-sided exact McNemar p-value: the chance of a split of the discordant questions
    /// at least this uneven if both were equally accurate.
    pub p_value: f64,
}

/// Pairs `first` and `second` by question id (the same question text as well).
pub fn paired(first: &[Answer], second: &[Answer]) -> Paired {
    let by_id: HashMap<&TraceId, &Answer> = first.iter().map(|a| (&a.id, a)).collect();
    let (mut questions, mut both, mut only_first, mut only_second) = (0, 0, 0, 0);
    for b in second {
        let Some(a) = by_id.get(&b.id).filter(|a| a.question == b.question) else {
            continue;
        };
        questions += 1;
        match (a.correct, b.correct) {
            (true, true) => both += 1,
            (true, false) => only_first += 1,
            (false, true) => only_second += 1,
            (false, false) => {}
        }
    }
    Paired {
        questions,
        both_correct: both,
        only_first,
        only_second,
        p_value: mcnemar_exact(only_first, only_second),
    }
}

/// Two-sided exact McNemar test: 2·P(X ≤ min(b, c)) for X ~ Binomial(b + c, ½), at most
/// 1. Computed in log space, so thousands of discordant pairs do not underflow.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let n_f = n as f64;
    let mut log_choose = 0.0f64;
    let mut tail = 0.0f64;
    for k in 0..=b.min(c) {
        if k > 0 {
            log_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        tail += (log_choose - n_f * std::f64::consts::LN_2).exp();
    }
    (2.0 * tail).min(1.0)
}

/// Each evaluation after the first paired with the first, as a Markdown table.
pub fn paired_markdown(names: &[String], answers: &[Vec<Answer>]) -> String {
    let mut md = String::from(
        "| pair | questions | both correct | only the first | only the second | McNemar exact p |\n\
         |---|--:|--:|--:|--:|--:|\n",
    );
    for (name, second) in names.iter().zip(answers).skip(1) {
        let p = paired(&answers[0], second);
        let _ = writeln!(
            md,
            "| {} → {} | {} | {} | {} | {} | {:.3} |",
            names[0], name, p.questions, p.both_correct, p.only_first, p.only_second, p.p_value
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: i64, correct: bool) -> Answer {
        Answer {
            id: TraceId::Int(id),
            question: format!("q{id}"),
            gold: "1".into(),
            output: String::new(),
            answer: None,
            think_answer: None,
            correct,
            uses_think: false,
            think_disagrees: false,
            tokens: 0,
            stop: crate::sample::StopReason::Eos,
        }
    }

    #[test]
    fn answers_pair_by_id_and_only_common_questions_count() {
        let first = [
            answer(1, true),
            answer(2, true),
            answer(3, false),
            answer(4, true),
        ];
        let mut other_question = answer(4, false);
        other_question.question = "another".into();
        let second = [
            answer(3, true),
            answer(2, false),
            answer(1, true),
            other_question,
            answer(9, true),
        ];
        let p = paired(&first, &second);
        assert_eq!(
            (p.questions, p.both_correct, p.only_first, p.only_second),
            (3, 1, 1, 1)
        );
        assert_eq!(p.p_value, 1.0);
        let md = paired_markdown(
            &["a".into(), "b".into()],
            &[first.to_vec(), second.to_vec()],
        );
        assert!(md.contains("| a → b | 3 | 1 | 1 | 1 | 1.000 |"), "{md}");
    }

    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        // b = 1, c = 9: 2 * (1 + 10) / 1024.
        assert!((mcnemar_exact(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((mcnemar_exact(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // 2 * 0.5^12 for a 0–12 split.
        assert!((mcnemar_exact(0, 12) - 2.0 / 4096.0).abs() < 1e-15);
        // No underflow with 1,500 discordant pairs: 700 vs 800 is p ≈ 0.0105.
        let p = mcnemar_exact(700, 800);
        assert!(p > 0.009 && p < 0.012, "{p}");
    }
}
