//! Data pipeline tests on the committed fixtures (tests/fixtures/data, see its README):
//! every reader and its error cases, mixing proportions and exact resume, loss masks on
//! the fixture tokenizer and the real SmolLM2 and Qwen tokenizers, packing and padding.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use scotd::data::{
    detect, read_rows, tokenize_row, BadLines, BatchBuilder, DataFormat, DatasetSource, Example,
    ExampleSource, Location, MixedExamples, Mixer, MixerState, Overlong, Packing, ReadReport,
    ReasoningFormat, Row, TraceRecord,
};
use scotd::ops::IGNORE_INDEX;
use scotd::tokenizer::{ChatTemplate, Message, Tokenizer};

fn data(name: &str) -> PathBuf {
    common::fixture("data").join(name)
}

fn read(name: &str, format: DataFormat) -> (Vec<Row>, ReadReport) {
    read_rows(
        &data(name),
        format,
        &ReasoningFormat::default(),
        None,
        BadLines::Fail,
    )
    .unwrap()
}

fn read_err(path: &Path, format: DataFormat, bad_lines: BadLines) -> String {
    read_rows(path, format, &ReasoningFormat::default(), None, bad_lines)
        .unwrap_err()
        .to_string()
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "expected {part:?} in: {text}");
    }
}

fn reply(row: &Row) -> &str {
    &row.messages.last().unwrap().content
}

fn user(row: &Row) -> &str {
    &row.messages
        .iter()
        .find(|m| m.role == "user")
        .unwrap()
        .content
}

fn skipped_lines(report: &ReadReport) -> Vec<Location> {
    report.skipped.iter().map(|s| s.location).collect()
}

fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

// ---------------------------------------------------------------- readers

#[test]
fn gsm8k_rows_have_the_question_and_a_think_reply_without_calculator_notes() {
    let (rows, report) = read("gsm8k.jsonl", DataFormat::Gsm8k);
    assert_eq!((rows.len(), report.records, report.rows), (10, 10, 10));
    assert!(report.skipped.is_empty());
    let first = &rows[0];
    assert_eq!(first.id, "gsm8k.jsonl:1");
    assert!(user(first).starts_with("Natalia sold clips to 48 of her friends"));
    assert_eq!(
        reply(first),
        "<think>Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether \
         in April and May.</think> \\boxed{72}"
    );
    assert_eq!(
        first
            .messages
            .iter()
            .map(|m| m.role.as_str())
            .collect::<Vec<_>>(),
        ["user", "assistant"]
    );
    for row in &rows {
        assert!(
            !reply(row).contains("<<") && !reply(row).contains(">>"),
            "{}",
            reply(row)
        );
        assert!(!reply(row).contains("####"), "{}", reply(row));
        assert!(row.alternatives.is_empty());
    }
    assert!(reply(&rows[8]).ends_with("</think> \\boxed{1080}"));
    assert!(reply(&rows[9]).ends_with("</think> \\boxed{1000000}"));
}

#[test]
fn a_system_prompt_is_added_unless_the_row_has_its_own() {
    let read_with_system = |name, format| {
        read_rows(
            &data(name),
            format,
            &ReasoningFormat::default(),
            Some("Be brief."),
            BadLines::Fail,
        )
        .unwrap()
        .0
    };
    let gsm8k = read_with_system("gsm8k.jsonl", DataFormat::Gsm8k);
    assert_eq!(gsm8k[0].messages[0], Message::new("system", "Be brief."));
    assert_eq!(gsm8k[0].messages.len(), 3);
    let messages = read_with_system("messages.jsonl", DataFormat::Messages);
    assert_eq!(messages[0].messages[0], Message::new("system", "Be brief."));
    assert_eq!(
        messages[1].messages[0],
        Message::new("system", "You are terse.")
    );
    assert_eq!(messages[1].messages.len(), 5);
}

#[test]
fn a_custom_reasoning_format_is_used() {
    let format = ReasoningFormat::new("Reasoning: {trace}\nAnswer: {answer}").unwrap();
    let (rows, _) = read_rows(
        &data("gsm8k.jsonl"),
        DataFormat::Gsm8k,
        &format,
        None,
        BadLines::Fail,
    )
    .unwrap();
    assert!(reply(&rows[1]).starts_with("Reasoning: Weng earns 12/60 = $0.2 per minute."));
    assert!(reply(&rows[1]).ends_with("\nAnswer: \\boxed{10}"));
}

#[test]
fn alpaca_reads_from_a_json_array_and_from_jsonl() {
    let (rows, report) = read("alpaca.json", DataFormat::Alpaca);
    assert_eq!((rows.len(), report.records), (10, 10));
    assert_eq!(rows[0].id, "alpaca.json[0]");
    assert_eq!(user(&rows[0]), "Give three tips for staying healthy.");
    assert_eq!(
        user(&rows[1]),
        "Translate the sentence into French.\n\nThe cat sleeps on the sofa."
    );
    assert_eq!(reply(&rows[1]), "Le chat dort sur le canapé.");
    let (lines, _) = read("alpaca.jsonl", DataFormat::Alpaca);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3].id, "alpaca.jsonl:4");
    for (from_lines, from_array) in lines.iter().zip(&rows) {
        assert_eq!(from_lines.messages, from_array.messages);
    }
}

