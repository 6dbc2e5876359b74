//! The evaluation report: its numbers computed from the per-question answers, written as
//! JSON and Markdown, and several reports side by side (`scotd eval --compare`).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::retention::RetentionReport;
use crate::data::TraceId;
use crate::sample::StopReason;
use crate::{Error, Result};

/// One question's answer, a line of `answers.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub id: TraceId,
    pub question: String,
    pub gold: String,
    pub output: String,
    /// The final answer (after `</think>` when there is one); null when none was found.
    pub answer: Option<String>,
    /// The answer inside the `<think>` block; null without a closed block.
    pub think_answer: Option<String>,
    pub correct: bool,
    /// The output holds `<think>`.
    pub uses_think: bool,
    /// Both answers exist and differ.
    pub think_disagrees: bool,
    pub tokens: u64,
    pub stop: StopReason,
}

/// A chat probe and the model's reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReply {
    pub prompt: String,
    pub reply: String,
    /// The reply shows math it was not asked for.
    pub math: bool,
    /// The reply holds a think tag.
    pub think: bool,
}

/// A count and its share of a total.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub count: usize,
    pub rate: f64,
}

impl Rate {
    pub(super) fn of(count: usize, total: usize) -> Rate {
        let rate = if total == 0 {
            0.0
        } else {
            count as f64 / total as f64
        };
        Rate { count, rate }
    }
}

/// `report.json`: what `scotd eval` measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub model: String,
    pub data: String,
    pub questions: usize,
    /// How `accuracy` was measured; reports written before it was named measured it so.
    #[serde(default = "scotd_protocol")]
    pub accuracy_protocol: String,
    pub accuracy: Rate,
    /// 95% Wilson score interval of the accuracy.
    pub accuracy_ci95: [f64; 2],
    /// Outputs in which no answer was found.
    pub no_answer: Rate,
    /// Outputs cut off by the token limit or the context.
    pub truncated: Rate,
    /// Outputs that use `<think>`.
    pub think: Rate,
    /// Of the outputs that use `<think>`, those whose inner and final answers differ.
    pub think_disagrees: Rate,
    pub mean_tokens: f64,
    pub probes: Vec<ProbeReply>,
    pub probes_with_math: usize,
    pub probes_with_think: usize,
    /// Chat retention on held-out chat rows, when they were given (`--chat`).
    #[serde(default)]
    pub retention: Option<RetentionReport>,
    /// lm-evaluation-harness's gsm8k exact_match, when it was asked for (`--lm-eval-fewshot`).
    #[serde(default)]
    pub lm_eval: Option<super::lm_eval::LmEvalReport>,
}

impl EvalReport {
    /// The report of `answers` (in any order) and the probes' replies.
    pub fn new(
        model: &str,
        data: &str,
        answers: &[Answer],
        probes: Vec<ProbeReply>,
        retention: Option<RetentionReport>,
    ) -> Self {
        let n = answers.len();
        let count = |f: &dyn Fn(&Answer) -> bool| answers.iter().filter(|a| f(a)).count();
        let correct = count(&|a| a.correct);
        let think = count(&|a| a.uses_think);
        let tokens: u64 = answers.iter().map(|a| a.tokens).sum();
        EvalReport {
            model: model.to_string(),
            data: data.to_string(),
            questions: n,
            accuracy_protocol: scotd_protocol(),
            accuracy: Rate::of(correct, n),
            accuracy_ci95: wilson_interval(correct, n),
            no_answer: Rate::of(count(&|a| a.answer.is_none()), n),
            truncated: Rate::of(count(&|a| a.stop != StopReason::Eos), n),
            think: Rate::of(think, n),
            think_disagrees: Rate::of(count(&|a| a.uses_think && a.think_disagrees), think),
            mean_tokens: if n == 0 {
                0.0
            } else {
                tokens as f64 / n as f64
            },
            probes_with_math: probes.iter().filter(|p| p.math).count(),
            probes_with_think: probes.iter().filter(|p| p.think).count(),
            probes,
            retention,
            lm_eval: None,
        }
    }

