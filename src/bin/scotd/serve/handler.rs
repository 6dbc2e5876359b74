//! One HTTP request, routed: the model list, or a completion whose prompts are rendered
//! and encoded here, decoded by the worker, and answered whole or streamed as
//! server-sent events in OpenAI's chunk shapes.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use scotd::sample::{RequestSettings, SamplingConfig, StopReason};
use scotd::tokenizer::{ChatTemplate, Message, StreamDecoder, Tokenizer};
use serde_json::{json, Value};

use super::api::{self, ApiError, Completion, Endpoint, PromptInput};
use super::http::{self, EventStream, Request};
use super::stop::{Matched, StopMatcher};
use super::worker::{Job, Reply};
use crate::prompts::conversation;

/// What every connection shares.
pub struct Server {
    pub model_name: String,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Put before a conversation that has no system message of its own.
    pub system: Option<String>,
    /// The settings of a request that leaves them out.
    pub defaults: SamplingConfig,
    /// Positions one request may fill (prompt and reply).
    pub context: usize,
    pub max_body: usize,
    pub jobs: Sender<Job>,
}

pub fn handle(server: &Server, request: &Request, stream: &mut TcpStream) {
    let endpoint = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/v1/models") => return http::write_json(stream, 200, &models(server)),
        ("GET", "/health") => return http::write_json(stream, 200, &json!({})),
        ("GET", path) if path.starts_with("/v1/models/") => {
            let asked = &path["/v1/models/".len()..];
            return match model_entry(server, asked) {
                Some(entry) => http::write_json(stream, 200, &entry),
                None => respond_error(stream, &unknown_model(server, asked)),
            };
        }
        ("POST", "/v1/chat/completions") => Endpoint::Chat,
        ("POST", "/v1/completions") => Endpoint::Completions,
        (_, "/v1/models" | "/v1/chat/completions" | "/v1/completions" | "/health") => {
            let e = ApiError::new(
                405,
                format!("{} is not allowed on {}", request.method, request.path),
            );
            return respond_error(stream, &e);
        }
        (_, path) => return respond_error(stream, &ApiError::new(404, format!("no route {path}"))),
    };
    if let Err(e) = complete(server, endpoint, &request.body, stream) {
        respond_error(stream, &e);
    }
}

fn respond_error(stream: &mut TcpStream, error: &ApiError) {
    http::write_json(stream, error.status, &error.body());
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn models(server: &Server) -> Value {
    json!({"object": "list", "data": [model_entry(server, &server.model_name)]})
}

fn model_entry(server: &Server, name: &str) -> Option<Value> {
    (name == server.model_name).then(|| {
        json!({"id": server.model_name, "object": "model", "created": created(), "owned_by": "scotd"})
    })
}

fn unknown_model(server: &Server, asked: &str) -> ApiError {
    ApiError {
        status: 404,
        message: format!(
            "The model `{asked}` does not exist: this server serves `{}`",
            server.model_name
        ),
        param: Some("model".into()),
        code: Some("model_not_found"),
    }
}

/// A completion, answered on `stream` unless it fails before its first byte (then the
/// error comes back to be answered).
fn complete(
    server: &Server,
    endpoint: Endpoint,
    body: &[u8],
    stream: &mut TcpStream,
) -> Result<(), ApiError> {
    let request = api::parse_completion(endpoint, body)?;
    if let Some(asked) = request.model.as_deref().filter(|m| *m != server.model_name) {
        return Err(unknown_model(server, asked));
    }
    let prompts = request
        .prompts
        .iter()
        .map(|p| prompt_ids(server, p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut jobs = Vec::new();
    for (p, ids) in prompts.iter().enumerate() {
        let max_new_tokens = reply_room(server, ids.len(), request.max_tokens)?;
        for c in 0..request.n {
            let index = p * request.n + c;
            jobs.push((
                index,
                ids.clone(),
                settings(server, &request, max_new_tokens, index),
            ));
        }
    }
    let id = response_id(endpoint);
    let (choices, replies) = submit(server, &request, jobs)?;
    let prompt_tokens = prompts.iter().map(Vec::len).sum();
    let answer = Answer {
        server,
        endpoint,
        request: &request,
        id,
        created: created(),
        prompt_tokens,
    };
    if request.stream {
        answer.stream(choices, &replies, stream);
        Ok(())
    } else {
        let body = answer.whole(choices, &replies)?;
        http::write_json(stream, 200, &body);
        Ok(())
    }
}

fn prompt_ids(server: &Server, prompt: &PromptInput) -> Result<Vec<u32>, ApiError> {
    let failed = |e: scotd::Error| ApiError::invalid("prompt", format!("{e}"));
    let ids = match prompt {
        PromptInput::Ids(ids) => {
            let vocab = server.tokenizer.vocab_size() as u32;
            if let Some(bad) = ids.iter().find(|&&id| id >= vocab) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("token id {bad} is past the vocabulary of {vocab}"),
                ));
            }
            ids.clone()
        }
        PromptInput::Text(text) => server.tokenizer.encode(text, true).map_err(failed)?,
        PromptInput::Messages(messages) => {
            let has_system = messages.iter().any(|m| m.role == "system");
            let system = server.system.as_deref().filter(|_| !has_system);
            let turns: Vec<Message> = conversation(system, messages);
            let text = server
                .template
                .render(&turns, true)
                .map_err(|e| ApiError::invalid("messages", format!("{e}")))?;
            server
                .tokenizer
                .encode(&text, server.template.add_special_tokens())
                .map_err(failed)?
        }
    };
    if ids.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt has no tokens"));
    }
    Ok(ids)
}

