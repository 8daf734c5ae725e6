//! The worker's OpenAI-compatible HTTP API: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/models`, `/health`, `/metrics`. Streams are SSE; a client that disconnects drops its
//! event receiver, which cancels its sequence in the engine.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use serde_json::{json, Value};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::engine::{EngineHandle, Event, GenRequest, SubmitError};
use crate::metrics::WorkerMetrics;
use crate::sampler::SamplingParams;

pub struct AppState {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Environment<'static>,
    pub model_name: String,
    pub metrics: Arc<WorkerMetrics>,
    pub bos_token: String,
    pub eos_token: String,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A request the worker refuses; rendered as an OpenAI-style error body in one place.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}});
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn error(
    status: StatusCode,
    code: &'static str,
    message: impl Into<String>,
    param: Option<&'static str>,
) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
        param,
    }
}

fn bad(code: &'static str, message: impl Into<String>, param: &'static str) -> ApiError {
    error(StatusCode::BAD_REQUEST, code, message, Some(param))
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let body = json!({"object": "list", "data": [{"id": s.model_name, "object": "model", "created": 0, "owned_by": "warden"}]});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(&s.engine.stats),
    )
        .into_response()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

/// Request fields common to both endpoints.
struct Parsed {
    prompt: Vec<u32>,
    max_tokens: usize,
    sampling: SamplingParams,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    logprobs: bool,
    top_logprobs: usize,
    ignore_eos: bool,
}

fn parse_json(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(bad(
            "invalid_json",
            "the body must be a JSON object",
            "body",
        )),
        Err(e) => Err(bad("invalid_json", format!("invalid JSON: {e}"), "body")),
    }
}

fn number(
    o: &serde_json::Map<String, Value>,
    k: &'static str,
    default: f64,
) -> Result<f64, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad("invalid_type", format!("'{k}' must be a number"), k)),
    }
}

fn uint(o: &serde_json::Map<String, Value>, k: &'static str) -> Result<Option<u64>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            bad(
                "invalid_type",
                format!("'{k}' must be a non-negative integer"),
                k,
            )
        }),
    }
}