    /// Reads a `report.json`, or the one in a folder.
    pub fn read(path: &Path) -> Result<EvalReport> {
        let file = if path.is_dir() {
            path.join("report.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::format(&file, "(json)", format!("not a scotd eval report: {e}")))
    }

    pub fn markdown(&self) -> String {
        let mut md = format!("# Evaluation of {}\n\nData: {}\n\n", self.model, self.data);
        md.push_str(&compare_markdown(std::slice::from_ref(self)));
        if !self.probes.is_empty() {
            md.push_str(
                "\n## Chat probes\n\n| prompt | math | think | reply |\n|---|---|---|---|\n",
            );
        }
        for p in &self.probes {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                cell(&p.prompt, 80),
                yes_no(p.math),
                yes_no(p.think),
                cell(&p.reply, 160)
            );
        }
        if let Some(chat) = &self.retention {
            md.push_str(&chat.markdown());
        }
        md
    }
}

/// The protocol of scotd's own accuracy: the question alone as the user turn of the
/// model's chat template, no examples, and the verifier's lenient answer extraction.
pub const SCOTD_PROTOCOL: &str = "scotd: zero-shot chat, \\boxed / lenient extraction";

fn scotd_protocol() -> String {
    SCOTD_PROTOCOL.to_string()
}

/// The answers of an evaluation folder (its `answers.jsonl`), in file order.
pub fn read_answers(dir: &Path) -> Result<Vec<Answer>> {
    crate::io::read_jsonl(&dir.join("answers.jsonl"))
}

/// How one row of the comparison table reads a report.
type Column = fn(&EvalReport) -> String;

/// Several reports as one Markdown table, a column per model.
pub fn compare_markdown(reports: &[EvalReport]) -> String {
    let mut md = String::from("| |");
    for r in reports {
        let _ = write!(md, " {} |", cell(&r.model, 60));
    }
    md.push_str("\n|---|");
    md.push_str(&"--:|".repeat(reports.len()));
    md.push('\n');
    let rows: [(&str, Column); 12] = [
        ("questions", |r| r.questions.to_string()),
        ("accuracy (95% CI)", |r| {
            format!(
                "{:.1}% ({:.1}–{:.1}; {})",
                100.0 * r.accuracy.rate,
                100.0 * r.accuracy_ci95[0],
                100.0 * r.accuracy_ci95[1],
                r.accuracy_protocol
            )
        }),
        (super::lm_eval::STRICT_PROTOCOL, |r| {
            r.lm_eval
                .as_ref()
                .map_or("–".into(), |l| percent(l.strict_match))
        }),
        (super::lm_eval::FLEXIBLE_PROTOCOL, |r| {
            r.lm_eval
                .as_ref()
                .map_or("–".into(), |l| percent(l.flexible_extract))
        }),
        ("no answer found", |r| percent(r.no_answer)),
        ("cut off by the token limit", |r| percent(r.truncated)),
        ("uses `<think>`", |r| percent(r.think)),
        ("think answer ≠ final answer", |r| {
            percent(r.think_disagrees)
        }),
        ("mean tokens", |r| format!("{:.0}", r.mean_tokens)),
        ("chat probes with math / think tags", |r| {
            format!(
                "{} / {} of {}",
                r.probes_with_math,
                r.probes_with_think,
                r.probes.len()
            )
        }),
        ("held-out chat replies with math or think tags", |r| {
            r.retention.as_ref().map_or("–".into(), |c| {
                format!("{} of {}", percent(c.with_math_or_think), c.rows)
            })
        }),
        ("held-out chat reference loss (nats/token)", |r| {
            r.retention
                .as_ref()
                .map_or("–".into(), |c| format!("{:.3}", c.reference_loss))
        }),
    ];
    for (name, value) in rows {
        let _ = write!(md, "| {name} |");
        for r in reports {
            let _ = write!(md, " {} |", value(r));
        }
        md.push('\n');
    }
    md
}

/// The chat probes' replies of several reports, prompt by prompt (the prompts of the
/// first report; a report without that prompt shows a dash). Replies are quoted whole.
pub fn probes_markdown(reports: &[EvalReport]) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let mut md = String::new();
    for probe in &first.probes {
        let _ = writeln!(md, "#### {}\n", cell(&probe.prompt, 200));
        for r in reports {
            let reply = r.probes.iter().find(|p| p.prompt == probe.prompt);
            let text = reply.map_or("–".to_string(), |p| p.reply.trim().replace('\n', "\n> "));
            let _ = writeln!(md, "**{}**\n> {text}\n", r.model);
        }
    }
    md
}

