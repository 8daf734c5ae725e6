//! Request validation and normalisation, before anything reaches an upstream.
//!
//! Checks the body is UTF-8 JSON of the right shape for its endpoint, naming the offending field
//! when it is not; clamps `max_tokens` / `max_completion_tokens` to the tenant's cap (and sets it
//! when the client did not, so no request can generate without bound); estimates the tokens the
//! request may consume for the quota. Unknown fields pass through untouched: the OpenAI API grows
//! faster than any gateway.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The OpenAI endpoints Warden forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 4] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Models,
    ];

    /// The label of a request that matched no endpoint (metrics and audit rows).
    pub const OTHER_LABEL: &'static str = "other";

    /// Route a request line. `Err` distinguishes unknown paths from wrong methods.
    pub fn route(method: &str, path: &str) -> Result<Endpoint, ApiError> {
        let path = path.split('?').next().unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        let (endpoint, want) = match path {
            "/v1/chat/completions" => (Endpoint::ChatCompletions, "POST"),
            "/v1/completions" => (Endpoint::Completions, "POST"),
            "/v1/embeddings" => (Endpoint::Embeddings, "POST"),
            "/v1/models" => (Endpoint::Models, "GET"),
            _ => return Err(ApiError::UnknownEndpoint),
        };
        if method == want {
            Ok(endpoint)
        } else {
            Err(ApiError::MethodNotAllowed)
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models",
        }
    }

    /// `gen_ai.operation.name` of the OpenTelemetry GenAI conventions (metrics and spans).
    pub fn gen_ai_operation(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "text_completion",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models",
        }
    }
}

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub model: String,
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// Prompt-size estimate plus the (clamped) `max_tokens`.
    pub estimated_tokens: u64,
    doc: Map<String, Value>,
    original: Bytes,
    changed: bool,
}

/// The body to send upstream.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub body: Bytes,
    /// Warden added `include_usage` for its own accounting; drop the usage event on the way back.
    pub injected_usage: bool,
}

impl Validated {
    /// The parsed request body.
    pub fn doc(&self) -> &Map<String, Value> {
        &self.doc
    }

    /// The parsed body, to be changed (masking, a pinned system prompt); re-serialised on `prepare`.
    pub fn doc_mut(&mut self) -> &mut Map<String, Value> {
        self.changed = true;
        &mut self.doc
    }

    /// The final body: re-serialised only when something changed. With `ask_stream_usage`, a
    /// stream that did not ask for `usage` gets `stream_options.include_usage` so token quotas are
    /// reconciled exactly.
    pub fn prepare(mut self, ask_stream_usage: bool) -> Result<Prepared, ApiError> {
        let mut injected_usage = false;
        if self.stream && !self.client_wants_usage && ask_stream_usage {
            let opts = self
                .doc
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
                injected_usage = true;
                self.changed = true;
            }
        }
        let body = if self.changed {
            Bytes::from(serde_json::to_vec(&self.doc).map_err(|_| ApiError::Internal)?)
        } else {
            self.original
        };
        Ok(Prepared {
            body,
            injected_usage,
        })
    }
}

/// Validate `body` for `endpoint`. `content_type` is the raw header value, if any.
pub fn validate(
    endpoint: Endpoint,
    content_type: Option<&[u8]>,
    body: Bytes,
    max_tokens_cap: u32,
) -> Result<Validated, ApiError> {
    match content_type {
        Some(ct) if is_json(ct) => {}
        _ => return Err(ApiError::UnsupportedMediaType),
    }
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::InvalidUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(|e| ApiError::InvalidJson {
        detail: format!(
            "{} at line {} column {}",
            json_error_kind(&e),
            e.line(),
            e.column()
        ),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::InvalidJson {
            detail: "the body must be a JSON object".into(),
        });
    };

    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(invalid("model", "a non-empty string")),
        Some(_) => return Err(invalid("model", "a string")),
        None => return Err(missing("model")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "a boolean")),
    };
    let client_wants_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("stream_options.include_usage", "a boolean")),
        },
        Some(_) => return Err(invalid("stream_options", "an object")),
    };
    check_optional_number(&obj, "temperature")?;
    check_optional_number(&obj, "top_p")?;
    check_optional_number(&obj, "presence_penalty")?;
    check_optional_number(&obj, "frequency_penalty")?;
    check_optional_uint(&obj, "n")?;
    if obj
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > MAX_N)
    {
        return Err(invalid("n", "an integer from 1 to 128"));
    }
    check_optional_uint(&obj, "seed")?;
    check_stop(&obj)?;

    let prompt_chars = match endpoint {
        Endpoint::ChatCompletions => check_messages(&obj)?,
        Endpoint::Completions => check_text_input(&obj, "prompt")?,
        Endpoint::Embeddings => {
            if stream {
                return Err(invalid("stream", "false (embeddings do not stream)"));
            }
            check_text_input(&obj, "input")?
        }
        Endpoint::Models => 0,
    };
    // ~4 characters per token for English text, plus a little per-message framing.
    let prompt_estimate = (prompt_chars as u64).div_ceil(4).saturating_add(8);

    let mut changed = false;
    let mut completion_budget = 0u64;
    if matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions) {
        let cap = u64::from(max_tokens_cap);
        let mut any = false;
        for field in ["max_tokens", "max_completion_tokens"] {
            match obj.get(field) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    let n = v
                        .as_u64()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| invalid(field, "a positive integer"))?;
                    any = true;
                    if n > cap {
                        obj.insert(field.into(), Value::from(cap));
                        changed = true;
                    }
                    completion_budget = completion_budget.max(n.min(cap));
                }
            }
        }
        if !any {
            obj.insert("max_tokens".into(), Value::from(cap));
            changed = true;
            completion_budget = cap;
        }
        let n = obj.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
        completion_budget = completion_budget.saturating_mul(n);
    }

    Ok(Validated {
        model,
        stream,
        client_wants_usage,
        estimated_tokens: prompt_estimate.saturating_add(completion_budget),
        doc: obj,
        original: body,
        changed,
    })
}