fn parse(s: &AppState, kind: Kind, o: &serde_json::Map<String, Value>) -> Result<Parsed, ApiError> {
    if let Some(Value::String(m)) = o.get("model") {
        if m != &s.model_name {
            return Err(error(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("model '{m}' is not served here"),
                Some("model"),
            ));
        }
    }
    if uint(o, "n")?.is_some_and(|n| n != 1) {
        return Err(bad("unsupported_value", "only n = 1 is supported", "n"));
    }
    let prompt = match kind {
        Kind::Chat => {
            let Some(Value::Array(messages)) = o.get("messages") else {
                return Err(bad(
                    "invalid_type",
                    "'messages' must be an array",
                    "messages",
                ));
            };
            let messages: Vec<Value> = messages
                .iter()
                .map(|m| {
                    // Content parts are flattened to their text.
                    let content = match m.get("content") {
                        Some(Value::Array(parts)) => Value::String(
                            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""),
                        ),
                        Some(c) => c.clone(),
                        None => Value::String(String::new()),
                    };
                    json!({"role": m.get("role").cloned().unwrap_or(Value::Null), "content": content})
                })
                .collect();
            let text = s
                .template
                .get_template("chat")
                .and_then(|t| {
                    t.render(minijinja::context! {
                        messages => messages,
                        add_generation_prompt => true,
                        bos_token => s.bos_token.clone(),
                        eos_token => s.eos_token.clone(),
                    })
                })
                .map_err(|e| {
                    bad(
                        "invalid_messages",
                        format!("cannot apply the chat template: {e}"),
                        "messages",
                    )
                })?;
            encode(s, &text)?
        }
        Kind::Completion => match o.get("prompt") {
            Some(Value::String(p)) => encode(s, p)?,
            Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
                encode(s, items[0].as_str().unwrap_or(""))?
            }
            Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_u64) => {
                items
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|t| t as u32)
                    .collect()
            }
            _ => {
                return Err(bad(
                    "invalid_type",
                    "'prompt' must be a string, a one-element array of strings, or token ids",
                    "prompt",
                ))
            }
        },
    };
    if prompt.is_empty() {
        return Err(bad(
            "invalid_value",
            "the prompt is empty",
            if kind == Kind::Chat {
                "messages"
            } else {
                "prompt"
            },
        ));
    }
    let limit = s.engine.max_total_tokens();
    let room = limit.saturating_sub(prompt.len());
    let max_tokens = match (uint(o, "max_tokens")?, uint(o, "max_completion_tokens")?) {
        (Some(a), Some(b)) => a.min(b) as usize,
        (Some(a), None) | (None, Some(a)) => a as usize,
        (None, None) => match kind {
            Kind::Chat => room.min(256),
            Kind::Completion => 16,
        },
    };
    if max_tokens == 0 {
        return Err(bad(
            "invalid_value",
            "'max_tokens' must be at least 1",
            "max_tokens",
        ));
    }
    if max_tokens > limit || prompt.len().saturating_add(max_tokens) > limit {
        return Err(bad(
            "context_length_exceeded",
            format!("prompt ({} tokens) + max_tokens ({max_tokens}) exceeds the limit of {limit} tokens", prompt.len()),
            "max_tokens",
        ));
    }
    let temperature = number(o, "temperature", 1.0)?;
    let top_p = number(o, "top_p", 1.0)?;
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad(
            "invalid_value",
            "'temperature' must be between 0 and 2",
            "temperature",
        ));
    }
    // At most 4 stop strings of 256 bytes (OpenAI's limit): each is searched after every token.
    let stop: Vec<String> = match o.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => {
            return Err(bad(
                "invalid_type",
                "'stop' must be a string or an array of strings",
                "stop",
            ))
        }
    };
    if stop.len() > 4 || stop.iter().any(|s| s.len() > 256) {
        return Err(bad(
            "invalid_value",
            "'stop' takes at most 4 strings of at most 256 bytes",
            "stop",
        ));
    }
    let (logprobs, top_logprobs) = match kind {
        Kind::Chat => (
            o.get("logprobs").and_then(Value::as_bool).unwrap_or(false),
            uint(o, "top_logprobs")?.unwrap_or(0).min(20) as usize,
        ),
        Kind::Completion => match uint(o, "logprobs")? {
            Some(k) => (true, k.min(5) as usize),
            None => (false, 0),
        },
    };
    Ok(Parsed {
        prompt,
        max_tokens,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_p: top_p as f32,
            seed: uint(o, "seed")?,
        },
        stop,
        stream: o.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: o
            .get("stream_options")
            .and_then(|v| v.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        logprobs,
        top_logprobs,
        ignore_eos: o
            .get("ignore_eos")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

fn encode(s: &AppState, text: &str) -> Result<Vec<u32>, ApiError> {
    s.tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "tokenizer_error",
                e.to_string(),
                None,
            )
        })
}

async fn chat(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    generate(s, Kind::Chat, body).await
}

async fn completions(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    generate(s, Kind::Completion, body).await
}

async fn generate(s: Arc<AppState>, kind: Kind, body: Bytes) -> Response {
    let o = match parse_json(&body) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let p = match parse(&s, kind, &o) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = unbounded_channel();
    let req = GenRequest {
        prompt: p.prompt,
        max_tokens: p.max_tokens,
        sampling: p.sampling,
        stop: p.stop,
        logprobs: p.logprobs,
        top_logprobs: p.top_logprobs,
        ignore_eos: p.ignore_eos,
        events: tx,
    };
    let refused = match s.engine.submit(req) {
        Ok(()) => None,
        Err(SubmitError::QueueFull) => Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            "the worker's queue is full; retry shortly",
            None,
        )),
        Err(SubmitError::TooLong { needed, limit }) => Some(bad(
            "context_length_exceeded",
            format!("request needs {needed} tokens of cache; the limit is {limit}"),
            "max_tokens",
        )),
        Err(SubmitError::Stopped) => Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the worker is stopping",
            None,
        )),
    };
    if let Some(e) = refused {
        return e.into_response();
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!(
        "{}-{:016x}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        rand::random::<u64>()
    );
    let out = Output {
        kind,
        id,
        created,
        model: s.model_name.clone(),
        tokenizer: s.tokenizer.clone(),
        logprobs: p.logprobs,
    };
    if p.stream {
        stream_response(out, rx, p.include_usage)
    } else {
        full_response(out, rx).await
    }
}

/// Response framing shared by both modes.
struct Output {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    tokenizer: Arc<Tokenizer>,
    logprobs: bool,
}

