//! The run's report: report.md (the demo's table, the sampling counts, the evaluator's
//! side-by-side table and the chat probes before and after distillation) and
//! summary.json (the same numbers, for scripts and tests).

use std::fmt::Write;

use serde_json::{json, Value};

use super::run_folder::RunFolder;
use super::{DemoConfig, DemoSummary, Trained};
use crate::eval::{compare_markdown, EvalReport};
use crate::io::write_atomic;
use crate::Result;

/// The demo's results as a Markdown table: a row per model.
pub fn summary_table(summary: &DemoSummary) -> String {
    let mut md = String::from(
        "| model | parameters | training | held-out accuracy (95% CI) | uses `<think>` | chat probes with math |\n\
         |---|--:|---|--:|--:|--:|\n",
    );
    let rows = [
        (
            "teacher",
            &summary.teacher,
            "problems",
            &summary.teacher_eval,
        ),
        (
            "student before",
            &summary.student_chat,
            "chat",
            &summary.student_before,
        ),
        (
            "student after",
            &summary.student,
            "traces + chat",
            &summary.student_after,
        ),
    ];
    for (name, trained, data, eval) in rows {
        let probes = if eval.probes.is_empty() {
            "–".to_string()
        } else {
            format!("{} of {}", eval.probes_with_math, eval.probes.len())
        };
        let _ = writeln!(
            md,
            "| {name} | {:.2} M | {} steps on {data}, {:.0} s | {:.1}% ({:.1}–{:.1}) | {:.0}% | {probes} |",
            trained.parameters as f64 / 1e6,
            trained.steps,
            trained.seconds,
            100.0 * eval.accuracy.rate,
            100.0 * eval.accuracy_ci95[0],
            100.0 * eval.accuracy_ci95[1],
            100.0 * eval.think.rate,
        );
    }
    md
}

/// One line on sampling and the verifier.
pub fn sampling_line(summary: &DemoSummary) -> String {
    let t = &summary.traces;
    format!(
        "The teacher wrote {} traces for {} new problems; the verifier kept {} ({:.1}%), \
         and {} problems have at least one correct trace.",
        t.sampled,
        t.questions,
        t.kept,
        100.0 * t.kept as f64 / t.sampled.max(1) as f64,
        t.solved
    )
}

/// Writes report.md and summary.json into the run folder.
pub(super) fn write(folder: &RunFolder, config: &DemoConfig, summary: &DemoSummary) -> Result<()> {
    write_atomic(
        &folder.path("report.md"),
        markdown(config, summary).as_bytes(),
    )?;
    let mut json = serde_json::to_vec_pretty(&summary_json(summary)).expect("plain JSON");
    json.push(b'\n');
    write_atomic(&folder.path("summary.json"), &json)
}

fn markdown(config: &DemoConfig, summary: &DemoSummary) -> String {
    let mut md = format!(
        "# scotd demo\n\nSeed {}; problems of at most {} operations on numbers up to {}. \
         Settings: config.json.\n\n",
        config.seed, config.difficulty.max_steps, config.difficulty.max_number
    );
    md.push_str(&summary_table(summary));
    let _ = write!(
        md,
        "\n{}\n\n## The evaluator's reports\n\n",
        sampling_line(summary)
    );
    md.push_str(&compare_markdown(&[
        summary.teacher_eval.clone(),
        summary.student_before.clone(),
        summary.student_after.clone(),
    ]));
    md.push_str("\n## Chat probes\n\n| prompt | student before | student after |\n|---|---|---|\n");
    for (before, after) in summary
        .student_before
        .probes
        .iter()
        .zip(&summary.student_after.probes)
    {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            cell(&before.prompt),
            cell(&before.reply),
            cell(&after.reply)
        );
    }
    md.push_str(
        "\nLoss curves: teacher/loss.png, student/chat/loss.png, student/distill/loss.png. \
         Answers: teacher/eval, student/eval-before, student/eval-after (answers.jsonl, report.md). \
         Traces: traces/sampled.jsonl, traces/verified.jsonl.\n",
    );
    md
}

/// Longest probe reply shown in the report's table, in characters.
const REPLY_CHARS: usize = 120;

/// Text for a Markdown table cell: one line, pipes escaped, cut to [`REPLY_CHARS`].
fn cell(text: &str) -> String {
    let mut one_line = text.replace('\n', " ").replace('|', "\\|");
    if let Some((cut, _)) = one_line.char_indices().nth(REPLY_CHARS) {
        one_line.truncate(cut);
        one_line.push('…');
    }
    one_line
}

fn summary_json(summary: &DemoSummary) -> Value {
    let model = |trained: &Trained, eval: &EvalReport| {
        json!({
            "model_dir": trained.model_dir,
            "parameters": trained.parameters,
            "steps": trained.steps,
            "final_loss": trained.final_loss,
            "train_seconds": trained.seconds,
            "accuracy": eval.accuracy.rate,
            "correct": eval.accuracy.count,
            "questions": eval.questions,
            "accuracy_ci95": eval.accuracy_ci95,
            "think_rate": eval.think.rate,
            "probes_with_math": eval.probes_with_math,
            "probes": eval.probes.len(),
        })
    };
    let t = &summary.traces;
    json!({
        "teacher": model(&summary.teacher, &summary.teacher_eval),
        "traces": {
            "questions": t.questions,
            "sampled": t.sampled,
            "kept": t.kept,
            "solved": t.solved,
        },
        "student_before": model(&summary.student_chat, &summary.student_before),
        "student_after": model(&summary.student, &summary.student_after),
    })
}
