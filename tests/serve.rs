//! `scotd serve` on 127.0.0.1 with the real SmolLM2-135M-Instruct, talked to over plain
//! HTTP (std's TcpStream): greedy replies under 32 concurrent clients equal `scotd
//! generate` decoding each prompt alone, streamed chunks concatenate to the whole reply,
//! seeded n > 1 sampling is reproducible, stop strings cut, errors have OpenAI's shape,
//! a bounded load test finishes, and the official `openai` Python client works with it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn smollm2() -> String {
    common::real_model_dir("smollm2-135m-instruct")
        .to_str()
        .unwrap()
        .to_string()
}

/// A running `scotd serve`, killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scotd"))
            .args([
                "serve",
                "--model",
                &smollm2(),
                "--port",
                "0",
                "--max-context",
                "256",
            ])
            .args(["--served-model-name", "smol"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("scotd serve exited before listening")
                .unwrap();
            if let Some(a) = line.strip_prefix("scotd serve: listening on http://") {
                break a.to_string();
            }
        };
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, address }
    }

    /// Sends raw bytes and returns the status and body of the response.
    fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.address,
            body.len()
        );
        self.raw(request.as_bytes())
    }

    /// A POST whose JSON answer is returned with its status.
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.request("POST", path, &body.to_string());
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        (status, value)
    }

    /// A 200 JSON answer.
    fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, value) = self.post(path, body);
        assert_eq!(status, 200, "{body} -> {value}");
        value
    }

    /// The `data:` events of a streamed answer, the final `[DONE]` checked and dropped.
    fn events(&self, path: &str, body: &Value) -> Vec<Value> {
        let (status, text) = self.request("POST", path, &body.to_string());
        assert_eq!(status, 200, "{text}");
        let data: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").expect("a data event"))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": "smol", "messages": [{"role": "user", "content": content}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn questions(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("What is {} plus {}? Answer briefly.", i * 7 + 3, i + 11))
        .collect()
}

/// `scotd generate` of each prompt alone (batch size 1): ids and text, in order.
fn generate_alone(prompts: &[String], max_new_tokens: usize) -> Vec<(Vec<u32>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.jsonl");
    let lines: Vec<String> = prompts
        .iter()
        .map(|p| json!({ "prompt": p }).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = dir.path().join("out.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_scotd"))
        .args(["generate", "--model", &smollm2(), "--batch-size", "1"])
        .args(["--max-new-tokens", &max_new_tokens.to_string()])
        .args(["--prompts-file", file.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let ids = serde_json::from_value(v["ids"].clone()).unwrap();
            (ids, v["text"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn greedy_replies_under_32_concurrent_clients_equal_generate_alone() {
    let prompts = questions(32);
    let max_tokens = 24;
    let expected = generate_alone(&prompts, max_tokens);
    // Fewer slots than clients: requests wait for room while others decode.
    let server = Server::start(&["--batch-size", "12"]);
    let replies: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let server = &server;
                let body = chat(
                    p,
                    json!({"max_tokens": max_tokens, "return_token_ids": true}),
                );
                scope.spawn(move || server.ok("/v1/chat/completions", &body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (reply, (ids, text))) in replies.iter().zip(&expected).enumerate() {
        let choice = &reply["choices"][0];
        let got: Vec<u32> = serde_json::from_value(choice["token_ids"].clone()).unwrap();
        assert_eq!(&got, ids, "prompt {i}: {}", prompts[i]);
        assert_eq!(choice["message"]["content"], *text, "prompt {i}");
        let finish = if ids.len() < max_tokens {
            "stop"
        } else {
            "length"
        };
        assert_eq!(choice["finish_reason"], finish, "prompt {i}");
        assert_eq!(reply["object"], "chat.completion");
        assert_eq!(reply["usage"]["completion_tokens"], ids.len());
        let usage = &reply["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(usage["prompt_tokens"].as_u64().unwrap() + ids.len() as u64)
        );
    }
}

#[test]
fn streamed_chunks_concatenate_to_the_whole_reply() {
    let server = Server::start(&["--batch-size", "4"]);
    let body = chat("Name three colours.", json!({"max_tokens": 30}));
    let whole = server.ok("/v1/chat/completions", &body);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = server.events("/v1/chat/completions", &streamed);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(events.len() > 5, "the reply came in pieces: {events:?}");
    let finish = &events[events.len() - 2]["choices"][0];
    assert_eq!(
        finish["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let last = events.last().unwrap();
    assert_eq!(last["usage"], whole["usage"]);
    assert!(events
        .iter()
        .all(|e| e["object"] == "chat.completion.chunk" && e["id"] == events[0]["id"]));

    let completion = json!({"model": "smol", "prompt": "Once upon a time", "max_tokens": 20});
    let whole = server.ok("/v1/completions", &completion);
    let mut streamed = completion.clone();
    streamed["stream"] = json!(true);
    let events = server.events("/v1/completions", &streamed);
    let text: String = events
        .iter()
        .map(|e| e["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
    assert_eq!(whole["object"], "text_completion");
    assert!(events.iter().all(|e| e["object"] == "text_completion"));
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
}

#[test]
fn seeded_sampling_with_n_is_reproducible() {
    let server = Server::start(&["--batch-size", "8"]);
    let body = chat(
        "Write a line about the sea.",
        json!({"n": 3, "temperature": 1.0, "top_p": 0.95, "seed": 7, "max_tokens": 16}),
    );
    let texts = |reply: &Value| -> Vec<String> {
        let choices = reply["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3);
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(c["index"], i);
        }
        choices
            .iter()
            .map(|c| c["message"]["content"].as_str().unwrap().to_string())
            .collect()
    };
    let first = texts(&server.ok("/v1/chat/completions", &body));
    let again = texts(&server.ok("/v1/chat/completions", &body));
    assert_eq!(first, again);
    assert!(
        first[0] != first[1] || first[1] != first[2],
        "three sampled choices are all the same: {first:?}"
    );
    let mut other_seed = body.clone();
    other_seed["seed"] = json!(8);
    assert_ne!(
        texts(&server.ok("/v1/chat/completions", &other_seed)),
        first
    );
}

#[test]
fn stop_strings_cut_the_reply() {
    let server = Server::start(&["--batch-size", "4"]);
    let body = json!({"prompt": "The days of the week are Monday, Tuesday,", "max_tokens": 24});
    let full = server.ok("/v1/completions", &body)["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    // A stop string from the middle of the reply, past its first few characters.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() > 3, "reply too short to cut: {full:?}");
    let stop = words[2];
    let cut = &full[..full.find(stop).unwrap()];
    for stream in [false, true] {
        let mut stopped = body.clone();
        stopped["stop"] = json!(["NEVER-SEEN", stop]);
        stopped["stream"] = json!(stream);
        let (text, finish) = if stream {
            let events = server.events("/v1/completions", &stopped);
            let text: String = events
                .iter()
                .map(|e| e["choices"][0]["text"].as_str().unwrap())
                .collect();
            (
                text,
                events.last().unwrap()["choices"][0]["finish_reason"].clone(),
            )
        } else {
            let reply = server.ok("/v1/completions", &stopped);
            let choice = &reply["choices"][0];
            (
                choice["text"].as_str().unwrap().to_string(),
                choice["finish_reason"].clone(),
            )
        };
        assert_eq!(text, cut, "stream {stream}, stop {stop:?}, full {full:?}");
        assert_eq!(finish, "stop");
    }
}

#[test]
fn errors_have_the_openai_shape_and_status() {
    let server = Server::start(&["--batch-size", "2", "--max-body", "64KiB"]);
    let long_prompt = "word ".repeat(400);
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/v1/chat/completions",
            "{not json".into(),
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/v1/chat/completions",
            "[1, 2]".into(),
            400,
            "JSON object",
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat("hi", json!({"temperature": "warm"})).to_string(),
            400,
            "'temperature' must be a number",
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat("hi", json!({"max_tokens": 1.5})).to_string(),
            400,
            "'max_tokens' must be an integer",
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": "gpt-4", "messages": []}).to_string(),
            400,
            "'messages' is empty",
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            404,
            "`gpt-4` does not exist",
        ),
        (
            "POST",
            "/v1/completions",
            json!({"prompt": long_prompt}).to_string(),
            400,
            "maximum context length is 256 tokens",
        ),
        (
            "POST",
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": 10_000}).to_string(),
            400,
            "maximum context length",
        ),
        (
            "POST",
            "/v1/completions",
            json!({"prompt": [70000]}).to_string(),
            400,
            "past the vocabulary",
        ),
        (
            "POST",
            "/v1/completions",
            json!({"prompt": "hi", "echo": true}).to_string(),
            400,
            "'echo' is not supported",
        ),
        (
            "POST",
            "/v1/completions",
            "x".repeat(70_000),
            413,
            "over the limit",
        ),
        (
            "GET",
            "/v1/chat/completions",
            String::new(),
            405,
            "not allowed",
        ),
        ("GET", "/v2/anything", String::new(), 404, "no route"),
    ];
    for (method, path, body, status, says) in cases {
        let (got, text) = server.request(method, path, &body);
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let error = &value["error"];
        assert_eq!(got, status, "{method} {path} {body:.80}: {text}");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{path} {body:.80}: {text}"
        );
        assert!(
            error["type"].is_string()
                && error.get("param").is_some()
                && error.get("code").is_some()
        );
    }
    for garbage in [
        &b"\x00\x01\x02\r\n\r\n"[..],
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let (status, text) = server.raw(garbage);
        assert!((400..500).contains(&status), "{garbage:?}: {status} {text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(value["error"]["message"].is_string());
    }
    let models: Value = serde_json::from_str(&server.request("GET", "/v1/models", "").1).unwrap();
    assert_eq!(models["data"][0]["id"], "smol");
    assert_eq!(models["object"], "list");
    // After all of that, the server still answers.
    let reply = server.ok(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 3}),
    );
    assert_eq!(reply["usage"]["completion_tokens"], 3);
}

#[test]
fn a_bounded_load_test_finishes_every_request() {
    let server = Server::start(&["--batch-size", "16"]);
    let (clients, each) = (32, 3);
    let start = Instant::now();
    let served: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let server = &server;
                scope.spawn(move || {
                    let mut tokens = 0;
                    for r in 0..each {
                        let max_tokens = 4 + (c * 7 + r * 3) % 13;
                        let body = chat(
                            &format!("Client {c} asks question {r}: why is the sky blue?"),
                            json!({"max_tokens": max_tokens, "temperature": (c % 3) as f64 * 0.5,
                                   "seed": c * 10 + r, "stream": (c + r) % 2 == 0}),
                        );
                        if (c + r) % 2 == 0 {
                            let events = server.events("/v1/chat/completions", &body);
                            assert!(
                                events.last().unwrap()["choices"][0]["finish_reason"].is_string()
                            );
                            tokens += 1;
                        } else {
                            let reply = server.ok("/v1/chat/completions", &body);
                            let used = reply["usage"]["completion_tokens"].as_u64().unwrap();
                            assert!(used as usize <= max_tokens, "{reply}");
                            tokens += 1;
                        }
                    }
                    tokens
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(served.iter().sum::<usize>(), clients * each);
    assert!(
        start.elapsed() < Duration::from_secs(600),
        "the load test took {:?}",
        start.elapsed()
    );
}

/// The official `openai` Python client (installed by tools/fetch-test-models.sh into
/// $SCOTD_CACHE/openai-venv): chat, streaming and completions through it.
#[test]
fn the_official_openai_client_talks_to_the_server() {
    let python = common::cache_dir().join("openai-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tools/fetch-test-models.sh first",
        python.display()
    );
    let server = Server::start(&["--batch-size", "4"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/openai_client_check.py");
    let out = Command::new(&python)
        .arg(script)
        .args(["--base-url", &format!("http://{}/v1", server.address)])
        .args(["--model", "smol"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("openai client: all checks passed"),
        "{stdout}"
    );
}
