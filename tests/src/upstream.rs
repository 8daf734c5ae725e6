//! A fake OpenAI-compatible upstream: the test double behind fault-injection tests, and the
//! baseline ("direct to upstream") in load benchmarks.
//!
//! Role: answer the OpenAI endpoints a gateway forwards, deterministically and fast, over plain
//! HTTP/1.1 with keep-alive (pipelined requests are answered in order), and misbehave on demand.
//! Every request is recorded (method, target, lowercased headers, de-chunked body) so tests can
//! assert on what the proxy actually sent.
//!
//! # Endpoints
//!
//! | Request                     | Response                                                      |
//! |-----------------------------|---------------------------------------------------------------|
//! | `GET /health`               | `200 {"status":"ok"}`                                         |
//! | `GET /v1/models`            | `{"object":"list","data":[{"id":M,"object":"model","created":0,"owned_by":"fake"}]}` |
//! | `POST /v1/chat/completions` | `chat.completion`, or `chat.completion.chunk` events when streaming |
//! | `POST /v1/completions`      | `text_completion` (also the chunk `object` when streaming)    |
//! | `POST /v1/embeddings`       | a `list` of 8-dimensional `embedding`s, one per input         |
//! | anything else               | `404` (`405` for a known path with the wrong method), OpenAI error JSON |
//!
//! Request bodies may be framed by `content-length` or `transfer-encoding: chunked`. `model` is
//! echoed from the request (first configured model if absent). Generated text is
//! [`completion_text`]: `n = min(max_tokens | max_completion_tokens | 16, 64)` tokens
//! `"tok0 tok1 … "`, each token one word with a trailing space. `prompt_tokens` is the number of
//! whitespace-separated words across all message contents / `prompt` / `input` (at least 1);
//! `completion_tokens = n`. The `id` is always `chatcmpl-fake` (chat) or `cmpl-fake`
//! (completions) and `created` is 0, so bodies are byte-for-byte reproducible.
//!
//! # Streaming
//!
//! With `"stream": true` (chat and completions) the response is `200`, `text/event-stream`,
//! `transfer-encoding: chunked`, each SSE event in its own HTTP chunk, written and flushed as
//! soon as it is produced:
//!
//! 1. one event per token; chat: `{"id":"chatcmpl-fake","object":"chat.completion.chunk",
//!    "created":0,"model":M,"choices":[{"index":0,"delta":{"content":"tok0 "},
//!    "finish_reason":null}]}`, the first delta also carrying `"role":"assistant"` (with `n = 0`
//!    a single role event with empty content); completions: `"object":"text_completion"` and
//!    `"text"` instead of `"delta"`;
//! 2. a final event with an empty delta (empty text) and `"finish_reason":"stop"`;
//! 3. if `stream_options.include_usage` is true, an event with `"choices":[]` and `usage`;
//! 4. `data: [DONE]`, then the terminating zero-size chunk.
//!
//! # Faults
//!
//! Chosen per request by the `x-fault` header, else [`FakeOptions::default_fault`]; an unparsable
//! `x-fault` is answered `400`. Faults apply to the three `POST` endpoints only, so `/health` and
//! `/v1/models` keep answering (readiness probes work under a default fault). Durations are
//! integer milliseconds.
//!
//! | Spec                   | Effect |
//! |------------------------|--------|
//! | `slow-first-token=MS`  | sleep MS before the response head (streaming or not) |
//! | `pause-after-first=MS` | streaming: head + first event, flush, sleep MS, the rest; non-streaming: head + first half of the body, sleep, the rest |
//! | `drop-mid-stream`      | streaming: head + 2 events, then close the connection (FIN) without the terminating chunk; non-streaming: head + half the body, then close |
//! | `status=CODE`          | respond CODE (200–599) with an OpenAI error body `{"error":{"message","type","param","code"}}` |
//! | `malformed-sse`        | streaming: the events of [`MALFORMED_SSE_EVENTS`] (non-JSON data, a line without `data:`, truncated JSON, a comment, then `[DONE]`); non-streaming: `200` JSON content type with body `{not json` |
//! | `huge=BYTES`           | content is exactly BYTES bytes of filler (`"huge "` repeated, cut to length); streaming: events of up to 4096 content bytes until BYTES; `completion_tokens = ceil(BYTES / 4)`; no effect on embeddings |
//! | `split-every-byte`     | streaming: the whole SSE body written one byte per HTTP chunk, one write (flush) each; non-streaming: the body written one byte per write |
//! | `stall`                | read the request, never respond; the socket stays open until the client closes it |
//! | `close`                | read the request, then close the connection without responding |
//! | `no-done`              | stream normally but end the chunked body cleanly without `data: [DONE]`; no effect on non-streaming |
//! | `delay=MS`             | sleep MS before responding (same as `slow-first-token` when streaming) |
//!
//! # Scripted replies
//!
//! `x-fake-reply: ["piece one", "piece two"]` (a JSON array of strings) replaces the generated
//! text: streaming, one content event per piece, each in its own HTTP chunk; non-streaming, the
//! pieces joined. `completion_tokens` is the number of pieces. `x-fake-echo-system: 1` makes
//! the reply the request's (first) system message, in three pieces: a model that leaks its
//! prompt. `x-fake-tool-call: {"name": "shell", "arguments": ["{\"cmd\":", " \"ls\"}"]}` (chat)
//! makes the reply one tool call instead of text: streaming, a delta with its id and name, one
//! delta per arguments piece, then `finish_reason: "tool_calls"`; non-streaming, the whole call
//! in `message.tool_calls`.
//!
//! Non-goals: validating requests beyond "the body is a JSON object", TLS, HTTP/2, auth.
//! Dropping a [`FakeUpstream`] aborts its accept loop and every open connection.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::http1::{self, Conn, Request};