#[test]
fn messages_rows_keep_every_turn() {
    let (rows, _) = read("messages.jsonl", DataFormat::Messages);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].id, "multi-1");
    let roles: Vec<&str> = rows[1].messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    assert_eq!(
        reply(&rows[2]),
        "<think>6 times 7 is 42.</think> \\boxed{42}"
    );
}

#[test]
fn traces_group_the_correct_ones_by_question() {
    let (rows, report) = read("traces.jsonl", DataFormat::Traces);
    assert_eq!(report.records, 9);
    assert_eq!(report.incorrect_traces, 4);
    assert_eq!(report.unsolved_questions, 1, "q3 has no correct trace");
    assert_eq!(rows.len(), 2);
    let q1 = &rows[0];
    assert_eq!(q1.id, "q1");
    assert!(user(q1).starts_with("Natalia sold clips"));
    assert_eq!(
        reply(q1),
        "<think>In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72 clips.</think> \\boxed{72}"
    );
    // The trace ending in its own \boxed{} is still wrapped; the one already in the think
    // format is kept as it is; the duplicate of the first is gone.
    assert_eq!(
        q1.alternatives,
        [
            "<think>Half of 48 is 24. So 48 + 24 = 72. The answer is \\boxed{72}.</think> \\boxed{72}",
            "<think>48 + 24 = 72</think> \\boxed{72}",
        ]
    );
    let weng = &rows[1];
    assert_eq!(weng.id, "7");
    assert!(weng.alternatives.is_empty());
    assert!(reply(weng).ends_with("0.2 * 50 = 10.</think> \\boxed{10}"));
    let all_replies = rows
        .iter()
        .flat_map(|r| std::iter::once(reply(r).to_string()).chain(r.alternatives.clone()));
    for text in all_replies {
        assert!(
            !text.contains("73") && !text.contains("600"),
            "an incorrect trace: {text}"
        );
    }
}

#[test]
fn trace_records_written_with_serde_read_back_as_rows() {
    let text = std::fs::read_to_string(data("traces.jsonl")).unwrap();
    let records: Vec<TraceRecord> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    for (record, line) in records.iter().zip(text.lines()) {
        let original: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_value(record).unwrap(), original);
    }
    let written: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let (_dir, path) = temp_file("written.jsonl", &written);
    let (rows, _) = read_rows(
        &path,
        DataFormat::Traces,
        &ReasoningFormat::default(),
        None,
        BadLines::Fail,
    )
    .unwrap();
    assert_eq!(rows, read("traces.jsonl", DataFormat::Traces).0);
}

