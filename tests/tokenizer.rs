//! Tokenizer and chat-template tests: the tiny committed fixture (tests/fixtures/tokenizer,
//! built by make_fixture.py; the expected ids and texts below are what transformers gives
//! for it), every error case, and parity with transformers on the real SmolLM2 and Qwen
//! tokenizers fetched by tools/fetch-test-models.sh.

mod common;

use std::path::{Path, PathBuf};

use scotd::tokenizer::{ChatTemplate, Message, StreamDecoder, Tokenizer};

const ENDOFTEXT: u32 = 330;
const IM_START: u32 = 331;
const IM_END: u32 = 332;
const THINK: u32 = 333;
const END_THINK: u32 = 334;

fn fixture_dir() -> PathBuf {
    common::fixture("tokenizer")
}

fn fixture() -> Tokenizer {
    Tokenizer::from_dir(&fixture_dir()).unwrap()
}

/// A copy of the fixture's tokenizer.json in a fresh folder, with the given side files.
fn folder_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load_err(files: &[(&str, &str)]) -> String {
    let dir = folder_with(files);
    Tokenizer::from_dir(dir.path()).unwrap_err().to_string()
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "expected {part:?} in: {text}");
    }
}

fn msgs(turns: &[(&str, &str)]) -> Vec<Message> {
    turns.iter().map(|(r, c)| Message::new(*r, *c)).collect()
}

fn jinja(source: &str) -> ChatTemplate {
    ChatTemplate::Jinja {
        source: source.to_string(),
        bos_token: "<s>".to_string(),
        eos_token: "</s>".to_string(),
    }
}

// ---------------------------------------------------------------- encode / decode

#[test]
fn encode_matches_transformers_on_the_fixture() {
    let tok = fixture();
    let cases: &[(&str, &[u32])] = &[
        (
            "Hello! How are you?",
            &[291, 309, 78, 0, 323, 86, 256, 314, 220, 321, 30],
        ),
        (
            "The answer is 70,000.",
            &[294, 269, 282, 220, 22, 15, 11, 15, 15, 15, 13],
        ),
        (
            "Hi 👋🏽 café 数学",
            &[
                39, 72, 220, 172, 253, 239, 233, 172, 253, 237, 121, 220, 302, 267, 220, 162, 243,
                108, 161, 255, 99,
            ],
        ),
        (
            "a  \n\n  b\t\tc   ",
            &[
                64, 220, 220, 198, 198, 220, 220, 65, 197, 197, 66, 220, 220, 220,
            ],
        ),
        (
            "<think>step</think> \\boxed{42}",
            &[
                THINK, 82, 278, END_THINK, 220, 59, 65, 78, 87, 68, 67, 90, 19, 17, 92,
            ],
        ),
        (
            "<|im_start|>user\nHi<|im_end|>\n",
            &[IM_START, 84, 82, 262, 198, 39, 72, IM_END, 198],
        ),
    ];
    for (text, ids) in cases {
        assert_eq!(tok.encode(text, false).unwrap(), *ids, "{text:?}");
        // Qwen-style: no BOS, so special tokens add nothing.
        assert_eq!(tok.encode(text, true).unwrap(), *ids, "{text:?}");
        assert_eq!(tok.decode(ids, false).unwrap(), *text);
    }
}

#[test]
fn decode_round_trips_and_skips_special_tokens() {
    let tok = fixture();
    for text in [
        "",
        " leading",
        "tabs\tand\r\nCRLF",
        "😀😀",
        "\u{0}",
        "x\u{2028}y",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{text:?}");
    }
    // The NFC normalizer composes e + combining acute into é before splitting.
    let composed = tok.encode("\u{e9}", false).unwrap();
    assert_eq!(tok.encode("e\u{301}", false).unwrap(), composed);
    assert_eq!(tok.decode(&composed, false).unwrap(), "\u{e9}");
    let ids = tok
        .encode("<think>step</think> ok<|im_end|>", false)
        .unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "step ok");
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<think>step</think> ok<|im_end|>"
    );
}

#[test]
fn tokenizers_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Tokenizer>();
    shareable::<ChatTemplate>();
}

