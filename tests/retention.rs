//! The teacher that is GSM8K's own solutions (`scotd solution-traces`) and the chat
//! retention measures of `scotd eval --chat`, on the real SmolLM2-135M-Instruct: the
//! reference loss recomputed from the model's logits by a log-softmax written here, the
//! rates recomputed from chat.jsonl, and a killed evaluation resumed.

mod common;

use std::path::Path;

use scotd::data::{read_rows, BadLines, DataFormat, ReasoningFormat, TraceRecord};
use scotd::eval::{evaluate, read_chat_rows, ChatReply, EvalOptions, EvalReport, EvalTarget};
use scotd::model::{Batch, Model};
use scotd::sample::{solution_traces, write_traces, Prompter, SamplingConfig};
use scotd::tokenizer::{Message, Tokenizer};

fn smollm2() -> (Model, Tokenizer) {
    let dir = common::real_model_dir("smollm2-135m-instruct");
    (
        Model::load_for_inference(&dir).unwrap(),
        Tokenizer::from_dir(&dir).unwrap(),
    )
}

fn lines<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn gsm8k_solutions_become_verified_traces_the_trainer_reads() {
    let (_, tokenizer) = smollm2();
    let gsm8k = common::fixture("data/gsm8k.jsonl");
    let traces = solution_traces(&gsm8k, &tokenizer, 9).unwrap();
    assert_eq!(traces.len(), 9);
    let first = &traces[0];
    assert_eq!(first.trace, "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n\\boxed{72}");
    assert_eq!(
        (first.answer.as_deref(), first.gold.as_str(), first.correct),
        (Some("72"), "72", true)
    );
    let thousands = traces.iter().find(|t| t.gold == "1,080").unwrap();
    assert!(thousands.trace.ends_with("\\boxed{1080}") && thousands.correct);
    for t in &traces {
        assert!(
            !t.trace.contains("<<") && !t.trace.contains("####"),
            "{t:?}"
        );
        let tokens = tokenizer.encode(&t.trace, false).unwrap().len() as u64;
        assert_eq!(t.tokens, tokens);
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces.jsonl");
    write_traces(&out, &traces).unwrap();
    assert_eq!(lines::<TraceRecord>(&out), traces);
    let reasoning = ReasoningFormat::new("<think>{trace}</think> {answer}").unwrap();
    let (rows, report) =
        read_rows(&out, DataFormat::Traces, &reasoning, None, BadLines::Fail).unwrap();
    assert_eq!((rows.len(), report.incorrect_traces), (9, 0));
    assert_eq!(rows[0].messages[0].content, first.question);
    assert_eq!(
        rows[0].messages[1].content,
        format!("<think>{}</think> \\boxed{{72}}", first.trace)
    );
}

/// The summed loss of `messages`' last reply under the model, from the logits of the
/// whole rendered conversation: -log softmax at each position that predicts a reply
/// token or the end-of-turn token after it.
fn reply_loss_from_logits(
    model: &Model,
    tokenizer: &Tokenizer,
    prompter: &Prompter,
    messages: &[Message],
) -> (f64, usize) {
    let template = &prompter.template;
    let prompt = template
        .render(&messages[..messages.len() - 1], true)
        .unwrap();
    let full = template.render(messages, false).unwrap();
    let prompt_ids = tokenizer.encode(&prompt, false).unwrap();
    let full_ids = tokenizer.encode(&full, false).unwrap();
    assert_eq!(full_ids[..prompt_ids.len()], prompt_ids[..]);
    let end_of_turn = tokenizer.token_to_id("<|im_end|>").unwrap();
    let reply_end = prompt_ids.len()
        + full_ids[prompt_ids.len()..]
            .iter()
            .position(|&id| id == end_of_turn)
            .unwrap();
    let n = full_ids.len();
    let logits = model
        .forward(&Batch::new(full_ids.clone(), 1, n).unwrap())
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let vocab = logits.len() / n;
    let mut sum = 0.0f64;
    for position in prompt_ids.len() - 1..reply_end {
        let row = &logits[position * vocab..(position + 1) * vocab];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let log_sum: f64 = row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        sum += log_sum - row[full_ids[position + 1] as usize] as f64;
    }
    (sum, reply_end - prompt_ids.len() + 1)
}

#[test]
fn chat_retention_is_recomputed_from_logits_and_resumes() {
    let (model, tokenizer) = smollm2();
    let prompter = Prompter::new(&tokenizer, None, None, None).unwrap();
    let alpaca = common::fixture("data/alpaca.json");
    let mut chat = read_chat_rows(&alpaca, None).unwrap();
    chat.rows.truncate(4);
    let target = EvalTarget {
        model: &model,
        model_name: "smollm2",
        tokenizer: &tokenizer,
        prompter: &prompter,
        data_name: "gsm8k",
    };
    let questions = scotd::data::read_questions(&common::fixture("data/gsm8k.jsonl")).unwrap();
    let sampling = SamplingConfig {
        max_new_tokens: 8,
        ..SamplingConfig::default()
    };
    let opts = EvalOptions {
        sampling,
        probes: Vec::new(),
        chat: Some((chat.clone(), 24)),
        lm_eval_fewshot: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let report = evaluate(&target, &questions[..2], &opts, dir.path(), false).unwrap();
    let retention = report.retention.clone().unwrap();
    let chat_path = dir.path().join("chat.jsonl");
    let replies: Vec<ChatReply> = lines(&chat_path);
    assert_eq!((retention.rows, replies.len()), (4, 4));

    let (mut loss, mut tokens) = (0.0, 0);
    for row in &chat.rows {
        let reply = replies.iter().find(|r| r.id == row.id).unwrap();
        let (row_loss, row_tokens) =
            reply_loss_from_logits(&model, &tokenizer, &prompter, &row.messages);
        assert_eq!(reply.reference_tokens, row_tokens as u64, "{}", row.id);
        assert!(
            (reply.reference_loss - row_loss).abs() < 1e-3 * row_loss.max(1.0),
            "{}: {} vs {row_loss}",
            row.id,
            reply.reference_loss
        );
        assert!(reply.tokens <= 24 && reply.truncated == (reply.tokens == 24));
        assert_eq!(reply.math, scotd::eval::probes::has_math(&reply.reply));
        (loss, tokens) = (loss + row_loss, tokens + row_tokens);
    }
    assert!((retention.reference_loss - loss / tokens as f64).abs() < 1e-4);
    assert!(retention.reference_loss > 0.1 && retention.reference_loss < 10.0);
    let math = replies.iter().filter(|r| r.math || r.think).count();
    assert_eq!(retention.with_math_or_think.count, math);

    // A run killed after two rows: the other two are answered again, the same way.
    let text = std::fs::read_to_string(&chat_path).unwrap();
    let kept: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&chat_path, kept.join("\n") + "\n").unwrap();
    let resumed = evaluate(&target, &questions[..2], &opts, dir.path(), false).unwrap();
    assert_eq!(resumed, report);
    assert_eq!(EvalReport::read(dir.path()).unwrap(), report);
    let markdown = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        markdown.contains(&format!("{:.4} over {tokens} tokens", loss / tokens as f64)),
        "{markdown}"
    );

    // Another chat file into the same folder is refused, not mixed in.
    let other = EvalOptions {
        chat: Some((
            read_chat_rows(&common::fixture("data/alpaca.jsonl"), None).unwrap(),
            24,
        )),
        ..opts.clone()
    };
    let err = evaluate(&target, &questions[..2], &other, dir.path(), false).unwrap_err();
    assert!(err.to_string().contains("another"), "{err}");

    // So is a folder answered on another device or in another precision.
    let run_path = dir.path().join("run.json");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&run_path).unwrap()).unwrap();
    assert_eq!(
        (run["device"].as_str(), run["precision"].as_str()),
        (Some("cpu"), Some("f32"))
    );
    let elsewhere = std::fs::read_to_string(&run_path)
        .unwrap()
        .replace("\"cpu\"", "\"cuda:0\"");
    std::fs::write(&run_path, elsewhere).unwrap();
    let err = evaluate(&target, &questions[..2], &opts, dir.path(), false).unwrap_err();
    assert!(
        err.to_string()
            .contains("device (was \"cuda:0\", now \"cpu\")"),
        "{err}"
    );
}

#[test]
fn chat_rows_with_one_id_twice_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.jsonl");
    let row = |id: &str| {
        format!("{{\"id\": \"{id}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hi\"}}, {{\"role\": \"assistant\", \"content\": \"Hello!\"}}]}}\n")
    };
    std::fs::write(&path, row("a") + &row("b") + &row("a")).unwrap();
    let err = read_chat_rows(&path, None).err().unwrap().to_string();
    assert!(
        err.contains("chat.jsonl") && err.contains("a names two rows"),
        "{err}"
    );
    std::fs::write(&path, row("a") + &row("b")).unwrap();
    assert_eq!(read_chat_rows(&path, None).unwrap().rows.len(), 2);
}
