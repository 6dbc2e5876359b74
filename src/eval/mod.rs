//! Evaluation (`scotd eval`): what a model gained and what it forgot. Greedy answers to
//! held-out questions, checked by the verifier: accuracy with a 95% confidence interval,
//! how often the answer uses `<think>` and how often its inner and final answers
//! disagree; then the chat-forgetting probes ([`probes`]) and, given held-out chat rows,
//! the chat retention measures ([`retention`]).
//!
//! An evaluation writes into one folder: `answers.jsonl` (one [`Answer`] per question,
//! appended as each finishes, so a killed run resumes), `chat.jsonl` (one
//! [`ChatReply`] per held-out chat row, likewise), `report.json` ([`EvalReport`])
//! and `report.md`. `run.json` records what was evaluated; a rerun with another model,
//! data or decoding settings into the same folder is refused rather than mixed.

pub mod lm_eval;
mod paired;
pub mod probes;
mod report;
mod retention;

pub use paired::{mcnemar_exact, paired, paired_markdown, Paired};
pub use report::{
    compare_markdown, probes_markdown, read_answers, wilson_interval, Answer, EvalReport,
    ProbeReply, Rate, SCOTD_PROTOCOL,
};
pub use retention::{read_chat_rows, ChatReply, ChatRows, RetentionReport};

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use crate::data::{Question, TraceId};
use crate::io::{write_atomic, AppendLog};
use crate::model::Model;
use crate::sample::{
    decode, generate, questions_bar, reply_text, trace_seed, Event, Generated, Prompter, Request,
    SamplingConfig,
};
use crate::tokenizer::Tokenizer;
use crate::{verify, Error, Result};

#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Greedy (temperature 0) unless asked otherwise.
    pub sampling: SamplingConfig,
    /// Chat probes; empty for none.
    pub probes: Vec<String>,
    /// Held-out chat rows for the retention measures, and the token limit of their replies.
    pub chat: Option<(ChatRows, usize)>,
    /// lm-evaluation-harness's gsm8k protocol as well, with these few-shot examples
    /// (question, GSM8K answer as written) and the name of the file they came from.
    pub lm_eval_fewshot: Option<(Vec<(String, String)>, String)>,
}

/// What is evaluated, as the report names it (usually the model and data paths).
#[derive(Clone)]
pub struct EvalTarget<'a> {
    pub model: &'a Model,
    pub model_name: &'a str,
    pub tokenizer: &'a Tokenizer,
    pub prompter: &'a Prompter,
    pub data_name: &'a str,
}

/// Answers every question (resuming `out_dir`), runs the probes and writes the report.
pub fn evaluate(
    target: &EvalTarget,
    questions: &[Question],
    opts: &EvalOptions,
    out_dir: &Path,
    show_progress: bool,
) -> Result<EvalReport> {
    claim_folder(target, opts, out_dir)?;
    let answers = answer_questions(target, questions, &opts.sampling, out_dir, show_progress)?;
    let probes = run_probes(target, &opts.probes, &opts.sampling)?;
    let retention = opts
        .chat
        .as_ref()
        .map(|(rows, max_new_tokens)| {
            let sampling = SamplingConfig {
                max_new_tokens: *max_new_tokens,
                ..opts.sampling.clone()
            };
            retention::measure_retention(target, rows, &sampling, out_dir, show_progress)
        })
        .transpose()?;
    let lm_eval = opts
        .lm_eval_fewshot
        .as_ref()
        .map(|(examples, _)| answer_lm_eval(target, questions, examples, &opts.sampling, out_dir))
        .transpose()?;
    let mut report = EvalReport::new(
        target.model_name,
        target.data_name,
        &answers,
        probes,
        retention,
    );
    report.lm_eval = lm_eval.map(|a| lm_eval::LmEvalReport::new(&a));
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::format(out_dir, "report", e.to_string()))?;
    write_atomic(&out_dir.join("report.json"), &json)?;
    write_atomic(&out_dir.join("report.md"), report.markdown().as_bytes())?;
    Ok(report)
}