#[test]
fn vocabulary_and_special_tokens() {
    let tok = fixture();
    assert_eq!(tok.vocab_size(), 335);
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(IM_END));
    assert_eq!(tok.token_to_id("</think>"), Some(END_THINK));
    assert_eq!(tok.id_to_token(IM_START).as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.id_to_token(198).as_deref(), Some("Ċ"));
    assert_eq!(tok.token_to_id("no such token"), None);
    assert_eq!(tok.id_to_token(335), None);
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.bos_token(), None);
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    assert_eq!(tok.pad_id(), Some(ENDOFTEXT));
}

// ---------------------------------------------------------------- EOS ids

#[test]
fn eos_ids_follow_precedence_and_are_deduplicated() {
    // generation_config [im_end, endoftext], config endoftext, tokenizer_config <|im_end|>.
    assert_eq!(fixture().eos_ids(), &[IM_END, ENDOFTEXT]);

    let config_first = folder_with(&[
        ("config.json", r#"{"eos_token_id": 330}"#),
        (
            "tokenizer_config.json",
            r#"{"eos_token": {"content": "<|im_end|>"}}"#,
        ),
    ]);
    let tok = Tokenizer::from_dir(config_first.path()).unwrap();
    assert_eq!(tok.eos_ids(), &[ENDOFTEXT, IM_END]);

    let generation_int = folder_with(&[
        ("generation_config.json", r#"{"eos_token_id": 334}"#),
        ("config.json", r#"{"eos_token_id": [330, 334]}"#),
    ]);
    let tok = Tokenizer::from_dir(generation_int.path()).unwrap();
    assert_eq!(tok.eos_ids(), &[END_THINK, ENDOFTEXT]);
    assert_eq!(tok.eos_token(), None);

    let bare = folder_with(&[]);
    let tok = Tokenizer::from_dir(bare.path()).unwrap();
    assert!(tok.eos_ids().is_empty());
    assert!(tok.chat_template().is_none());
}

// ---------------------------------------------------------------- BOS insertion

#[test]
fn the_tokenizer_json_post_processor_decides_what_special_tokens_add() {
    // DeepSeek-style: a TemplateProcessing that puts the BOS first.
    let dir = folder_with(&[(
        "tokenizer_config.json",
        r#"{"bos_token": "<|endoftext|>", "add_bos_token": false}"#,
    )]);
    let path = dir.path().join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let bos = serde_json::json!({"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}});
    let seq = |id: &str| serde_json::json!({"Sequence": {"id": id, "type_id": 0}});
    json["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [bos, seq("A")],
        "pair": [bos, seq("A"), bos, seq("B")],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [330], "tokens": ["<|endoftext|>"]}}
    });
    std::fs::write(&path, json.to_string()).unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.bos_id(), Some(ENDOFTEXT));
    assert_eq!(tok.bos_token(), Some("<|endoftext|>"));
    assert_eq!(tok.encode("Hi", true).unwrap(), vec![ENDOFTEXT, 39, 72]);
    assert_eq!(tok.encode("Hi", false).unwrap(), vec![39, 72]);

    // add_bos_token does not override tokenizer.json (transformers v5 drops it too).
    let flag_only = folder_with(&[(
        "tokenizer_config.json",
        r#"{"bos_token": "<|endoftext|>", "add_bos_token": true}"#,
    )]);
    let tok = Tokenizer::from_dir(flag_only.path()).unwrap();
    assert_eq!(tok.encode("Hi", true).unwrap(), vec![39, 72]);
}

// ---------------------------------------------------------------- chat templates

#[test]
fn the_models_own_jinja_template_renders_like_transformers() {
    let tok = fixture();
    let template = tok
        .chat_template()
        .expect("the fixture has a chat template");
    assert!(!template.add_special_tokens());
    let conversation = msgs(&[("user", "Hi"), ("assistant", "Hello!"), ("user", "2+2?")]);
    assert_eq!(
        template.render(&conversation, true).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let mut with_system = msgs(&[("system", "Be brief.")]);
    with_system.extend(conversation);
    assert_eq!(
        template.render(&with_system, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
    );
}

#[test]
fn chatml_output() {
    let template = ChatTemplate::from_name_or_path("chatml").unwrap();
    let conversation = msgs(&[("system", "S"), ("user", "Q"), ("assistant", "A")]);
    assert_eq!(
        template.render(&conversation, false).unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    );
    assert_eq!(
        template.render(&msgs(&[("user", "Q")]), true).unwrap(),
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(template.add_special_tokens());
}

#[test]
fn deepseek_output() {
    let template = ChatTemplate::from_name_or_path("deepseek").unwrap();
    let conversation = msgs(&[
        ("system", "S"),
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
    ]);
    assert_eq!(
        template.render(&conversation, true).unwrap(),
        "S\n\nUser: Q1\n\nAssistant: A1<｜end▁of▁sentence｜>User: Q2\n\nAssistant:"
    );
    assert_eq!(
        template.render(&msgs(&[("user", "Q")]), false).unwrap(),
        "User: Q\n\n"
    );
    let err = template
        .render(&msgs(&[("tool", "x")]), false)
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["deepseek", "\"tool\""]);
}

#[test]
fn raw_output() {
    let template = ChatTemplate::from_name_or_path("raw").unwrap();
    let conversation = msgs(&[
        ("system", "S"),
        ("user", "Q1 "),
        ("assistant", "A"),
        ("user", "Q2"),
    ]);
    assert_eq!(template.render(&conversation, true).unwrap(), "Q1 Q2");
    let err = template
        .render(&msgs(&[("system", "S")]), false)
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["raw", "no user message"]);
}

#[test]
fn template_files_load_and_get_the_tokenizers_special_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jinja");
    std::fs::write(
        &path,
        "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();

    let bare = ChatTemplate::from_name_or_path(path).unwrap();
    assert_eq!(bare.render(&msgs(&[("user", "x")]), false).unwrap(), "x");

    let with_bos = folder_with(&[(
        "tokenizer_config.json",
        r#"{"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}"#,
    )]);
    let tok = Tokenizer::from_dir(with_bos.path()).unwrap();
    let resolved = tok.resolve_chat_template(Some(path)).unwrap();
    assert_eq!(
        resolved.render(&msgs(&[("user", "x")]), false).unwrap(),
        "<|endoftext|>x<|im_end|>"
    );
    assert!(matches!(
        tok.resolve_chat_template(Some("raw")),
        Ok(ChatTemplate::Raw)
    ));
    let err = tok.resolve_chat_template(None).unwrap_err().to_string();
    assert_contains(&err, &["no chat template", "chatml"]);
}

#[test]
fn chat_template_jinja_file_wins_over_the_config_field() {
    let dir = folder_with(&[
        (
            "tokenizer_config.json",
            r#"{"chat_template": "from config"}"#,
        ),
        ("chat_template.jinja", "from file"),
    ]);
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let rendered = tok
        .chat_template()
        .unwrap()
        .render(&msgs(&[("user", "x")]), false);
    assert_eq!(rendered.unwrap(), "from file");

    let named = folder_with(&[(
        "tokenizer_config.json",
        r#"{"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]}"#,
    )]);
    let tok = Tokenizer::from_dir(named.path()).unwrap();
    let rendered = tok
        .chat_template()
        .unwrap()
        .render(&msgs(&[("user", "x")]), false);
    assert_eq!(rendered.unwrap(), "plain");
}

// ---------------------------------------------------------------- Jinja features

#[test]
fn jinja_loop_first_last_and_trim_blocks() {
    let source = "{% for m in messages %}\n  {% if loop.first %}[{% endif %}{{ m.role }}{% if not loop.last %},{% else %}]{% endif %}\n{% endfor %}";
    let conversation = msgs(&[("system", "a"), ("user", "b"), ("assistant", "c")]);
    assert_eq!(
        jinja(source).render(&conversation, false).unwrap(),
        "[system,user,assistant]"
    );
}

#[test]
fn jinja_namespace_and_python_string_methods() {
    let source = "{%- set ns = namespace(count=0, last='') %}\
        {%- for m in messages %}{% set ns.count = ns.count + 1 %}{% set ns.last = m.content.strip() %}{% endfor %}\
        {{- ns.count }}|{{ ns.last }}|{{ messages[0].content.startswith('  <') }}\
        |{{ messages[0].content.split('>')[-1].lstrip() }}|{{ '  x '.rstrip() }}.|{{ 'AbC'.lower() }}\
        |{{ messages[0].content.strip().endswith('y') }}|{{ messages | length }}";
    let conversation = msgs(&[("user", "  <think>  x y "), ("user", "  last\n")]);
    assert_eq!(
        jinja(source).render(&conversation, false).unwrap(),
        "2|last|True|x y |  x.|abc|True|2"
    );
}

#[test]
fn jinja_generation_prompt_special_tokens_and_none_tools() {
    let source = "{{ bos_token }}{% for m in messages %}{{ m.content + eos_token }}{% endfor %}\
        {% if add_generation_prompt %}GO{% endif %}{% if tools is not none %}TOOLS{% endif %}";
    let template = jinja(source);
    let conversation = msgs(&[("user", "a"), ("assistant", "b")]);
    assert_eq!(
        template.render(&conversation, true).unwrap(),
        "<s>a</s>b</s>GO"
    );
    assert_eq!(
        template.render(&conversation, false).unwrap(),
        "<s>a</s>b</s>"
    );
}

#[test]
fn jinja_tojson_writes_python_json() {
    let source = "{{ messages | tojson }}\n{{ messages[0] | tojson(indent=2) }}";
    let conversation = msgs(&[("user", "say \"hi\" <b>é</b>\n")]);
    assert_eq!(
        jinja(source).render(&conversation, false).unwrap(),
        "[{\"role\": \"user\", \"content\": \"say \\\"hi\\\" <b>é</b>\\n\"}]\n\
         {\n  \"role\": \"user\",\n  \"content\": \"say \\\"hi\\\" <b>é</b>\\n\"\n}"
    );
}

#[test]
fn jinja_loop_controls_and_strftime_now() {
    let source = "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}\
        {{ m.content }}{% break %}{% endfor %}|{{ strftime_now('%Y') | length }}";
    let conversation = msgs(&[("system", "s"), ("user", "u1"), ("user", "u2")]);
    assert_eq!(jinja(source).render(&conversation, false).unwrap(), "u1|4");
}

#[test]
fn jinja_raise_exception_reports_the_templates_message_and_line() {
    let source = "{% for m in messages %}\n{% if m.role == 'tool' %}\n{{ raise_exception('Tools are not supported: ' + m.content) }}\n{% endif %}\n{% endfor %}";
    let err = jinja(source)
        .render(&msgs(&[("user", "ok"), ("tool", "calc")]), false)
        .unwrap_err()
        .to_string();
    assert_contains(
        &err,
        &[
            "chat template (Jinja)",
            "line 3",
            "the template raised an exception: Tools are not supported: calc",
            "raise_exception(",
        ],
    );
}

#[test]
fn jinja_render_errors_name_the_line() {
    let source = "{% for m in messages %}\n{{ m.content | no_such_filter }}\n{% endfor %}";
    let err = jinja(source)
        .render(&msgs(&[("user", "x")]), false)
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["chat template (Jinja)", "line 2", "no_such_filter"]);

    let source = "line one\n{{ messages[0].content + 1 }}";
    let err = jinja(source)
        .render(&msgs(&[("user", "x")]), false)
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["line 2", "messages[0].content + 1"]);
}