#[test]
fn the_format_is_detected_from_the_first_record() {
    for (name, format) in [
        ("gsm8k.jsonl", DataFormat::Gsm8k),
        ("alpaca.json", DataFormat::Alpaca),
        ("alpaca.jsonl", DataFormat::Alpaca),
        ("messages.jsonl", DataFormat::Messages),
        ("traces.jsonl", DataFormat::Traces),
    ] {
        assert_eq!(detect(&data(name)).unwrap(), format, "{name}");
    }
    let (_dir, path) = temp_file("odd.jsonl", "{\"prompt\": \"x\", \"completion\": \"y\"}\n");
    assert_contains(
        &detect(&path).unwrap_err().to_string(),
        &["odd.jsonl", "cannot tell the format", "completion"],
    );
    let format: DataFormat = serde_json::from_str("\"gsm8k\"").unwrap();
    assert_eq!(format, DataFormat::Gsm8k);
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_gsm8k_lines_are_skipped_with_file_and_line_or_fatal() {
    let (rows, report) = read_rows(
        &data("gsm8k_bad.jsonl"),
        DataFormat::Gsm8k,
        &ReasoningFormat::default(),
        None,
        BadLines::Skip,
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(report.records, 5, "the blank line is no record");
    assert_eq!(
        skipped_lines(&report),
        [Location::Line(2), Location::Line(4), Location::Line(5)]
    );
    assert_contains(
        &report.skipped[0].error,
        &["gsm8k_bad.jsonl:2: (json): not valid JSON"],
    );
    assert_contains(
        &report.skipped[1].error,
        &["gsm8k_bad.jsonl:4: answer: missing"],
    );
    assert_contains(
        &report.skipped[2].error,
        &["gsm8k_bad.jsonl:5: answer: no `#### N`"],
    );
    assert_contains(&report.to_string(), &["5 records, 2 rows, 3 skipped"]);
    let fatal = read_err(&data("gsm8k_bad.jsonl"), DataFormat::Gsm8k, BadLines::Fail);
    assert_contains(&fatal, &["gsm8k_bad.jsonl:2: (json)"]);
}

#[test]
fn bad_alpaca_records_are_named_by_their_index() {
    let (rows, report) = read_rows(
        &data("alpaca_bad.json"),
        DataFormat::Alpaca,
        &ReasoningFormat::default(),
        None,
        BadLines::Skip,
    )
    .unwrap();
    assert_eq!(rows.len(), 2, "[3] with a null input is fine");
    assert_eq!(user(&rows[1]), "Say hi.");
    assert_eq!(
        skipped_lines(&report),
        [Location::Index(1), Location::Index(2), Location::Index(4)]
    );
    assert_contains(
        &report.skipped[0].error,
        &["alpaca_bad.json[1]: output: missing"],
    );
    assert_contains(
        &report.skipped[1].error,
        &["alpaca_bad.json[2]: (json): expected a JSON object"],
    );
    assert_contains(
        &report.skipped[2].error,
        &["alpaca_bad.json[4]: instruction: expected a string, got the number 7"],
    );
    let fatal = read_err(&data("alpaca_bad.json"), DataFormat::Alpaca, BadLines::Fail);
    assert_contains(&fatal, &["alpaca_bad.json[1]: output"]);
    let (_dir, broken) = temp_file("broken.json", "[{\"instruction\": \"x\",");
    let err = read_err(&broken, DataFormat::Alpaca, BadLines::Skip);
    assert_contains(&err, &["broken.json: (json): not a valid JSON array"]);
}

#[test]
fn bad_messages_lines_name_the_turn_at_fault() {
    let (rows, report) = read_rows(
        &data("messages_bad.jsonl"),
        DataFormat::Messages,
        &ReasoningFormat::default(),
        None,
        BadLines::Skip,
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    let errors: Vec<&str> = report.skipped.iter().map(|s| s.error.as_str()).collect();
    assert_contains(
        errors[0],
        &["messages_bad.jsonl:2: messages[0].role: the conversation must end with an assistant turn"],
    );
    assert_contains(
        errors[1],
        &["messages_bad.jsonl:3: messages[1].role: expected a string"],
    );
    assert_contains(errors[2], &["messages_bad.jsonl:4: messages: missing"]);
}

#[test]
fn bad_trace_lines_are_skipped_or_fatal() {
    let (rows, report) = read_rows(
        &data("traces_bad.jsonl"),
        DataFormat::Traces,
        &ReasoningFormat::default(),
        None,
        BadLines::Skip,
    )
    .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["q1", "7"]
    );
    assert_eq!(
        skipped_lines(&report),
        (2..=5).map(Location::Line).collect::<Vec<_>>()
    );
    let errors: Vec<&str> = report.skipped.iter().map(|s| s.error.as_str()).collect();
    assert_contains(
        errors[0],
        &["traces_bad.jsonl:2: answer: is null in a trace marked correct"],
    );
    assert_contains(
        errors[1],
        &["traces_bad.jsonl:3: question: differs from the question of id q1 at line 1"],
    );
    assert_contains(
        errors[2],
        &["traces_bad.jsonl:4: correct: expected true or false, got a string"],
    );
    assert_contains(errors[3], &["traces_bad.jsonl:5: (json)"]);
    let fatal = read_err(
        &data("traces_bad.jsonl"),
        DataFormat::Traces,
        BadLines::Fail,
    );
    assert_contains(&fatal, &["traces_bad.jsonl:2: answer"]);
}

#[test]
fn an_empty_dataset_is_an_error() {
    let err = read_err(&data("empty.jsonl"), DataFormat::Gsm8k, BadLines::Skip);
    assert_contains(&err, &["empty.jsonl", "the dataset is empty"]);
    let (_dir, all_bad) = temp_file("all_bad.jsonl", "{\"question\": \"q\"}\nnot json\n");
    let err = read_err(&all_bad, DataFormat::Gsm8k, BadLines::Skip);
    assert_contains(
        &err,
        &["all_bad.jsonl", "the dataset is empty", "2 skipped"],
    );
    let incorrect =
        "{\"id\": 1, \"question\": \"q\", \"gold\": \"1\", \"sample\": 0, \"trace\": \"t\", \
                     \"answer\": \"2\", \"correct\": false, \"tokens\": 1}\n";
    let (_dir2, none_correct) = temp_file("none_correct.jsonl", incorrect);
    let err = read_err(&none_correct, DataFormat::Traces, BadLines::Fail);
    assert_contains(
        &err,
        &[
            "the dataset is empty",
            "1 questions without a correct trace",
        ],
    );
    let err = read_err(
        Path::new("/no/such/file.jsonl"),
        DataFormat::Gsm8k,
        BadLines::Skip,
    );
    assert_contains(&err, &["/no/such/file.jsonl"]);
}

// ---------------------------------------------------------------- mixing

fn numbered_rows(prefix: &str, n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            id: format!("{prefix}{i}"),
            messages: vec![
                Message::new("user", format!("{prefix} question {i}")),
                Message::new("assistant", format!("{prefix} answer {i}")),
            ],
            alternatives: Vec::new(),
        })
        .collect()
}

fn source(name: &str, rows: Vec<Row>, weight: f64) -> DatasetSource {
    DatasetSource {
        name: name.to_string(),
        rows,
        weight,
    }
}

fn seventy_thirty(seed: u64) -> Mixer {
    Mixer::new(
        vec![
            source("math", numbered_rows("m", 13), 0.7),
            source("chat", numbered_rows("c", 7), 0.3),
        ],
        seed,
    )
    .unwrap()
}