/// The events of a `malformed-sse` stream, each ending with its blank line.
pub const MALFORMED_SSE_EVENTS: &[&str] = &[
    "data: {not json\n\n",
    "this line has no data prefix\n\n",
    "data: {\"id\":\"chatcmpl-fake\",\"choices\":[{\"delta\":\n\n",
    ": a comment line\n\n",
    "data: [DONE]\n\n",
];

/// Default `max_tokens` when the request sets none.
pub const DEFAULT_MAX_TOKENS: u64 = 16;
/// Cap on generated tokens, whatever the request asks.
pub const MAX_GENERATED_TOKENS: u64 = 64;
/// Content bytes per event in a streaming `huge=BYTES` response.
const HUGE_EVENT_BYTES: usize = 4096;
/// Dimensions of each fake embedding.
const EMBEDDING_DIMS: usize = 8;

/// How to start a [`FakeUpstream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeOptions {
    /// Models listed by `/v1/models`; the first is the echoed model when a request names none.
    pub models: Vec<String>,
    /// Fault applied to `POST` requests without an `x-fault` header.
    pub default_fault: Option<Fault>,
    /// Keep every request for [`FakeUpstream::requests`] (default true). Long benchmark runs
    /// turn it off so memory stays flat; [`FakeUpstream::request_count`] still counts.
    pub record_requests: bool,
}

/// A misbehaviour, parsed from an `x-fault` header value (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `slow-first-token=MS`
    SlowFirstToken(Duration),
    /// `pause-after-first=MS`
    PauseAfterFirst(Duration),
    /// `drop-mid-stream`
    DropMidStream,
    /// `status=CODE`
    Status(u16),
    /// `malformed-sse`
    MalformedSse,
    /// `huge=BYTES`
    Huge(usize),
    /// `split-every-byte`
    SplitEveryByte,
    /// `stall`
    Stall,
    /// `close`
    Close,
    /// `no-done`
    NoDone,
    /// `delay=MS`
    Delay(Duration),
}

/// Why an `x-fault` value was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFaultError {
    spec: String,
    reason: &'static str,
}

/// One request as the fake upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, as sent.
    pub method: String,
    /// Request target, as sent (path plus any query string).
    pub path: String,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// A running fake upstream; dropping it stops it.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    models: Vec<String>,
    default_fault: Mutex<Option<Fault>>,
    record: bool,
    requests: Mutex<Vec<RecordedRequest>>,
    count: AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

/// Whether the connection may serve another request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
}

/// Everything needed to answer one generation request.
#[derive(Debug)]
struct Generation {
    endpoint: Endpoint,
    model: String,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Content, as streamed: one piece per event.
    pieces: Vec<String>,
    /// Embedding inputs (embeddings only).
    inputs: Vec<String>,
    /// A scripted tool call (chat only): its name and its arguments as streamed, in pieces.
    tool_call: Option<(String, Vec<String>)>,
}

// === impl FakeOptions ===

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            models: vec!["test-model".to_owned()],
            default_fault: None,
            record_requests: true,
        }
    }
}

// === impl Fault ===

impl FromStr for Fault {
    type Err = ParseFaultError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseFaultError {
            spec: spec.to_owned(),
            reason,
        };
        let trimmed = spec.trim();
        let (name, arg) = match trimmed.split_once('=') {
            Some((name, arg)) => (name.trim(), Some(arg.trim())),
            None => (trimmed, None),
        };
        let ms = |arg: &str| {
            arg.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| err("expected a whole number of milliseconds"))
        };
        match (name, arg) {
            ("slow-first-token", Some(a)) => Ok(Fault::SlowFirstToken(ms(a)?)),
            ("pause-after-first", Some(a)) => Ok(Fault::PauseAfterFirst(ms(a)?)),
            ("delay", Some(a)) => Ok(Fault::Delay(ms(a)?)),
            ("status", Some(a)) => match a.parse::<u16>() {
                Ok(code @ 200..=599) => Ok(Fault::Status(code)),
                _ => Err(err("expected a status code from 200 to 599")),
            },
            ("huge", Some(a)) => a
                .parse::<usize>()
                .map(Fault::Huge)
                .map_err(|_| err("expected a byte count")),
            ("drop-mid-stream", None) => Ok(Fault::DropMidStream),
            ("malformed-sse", None) => Ok(Fault::MalformedSse),
            ("split-every-byte", None) => Ok(Fault::SplitEveryByte),
            ("stall", None) => Ok(Fault::Stall),
            ("close", None) => Ok(Fault::Close),
            ("no-done", None) => Ok(Fault::NoDone),
            ("slow-first-token" | "pause-after-first" | "delay" | "status" | "huge", None) => {
                Err(err("this fault needs =VALUE"))
            }
            (
                "drop-mid-stream" | "malformed-sse" | "split-every-byte" | "stall" | "close"
                | "no-done",
                Some(_),
            ) => Err(err("this fault takes no value")),
            _ => Err(err("unknown fault")),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::SlowFirstToken(d) => write!(f, "slow-first-token={}", d.as_millis()),
            Fault::PauseAfterFirst(d) => write!(f, "pause-after-first={}", d.as_millis()),
            Fault::DropMidStream => f.write_str("drop-mid-stream"),
            Fault::Status(code) => write!(f, "status={code}"),
            Fault::MalformedSse => f.write_str("malformed-sse"),
            Fault::Huge(bytes) => write!(f, "huge={bytes}"),
            Fault::SplitEveryByte => f.write_str("split-every-byte"),
            Fault::Stall => f.write_str("stall"),
            Fault::Close => f.write_str("close"),
            Fault::NoDone => f.write_str("no-done"),
            Fault::Delay(d) => write!(f, "delay={}", d.as_millis()),
        }
    }
}