impl Output {
    fn token_str(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    fn chat_logprob(&self, token: u32, logprob: f32, top: &[(u32, f32)]) -> Value {
        let entry = |t: u32, lp: f32| {
            let s = self.token_str(t);
            json!({"token": s, "logprob": lp, "bytes": s.as_bytes()})
        };
        let mut e = entry(token, logprob);
        e["top_logprobs"] = Value::Array(top.iter().map(|(t, lp)| entry(*t, *lp)).collect());
        e
    }

    fn chunk(
        &self,
        delta_text: &str,
        first: bool,
        finish: Option<&str>,
        lp: Option<Value>,
    ) -> Value {
        match self.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if !delta_text.is_empty() || (first && finish.is_none()) {
                    delta["content"] = json!(delta_text);
                }
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": lp.map(|c| json!({"content": [c]})), "finish_reason": finish}]})
            }
            Kind::Completion => {
                json!({"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                       "choices": [{"index": 0, "text": delta_text, "logprobs": lp, "finish_reason": finish}]})
            }
        }
    }

    fn completion_logprob(&self, token: u32, logprob: f32, top: &[(u32, f32)]) -> Value {
        let tops: serde_json::Map<String, Value> = top
            .iter()
            .map(|(t, lp)| (self.token_str(*t), json!(lp)))
            .collect();
        json!({"tokens": [self.token_str(token)], "token_logprobs": [logprob], "top_logprobs": [tops]})
    }

    fn usage(prompt: usize, completion: usize) -> Value {
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn stream_response(out: Output, rx: UnboundedReceiver<Event>, include_usage: bool) -> Response {
    let mut first = true;
    let stream = UnboundedReceiverStream::new(rx).map(move |ev| -> Result<Bytes, std::convert::Infallible> {
        Ok(match ev {
            Event::Token { text, token, logprob, top } => {
                let lp = out.logprobs.then(|| match out.kind {
                    Kind::Chat => out.chat_logprob(token, logprob, &top),
                    Kind::Completion => out.completion_logprob(token, logprob, &top),
                });
                if text.is_empty() && lp.is_none() && !first {
                    return Ok(Bytes::new());
                }
                let b = sse(&out.chunk(&text, first, None, lp));
                first = false;
                b
            }
            Event::Done { finish_reason, text, prompt_tokens, completion_tokens } => {
                let mut b = Vec::new();
                b.extend_from_slice(&sse(&out.chunk(&text, first, Some(finish_reason.as_str()), None)));
                if include_usage {
                    let mut u = out.chunk("", false, None, None);
                    u["choices"] = json!([]);
                    u["usage"] = Output::usage(prompt_tokens, completion_tokens);
                    b.extend_from_slice(&sse(&u));
                }
                b.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(b)
            }
            Event::Error(e) => sse(&json!({"error": {"message": e, "type": "server_error", "param": null, "code": "generation_failed"}})),
        })
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn full_response(out: Output, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    let mut chat_lp = Vec::new();
    let (mut tokens, mut token_lps, mut tops) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token {
                text: t,
                token,
                logprob,
                top,
            } => {
                text.push_str(&t);
                if out.logprobs {
                    match out.kind {
                        Kind::Chat => chat_lp.push(out.chat_logprob(token, logprob, &top)),
                        Kind::Completion => {
                            tokens.push(out.token_str(token));
                            token_lps.push(logprob);
                            tops.push(
                                top.iter()
                                    .map(|(t, lp)| (out.token_str(*t), json!(lp)))
                                    .collect::<serde_json::Map<_, _>>(),
                            );
                        }
                    }
                }
            }
            Event::Done {
                finish_reason,
                text: rest,
                prompt_tokens,
                completion_tokens,
            } => {
                text.push_str(&rest);
                let usage = Output::usage(prompt_tokens, completion_tokens);
                let body = match out.kind {
                    Kind::Chat => {
                        json!({"id": out.id, "object": "chat.completion", "created": out.created, "model": out.model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "logprobs": out.logprobs.then(|| json!({"content": chat_lp})), "finish_reason": finish_reason.as_str()}],
                        "usage": usage})
                    }
                    Kind::Completion => {
                        json!({"id": out.id, "object": "text_completion", "created": out.created, "model": out.model,
                        "choices": [{"index": 0, "text": text,
                                     "logprobs": out.logprobs.then(|| json!({"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops})),
                                     "finish_reason": finish_reason.as_str()}],
                        "usage": usage})
                    }
                };
                return (
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response();
            }
            Event::Error(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generation_failed",
                    e,
                    None,
                )
                .into_response()
            }
        }
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generation_failed",
        "the engine stopped",
        None,
    )
    .into_response()
}