/// New tokens a prompt of `prompt` tokens may have: `max_tokens` when it fits the
/// context, else the server's default within what the context leaves.
fn reply_room(
    server: &Server,
    prompt: usize,
    max_tokens: Option<usize>,
) -> Result<usize, ApiError> {
    let context = server.context;
    let too_long = |asked: usize| {
        ApiError::invalid(
            "messages",
            format!(
                "This model's maximum context length is {context} tokens. However, you requested \
                 {} tokens ({prompt} in the prompt, {asked} for the completion). Please reduce \
                 the prompt or the completion length.",
                prompt + asked
            ),
        )
    };
    if prompt >= context {
        return Err(too_long(max_tokens.unwrap_or(0)));
    }
    match max_tokens {
        Some(m) if prompt + m > context => Err(too_long(m)),
        Some(m) => Ok(m),
        None => Ok(server.defaults.max_new_tokens.min(context - prompt)),
    }
}

/// Choice `index`'s settings: the request's, else the server's; its seed from the
/// request's seed and the index as `scotd generate` seeds prompt `index`, so a seeded
/// request is reproducible; unseeded, a fresh one.
fn settings(
    server: &Server,
    request: &Completion,
    max_new_tokens: usize,
    index: usize,
) -> RequestSettings {
    let defaults = &server.defaults;
    let seed = request.seed.unwrap_or_else(fresh_seed);
    RequestSettings {
        max_new_tokens,
        temperature: request.temperature.unwrap_or(defaults.temperature),
        top_p: request.top_p.unwrap_or(defaults.top_p),
        top_k: request.top_k.unwrap_or(defaults.top_k),
        seed: seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn fresh_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32)
}

fn response_id(endpoint: Endpoint) -> String {
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    format!("{prefix}-{:016x}", fresh_seed())
}

/// Sends one job a choice to the worker; the choices' receiving state and the channel
/// their replies come back on.
fn submit<'t>(
    server: &'t Server,
    request: &Completion,
    jobs: Vec<(usize, Vec<u32>, RequestSettings)>,
) -> Result<(Vec<Choice<'t>>, Replies), ApiError> {
    let (replies, received) = mpsc::channel();
    let mut choices = Vec::new();
    for (index, prompt, settings) in jobs {
        let cancelled = Arc::new(AtomicBool::new(false));
        let job = Job {
            prompt,
            settings,
            choice: index,
            replies: replies.clone(),
            cancelled: cancelled.clone(),
        };
        if server.jobs.send(job).is_err() {
            return Err(ApiError::new(503, "the decoder has stopped"));
        }
        choices.push(Choice {
            text: Some(StreamDecoder::new(&server.tokenizer, true)),
            stop: StopMatcher::new(request.stop.clone()),
            ids: Vec::new(),
            finish: None,
            cancelled,
        });
    }
    Ok((choices, received))
}

/// Where the worker's replies to a request's choices come back, tagged by choice.
type Replies = Receiver<(usize, Reply)>;

/// One choice being received.
struct Choice<'t> {
    /// `None` once the reply ended.
    text: Option<StreamDecoder<'t>>,
    stop: StopMatcher,
    ids: Vec<u32>,
    finish: Option<&'static str>,
    cancelled: Arc<AtomicBool>,
}

impl Choice<'_> {
    /// The text a reply adds (possibly empty) and the finish reason once the choice
    /// ends; `None` for tokens still in flight after a stop string ended it.
    fn receive(
        &mut self,
        reply: Reply,
    ) -> Result<Option<(String, Option<&'static str>)>, ApiError> {
        if self.finish.is_some() {
            return Ok(None);
        }
        let failed = |e: scotd::Error| ApiError::new(500, format!("decoding the reply: {e}"));
        let (piece, reason) = match reply {
            Reply::Token(id) => {
                self.ids.push(id);
                let text = self.text.as_mut().expect("a choice decodes until it ends");
                (text.push(id).map_err(failed)?, None)
            }
            Reply::Finished(reason) => {
                let text = self.text.take().expect("a choice ends once");
                (text.finish().map_err(failed)?, Some(reason))
            }
            Reply::Failed(message) => return Err(ApiError::new(500, message)),
        };
        let text = match self.stop.push(&piece) {
            Matched::Stopped(t) => {
                self.cancelled.store(true, Ordering::Relaxed);
                self.finish = Some("stop");
                return Ok(Some((t, self.finish)));
            }
            Matched::Text(t) => t,
        };
        Ok(Some(match reason {
            None => (text, None),
            Some(reason) => {
                self.finish = Some(match reason {
                    StopReason::Eos => "stop",
                    StopReason::MaxNewTokens | StopReason::ContextFull => "length",
                });
                (text + &self.stop.finish(), self.finish)
            }
        }))
    }
}