// === impl ParseFaultError ===

impl fmt::Display for ParseFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid fault {:?}: {}", self.spec, self.reason)
    }
}

impl std::error::Error for ParseFaultError {}

// === impl RecordedRequest ===

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

// === impl FakeUpstream ===

impl FakeUpstream {
    /// Binds `addr` (e.g. `"127.0.0.1:0"`) and starts serving on the current Tokio runtime.
    pub async fn start(addr: &str, opts: FakeOptions) -> io::Result<FakeUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            models: opts.models,
            default_fault: Mutex::new(opts.default_fault),
            record: opts.record_requests,
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        });
        // Owned by `self.accept`, which `Drop` aborts; connections live in its `JoinSet`.
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FakeUpstream {
            addr,
            shared,
            accept,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far (empty if recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The proxied requests received so far: the POSTs, without the proxy's health probes, which
    /// can land at any time.
    pub fn posts(&self) -> Vec<RecordedRequest> {
        let mut all = self.requests();
        all.retain(|r| r.method == "POST");
        all
    }

    /// The last proxied request (health probes excluded); panics if there was none, for tests.
    #[allow(clippy::panic)]
    pub fn last_post(&self) -> RecordedRequest {
        self.posts()
            .pop()
            .unwrap_or_else(|| panic!("the upstream received no POST"))
    }

    /// How many requests were received so far (counted even when recording is off).
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Forgets recorded requests and resets the count.
    pub fn clear_requests(&self) {
        let mut requests = lock(&self.shared.requests);
        requests.clear();
        self.shared.count.store(0, Ordering::Relaxed);
    }

    /// Replaces the fault applied to requests without an `x-fault` header.
    pub fn set_default_fault(&self, fault: Option<Fault>) {
        *lock(&self.shared.default_fault) = fault;
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

// === impl Shared ===

impl Shared {
    fn record(&self, req: &Request) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if self.record {
            lock(&self.requests).push(RecordedRequest {
                method: req.method.clone(),
                path: req.target.clone(),
                headers: req.headers.clone(),
                body: req.body.clone(),
            });
        }
    }

    fn default_model(&self) -> &str {
        self.models.first().map_or("test-model", String::as_str)
    }
}

// === impl Generation ===

impl Generation {
    fn new(endpoint: Endpoint, body: &Value, default_model: &str, fault: Option<&Fault>) -> Self {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(default_model)
            .to_owned();
        let stream = endpoint != Endpoint::Embeddings
            && body.get("stream").and_then(Value::as_bool) == Some(true);
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let prompt = match endpoint {
            Endpoint::Chat => body
                .get("messages")
                .and_then(Value::as_array)
                .map_or(0, |msgs| {
                    msgs.iter()
                        .filter_map(|m| m.get("content"))
                        .map(words)
                        .sum()
                }),
            Endpoint::Completions => body.get("prompt").map_or(0, words),
            Endpoint::Embeddings => body.get("input").map_or(0, words),
        };
        let (pieces, completion_tokens) = match (endpoint, fault) {
            (Endpoint::Embeddings, _) => (Vec::new(), 0),
            (_, Some(Fault::Huge(bytes))) => {
                let text = filler(*bytes);
                let pieces = text
                    .as_bytes()
                    .chunks(HUGE_EVENT_BYTES)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                (pieces, (*bytes as u64).div_ceil(4))
            }
            _ => {
                let n = token_count(body);
                ((0..n).map(|i| format!("tok{i} ")).collect(), n)
            }
        };
        let inputs = match body.get("input") {
            Some(Value::Array(items)) if items.iter().all(|i| !i.is_number()) => {
                items.iter().map(|i| i.to_string()).collect()
            }
            Some(input) => vec![input.to_string()],
            None => vec![String::new()],
        };
        Generation {
            tool_call: None,
            endpoint,
            model,
            stream,
            include_usage,
            prompt_tokens: prompt.max(1),
            completion_tokens,
            pieces,
            inputs,
        }
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    fn id(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chatcmpl-fake",
            _ => "cmpl-fake",
        }
    }

    /// The non-streaming response body.
    fn unary_body(&self) -> Value {
        let text: String = self.pieces.concat();
        match self.endpoint {
            Endpoint::Chat => json!({
                "id": self.id(),
                "object": "chat.completion",
                "created": 0,
                "model": self.model,
                "choices": [match &self.tool_call {
                    None => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": "stop",
                    }),
                    Some((name, args)) => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": null, "tool_calls": [{
                            "id": "call_fake", "type": "function",
                            "function": {"name": name, "arguments": args.concat()},
                        }]},
                        "logprobs": null,
                        "finish_reason": "tool_calls",
                    }),
                }],
                "usage": self.usage(),
            }),
            Endpoint::Completions => json!({
                "id": self.id(),
                "object": "text_completion",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
                "usage": self.usage(),
            }),
            Endpoint::Embeddings => {
                let data: Vec<Value> = self
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(index, input)| {
                        json!({"object": "embedding", "index": index, "embedding": embedding(input)})
                    })
                    .collect();
                json!({
                    "object": "list",
                    "data": data,
                    "model": self.model,
                    "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens},
                })
            }
        }
    }

    /// One streaming chunk object with the given choice (`None`: `"choices":[]` plus usage).
    fn chunk(&self, choice: Option<Value>) -> String {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            _ => "text_completion",
        };
        let value = match choice {
            Some(choice) => json!({
                "id": self.id(), "object": object, "created": 0, "model": self.model,
                "choices": [choice],
            }),
            None => json!({
                "id": self.id(), "object": object, "created": 0, "model": self.model,
                "choices": [], "usage": self.usage(),
            }),
        };
        format!("data: {value}\n\n")
    }

    fn choice(&self, content: &str, first: bool, finish: Option<&str>) -> Value {
        match self.endpoint {
            Endpoint::Chat => {
                let delta = match (first, finish) {
                    (_, Some(_)) => json!({}),
                    (true, None) => json!({"role": "assistant", "content": content}),
                    (false, None) => json!({"content": content}),
                };
                json!({"index": 0, "delta": delta, "finish_reason": finish})
            }
            _ => json!({"index": 0, "text": content, "logprobs": null, "finish_reason": finish}),
        }
    }

    /// The SSE events of the streaming response, each a complete `data: …\n\n` event.
    fn events(&self, fault: Option<&Fault>) -> Vec<String> {
        if fault == Some(&Fault::MalformedSse) {
            return MALFORMED_SSE_EVENTS
                .iter()
                .map(|e| (*e).to_owned())
                .collect();
        }
        let mut events = Vec::with_capacity(self.pieces.len() + 4);
        if self.pieces.is_empty() {
            events.push(self.chunk(Some(self.choice("", true, None))));
        }
        for (i, piece) in self.pieces.iter().enumerate() {
            events.push(self.chunk(Some(self.choice(piece, i == 0, None))));
        }
        if let Some((name, args)) = &self.tool_call {
            events.push(self.chunk(Some(json!({"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "call_fake", "type": "function", "function": {"name": name, "arguments": ""}},
            ]}, "finish_reason": null}))));
            for a in args {
                events.push(self.chunk(Some(json!({"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "function": {"arguments": a}},
                ]}, "finish_reason": null}))));
            }
            events.push(self.chunk(Some(
                json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
            )));
        } else {
            events.push(self.chunk(Some(self.choice("", false, Some("stop")))));
        }
        if self.include_usage {
            events.push(self.chunk(None));
        }
        if fault != Some(&Fault::NoDone) {
            events.push("data: [DONE]\n\n".to_owned());
        }
        events
    }
}