/// Writes `run.json`, or checks that the one there describes this same evaluation.
fn claim_folder(target: &EvalTarget, opts: &EvalOptions, out_dir: &Path) -> Result<()> {
    let s = &opts.sampling;
    let mut run = json!({
        "model": target.model_name,
        "data": target.data_name,
        "question_format": target.prompter.question_format,
        "template": format!("{:?}", target.prompter.template),
        "system": target.prompter.system,
        "max_new_tokens": s.max_new_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        // The numerics: greedy answers can differ between devices and precisions.
        "device": target.model.device().to_string(),
        "precision": format!("{:?}", target.model.activation_dtype()).to_lowercase(),
    });
    // Only when set, so that folders written before top-k existed still resume.
    if s.top_k != 0 {
        run["top_k"] = json!(s.top_k);
    }
    if let Some((rows, max_new_tokens)) = &opts.chat {
        run["chat"] = json!(rows.name);
        run["chat_max_new_tokens"] = json!(max_new_tokens);
    }
    if let Some((_, fewshot)) = &opts.lm_eval_fewshot {
        run["lm_eval_fewshot"] = json!(fewshot);
    }
    crate::io::claim_settings(&out_dir.join("run.json"), &run)
}

/// Every question under lm-eval's gsm8k protocol: the few-shot completion prompt (no chat
/// template, no special tokens, as lm-eval's HF model encodes it), greedy, cut at the
/// stop sequences and scored; written whole to `lm_eval_answers.jsonl` (a rerun decodes
/// them again).
fn answer_lm_eval(
    target: &EvalTarget,
    questions: &[Question],
    examples: &[(String, String)],
    sampling: &SamplingConfig,
    out_dir: &Path,
) -> Result<Vec<lm_eval::LmEvalAnswer>> {
    let shots: Vec<(&str, &str)> = examples
        .iter()
        .take(lm_eval::FEWSHOT)
        .map(|(q, a)| (q.as_str(), a.as_str()))
        .collect();
    let prompts = questions
        .iter()
        .map(|q| {
            let prompt = lm_eval::fewshot_prompt(&shots, &q.question);
            target.tokenizer.encode(&prompt, false)
        })
        .collect::<Result<Vec<_>>>()?;
    let greedy = SamplingConfig {
        temperature: 0.0,
        ..sampling.clone()
    };
    let replies = generate(
        target.model,
        &prompts,
        target.tokenizer.eos_ids(),
        &greedy,
        |_, _| {},
    )?;
    let mut jsonl = String::new();
    let mut answers = Vec::new();
    for (question, generated) in questions.iter().zip(&replies) {
        let text = reply_text(target.tokenizer, generated)?;
        let output = lm_eval::cut_at_stop(&text).to_string();
        let reference = format!("#### {}", question.gold);
        let answer = lm_eval::LmEvalAnswer {
            id: question.id.clone(),
            gold: question.gold.clone(),
            score: lm_eval::score(&output, &reference),
            output,
        };
        let line = serde_json::to_string(&answer)
            .map_err(|e| Error::format(out_dir, "lm_eval_answers", e.to_string()))?;
        jsonl.push_str(&line);
        jsonl.push('\n');
        answers.push(answer);
    }
    write_atomic(&out_dir.join("lm_eval_answers.jsonl"), jsonl.as_bytes())?;
    Ok(answers)
}