fn is_json(ct: &[u8]) -> bool {
    let Ok(ct) = std::str::from_utf8(ct) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Data => "invalid data",
        Category::Io => "read error",
    }
}

fn invalid(field: &str, expected: &str) -> ApiError {
    ApiError::InvalidField {
        field: field.into(),
        expected: expected.into(),
    }
}

fn missing(field: &str) -> ApiError {
    ApiError::MissingField {
        field: field.into(),
    }
}

fn check_optional_number(obj: &Map<String, Value>, field: &str) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) | Some(Value::Number(_)) => Ok(()),
        Some(_) => Err(invalid(field, "a number")),
    }
}

fn check_optional_uint(obj: &Map<String, Value>, field: &str) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some() => Ok(()),
        Some(_) => Err(invalid(field, "a non-negative integer")),
    }
}

/// Most `n` choices per request (OpenAI's limit).
const MAX_N: u64 = 128;
/// Stop sequences per request and bytes per sequence (OpenAI allows 4). Each stop string is
/// searched after every generated token, so an unbounded list would stall the worker.
const MAX_STOP: usize = 4;
const MAX_STOP_BYTES: usize = 256;

fn check_stop(obj: &Map<String, Value>) -> Result<(), ApiError> {
    let expected = "a string or an array of up to 4 strings of at most 256 bytes";
    match obj.get("stop") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.len() <= MAX_STOP_BYTES => Ok(()),
        Some(Value::Array(a))
            if a.len() <= MAX_STOP
                && a.iter()
                    .all(|v| v.as_str().is_some_and(|s| s.len() <= MAX_STOP_BYTES)) =>
        {
            Ok(())
        }
        Some(_) => Err(invalid("stop", expected)),
    }
}

/// Chat messages: a non-empty array of `{role: string, content: string | array | null}`.
/// Returns the number of characters of text content.
fn check_messages(obj: &Map<String, Value>) -> Result<usize, ApiError> {
    let messages = match obj.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(invalid("messages", "a non-empty array")),
        Some(_) => return Err(invalid("messages", "an array")),
        None => return Err(missing("messages")),
    };
    let mut chars = 0;
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(invalid(&format!("messages[{i}]"), "an object"));
        };
        match m.get("role") {
            Some(Value::String(_)) => {}
            Some(_) => return Err(invalid(&format!("messages[{i}].role"), "a string")),
            None => return Err(missing(&format!("messages[{i}].role"))),
        }
        match m.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => chars += s.chars().count(),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    match part {
                        Value::Object(p) => {
                            if let Some(Value::String(t)) = p.get("text") {
                                chars += t.chars().count();
                            }
                        }
                        _ => {
                            return Err(invalid(
                                &format!("messages[{i}].content[{j}]"),
                                "a content part object",
                            ))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(invalid(
                    &format!("messages[{i}].content"),
                    "a string, an array of content parts, or null",
                ))
            }
        }
        chars += 4;
    }
    Ok(chars)
}