// ---------------------------------------------------------------- streaming

/// Pushes ids one at a time; returns the deltas and the final flush.
fn stream(tok: &Tokenizer, ids: &[u32], skip_special_tokens: bool) -> (Vec<String>, String) {
    let mut decoder = StreamDecoder::new(tok, skip_special_tokens);
    let deltas = ids.iter().map(|&id| decoder.push(id).unwrap()).collect();
    (deltas, decoder.finish().unwrap())
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let tok = fixture();
    let text = "Hi 👋🏽 café 数学<think>🤔</think>done";
    let ids = tok.encode(text, false).unwrap();
    for skip in [false, true] {
        let (deltas, rest) = stream(&tok, &ids, skip);
        assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
        assert_eq!(rest, "");
        assert_eq!(deltas.concat(), tok.decode(&ids, skip).unwrap());
    }
    // The four bytes of 👋 arrive as four tokens: nothing, nothing, nothing, then 👋.
    let (deltas, _) = stream(&tok, &ids, false);
    assert_eq!(&deltas[2..7], &[" ", "", "", "", "👋"]);
}

#[test]
fn stream_decoder_flushes_an_incomplete_character_like_decode() {
    let tok = fixture();
    let ids = tok.encode("ok 😀", false).unwrap();
    let cut = &ids[..ids.len() - 1];
    let (deltas, rest) = stream(&tok, cut, false);
    assert_eq!(deltas.concat(), "ok ");
    assert_eq!(rest, "\u{FFFD}");
    assert_eq!(deltas.concat() + &rest, tok.decode(cut, false).unwrap());
}