fn draws(mixer: &mut Mixer, n: usize) -> Vec<(usize, Vec<Message>)> {
    (0..n).map(|_| mixer.next_row()).collect()
}

#[test]
fn mixing_follows_the_weights_and_the_seed() {
    let mut mixer = seventy_thirty(42);
    let drawn = draws(&mut mixer, 10_000);
    let math = drawn.iter().filter(|(s, _)| *s == 0).count() as f64 / 10_000.0;
    assert!((math - 0.7).abs() < 0.02, "math share {math}");
    assert_eq!(drawn, draws(&mut seventy_thirty(42), 10_000));
    assert_ne!(drawn, draws(&mut seventy_thirty(43), 10_000));
}

#[test]
fn each_epoch_of_a_dataset_draws_every_row_once_in_a_new_order() {
    let mut mixer = Mixer::new(vec![source("only", numbered_rows("r", 20), 1.0)], 5).unwrap();
    let first: Vec<String> = draws(&mut mixer, 20)
        .into_iter()
        .map(|(_, m)| m[0].content.clone())
        .collect();
    let second: Vec<String> = draws(&mut mixer, 20)
        .into_iter()
        .map(|(_, m)| m[0].content.clone())
        .collect();
    for epoch in [&first, &second] {
        assert_eq!(epoch.iter().collect::<HashSet<_>>().len(), 20);
    }
    assert_ne!(first, second);
}

#[test]
fn a_zero_weight_dataset_is_never_drawn() {
    let mut mixer = Mixer::new(
        vec![
            source("off", numbered_rows("o", 3), 0.0),
            source("on", numbered_rows("n", 3), 2.5),
        ],
        1,
    )
    .unwrap();
    assert!(draws(&mut mixer, 1000).iter().all(|(s, _)| *s == 1));
}

#[test]
fn scotd_picks_one_of_the_correct_traces_each_draw() {
    let (rows, _) = read("traces.jsonl", DataFormat::Traces);
    let q1_replies: HashSet<String> = std::iter::once(reply(&rows[0]).to_string())
        .chain(rows[0].alternatives.clone())
        .collect();
    let mut mixer = Mixer::new(vec![source("traces", rows, 1.0)], 9).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, messages) in draws(&mut mixer, 3000) {
        assert_eq!(messages.len(), 2);
        if messages[0].content.starts_with("Natalia") {
            *seen.entry(messages[1].content.clone()).or_default() += 1;
        }
    }
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), q1_replies);
    for count in seen.values() {
        assert!(
            (400..600).contains(count),
            "each of 3 replies about 1500/3 times: {seen:?}"
        );
    }
}

#[test]
fn a_restored_mixer_continues_with_the_same_draws() {
    let mut mixer = seventy_thirty(3);
    draws(&mut mixer, 137);
    let saved = serde_json::to_string(&mixer.state()).unwrap();
    let expected = draws(&mut mixer, 100);
    let mut resumed = seventy_thirty(999);
    let state: MixerState = serde_json::from_str(&saved).unwrap();
    resumed.restore(&state).unwrap();
    assert_eq!(draws(&mut resumed, 100), expected);
    assert_eq!(resumed.state(), mixer.state());
}

#[test]
fn a_state_from_other_data_is_refused() {
    let state = seventy_thirty(3).state();
    let mut other = Mixer::new(
        vec![
            source("math", numbered_rows("m", 12), 0.7),
            source("chat", numbered_rows("c", 7), 0.3),
        ],
        3,
    )
    .unwrap();
    let err = other.restore(&state).unwrap_err().to_string();
    assert_contains(
        &err,
        &[
            "data mix state",
            "math (13 rows, weight 0.7)",
            "math (12 rows",
        ],
    );
    let mut zero = state.clone();
    zero.rng = [0; 4];
    assert_contains(
        &seventy_thirty(3).restore(&zero).unwrap_err().to_string(),
        &["all-zero"],
    );
    let mut past_end = state;
    past_end.sources[1].position = 8;
    assert_contains(
        &seventy_thirty(3)
            .restore(&past_end)
            .unwrap_err()
            .to_string(),
        &["chat: position 8 is past its 7 rows"],
    );
}

#[test]
fn bad_weights_and_empty_datasets_are_errors() {
    let rows = || numbered_rows("r", 2);
    let cases: Vec<(Vec<DatasetSource>, &[&str])> = vec![
        (
            vec![source("gsm8k", rows(), -0.5)],
            &["gsm8k.weight", "finite number >= 0, got -0.5"],
        ),
        (
            vec![source("gsm8k", rows(), f64::NAN)],
            &["gsm8k.weight", "NaN"],
        ),
        (
            vec![source("chat", rows(), f64::INFINITY)],
            &["chat.weight", "inf"],
        ),
        (
            vec![source("a", rows(), 0.0), source("b", rows(), 0.0)],
            &["weights", "positive", "got 0"],
        ),
        (
            vec![source("alpaca", Vec::new(), 1.0)],
            &["alpaca", "no rows"],
        ),
        (Vec::new(), &["no dataset to mix"]),
    ];
    for (sources, expected) in cases {
        let err = Mixer::new(sources, 0).err().expect("an error").to_string();
        assert_contains(&err, expected);
    }
}