/// `prompt` / `input`: a string, an array of strings, or token arrays.
fn check_text_input(obj: &Map<String, Value>, field: &str) -> Result<usize, ApiError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.chars().count()),
        Some(Value::Array(items)) => {
            let mut chars = 0;
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => chars += s.chars().count(),
                    Value::Number(_) => chars += 4,
                    Value::Array(tokens) if tokens.iter().all(Value::is_number) => {
                        chars += 4 * tokens.len()
                    }
                    _ => {
                        return Err(invalid(
                            &format!("{field}[{i}]"),
                            "a string or an array of token ids",
                        ))
                    }
                }
            }
            Ok(chars)
        }
        Some(_) => Err(invalid(field, "a string or an array")),
        None => Err(missing(field)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: u32 = 100;

    fn chat(body: &str) -> Result<Prepared, ApiError> {
        validate(
            Endpoint::ChatCompletions,
            Some(b"application/json; charset=utf-8"),
            Bytes::from(body.to_string()),
            POLICY,
        )?
        .prepare(true)
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidField { field, .. } | ApiError::MissingField { field } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn valid_request_passes_unchanged_when_nothing_to_clamp() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10,"x_custom":1}"#;
        let v = chat(body).unwrap();
        assert_eq!(&v.body[..], body.as_bytes());
        assert!(!v.injected_usage);
    }

    #[test]
    fn max_tokens_is_clamped_or_set() {
        let v =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5000}"#)
                .unwrap();
        let out: Value = serde_json::from_slice(&v.body).unwrap();
        assert_eq!(out["max_tokens"], 100);
        let v = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let out: Value = serde_json::from_slice(&v.body).unwrap();
        assert_eq!(out["max_tokens"], 100);
        // key order is preserved
        assert!(std::str::from_utf8(&v.body)
            .unwrap()
            .starts_with(r#"{"model":"m","messages""#));
    }

    #[test]
    fn stream_usage_is_injected_and_remembered() {
        let v = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#)
            .unwrap();
        assert!(v.injected_usage);
        let out: Value = serde_json::from_slice(&v.body).unwrap();
        assert_eq!(out["stream_options"]["include_usage"], true);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(chat(r#"{"messages":[]}"#).unwrap_err()), "model");
        assert_eq!(field_of(chat(r#"{"model":1}"#).unwrap_err()), "model");
        assert_eq!(field_of(chat(r#"{"model":"m"}"#).unwrap_err()), "messages");
        assert_eq!(
            field_of(
                chat(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#).unwrap_err()
            ),
            "messages[0].content"
        );
        assert_eq!(
            field_of(chat(r#"{"model":"m","messages":[{"content":"x"}]}"#).unwrap_err()),
            "messages[0].role"
        );
        assert_eq!(
            field_of(
                chat(r#"{"model":"m","messages":[{"role":"u","content":"x"}],"stream":"yes"}"#)
                    .unwrap_err()
            ),
            "stream"
        );
        assert_eq!(
            field_of(
                chat(r#"{"model":"m","messages":[{"role":"u","content":"x"}],"max_tokens":-1}"#)
                    .unwrap_err()
            ),
            "max_tokens"
        );
        assert_eq!(
            field_of(
                chat(
                    r#"{"model":"m","messages":[{"role":"u","content":"x"}],"temperature":"hot"}"#
                )
                .unwrap_err()
            ),
            "temperature"
        );
    }

    #[test]
    fn n_and_stop_are_bounded() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"x"}]"#;
        assert_eq!(
            field_of(chat(&format!("{base},\"n\":1000}}")).unwrap_err()),
            "n"
        );
        assert_eq!(
            field_of(
                chat(&format!(
                    "{base},\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}}"
                ))
                .unwrap_err()
            ),
            "stop"
        );
        let long = "s".repeat(300);
        assert_eq!(
            field_of(chat(&format!("{base},\"stop\":\"{long}\"}}")).unwrap_err()),
            "stop"
        );
        assert!(chat(&format!("{base},\"stop\":[\"a\",\"b\"],\"n\":2}}")).is_ok());
        // Huge counts never overflow the estimate.
        let v = validate(
            Endpoint::ChatCompletions,
            Some(b"application/json"),
            Bytes::from(format!("{base},\"n\":128,\"max_tokens\":100}}")),
            u32::MAX,
        )
        .unwrap();
        assert_eq!(v.estimated_tokens, 8 + 2 + 128 * 100);
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(chat("{"), Err(ApiError::InvalidJson { .. })));
        assert!(matches!(chat("[1]"), Err(ApiError::InvalidJson { .. })));
        let deep = "[".repeat(10_000);
        assert!(matches!(chat(&deep), Err(ApiError::InvalidJson { .. })));
        let r = validate(
            Endpoint::ChatCompletions,
            Some(b"application/json"),
            Bytes::from_static(b"{\"model\":\"\xff\"}"),
            POLICY,
        )
        .map(|_| ());
        assert_eq!(r.unwrap_err(), ApiError::InvalidUtf8);
        let r = validate(
            Endpoint::ChatCompletions,
            Some(b"text/plain"),
            Bytes::from_static(b"{}"),
            POLICY,
        )
        .map(|_| ());
        assert_eq!(r.unwrap_err(), ApiError::UnsupportedMediaType);
        let r = validate(
            Endpoint::ChatCompletions,
            None,
            Bytes::from_static(b"{}"),
            POLICY,
        )
        .map(|_| ());
        assert_eq!(r.unwrap_err(), ApiError::UnsupportedMediaType);
    }

    #[test]
    fn routing() {
        assert_eq!(
            Endpoint::route("POST", "/v1/chat/completions"),
            Ok(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::route("GET", "/v1/models?x=1"),
            Ok(Endpoint::Models)
        );
        assert_eq!(
            Endpoint::route("GET", "/v1/chat/completions"),
            Err(ApiError::MethodNotAllowed)
        );
        assert_eq!(
            Endpoint::route("POST", "/v2/x"),
            Err(ApiError::UnknownEndpoint)
        );
    }
}