// ---------------------------------------------------------------- errors

#[test]
fn missing_tokenizer_json_names_the_path_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    let path = dir.path().join("tokenizer.json");
    assert_contains(
        &err,
        &[
            path.to_str().unwrap(),
            "not found: expected a Hugging Face fast-tokenizer file",
        ],
    );

    let err = Tokenizer::from_dir(Path::new("/no/such/model"))
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["/no/such/model/tokenizer.json"]);
}

#[test]
fn malformed_tokenizer_json_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"model": {"type": "BPE"}"#,
    )
    .unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert_contains(&err, &["tokenizer.json", "not a tokenizer"]);
}

#[test]
fn malformed_side_files_name_file_and_field() {
    let err = load_err(&[("tokenizer_config.json", r#"{"eos_token": 5}"#)]);
    assert_contains(
        &err,
        &[
            "tokenizer_config.json",
            "eos_token",
            "expected a string",
            "got 5",
        ],
    );

    let err = load_err(&[("tokenizer_config.json", r#"{"bos_token": "<nope>"}"#)]);
    assert_contains(
        &err,
        &[
            "tokenizer_config.json",
            "bos_token",
            "\"<nope>\" is not a token",
        ],
    );

    let err = load_err(&[("tokenizer_config.json", r#"{"chat_template": {"x": 1}}"#)]);
    assert_contains(&err, &["tokenizer_config.json", "chat_template"]);

    let err = load_err(&[("tokenizer_config.json", "{not json")]);
    assert_contains(&err, &["tokenizer_config.json", "(json)"]);

    let err = load_err(&[(
        "generation_config.json",
        r#"{"eos_token_id": "<|im_end|>"}"#,
    )]);
    assert_contains(
        &err,
        &[
            "generation_config.json",
            "eos_token_id",
            "expected a token id",
        ],
    );

    let err = load_err(&[("config.json", r#"{"eos_token_id": [330, 99999]}"#)]);
    assert_contains(
        &err,
        &[
            "config.json",
            "eos_token_id",
            "99999",
            "not in the vocabulary",
        ],
    );
}

#[test]
fn decoding_an_unknown_id_is_an_error() {
    let err = fixture()
        .decode(&[39, 4000], false)
        .unwrap_err()
        .to_string();
    assert_contains(
        &err,
        &[
            "tokenizer.json",
            "4000",
            "not in the vocabulary (335 tokens)",
        ],
    );
}

#[test]
fn unknown_template_names_and_bad_files_are_errors() {
    let err = ChatTemplate::from_name_or_path("llama9")
        .unwrap_err()
        .to_string();
    assert_contains(
        &err,
        &[
            "llama9",
            "unknown template name",
            "chatml",
            "deepseek",
            "raw",
            ".jinja",
        ],
    );

    let err = ChatTemplate::from_name_or_path("/no/such/template.jinja")
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["/no/such/template.jinja"]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.jinja");
    std::fs::write(&path, "fine\n{% for m in messages %}\nno endfor").unwrap();
    let err = ChatTemplate::from_name_or_path(path.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert_contains(&err, &["broken.jinja: line 3", "syntax error"]);
}

#[test]
fn every_template_rejects_an_empty_conversation() {
    for template in [
        ChatTemplate::ChatMl,
        ChatTemplate::DeepSeek,
        ChatTemplate::Raw,
        fixture().chat_template().unwrap().clone(),
    ] {
        let err = template.render(&[], true).unwrap_err().to_string();
        assert_contains(&err, &["conversation is empty"]);
    }
}

// ---------------------------------------------------------------- real models

/// The models the real-model fixtures cover: fixture key and folder under the cache.
const REAL_MODELS: [(&str, &str); 2] = [
    ("smollm2", "smollm2-135m-instruct"),
    ("qwen", "qwen-tokenizer"),
];

fn real_tokenizer(folder: &str) -> Tokenizer {
    Tokenizer::from_dir(&common::real_model_dir(folder)).unwrap()
}

/// A fixture made by transformers (tools/make_real_model_goldens.py), with a list of
/// cases under each model's key.
fn real_fixture(name: &str) -> serde_json::Value {
    let path = common::fixture("real_models").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The cases of one model; a fixture without them is an error, not a silent pass.
fn cases<'a>(fixture: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    let cases = fixture[key].as_array().map_or(&[][..], Vec::as_slice);
    assert!(
        !cases.is_empty(),
        "the real-model fixture has no cases for {key}"
    );
    cases
}

fn ids_of(value: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(value.clone()).expect("a list of token ids")
}

fn text_of(value: &serde_json::Value) -> &str {
    value.as_str().expect("a string")
}

#[test]
fn real_tokenizers_match_transformers() {
    let fixture = real_fixture("tokenizer_parity.json");
    for (key, folder) in REAL_MODELS {
        let tok = real_tokenizer(folder);
        for case in cases(&fixture, key) {
            let text = text_of(&case["text"]);
            let ids = ids_of(&case["ids"]);
            assert_eq!(tok.encode(text, false).unwrap(), ids, "{key}: {text:?}");
            let with_special = tok.encode(text, true).unwrap();
            assert_eq!(
                with_special,
                ids_of(&case["ids_with_special"]),
                "{key}: {text:?}"
            );
            let decoded = tok.decode(&ids, false).unwrap();
            assert_eq!(decoded, text_of(&case["decoded"]), "{key}: {text:?}");
            let skipped = tok.decode(&ids, true).unwrap();
            assert_eq!(
                skipped,
                text_of(&case["decoded_skip_special"]),
                "{key}: {text:?}"
            );
            let (deltas, rest) = stream(&tok, &ids, false);
            assert_eq!(deltas.concat() + &rest, decoded, "{key} streamed: {text:?}");
        }
    }
}

/// The render budget (fuel and output, proportional to the conversation) is far above
/// what real templates spend, even on many tiny messages, the most per byte.
#[test]
fn real_chat_templates_render_long_conversations_within_their_budget() {
    for (key, folder) in REAL_MODELS {
        let tok = real_tokenizer(folder);
        let template = tok.chat_template().unwrap();
        let messages: Vec<Message> = (0..2000)
            .map(|i| Message::new(if i % 2 == 0 { "user" } else { "assistant" }, "q"))
            .collect();
        let rendered = template
            .render(&messages, true)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        // Every message is in the prompt (neither default system prompt has a 'q').
        assert_eq!(rendered.matches('q').count(), 2000, "{key}");
    }
}

#[test]
fn real_chat_templates_match_transformers() {
    let fixture = real_fixture("chat_templates.json");
    for (key, folder) in REAL_MODELS {
        let tok = real_tokenizer(folder);
        let template = tok
            .chat_template()
            .unwrap_or_else(|| panic!("{key}: the model has no chat template"));
        for case in cases(&fixture, key) {
            let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
            let add_generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
            let rendered = template.render(&messages, add_generation_prompt).unwrap();
            assert_eq!(rendered, text_of(&case["rendered"]), "{key}: {messages:?}");
            let ids = tok
                .encode(&rendered, template.add_special_tokens())
                .unwrap();
            assert_eq!(ids, ids_of(&case["ids"]), "{key} ids: {messages:?}");
        }
    }
}