// ---------------------------------------------------------------- tokenization

fn fixture_tokenizer() -> Tokenizer {
    Tokenizer::from_dir(&common::fixture("tokenizer")).unwrap()
}

fn real_tokenizer(name: &str) -> Tokenizer {
    Tokenizer::from_dir(&common::real_model_dir(name)).unwrap()
}

/// Every row of the committed fixtures (a SCoTD row with each of its replies).
fn fixture_conversations() -> Vec<Vec<Message>> {
    let mut conversations = Vec::new();
    for (name, format) in [
        ("gsm8k.jsonl", DataFormat::Gsm8k),
        ("alpaca.json", DataFormat::Alpaca),
        ("messages.jsonl", DataFormat::Messages),
        ("traces.jsonl", DataFormat::Traces),
    ] {
        for row in read(name, format).0 {
            conversations.extend((0..row.reply_count()).map(|choice| row.with_reply(choice)));
        }
    }
    conversations
}

/// The text of the supervised labels, in order.
fn supervised_text(tokenizer: &Tokenizer, example: &Example) -> String {
    let labels: Vec<u32> = example
        .targets
        .iter()
        .filter(|&&t| t != IGNORE_INDEX)
        .map(|&t| t as u32)
        .collect();
    tokenizer.decode(&labels, false).unwrap()
}

/// Checks the example against the whole rendering: same ids as tokenizing it at once,
/// targets equal to the next token wherever supervised, nothing supervised but
/// `expected_learned` (the assistant replies with their end-of-turn tokens).
fn check_example(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    expected_learned: &str,
) {
    let example = tokenize_row(tokenizer, template, messages).unwrap();
    let rendered = template.render(messages, false).unwrap();
    let whole = tokenizer
        .encode(&rendered, template.add_special_tokens())
        .unwrap();
    assert_eq!(
        example.input_ids, whole,
        "pieces tokenize as the whole: {rendered:?}"
    );
    assert_eq!(example.targets.len(), example.input_ids.len());
    for (t, &target) in example.targets.iter().enumerate() {
        if target != IGNORE_INDEX {
            assert_eq!(target, example.input_ids[t + 1] as i64, "position {t}");
        }
    }
    assert_eq!(*example.targets.last().unwrap(), IGNORE_INDEX);
    assert_eq!(
        supervised_text(tokenizer, &example),
        expected_learned,
        "{rendered:?}"
    );
}

/// The assistant contents, each followed by `end`.
fn replies_with(messages: &[Message], end: &str) -> String {
    messages
        .iter()
        .filter(|m| m.role == "assistant")
        .map(|m| format!("{}{end}", m.content))
        .collect()
}

#[test]
fn only_assistant_tokens_and_their_end_of_turn_are_supervised_on_the_fixture() {
    let tokenizer = fixture_tokenizer();
    let jinja = tokenizer.chat_template().unwrap().clone();
    for template in [jinja, ChatTemplate::ChatMl] {
        for messages in fixture_conversations() {
            check_example(
                &tokenizer,
                &template,
                &messages,
                &replies_with(&messages, "<|im_end|>"),
            );
        }
    }
}

#[test]
fn the_prompt_of_a_fixture_row_is_ignored_token_by_token() {
    let tokenizer = fixture_tokenizer();
    let messages = [
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello!"),
    ];
    let example = tokenize_row(&tokenizer, &ChatTemplate::ChatMl, &messages).unwrap();
    let prompt = tokenizer
        .encode(
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            false,
        )
        .unwrap();
    let reply = tokenizer.encode("Hello!<|im_end|>", false).unwrap();
    assert_eq!(
        example.input_ids.len(),
        prompt.len() + reply.len() + 1,
        "+ the final \\n"
    );
    let n = prompt.len();
    assert!(example.targets[..n - 1].iter().all(|&t| t == IGNORE_INDEX));
    let learned: Vec<i64> = reply.iter().map(|&id| id as i64).collect();
    assert_eq!(example.targets[n - 1..n - 1 + reply.len()], learned[..]);
    assert_eq!(example.targets[n - 1 + reply.len()..], [IGNORE_INDEX; 2]);
    assert_eq!(example.supervised_tokens(), reply.len());
}

#[test]
fn real_smollm2_rows_supervise_the_reply_and_im_end() {
    let tokenizer = real_tokenizer("smollm2-135m-instruct");
    let template = tokenizer
        .chat_template()
        .expect("SmolLM2 has a chat template")
        .clone();
    for messages in fixture_conversations() {
        check_example(
            &tokenizer,
            &template,
            &messages,
            &replies_with(&messages, "<|im_end|>"),
        );
    }
}