/// The 95% Wilson score interval of `successes` out of `n` (better than the normal
/// approximation near 0 and 1, and defined for small n).
pub fn wilson_interval(successes: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (z, n_f) = (1.959_963_985, n as f64);
    let p = successes as f64 / n_f;
    let denominator = 1.0 + z * z / n_f;
    let center = (p + z * z / (2.0 * n_f)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n_f + z * z / (4.0 * n_f * n_f)).sqrt();
    [(center - half).max(0.0), (center + half).min(1.0)]
}

pub(super) fn percent(rate: Rate) -> String {
    format!("{:.1}% ({})", 100.0 * rate.rate, rate.count)
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

/// Text fit for one Markdown table cell: one line, pipes escaped, at most `max` chars.
fn cell(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .take(max)
        .collect();
    let ellipsis = if text.chars().count() > max {
        "…"
    } else {
        ""
    };
    format!("{}{ellipsis}", one_line.trim().replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_known_values() {
        // 8 of 20: 0.2188 to 0.6134 (standard tables).
        let [lo, hi] = wilson_interval(8, 20);
        assert!(
            (lo - 0.2188).abs() < 1e-4 && (hi - 0.6134).abs() < 1e-4,
            "{lo} {hi}"
        );
        let [lo, hi] = wilson_interval(0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-4, "{lo} {hi}");
        assert_eq!(wilson_interval(0, 0), [0.0, 1.0]);
    }

    #[test]
    fn probe_replies_are_put_side_by_side_prompt_by_prompt() {
        let probe = |prompt: &str, reply: &str| ProbeReply {
            prompt: prompt.into(),
            reply: reply.into(),
            math: false,
            think: false,
        };
        let base = EvalReport::new(
            "base",
            "d",
            &[],
            vec![
                probe("Hello!", "Hi there.\nHow can I help?"),
                probe("2+2?", "4"),
            ],
            None,
        );
        let tuned = EvalReport::new(
            "v1",
            "d",
            &[],
            vec![probe("Hello!", "<think>x</think>")],
            None,
        );
        let md = probes_markdown(&[base, tuned]);
        assert!(md.starts_with("#### Hello!\n\n**base**\n> Hi there.\n> How can I help?\n\n**v1**\n> <think>x</think>\n"), "{md}");
        assert!(
            md.contains("#### 2+2?\n\n**base**\n> 4\n\n**v1**\n> –\n"),
            "{md}"
        );
    }

    #[test]
    fn reports_name_their_protocol_and_older_ones_still_read() {
        let report = EvalReport::new("m", "d", &[], Vec::new(), None);
        let mut json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["accuracy_protocol"], SCOTD_PROTOCOL);
        assert!(compare_markdown(std::slice::from_ref(&report)).contains(SCOTD_PROTOCOL));
        json.as_object_mut().unwrap().remove("accuracy_protocol");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, json.to_string()).unwrap();
        assert_eq!(EvalReport::read(&path).unwrap(), report);
    }

    #[test]
    fn cells_are_one_line_and_escaped() {
        assert_eq!(cell("a|b\nc", 10), "a\\|b c");
        assert_eq!(cell("abcdef", 3), "abc…");
    }
}