// === helpers ===

/// The text a fake completion generates for a request with this `max_tokens`
/// (`None`: the default of 16), e.g. `"tok0 tok1 tok2 "` for 3.
pub fn completion_text(max_tokens: Option<u64>) -> String {
    let n = max_tokens
        .unwrap_or(DEFAULT_MAX_TOKENS)
        .min(MAX_GENERATED_TOKENS);
    (0..n).map(|i| format!("tok{i} ")).collect()
}

/// Splits an SSE body into the data payloads of its events, per the WHATWG algorithm:
/// `data:` lines are joined with `\n`, comments and other fields are ignored, events without
/// data are skipped, and an event not terminated by a blank line is dropped. Accepts `\n`,
/// `\r\n` and `\r` line endings. `[DONE]` is returned like any other payload.
pub fn sse_events(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let bytes = text.as_bytes();
    let mut events = Vec::new();
    let mut data = String::new();
    let mut has_data = false;
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let end = i;
        match bytes[i] {
            b'\n' => i += 1,
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'\r' => i += 1,
            _ => {
                i += 1;
                continue;
            }
        }
        let line = &text[start..end];
        start = i;
        if line.is_empty() {
            if has_data {
                data.pop();
                events.push(std::mem::take(&mut data));
            }
            data.clear();
            has_data = false;
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            data.push_str(value);
            data.push('\n');
            has_data = true;
        }
    }
    events
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn token_count(body: &Value) -> u64 {
    body.get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS)
        .min(MAX_GENERATED_TOKENS)
}

/// Whitespace-separated words in a content/prompt/input value; token-id arrays count one per id.
fn words(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Number(_) => 1,
                other => words(other),
            })
            .sum(),
        Value::Object(part) => part.get("text").map_or(0, words),
        _ => 0,
    }
}

/// Exactly `bytes` bytes of ASCII filler.
fn filler(bytes: usize) -> String {
    "huge ".chars().cycle().take(bytes).collect()
}

/// A deterministic unit-ish vector derived from the input text.
fn embedding(input: &str) -> Vec<f64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    (0..EMBEDDING_DIMS)
        .map(|_| {
            for b in input.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            (h % 2001) as f64 / 1000.0 - 1.0
        })
        .collect()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

fn error_body(status: u16, message: &str) -> Value {
    json!({"error": {"message": message, "type": error_type(status), "param": null, "code": null}})
}

/// A response head; `length: None` means chunked.
fn head(status: u16, content_type: &str, length: Option<usize>, keep_alive: bool) -> Vec<u8> {
    let framing = match length {
        Some(len) => format!("content-length: {len}"),
        None => "transfer-encoding: chunked\r\ncache-control: no-cache".to_owned(),
    };
    let connection = if keep_alive {
        ""
    } else {
        "connection: close\r\n"
    };
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n{framing}\r\n{connection}\r\n",
        reason(status)
    )
    .into_bytes()
}

fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

// === serving ===

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Small writes (one SSE event each) must leave immediately.
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_conn(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors or similar: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_conn(stream: TcpStream, shared: Arc<Shared>) {
    let mut conn = Conn::new(stream);
    loop {
        let req = match conn.read_request().await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                let status = match e {
                    http1::Error::TooLarge => 413,
                    http1::Error::Malformed(_) => 400,
                    http1::Error::Io(_) | http1::Error::Closed => return,
                };
                let _ = send_json(
                    &mut conn,
                    status,
                    &error_body(status, &e.to_string()),
                    false,
                )
                .await;
                return;
            }
        };
        shared.record(&req);
        let keep_alive = req.keep_alive();
        match respond(&mut conn, &shared, &req, keep_alive).await {
            Ok(After::KeepAlive) if keep_alive => {}
            _ => return,
        }
    }
}

async fn respond(
    conn: &mut Conn<TcpStream>,
    shared: &Shared,
    req: &Request,
    keep_alive: bool,
) -> io::Result<After> {
    let path = req.path();
    let endpoint = match (req.method.as_str(), path) {
        ("GET", "/health") => {
            return send_json(conn, 200, &json!({"status": "ok"}), keep_alive).await;
        }
        ("GET", "/v1/models") => {
            let data: Vec<Value> = shared
                .models
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "fake"}))
                .collect();
            let body = json!({"object": "list", "data": data});
            return send_json(conn, 200, &body, keep_alive).await;
        }
        ("POST", "/v1/chat/completions") => Endpoint::Chat,
        ("POST", "/v1/completions") => Endpoint::Completions,
        ("POST", "/v1/embeddings") => Endpoint::Embeddings,
        (
            _,
            "/health"
            | "/v1/models"
            | "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings",
        ) => {
            let body = error_body(405, &format!("method {} not allowed", req.method));
            return send_json(conn, 405, &body, keep_alive).await;
        }
        _ => {
            let body = error_body(404, &format!("unknown path {path}"));
            return send_json(conn, 404, &body, keep_alive).await;
        }
    };

    let fault = match req.header("x-fault") {
        Some(spec) => match spec.parse::<Fault>() {
            Ok(fault) => Some(fault),
            Err(e) => {
                return send_json(conn, 400, &error_body(400, &e.to_string()), keep_alive).await
            }
        },
        None => lock(&shared.default_fault).clone(),
    };
    match &fault {
        Some(Fault::Stall) => {
            conn.drain_until_eof().await;
            return Ok(After::Close);
        }
        Some(Fault::Close) => return Ok(After::Close),
        Some(Fault::Status(code)) => {
            let body = error_body(*code, &format!("fake upstream fault: status {code}"));
            return send_json(conn, *code, &body, keep_alive).await;
        }
        Some(Fault::SlowFirstToken(pause) | Fault::Delay(pause)) => {
            tokio::time::sleep(*pause).await;
        }
        _ => {}
    }

    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(body @ Value::Object(_)) => body,
        _ => {
            let body = error_body(400, "request body must be a JSON object");
            return send_json(conn, 400, &body, keep_alive).await;
        }
    };
    let mut generation = Generation::new(endpoint, &body, shared.default_model(), fault.as_ref());
    // A scripted reply: the content pieces a test wants the model to say; or a model that
    // repeats its system prompt (in three pieces).
    let scripted = req
        .header("x-fake-reply")
        .and_then(|h| serde_json::from_str::<Vec<String>>(h).ok())
        .or_else(|| {
            req.header("x-fake-echo-system")?;
            let system = body.get("messages")?.as_array()?.iter().find_map(|m| {
                (m.get("role")?.as_str()? == "system").then(|| m.get("content")?.as_str())?
            })?;
            let chars: Vec<char> = system.chars().collect();
            let third = chars.len().div_ceil(3).max(1);
            Some(chars.chunks(third).map(|c| c.iter().collect()).collect())
        });
    if let Some(pieces) = scripted {
        generation.completion_tokens = pieces.len() as u64;
        generation.pieces = pieces;
    }
    if let Some(call) = req
        .header("x-fake-tool-call")
        .and_then(|h| serde_json::from_str::<Value>(h).ok())
    {
        let name = call["name"].as_str().unwrap_or("").to_string();
        let args: Vec<String> = call["arguments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        generation.pieces = Vec::new();
        generation.completion_tokens = args.len() as u64 + 1;
        generation.tool_call = Some((name, args));
    }
    if generation.stream {
        send_stream(
            conn,
            &generation.events(fault.as_ref()),
            fault.as_ref(),
            keep_alive,
        )
        .await
    } else if fault == Some(Fault::MalformedSse) {
        send_body(
            conn,
            200,
            "application/json",
            b"{not json",
            None,
            keep_alive,
        )
        .await
    } else {
        let bytes = generation.unary_body().to_string().into_bytes();
        send_body(
            conn,
            200,
            "application/json",
            &bytes,
            fault.as_ref(),
            keep_alive,
        )
        .await
    }
}

async fn send_json(
    conn: &mut Conn<TcpStream>,
    status: u16,
    body: &Value,
    keep_alive: bool,
) -> io::Result<After> {
    let bytes = body.to_string().into_bytes();
    send_body(conn, status, "application/json", &bytes, None, keep_alive).await
}