#[test]
fn real_qwen3_template_rewrites_history_so_only_the_last_turn_is_supervised() {
    let tokenizer = real_tokenizer("qwen-tokenizer");
    let template = tokenizer
        .chat_template()
        .expect("Qwen has a chat template")
        .clone();
    let (rows, _) = read("messages.jsonl", DataFormat::Messages);
    // Qwen3 writes an empty think block before the final reply and drops it from earlier
    // assistant turns, so the earlier turn of a multi-turn row is context only.
    check_example(
        &tokenizer,
        &template,
        &rows[1].messages,
        "<think>\n\n</think>\n\n6<|im_end|>",
    );
    check_example(
        &tokenizer,
        &template,
        &rows[2].messages,
        "<think>\n6 times 7 is 42.\n</think>\n\n \\boxed{42}<|im_end|>",
    );
    let (gsm8k, _) = read("gsm8k.jsonl", DataFormat::Gsm8k);
    let example = tokenize_row(&tokenizer, &template, &gsm8k[0].messages).unwrap();
    assert_contains(
        &supervised_text(&tokenizer, &example),
        &["\\boxed{72}<|im_end|>"],
    );
}

#[test]
fn conversations_the_template_cannot_supervise_are_errors() {
    let tokenizer = fixture_tokenizer();
    let user_last = [Message::new("user", "Hi")];
    let err = tokenize_row(&tokenizer, &ChatTemplate::ChatMl, &user_last).unwrap_err();
    assert_contains(&err.to_string(), &["must end with an assistant turn"]);
    let assistant_first = [Message::new("assistant", "Hi")];
    let err = tokenize_row(&tokenizer, &ChatTemplate::ChatMl, &assistant_first).unwrap_err();
    assert_contains(&err.to_string(), &["needs a message before it"]);
    let row = [
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello"),
    ];
    let err = tokenize_row(&tokenizer, &ChatTemplate::Raw, &row).unwrap_err();
    assert_contains(
        &err.to_string(),
        &["renders nothing for the assistant's reply"],
    );
}

// ---------------------------------------------------------------- batching

/// An example of `len` tokens numbered from `first`, supervised from `prompt` on.
fn example(first: u32, len: usize, prompt: usize) -> Example {
    let input_ids: Vec<u32> = (first..first + len as u32).collect();
    let targets = (0..len)
        .map(|t| {
            if t + 1 >= prompt && t + 1 < len {
                input_ids[t + 1] as i64
            } else {
                IGNORE_INDEX
            }
        })
        .collect();
    Example { input_ids, targets }
}

const PAD: u32 = 0;

/// Invariants of every packed batch: positions restart per segment, and no supervised
/// target crosses from one segment to the next.
fn check_packed(batch: &scotd::model::Batch, targets: &[i64]) {
    let segments = batch.segments.as_ref().expect("packed rows have segments");
    for row in 0..batch.batch_size {
        let range = row * batch.seq_len..(row + 1) * batch.seq_len;
        for i in range.clone() {
            let starts_segment = i == range.start || segments[i] != segments[i - 1];
            if starts_segment {
                assert_eq!(batch.positions[i], 0, "token {i} starts a segment");
            } else {
                assert_eq!(batch.positions[i], batch.positions[i - 1] + 1);
            }
            // The row's last token may keep its target: the cut end of a truncated example.
            if targets[i] != IGNORE_INDEX && i + 1 < range.end {
                assert_eq!(segments[i + 1], segments[i], "target {i} crosses");
                assert_eq!(targets[i], batch.input_ids[i + 1] as i64);
            }
        }
    }
}

#[test]
fn packing_fills_rows_first_fit_with_separate_segments() {
    let builder = BatchBuilder::new(2, 10, Packing::Pack, Overlong::Truncate, PAD);
    let mut source: VecDeque<Example> = [
        example(100, 6, 2),
        example(200, 5, 1),
        example(300, 3, 1),
        example(400, 4, 1),
        example(500, 8, 1),
    ]
    .into();
    let (batch, targets, stats) = builder.build(&mut source).unwrap();
    // Row 0: 100..106 then 300..303 (first fit); row 1: 200..205, 400..404; 500 fits nowhere.
    let row0: Vec<u32> = [
        (100..106).collect::<Vec<_>>(),
        (300..303).collect(),
        vec![PAD],
    ]
    .concat();
    let row1: Vec<u32> = [
        (200..205).collect::<Vec<_>>(),
        (400..404).collect(),
        vec![PAD],
    ]
    .concat();
    assert_eq!(batch.input_ids, [row0, row1].concat());
    assert_eq!(
        batch.segments.as_deref().unwrap(),
        [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2]
    );
    assert_eq!(batch.positions[..10], [0, 1, 2, 3, 4, 5, 0, 1, 2, 0]);
    check_packed(&batch, &targets);
    for last_token in [5, 8, 9, 14, 18, 19] {
        assert_eq!(targets[last_token], IGNORE_INDEX, "token {last_token}");
    }
    assert_eq!(stats.examples, 4);
    assert_eq!(stats.padding_tokens, 2);
    assert_eq!(stats.supervised_tokens, 4 + 4 + 2 + 3);
    assert_eq!((stats.truncated, stats.dropped), (0, 0));
    assert_eq!(
        source.front().unwrap().input_ids[0],
        500,
        "the misfit waits for the next batch"
    );
}

