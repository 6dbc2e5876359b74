//! Chat retention: what a fine-tuned model kept of its chat, measured on held-out chat rows
//! (Alpaca JSON or `messages` JSONL the student never trained on). Two measures:
//!
//! - its greedy replies to the rows' prompts, and the share that show math or think tags
//!   ([`probes::has_math`], [`probes::has_think`]): the forgetting symptom of a student
//!   that answers "Hello!" with an equation;
//! - the mean per-token loss of the rows' reference replies under the model, tokenized and
//!   masked exactly as the trainer does (the reply's tokens and its end-of-turn token),
//!   summed over all rows and divided by their tokens. Lower is closer to the chat the
//!   model was tuned on; a rise above the base model's is forgetting, measured.
//!
//! Each row's result is appended to `chat.jsonl` as it finishes, so a killed evaluation
//! resumes where it stopped.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::probes;
use super::report::{percent, Rate};
use super::{known_records, EvalTarget};
use crate::autograd::no_grad;
use crate::data::{self, tokenize_row, BadLines, ReasoningFormat, Row, TraceId};
use crate::io::AppendLog;
use crate::model::Batch;
use crate::ops::{Reduction, IGNORE_INDEX};
use crate::sample::{
    decode, questions_bar, reply_text, trace_seed, Event, Request, SamplingConfig,
};
use crate::{Error, Result};

/// Held-out chat rows, as read: those that could not be used are counted, not hidden.
#[derive(Clone, Debug)]
pub struct ChatRows {
    pub name: String,
    pub rows: Vec<Row>,
    pub skipped: usize,
}

/// One held-out row's result, a line of `chat.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    pub id: String,
    /// The last user turn.
    pub prompt: String,
    pub reference: String,
    pub reply: String,
    pub math: bool,
    pub think: bool,
    /// Tokens of the reply; `truncated` when the token limit cut it off.
    pub tokens: u64,
    pub truncated: bool,
    /// Summed loss (nats) of the reference reply's supervised tokens.
    pub reference_loss: f64,
    pub reference_tokens: u64,
}

/// The retention section of `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub data: String,
    pub rows: usize,
    /// Rows of the file that could not be used (e.g. an empty reference reply).
    pub skipped_rows: usize,
    pub with_math: Rate,
    pub with_think: Rate,
    pub with_math_or_think: Rate,
    pub truncated: Rate,
    pub mean_reply_tokens: f64,
    /// Mean per-token loss (nats) of the reference replies.
    pub reference_loss: f64,
    pub reference_tokens: u64,
}

impl RetentionReport {
    fn new(data: &str, skipped_rows: usize, replies: &[ChatReply]) -> Self {
        let n = replies.len();
        let count = |f: &dyn Fn(&ChatReply) -> bool| replies.iter().filter(|r| f(r)).count();
        let reference_tokens: u64 = replies.iter().map(|r| r.reference_tokens).sum();
        let reference_loss: f64 = replies.iter().map(|r| r.reference_loss).sum();
        let reply_tokens: u64 = replies.iter().map(|r| r.tokens).sum();
        RetentionReport {
            data: data.to_string(),
            rows: n,
            skipped_rows,
            with_math: Rate::of(count(&|r| r.math), n),
            with_think: Rate::of(count(&|r| r.think), n),
            with_math_or_think: Rate::of(count(&|r| r.math || r.think), n),
            truncated: Rate::of(count(&|r| r.truncated), n),
            mean_reply_tokens: reply_tokens as f64 / n.max(1) as f64,
            reference_loss: reference_loss / reference_tokens.max(1) as f64,
            reference_tokens,
        }
    }
    /// The report.md section; the replies themselves are in `chat.jsonl`.
    pub fn markdown(&self) -> String {
        format!(
            "\n## Chat retention\n\nHeld-out chat rows: {} ({} rows, {} skipped)\n\n\
             | | |\n|---|--:|\n\
             | replies with math | {} |\n\
             | replies with think tags | {} |\n\
             | replies with math or think tags | {} |\n\
             | replies cut off by the token limit | {} |\n\
             | mean reply tokens | {:.0} |\n\
             | reference replies: mean loss (nats/token) | {:.4} over {} tokens |\n",
            self.data,
            self.rows,
            self.skipped_rows,
            percent(self.with_math),
            percent(self.with_think),
            percent(self.with_math_or_think),
            percent(self.truncated),
            self.mean_reply_tokens,
            self.reference_loss,
            self.reference_tokens,
        )
    }
}