/// Writes a `content-length` response, applying the body-level faults.
async fn send_body(
    conn: &mut Conn<TcpStream>,
    status: u16,
    content_type: &str,
    body: &[u8],
    fault: Option<&Fault>,
    keep_alive: bool,
) -> io::Result<After> {
    let mut out = head(status, content_type, Some(body.len()), keep_alive);
    let half = body.len() / 2;
    match fault {
        Some(Fault::PauseAfterFirst(pause)) => {
            out.extend_from_slice(&body[..half]);
            conn.write_all(&out).await?;
            tokio::time::sleep(*pause).await;
            conn.write_all(&body[half..]).await?;
        }
        Some(Fault::DropMidStream) => {
            out.extend_from_slice(&body[..half]);
            conn.write_all(&out).await?;
            return Ok(After::Close);
        }
        Some(Fault::SplitEveryByte) => {
            conn.write_all(&out).await?;
            for byte in body {
                conn.write_all(std::slice::from_ref(byte)).await?;
            }
        }
        _ => {
            out.extend_from_slice(body);
            conn.write_all(&out).await?;
        }
    }
    Ok(After::KeepAlive)
}

/// Writes an SSE response, one event per HTTP chunk, applying the stream-level faults.
async fn send_stream(
    conn: &mut Conn<TcpStream>,
    events: &[String],
    fault: Option<&Fault>,
    keep_alive: bool,
) -> io::Result<After> {
    let mut out = head(200, "text/event-stream", None, keep_alive);
    if fault == Some(&Fault::SplitEveryByte) {
        conn.write_all(&out).await?;
        for byte in events.iter().flat_map(|e| e.bytes()) {
            conn.write_all(&[b'1', b'\r', b'\n', byte, b'\r', b'\n'])
                .await?;
        }
    } else {
        for (i, event) in events.iter().enumerate() {
            push_chunk(&mut out, event.as_bytes());
            conn.write_all(&out).await?;
            out.clear();
            match fault {
                Some(Fault::PauseAfterFirst(pause)) if i == 0 => tokio::time::sleep(*pause).await,
                Some(Fault::DropMidStream) if i == 1 => return Ok(After::Close),
                _ => {}
            }
        }
    }
    conn.write_all(b"0\r\n\r\n").await?;
    Ok(After::KeepAlive)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::http1::Response;

    async fn start() -> FakeUpstream {
        FakeUpstream::start("127.0.0.1:0", FakeOptions::default())
            .await
            .unwrap()
    }

    fn post(path: &str, body: &str, extra: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    async fn exchange(up: &FakeUpstream, raw: &[u8]) -> Result<Response, http1::Error> {
        let mut conn = Conn::new(TcpStream::connect(up.addr()).await.unwrap());
        conn.write_all(raw).await.unwrap();
        conn.read_response("POST").await
    }

    /// Reads a whole chunked response off a raw socket and returns its chunks as sent.
    async fn raw_chunks(up: &FakeUpstream, raw: &[u8]) -> (String, Vec<Vec<u8>>) {
        let mut stream = TcpStream::connect(up.addr()).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "EOF before the last chunk: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&got[..split]).into_owned();
        let mut rest = &got[split..];
        let mut chunks = Vec::new();
        loop {
            let httparse::Status::Complete((used, size)) =
                httparse::parse_chunk_size(rest).unwrap()
            else {
                panic!("partial chunk")
            };
            let size = size as usize;
            if size == 0 {
                break;
            }
            chunks.push(rest[used..used + size].to_vec());
            rest = &rest[used + size + 2..];
        }
        (head, chunks)
    }

    const CHAT: &str = r#"{"model":"m1","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello big world"}]}],"max_tokens":3}"#;
    const CHAT_STREAM: &str = r#"{"model":"m1","messages":[{"role":"user","content":"hi there"}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}"#;

    #[tokio::test]
    async fn non_streaming_chat_completion() {
        let up = start().await;
        let res = exchange(&up, &post("/v1/chat/completions", CHAT, ""))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.header("content-type"), Some("application/json"));
        let v = res.json().unwrap();
        assert_eq!(v["id"], "chatcmpl-fake");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m1");
        assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            completion_text(Some(3))
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
        );
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].path, "/v1/chat/completions");
        assert_eq!(reqs[0].header("Host"), Some("fake"));
        assert_eq!(reqs[0].body, CHAT.as_bytes());
    }

    #[tokio::test]
    async fn max_tokens_defaults_and_cap() {
        let up = start().await;
        for (body, n) in [
            (r#"{"messages":[]}"#, 16),
            (r#"{"messages":[],"max_completion_tokens":2}"#, 2),
            (r#"{"messages":[],"max_tokens":1000}"#, 64),
        ] {
            let res = exchange(&up, &post("/v1/chat/completions", body, ""))
                .await
                .unwrap();
            let v = res.json().unwrap();
            assert_eq!(v["usage"]["completion_tokens"], n);
            assert_eq!(v["usage"]["prompt_tokens"], 1);
            assert_eq!(v["model"], "test-model");
        }
    }

    #[tokio::test]
    async fn streaming_chat_one_event_per_chunk() {
        let up = start().await;
        let (head, chunks) = raw_chunks(&up, &post("/v1/chat/completions", CHAT_STREAM, "")).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("content-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        // 3 tokens + finish + usage + [DONE], each in its own chunk.
        assert_eq!(chunks.len(), 6);
        let body: Vec<u8> = chunks.concat();
        for chunk in &chunks {
            assert_eq!(
                sse_events(chunk).len(),
                1,
                "{:?}",
                String::from_utf8_lossy(chunk)
            );
        }
        let events = sse_events(&body);
        let json: Vec<Value> = events[..5]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(
            events[0],
            r#"{"id":"chatcmpl-fake","object":"chat.completion.chunk","created":0,"model":"m1","choices":[{"index":0,"delta":{"role":"assistant","content":"tok0 "},"finish_reason":null}]}"#
        );
        assert_eq!(json[1]["choices"][0]["delta"], json!({"content": "tok1 "}));
        assert_eq!(json[2]["choices"][0]["delta"]["content"], "tok2 ");
        assert_eq!(json[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(json[4]["choices"], json!([]));
        assert_eq!(json[4]["usage"]["total_tokens"], 5);
        assert_eq!(events[5], "[DONE]");
    }

    #[tokio::test]
    async fn streaming_completions_use_text() {
        let up = start().await;
        let body = r#"{"model":"m","prompt":"a b c","max_tokens":2,"stream":true}"#;
        let res = exchange(&up, &post("/v1/completions", body, ""))
            .await
            .unwrap();
        let events = sse_events(&res.body);
        assert_eq!(events.len(), 4);
        let first: Value = serde_json::from_str(&events[0]).unwrap();
        assert_eq!(first["object"], "text_completion");
        assert_eq!(first["id"], "cmpl-fake");
        assert_eq!(first["choices"][0]["text"], "tok0 ");
        assert_eq!(events[3], "[DONE]");
    }

    #[tokio::test]
    async fn embeddings_one_per_input() {
        let up = start().await;
        let body = r#"{"model":"e","input":["one two","three"]}"#;
        let v = exchange(&up, &post("/v1/embeddings", body, ""))
            .await
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(8));
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    }

    #[tokio::test]
    async fn chunked_request_body_is_read_and_recorded() {
        let up = start().await;
        let (a, b) = CHAT.split_at(10);
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: fake\r\ntransfer-encoding: chunked\r\n\r\n\
             {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let res = exchange(&up, raw.as_bytes()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json().unwrap()["model"], "m1");
        assert_eq!(up.requests()[0].body, CHAT.as_bytes());
    }

    #[tokio::test]
    async fn keep_alive_serves_two_requests_on_one_connection() {
        let up = start().await;
        let mut conn = Conn::new(TcpStream::connect(up.addr()).await.unwrap());
        conn.write_all(&post("/v1/chat/completions", CHAT, ""))
            .await
            .unwrap();
        let first = conn.read_response("POST").await.unwrap();
        conn.write_all(&post("/v1/chat/completions", CHAT_STREAM, ""))
            .await
            .unwrap();
        let second = conn.read_response("POST").await.unwrap();
        conn.write_all(b"GET /health HTTP/1.1\r\nhost: fake\r\n\r\n")
            .await
            .unwrap();
        let third = conn.read_response("GET").await.unwrap();
        assert_eq!(
            (first.status(), second.status(), third.status()),
            (200, 200, 200)
        );
        assert_eq!(
            sse_events(&second.body).last().map(String::as_str),
            Some("[DONE]")
        );
        assert_eq!(third.json().unwrap(), json!({"status": "ok"}));
        assert_eq!(up.request_count(), 3);
    }

    #[tokio::test]
    async fn models_health_and_unknown_paths() {
        let up = FakeUpstream::start(
            "127.0.0.1:0",
            FakeOptions {
                models: vec!["a".into(), "b".into()],
                ..FakeOptions::default()
            },
        )
        .await
        .unwrap();
        let mut conn = Conn::new(TcpStream::connect(up.addr()).await.unwrap());
        conn.write_all(b"GET /v1/models HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let models = conn.read_response("GET").await.unwrap().json().unwrap();
        assert_eq!(models["object"], "list");
        assert_eq!(
            models["data"][1],
            json!({"id": "b", "object": "model", "created": 0, "owned_by": "fake"})
        );
        conn.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
        let missing = conn.read_response("GET").await.unwrap();
        assert_eq!(missing.status(), 404);
        assert!(missing.json().unwrap()["error"]["message"].is_string());
        conn.write_all(b"GET /v1/chat/completions HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(conn.read_response("GET").await.unwrap().status(), 405);
    }

    #[tokio::test]
    async fn fault_status_returns_openai_error() {
        let up = start().await;
        let res = exchange(
            &up,
            &post("/v1/chat/completions", CHAT, "x-fault: status=429\r\n"),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 429);
        let v = res.json().unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("429"));
    }

    #[tokio::test]
    async fn unknown_fault_is_a_400() {
        let up = start().await;
        let res = exchange(
            &up,
            &post("/v1/chat/completions", CHAT, "x-fault: explode\r\n"),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 400);
    }

    #[tokio::test]
    async fn fault_drop_mid_stream_sends_two_events_then_closes() {
        let up = start().await;
        let raw = post(
            "/v1/chat/completions",
            CHAT_STREAM,
            "x-fault: drop-mid-stream\r\n",
        );
        let mut stream = TcpStream::connect(up.addr()).await.unwrap();
        stream.write_all(&raw).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(!got.ends_with(b"0\r\n\r\n"));
        assert_eq!(http1::dechunk(&got[split..]), None);
        // Re-terminate the body to read the events that did arrive.
        let mut body = got[split..].to_vec();
        body.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(sse_events(&http1::dechunk(&body).unwrap()).len(), 2);

        let res = exchange(&up, &raw).await;
        assert!(matches!(res, Err(http1::Error::Closed)), "{res:?}");
    }

    #[tokio::test]
    async fn fault_split_every_byte_matches_normal_stream() {
        let up = start().await;
        let (_, normal) = raw_chunks(&up, &post("/v1/chat/completions", CHAT_STREAM, "")).await;
        let (_, split) = raw_chunks(
            &up,
            &post(
                "/v1/chat/completions",
                CHAT_STREAM,
                "x-fault: split-every-byte\r\n",
            ),
        )
        .await;
        let normal = normal.concat();
        assert_eq!(split.len(), normal.len());
        assert!(split.iter().all(|c| c.len() == 1));
        assert_eq!(split.concat(), normal);
    }

    #[tokio::test]
    async fn fault_no_done_ends_cleanly_without_done() {
        let up = start().await;
        let res = exchange(
            &up,
            &post("/v1/chat/completions", CHAT_STREAM, "x-fault: no-done\r\n"),
        )
        .await
        .unwrap();
        let events = sse_events(&res.body);
        assert_eq!(events.len(), 5);
        assert!(!events.iter().any(|e| e == "[DONE]"));
    }

    #[tokio::test]
    async fn fault_malformed_sse() {
        let up = start().await;
        let res = exchange(
            &up,
            &post(
                "/v1/chat/completions",
                CHAT_STREAM,
                "x-fault: malformed-sse\r\n",
            ),
        )
        .await
        .unwrap();
        assert_eq!(res.body, MALFORMED_SSE_EVENTS.concat().as_bytes());
        let events = sse_events(&res.body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(events[..events.len() - 1]
            .iter()
            .all(|e| serde_json::from_str::<Value>(e).is_err()));
    }

    #[tokio::test]
    async fn fault_huge_exact_content_bytes() {
        let up = start().await;
        let res = exchange(
            &up,
            &post("/v1/chat/completions", CHAT, "x-fault: huge=100000\r\n"),
        )
        .await
        .unwrap();
        let v = res.json().unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"].as_str().map(str::len),
            Some(100_000)
        );
        assert_eq!(v["usage"]["completion_tokens"], 25_000);

        let res = exchange(
            &up,
            &post(
                "/v1/chat/completions",
                CHAT_STREAM,
                "x-fault: huge=10000\r\n",
            ),
        )
        .await
        .unwrap();
        let content: usize = sse_events(&res.body)
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::len))
            .sum();
        assert_eq!(content, 10_000);
    }

    #[tokio::test]
    async fn fault_close_and_stall() {
        let up = start().await;
        let res = exchange(
            &up,
            &post("/v1/chat/completions", CHAT, "x-fault: close\r\n"),
        )
        .await;
        assert!(matches!(res, Err(http1::Error::Closed)), "{res:?}");

        let stalled = tokio::time::timeout(
            Duration::from_millis(200),
            exchange(
                &up,
                &post("/v1/chat/completions", CHAT, "x-fault: stall\r\n"),
            ),
        )
        .await;
        assert!(stalled.is_err(), "stall answered");
        assert_eq!(up.request_count(), 2);
    }

    #[tokio::test]
    async fn fault_timing_slow_first_token_and_pause() {
        let up = start().await;
        let started = Instant::now();
        let res = exchange(
            &up,
            &post(
                "/v1/chat/completions",
                CHAT_STREAM,
                "x-fault: slow-first-token=150\r\n",
            ),
        )
        .await
        .unwrap();
        assert!(res.head_at - started >= Duration::from_millis(150));

        let res = exchange(
            &up,
            &post(
                "/v1/chat/completions",
                CHAT_STREAM,
                "x-fault: pause-after-first=150\r\n",
            ),
        )
        .await
        .unwrap();
        let first = res.first_body_at.unwrap();
        assert!(res.done_at - first >= Duration::from_millis(150));
        assert_eq!(sse_events(&res.body).len(), 6);
    }

    #[tokio::test]
    async fn default_fault_spares_health() {
        let up = FakeUpstream::start(
            "127.0.0.1:0",
            FakeOptions {
                default_fault: Some(Fault::Status(503)),
                ..FakeOptions::default()
            },
        )
        .await
        .unwrap();
        let res = exchange(&up, &post("/v1/chat/completions", CHAT, ""))
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        let mut conn = Conn::new(TcpStream::connect(up.addr()).await.unwrap());
        conn.write_all(b"GET /health HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(conn.read_response("GET").await.unwrap().status(), 200);
        up.set_default_fault(None);
        let res = exchange(&up, &post("/v1/chat/completions", CHAT, ""))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    #[test]
    fn fault_specs_round_trip() {
        for spec in [
            "slow-first-token=250",
            "pause-after-first=10",
            "drop-mid-stream",
            "status=503",
            "malformed-sse",
            "huge=1048576",
            "split-every-byte",
            "stall",
            "close",
            "no-done",
            "delay=5",
        ] {
            let fault: Fault = spec.parse().unwrap();
            assert_eq!(fault.to_string(), spec);
        }
        for bad in ["status=99", "status", "stall=1", "delay=x", "boom", ""] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sse_events_follow_the_spec() {
        let body = b"data: a\r\ndata:b\r\n\r\n: comment\nevent: x\ndata: c\n\nno-prefix\n\ndata\n\ndata: cut";
        assert_eq!(sse_events(body), vec!["a\nb", "c", ""]);
        assert_eq!(sse_events(b"data: x\r\rdata: y\n\n"), vec!["x", "y"]);
    }
}