#[test]
fn overlong_examples_are_truncated_or_dropped_and_counted() {
    let long = || example(100, 15, 2);
    let late = || example(200, 15, 12);
    let short = || example(300, 4, 1);
    let truncate = BatchBuilder::new(1, 10, Packing::Pack, Overlong::Truncate, PAD);
    let mut source: VecDeque<Example> = [long(), short()].into();
    let (batch, targets, stats) = truncate.build(&mut source).unwrap();
    assert_eq!(batch.input_ids, (100..110).collect::<Vec<_>>());
    assert_eq!(targets[9], 110, "the cut end keeps its target");
    assert_eq!((stats.examples, stats.truncated, stats.dropped), (1, 1, 0));
    // Nothing supervised within the first 10 tokens: dropped even when truncating.
    let mut source: VecDeque<Example> = [late(), short()].into();
    let (batch, _, stats) = truncate.build(&mut source).unwrap();
    assert_eq!(batch.input_ids[..4], [300, 301, 302, 303]);
    assert_eq!((stats.examples, stats.truncated, stats.dropped), (1, 0, 1));
    let drop = BatchBuilder::new(1, 10, Packing::Pack, Overlong::Drop, PAD);
    let mut source: VecDeque<Example> = [long(), short()].into();
    let (batch, targets, stats) = drop.build(&mut source).unwrap();
    assert_eq!(batch.input_ids[..4], [300, 301, 302, 303]);
    assert_eq!((stats.examples, stats.truncated, stats.dropped), (1, 0, 1));
    assert_eq!(stats.padding_tokens, 6);
    check_packed(&batch, &targets);
}