/// Reads held-out chat rows (format detected from the file); a row that cannot be used
/// is skipped and counted, with `system` as every row's system message when given.
pub fn read_chat_rows(path: &Path, system: Option<&str>) -> Result<ChatRows> {
    let format = data::detect(path)?;
    let reasoning = ReasoningFormat::new("{trace} {answer}")?;
    let (rows, report) = data::read_rows(path, format, &reasoning, system, BadLines::Skip)?;
    let mut seen = HashSet::new();
    if let Some(row) = rows.iter().find(|row| !seen.insert(row.id.as_str())) {
        let msg = format!("{} names two rows: chat rows need distinct ids", row.id);
        return Err(Error::format(path, "id", msg));
    }
    Ok(ChatRows {
        name: path.display().to_string(),
        rows,
        skipped: report.skipped.len(),
    })
}

/// Every row's reply and reference loss (resuming `out_dir/chat.jsonl`), summarised.
pub fn measure_retention(
    target: &EvalTarget,
    chat: &ChatRows,
    sampling: &SamplingConfig,
    out_dir: &Path,
    show_progress: bool,
) -> Result<RetentionReport> {
    let path = out_dir.join("chat.jsonl");
    let (mut log, resumed) = AppendLog::open::<ChatReply>(&path)?;
    let mut by_id = known_replies(&path, &chat.rows, resumed.records)?;
    let pending: Vec<&Row> = chat
        .rows
        .iter()
        .filter(|row| !by_id.contains_key(&row.id))
        .collect();
    let losses = pending
        .iter()
        .map(|row| reference_loss(target, row))
        .collect::<Result<Vec<_>>>()?;
    let prompts = pending
        .iter()
        .map(|row| prompt_ids(target, row))
        .collect::<Result<Vec<_>>>()?;
    let requests: Vec<Request> = prompts
        .iter()
        .zip(&pending)
        .map(|(prompt, row)| Request {
            prompt,
            seed: trace_seed(sampling.seed, &TraceId::Text(row.id.clone()), 0),
        })
        .collect();
    let bar = questions_bar(show_progress, chat.rows.len(), by_id.len());
    decode(
        target.model,
        &requests,
        target.tokenizer.eos_ids(),
        sampling,
        |event| {
            if let Event::Finished { request, result } = event {
                let reply = reply_text(target.tokenizer, &result)?;
                let (loss, tokens) = losses[request];
                let line = chat_reply(pending[request], reply, &result, loss, tokens);
                log.append(&line)?;
                by_id.insert(line.id.clone(), line);
                bar.inc(1);
            }
            Ok(())
        },
    )?;
    log.sync()?;
    bar.finish_and_clear();
    let replies: Vec<ChatReply> = chat
        .rows
        .iter()
        .map(|row| by_id.remove(&row.id).expect("every row answered"))
        .collect();
    Ok(RetentionReport::new(&chat.name, chat.skipped, &replies))
}

/// The replies already in the file, by row id; each must be one of these rows.
fn known_replies(
    path: &Path,
    rows: &[Row],
    replies: Vec<ChatReply>,
) -> Result<HashMap<String, ChatReply>> {
    let prompts = rows
        .iter()
        .map(|row| (&row.id, last_user_turn(row)))
        .collect();
    let what = ("row", "chat rows");
    known_records(path, prompts, replies, |r| (&r.id, r.prompt.as_str()), what)
}

/// The conversation up to its last reply, rendered for the model to answer.
fn prompt_ids(target: &EvalTarget, row: &Row) -> Result<Vec<u32>> {
    let before_reply = &row.messages[..row.messages.len() - 1];
    target
        .prompter
        .conversation_ids(target.tokenizer, before_reply)
}

/// Summed loss and count of the reference reply's supervised tokens under the model.
fn reference_loss(target: &EvalTarget, row: &Row) -> Result<(f64, u64)> {
    let example = tokenize_row(target.tokenizer, &target.prompter.template, &row.messages)
        .map_err(|e| Error::format(&row.id, "messages", e.to_string()))?;
    let n = example.len();
    let supervised = example
        .targets
        .iter()
        .filter(|&&t| t != IGNORE_INDEX)
        .count();
    let _no_tape = no_grad();
    let batch = Batch::new(example.input_ids, 1, n)?;
    let loss = target
        .model
        .loss(&batch, &example.targets, Reduction::Sum)?
        .to_scalar()?;
    Ok((loss as f64, supervised as u64))
}

fn chat_reply(
    row: &Row,
    reply: String,
    generated: &crate::sample::Generated,
    reference_loss: f64,
    reference_tokens: u64,
) -> ChatReply {
    ChatReply {
        id: row.id.clone(),
        prompt: last_user_turn(row).to_string(),
        reference: row
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default(),
        math: probes::has_math(&reply),
        think: probes::has_think(&reply),
        tokens: generated.reply_ids().len() as u64,
        truncated: generated.stop != crate::sample::StopReason::Eos,
        reply,
        reference_loss,
        reference_tokens,
    }
}

fn last_user_turn(row: &Row) -> &str {
    row.messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map_or("", |m| m.content.as_str())
}