/// A completion's answer being written.
struct Answer<'a> {
    server: &'a Server,
    endpoint: Endpoint,
    request: &'a Completion,
    id: String,
    created: u64,
    prompt_tokens: usize,
}

impl Answer<'_> {
    fn usage(&self, choices: &[Choice]) -> Value {
        let completion: usize = choices.iter().map(|c| c.ids.len()).sum();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    fn envelope(&self, object: &str, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.server.model_name,
            "choices": choices,
        })
    }

    /// Waits for every choice and answers with them all.
    fn whole(&self, mut choices: Vec<Choice>, replies: &Replies) -> Result<Value, ApiError> {
        let mut texts = vec![String::new(); choices.len()];
        let mut open = choices.len();
        while open > 0 {
            let (index, reply) = replies
                .recv()
                .map_err(|_| ApiError::new(500, "the decoder stopped"))?;
            if let Some((text, finish)) = choices[index].receive(reply)? {
                texts[index].push_str(&text);
                open -= finish.is_some() as usize;
            }
        }
        let (object, bodies) = match self.endpoint {
            Endpoint::Chat => ("chat.completion", texts.into_iter().enumerate().map(|(i, text)| {
                json!({"index": i, "message": {"role": "assistant", "content": text},
                       "logprobs": null, "finish_reason": choices[i].finish})
            }).collect::<Vec<_>>()),
            Endpoint::Completions => ("text_completion", texts.into_iter().enumerate().map(|(i, text)| {
                json!({"index": i, "text": text, "logprobs": null, "finish_reason": choices[i].finish})
            }).collect()),
        };
        let mut body = self.envelope(object, bodies);
        if self.request.return_token_ids {
            for (entry, choice) in body["choices"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .zip(&choices)
            {
                entry["token_ids"] = json!(choice.ids);
            }
        }
        body["usage"] = self.usage(&choices);
        Ok(body)
    }

    /// One choice's chunk of the stream.
    fn chunk(&self, index: usize, delta: Value, text: &str, finish: Option<&str>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Completions => {
                json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        self.envelope(self.chunk_object(), vec![choice])
    }

    /// Streams every choice's text as it comes, then `data: [DONE]`. A client gone
    /// cancels the choices; a decoding failure is sent as an error event.
    fn stream(&self, mut choices: Vec<Choice>, replies: &Replies, stream: &mut TcpStream) {
        let cancel_all = |choices: &[Choice]| {
            for c in choices {
                c.cancelled.store(true, Ordering::Relaxed);
            }
        };
        let Ok(mut events) = EventStream::start(stream) else {
            return cancel_all(&choices);
        };
        if self.endpoint == Endpoint::Chat {
            for index in 0..choices.len() {
                let first =
                    self.chunk(index, json!({"role": "assistant", "content": ""}), "", None);
                if events.send(&first.to_string()).is_err() {
                    return cancel_all(&choices);
                }
            }
        }
        let mut open = choices.len();
        while open > 0 {
            let received = replies
                .recv()
                .map_err(|_| ApiError::new(500, "the decoder stopped"))
                .and_then(|(index, reply)| Ok((index, choices[index].receive(reply)?)));
            let (index, (text, finish)) = match received {
                Ok((index, Some(delta))) => (index, delta),
                Ok((_, None)) => continue,
                Err(e) => {
                    let _ = events.send(&e.body().to_string());
                    return cancel_all(&choices);
                }
            };
            let mut sent = Ok(());
            if !text.is_empty() {
                sent = events.send(
                    &self
                        .chunk(index, json!({"content": text}), &text, None)
                        .to_string(),
                );
            }
            if let Some(finish) = finish {
                open -= 1;
                sent = sent.and_then(|()| {
                    events.send(&self.chunk(index, json!({}), "", Some(finish)).to_string())
                });
            }
            if sent.is_err() {
                return cancel_all(&choices);
            }
        }
        if self.request.include_usage {
            let mut last = self.envelope(self.chunk_object(), vec![]);
            last["usage"] = self.usage(&choices);
            let _ = events.send(&last.to_string());
        }
        let _ = events.send("[DONE]");
    }

    fn chunk_object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        }
    }
}