#[test]
fn pad_mode_puts_one_example_per_row() {
    let builder = BatchBuilder::new(3, 6, Packing::Pad, Overlong::Truncate, PAD);
    let mut source: VecDeque<Example> = [
        example(10, 4, 1),
        example(20, 2, 1),
        example(30, 6, 1),
        example(40, 2, 1),
    ]
    .into();
    let (batch, targets, stats) = builder.build(&mut source).unwrap();
    assert!(batch.segments.is_none());
    assert_eq!(
        batch.input_ids,
        [10, 11, 12, 13, PAD, PAD, 20, 21, PAD, PAD, PAD, PAD, 30, 31, 32, 33, 34, 35]
    );
    assert_eq!(batch.positions, [0, 1, 2, 3, 4, 5].repeat(3));
    assert_eq!(
        targets[..6],
        [11, 12, 13, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    );
    assert_eq!(
        (
            stats.examples,
            stats.padding_tokens,
            stats.supervised_tokens
        ),
        (3, 6, 3 + 1 + 5)
    );
    assert_eq!(source.len(), 1);
}

#[test]
fn batching_stops_with_an_error_rather_than_looping_or_returning_nothing() {
    let builder = BatchBuilder::new(1, 4, Packing::Pack, Overlong::Drop, PAD);
    let mut too_long: VecDeque<Example> = (0..2000).map(|i| example(i, 9, 1)).collect();
    let err = builder.build(&mut too_long).unwrap_err().to_string();
    assert_contains(&err, &["1000 examples in a row were dropped", "seq_len 4"]);
    let mut empty: VecDeque<Example> = VecDeque::new();
    assert_contains(
        &builder.build(&mut empty).unwrap_err().to_string(),
        &["exhausted"],
    );
    let mut broken: VecDeque<Example> = [Example {
        input_ids: vec![1, 2],
        targets: vec![2],
    }]
    .into();
    assert_contains(
        &builder.build(&mut broken).unwrap_err().to_string(),
        &["2 token ids but 1 targets"],
    );
}

// ---------------------------------------------------------------- the whole pipeline

fn fixture_mixer(seed: u64) -> Mixer {
    let rows = |name, format| read(name, format).0;
    Mixer::new(
        vec![
            source("gsm8k", rows("gsm8k.jsonl", DataFormat::Gsm8k), 0.5),
            source("traces", rows("traces.jsonl", DataFormat::Traces), 0.2),
            source("alpaca", rows("alpaca.json", DataFormat::Alpaca), 0.3),
        ],
        seed,
    )
    .unwrap()
}

#[test]
fn a_run_resumed_between_batches_sees_the_same_batches() {
    let tokenizer = fixture_tokenizer();
    let template = ChatTemplate::ChatMl;
    let builder = BatchBuilder::new(2, 384, Packing::Pack, Overlong::Truncate, 330);
    let mut stream = MixedExamples::new(fixture_mixer(11), &tokenizer, &template);
    let mut saved = None;
    let mut expected = Vec::new();
    for step in 0..6 {
        if step == 2 {
            saved = Some(serde_json::to_string(&stream.state()).unwrap());
        }
        let (batch, targets, stats) = builder.build(&mut stream).unwrap();
        check_packed(&batch, &targets);
        assert!(stats.examples >= 2 && stats.supervised_tokens > 0);
        if step >= 2 {
            expected.push((
                batch.input_ids,
                batch.positions,
                batch.segments,
                targets,
                stats,
            ));
        }
    }
    let state: MixerState = serde_json::from_str(&saved.unwrap()).unwrap();
    let mut resumed = MixedExamples::new(fixture_mixer(0), &tokenizer, &template);
    resumed.restore(&state).unwrap();
    for want in expected {
        let (batch, targets, stats) = builder.build(&mut resumed).unwrap();
        assert_eq!(
            (
                batch.input_ids,
                batch.positions,
                batch.segments,
                targets,
                stats
            ),
            want
        );
    }
}

#[test]
fn a_peeked_example_is_not_part_of_the_saved_position() {
    let tokenizer = fixture_tokenizer();
    let template = ChatTemplate::ChatMl;
    let mut stream = MixedExamples::new(fixture_mixer(4), &tokenizer, &template);
    let before = stream.state();
    let peeked = stream.peek().unwrap().unwrap().clone();
    assert_eq!(stream.state(), before);
    assert_eq!(
        stream.peek().unwrap().unwrap(),
        &peeked,
        "peeking twice gives the same example"
    );
    stream.consume();
    assert_ne!(stream.state(), before);
    let mut again = MixedExamples::new(fixture_mixer(4), &tokenizer, &template);
    again.restore(&before).unwrap();
    assert_eq!(again.peek().unwrap().unwrap(), &peeked);
}

#[test]
fn a_row_the_template_cannot_render_names_its_dataset_and_keeps_the_position() {
    let tokenizer = fixture_tokenizer();
    let template = ChatTemplate::Raw;
    let mut stream = MixedExamples::new(fixture_mixer(4), &tokenizer, &template);
    let before = stream.state();
    let err = stream.peek().unwrap_err().to_string();
    assert_contains(&err, &["dataset ", "renders nothing"]);
    assert_eq!(stream.state(), before);
}

/// The rows without their ids: a fallback id names the file and line, which differ by format.
fn conversations(rows: &[Row]) -> Vec<(&[Message], &[String])> {
    rows.iter()
        .map(|row| (row.messages.as_slice(), row.alternatives.as_slice()))
        .collect()
}

#[test]
fn parquet_rows_read_as_their_jsonl_twins() {
    for (name, format) in [("gsm8k", DataFormat::Gsm8k), ("alpaca", DataFormat::Alpaca)] {
        let parquet = format!("{name}.parquet");
        assert_eq!(detect(&data(&parquet)).unwrap(), format);
        let (from_jsonl, _) = read(&format!("{name}.jsonl"), format);
        let (from_parquet, report) = read(&parquet, format);
        assert_eq!(report.records, from_jsonl.len());
        assert_eq!(
            conversations(&from_parquet),
            conversations(&from_jsonl),
            "{name}"
        );
        assert_eq!(from_parquet[1].id, format!("{parquet} row 1"));
    }
    // Trace ids come from the data: the rows are equal, ids and alternatives included.
    let (from_jsonl, jsonl_report) = read("traces.jsonl", DataFormat::Traces);
    let (from_parquet, parquet_report) = read("traces.parquet", DataFormat::Traces);
    assert_eq!(detect(&data("traces.parquet")).unwrap(), DataFormat::Traces);
    assert_eq!(from_parquet, from_jsonl);
    assert_eq!(
        parquet_report.incorrect_traces,
        jsonl_report.incorrect_traces
    );
}

#[test]
fn gsm8k_questions_read_from_parquet_as_from_jsonl_with_row_numbers_as_ids() {
    let from_jsonl = scotd::data::read_questions(&data("gsm8k.jsonl")).unwrap();
    let from_parquet = scotd::data::read_questions(&data("gsm8k.parquet")).unwrap();
    assert_eq!(from_parquet.len(), from_jsonl.len());
    for (row, (p, j)) in from_parquet.iter().zip(&from_jsonl).enumerate() {
        assert_eq!((&p.question, &p.gold), (&j.question, &j.gold));
        assert_eq!(p.id, scotd::data::TraceId::Int(row as i64));
    }
    let prompts = scotd::probe::record::read_prompts(&data("gsm8k.parquet")).unwrap();
    assert_eq!(prompts[0], from_jsonl[0].question);
}

#[test]
fn a_parquet_without_a_column_or_a_corrupt_one_is_an_error_naming_the_file() {
    let path = data("gsm8k_no_answer.parquet");
    let err = read_err(&path, DataFormat::Gsm8k, BadLines::Fail);
    assert_contains(
        &err,
        &["gsm8k_no_answer.parquet row 0", "answer", "missing"],
    );
    let err = scotd::data::read_questions(&path).unwrap_err().to_string();
    assert_contains(
        &err,
        &["gsm8k_no_answer.parquet row 0", "answer", "missing"],
    );
    let corrupt = data("corrupt.parquet");
    let err = read_err(&corrupt, DataFormat::Gsm8k, BadLines::Skip);
    assert_contains(
        &err,
        &[
            "corrupt.parquet",
            "(parquet)",
            "not a readable parquet file",
        ],
    );
    let err = detect(&corrupt).unwrap_err().to_string();
    assert_contains(&err, &["corrupt.parquet", "not a readable parquet file"]);
}