/// Every question's answer: those already in `answers.jsonl`, then the rest, generated
/// and appended as they finish. Returned in question order.
fn answer_questions(
    target: &EvalTarget,
    questions: &[Question],
    sampling: &SamplingConfig,
    out_dir: &Path,
    show_progress: bool,
) -> Result<Vec<Answer>> {
    let path = out_dir.join("answers.jsonl");
    let (mut log, resumed) = AppendLog::open::<Answer>(&path)?;
    let mut by_id = known_answers(&path, questions, resumed.records)?;
    let pending: Vec<&Question> = questions
        .iter()
        .filter(|q| !by_id.contains_key(&q.id))
        .collect();
    let prompts = pending
        .iter()
        .map(|q| target.prompter.question_ids(target.tokenizer, &q.question))
        .collect::<Result<Vec<_>>>()?;
    let requests: Vec<Request> = pending
        .iter()
        .zip(&prompts)
        .map(|(q, prompt)| Request {
            prompt,
            seed: trace_seed(sampling.seed, &q.id, 0),
        })
        .collect();
    let bar = questions_bar(show_progress, questions.len(), by_id.len());
    let eos = target.tokenizer.eos_ids();
    decode(target.model, &requests, eos, sampling, |event| {
        if let Event::Finished { request, result } = event {
            let answer = answer(
                pending[request],
                reply_text(target.tokenizer, &result)?,
                &result,
            );
            log.append(&answer)?;
            by_id.insert(answer.id.clone(), answer);
            bar.inc(1);
        }
        Ok(())
    })?;
    log.sync()?;
    bar.finish_and_clear();
    Ok(questions
        .iter()
        .map(|q| by_id.remove(&q.id).expect("every question answered"))
        .collect())
}

/// The answers already in the file, by id; each must be one of these questions.
fn known_answers(
    path: &Path,
    questions: &[Question],
    answers: Vec<Answer>,
) -> Result<HashMap<TraceId, Answer>> {
    let texts = questions
        .iter()
        .map(|q| (&q.id, q.question.as_str()))
        .collect();
    let what = ("answer", "questions");
    known_records(path, texts, answers, |a| (&a.id, a.question.as_str()), what)
}

/// The records already in a resumed file, by key. Each must carry the key and text of one
/// of this run's items (`expected`) and appear once; anything else means the folder holds
/// another evaluation. `what` names a record and the items in the error.
fn known_records<K, T>(
    path: &Path,
    expected: HashMap<&K, &str>,
    records: Vec<T>,
    key_and_text: impl Fn(&T) -> (&K, &str),
    what: (&str, &str),
) -> Result<HashMap<K, T>>
where
    K: Eq + std::hash::Hash + Clone + std::fmt::Display,
{
    let mut by_key = HashMap::new();
    for (n, record) in records.into_iter().enumerate() {
        let (key, text) = key_and_text(&record);
        if expected.get(key) != Some(&text) || by_key.contains_key(key) {
            return Err(Error::format(
                format!("{}:{}", path.display(), n + 1),
                "id",
                format!("{} {key} is not one of this run's {} (or repeats one): the folder holds another evaluation", what.0, what.1),
            ));
        }
        by_key.insert(key.clone(), record);
    }
    Ok(by_key)
}

fn answer(question: &Question, output: String, generated: &Generated) -> Answer {
    let extracted = verify::extract(&output);
    let think_disagrees = match (&extracted.think_answer, &extracted.final_answer) {
        (Some(inner), Some(outer)) => !verify::equivalent(inner, outer),
        _ => false,
    };
    Answer {
        id: question.id.clone(),
        question: question.question.clone(),
        gold: question.gold.clone(),
        correct: verify::is_correct(&question.gold, &output),
        uses_think: probes::has_think(&output),
        think_disagrees,
        answer: extracted.final_answer,
        think_answer: extracted.think_answer,
        tokens: generated.reply_ids().len() as u64,
        stop: generated.stop,
        output,
    }
}

fn run_probes(
    target: &EvalTarget,
    prompts: &[String],
    sampling: &SamplingConfig,
) -> Result<Vec<ProbeReply>> {
    let ids = prompts
        .iter()
        .map(|p| target.prompter.message_ids(target.tokenizer, p))
        .collect::<Result<Vec<_>>>()?;
    let replies = generate(
        target.model,
        &ids,
        target.tokenizer.eos_ids(),
        sampling,
        |_, _| {},
    )?;
    prompts
        .iter()
        .zip(&replies)
        .map(|(prompt, generated)| {
            let reply = reply_text(target.tokenizer, generated)?;
            Ok(ProbeReply {
                prompt: prompt.clone(),
                math: probes::has_math(&reply),
                think: probes::has_think(&reply),
                reply,
            })
        })
        .collect()
}
