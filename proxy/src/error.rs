//! Every error a client can see, and the one function that turns it into a response.
//!
//! Bodies follow OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, plus the
//! request id. `code` values are stable API: clients and dashboards match on them. Messages never
//! contain prompt text, API keys or upstream internals.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

/// A request that Warden answers itself, with an error.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The request's framing is broken (a malformed chunk size, a bad trailer): the client's
    /// fault, answered like a request head Pingora cannot parse.
    MalformedRequest,
    /// Body larger than `server.max_body_bytes`.
    BodyTooLarge { limit: usize },
    /// The request's texts are longer than the tenant's guard budget and its `on_oversize` is
    /// `block`: the guard refuses what it cannot scan whole.
    TooLargeToScan { limit: usize },
    /// Every guard worker is busy and the queue is full.
    GuardOverloaded,
    /// The classifier could not score the request (failed, or its deadline passed) and the
    /// tenant's `on_error` is `fail_closed`.
    GuardUnavailable,
    /// `Content-Type` is not `application/json`.
    UnsupportedMediaType,
    /// The client stopped sending the body before it was complete.
    RequestTimeout,
    /// The body is not valid UTF-8.
    InvalidUtf8,
    /// The body is not JSON, or not a JSON object.
    InvalidJson { detail: String },
    /// A field has the wrong type or an impossible value.
    InvalidField { field: String, expected: String },
    /// A required field is absent.
    MissingField { field: String },
    /// No `Authorization: Bearer` header.
    MissingApiKey,
    /// The key matches no tenant.
    InvalidApiKey,
    /// No upstream serves this model.
    ModelNotFound { model: String },
    /// The tenant may not use this model.
    ModelNotAllowed { model: String },
    /// Path not part of the API.
    UnknownEndpoint,
    /// Known path, wrong method.
    MethodNotAllowed,
    /// Requests-per-minute bucket empty.
    RequestRateLimited { retry_after: Duration },
    /// Tokens-per-minute bucket cannot cover the estimate.
    TokenRateLimited { retry_after: Duration },
    /// The request alone needs more tokens than the tenant's per-minute budget holds.
    RequestExceedsTokenBudget { needed: u64, budget: u64 },
    /// No upstream can take the request: refused or unreachable, failing its health checks,
    /// or ejected after repeated failures. `retry_after`: when one may be back.
    UpstreamUnavailable { retry_after: Duration },
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream broke the exchange (bad response, reset).
    UpstreamError,
    /// Warden is draining for shutdown.
    ShuttingDown,
    /// The audit-event queue is full and `telemetry.on_full = "fail_closed"`.
    TelemetryUnavailable,
    /// The input guard blocked the prompt; only rule ids are reported, never the matched text.
    PromptBlocked { rule_ids: Vec<String> },
    /// An output rule blocked the model's reply (sent as the final event of a stream); only rule
    /// ids are reported, never the matched text.
    OutputBlocked { rule_ids: Vec<String> },
    /// A declared tool is not on the tenant's allowlist, or differs from its pinned schema.
    ToolNotAllowed { param: String, message: String },
    /// The `tools` a request declares are malformed.
    InvalidTools { param: String, message: String },
    /// A kill switch is off for a scope this request touches.
    SwitchedOff {
        scope: String,
        /// Until the switch expires, when it does.
        retry_after: Option<Duration>,
        /// Where on-call engineers and clients read what to do.
        runbook: String,
    },
    /// A temporary throttle on a scope this request touches is exhausted.
    Throttled {
        scope: String,
        retry_after: Duration,
        /// The runbook that set the throttle, when one did.
        runbook: Option<String>,
    },
    /// A bug or an unexpected condition; details go to the log, not the client.
    Internal,
}

/// Status, extra headers and body for an [`ApiError`].
#[derive(Debug)]
pub struct ErrorResponse {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedRequest => "malformed_request",
            ApiError::BodyTooLarge { .. } | ApiError::TooLargeToScan { .. } => "request_too_large",
            ApiError::GuardOverloaded => "guard_overloaded",
            ApiError::GuardUnavailable => "guard_unavailable",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::InvalidUtf8 => "invalid_utf8",
            ApiError::InvalidJson { .. } => "invalid_json",
            ApiError::InvalidField { .. } => "invalid_type",
            ApiError::MissingField { .. } => "missing_field",
            ApiError::MissingApiKey => "missing_api_key",
            ApiError::InvalidApiKey => "invalid_api_key",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::ModelNotAllowed { .. } => "model_not_allowed",
            ApiError::UnknownEndpoint => "unknown_endpoint",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RequestRateLimited { .. } => "rate_limit_exceeded",
            ApiError::TokenRateLimited { .. } => "token_rate_limit_exceeded",
            ApiError::RequestExceedsTokenBudget { .. } => "request_exceeds_token_budget",
            ApiError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::UpstreamError => "upstream_error",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::TelemetryUnavailable => "telemetry_unavailable",
            ApiError::PromptBlocked { .. } => "prompt_blocked",
            ApiError::OutputBlocked { .. } => "output_blocked",
            ApiError::ToolNotAllowed { .. } => "tool_not_allowed",
            ApiError::InvalidTools { .. } => "invalid_tools",
            ApiError::SwitchedOff { .. } => "switched_off",
            ApiError::Throttled { .. } => "throttled",
            ApiError::Internal => "internal_error",
        }
    }

    /// The code with its class, for the request's outcome.
    pub fn error_code(&self) -> warden_telemetry::ErrorCode {
        use warden_telemetry::ErrorClass::*;
        let class = match self {
            ApiError::MalformedRequest
            | ApiError::BodyTooLarge { .. }
            | ApiError::UnsupportedMediaType
            | ApiError::RequestTimeout
            | ApiError::InvalidUtf8
            | ApiError::InvalidJson { .. }
            | ApiError::InvalidField { .. }
            | ApiError::MissingField { .. }
            | ApiError::MissingApiKey
            | ApiError::InvalidApiKey
            | ApiError::ModelNotFound { .. }
            | ApiError::UnknownEndpoint
            | ApiError::MethodNotAllowed
            | ApiError::InvalidTools { .. } => Client,
            ApiError::TooLargeToScan { .. }
            | ApiError::ModelNotAllowed { .. }
            | ApiError::RequestRateLimited { .. }
            | ApiError::TokenRateLimited { .. }
            | ApiError::RequestExceedsTokenBudget { .. }
            | ApiError::PromptBlocked { .. }
            | ApiError::OutputBlocked { .. }
            | ApiError::ToolNotAllowed { .. }
            | ApiError::SwitchedOff { .. }
            | ApiError::Throttled { .. } => Policy,
            ApiError::UpstreamUnavailable { .. }
            | ApiError::UpstreamTimeout
            | ApiError::UpstreamError => Upstream,
            ApiError::ShuttingDown
            | ApiError::TelemetryUnavailable
            | ApiError::GuardOverloaded
            | ApiError::GuardUnavailable
            | ApiError::Internal => Warden,
        };
        warden_telemetry::ErrorCode::new(class, self.code())
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::BodyTooLarge { .. } | ApiError::TooLargeToScan { .. } => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::MalformedRequest
            | ApiError::InvalidUtf8
            | ApiError::InvalidJson { .. }
            | ApiError::InvalidField { .. }
            | ApiError::MissingField { .. }
            | ApiError::PromptBlocked { .. }
            | ApiError::OutputBlocked { .. }
            | ApiError::InvalidTools { .. } => 400,
            ApiError::MissingApiKey | ApiError::InvalidApiKey => 401,
            ApiError::ModelNotAllowed { .. } | ApiError::ToolNotAllowed { .. } => 403,
            ApiError::ModelNotFound { .. } | ApiError::UnknownEndpoint => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::RequestTimeout => 408,
            ApiError::RequestRateLimited { .. }
            | ApiError::TokenRateLimited { .. }
            | ApiError::RequestExceedsTokenBudget { .. }
            | ApiError::Throttled { .. } => 429,
            ApiError::Internal => 500,
            ApiError::UpstreamError => 502,
            ApiError::ShuttingDown
            | ApiError::TelemetryUnavailable
            | ApiError::GuardOverloaded
            | ApiError::GuardUnavailable
            | ApiError::SwitchedOff { .. }
            | ApiError::UpstreamUnavailable { .. } => 503,
            ApiError::UpstreamTimeout => 504,
        }
    }

    fn kind(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidField { field, .. } | ApiError::MissingField { field } => Some(field),
            ApiError::ModelNotFound { .. } | ApiError::ModelNotAllowed { .. } => Some("model"),
            ApiError::ToolNotAllowed { param, .. } | ApiError::InvalidTools { param, .. } => {
                Some(param)
            }
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::BodyTooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            ApiError::TooLargeToScan { limit } => format!(
                "the request's text is longer than the input guard scans for this API key ({limit} bytes); send less text"
            ),
            ApiError::GuardOverloaded => {
                "the input guard is at capacity; retry shortly".into()
            }
            ApiError::GuardUnavailable => {
                "the input guard's classifier could not score this request and this tenant \
                 fails closed; retry shortly"
                    .into()
            }
            ApiError::MalformedRequest => "malformed HTTP request".into(),
            ApiError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            ApiError::RequestTimeout => "the request body was not received in time".into(),
            ApiError::InvalidUtf8 => "request body is not valid UTF-8".into(),
            ApiError::InvalidJson { detail } => format!("request body is not valid JSON: {detail}"),
            ApiError::InvalidField { field, expected } => {
                format!("invalid value for '{field}': expected {expected}")
            }
            ApiError::MissingField { field } => format!("missing required field '{field}'"),
            ApiError::MissingApiKey => {
                "no API key: send it as 'Authorization: Bearer YOUR_KEY'".into()
            }
            ApiError::InvalidApiKey => "invalid API key".into(),
            ApiError::ModelNotFound { model } => {
                format!("the model '{}' does not exist", printable(model))
            }
            ApiError::ModelNotAllowed { model } => {
                format!("this API key may not use the model '{}'", printable(model))
            }
            ApiError::UnknownEndpoint => "unknown endpoint".into(),
            ApiError::MethodNotAllowed => "method not allowed for this endpoint".into(),
            ApiError::RequestRateLimited { .. } => "request rate limit exceeded".into(),
            ApiError::TokenRateLimited { .. } => "token rate limit exceeded".into(),
            ApiError::RequestExceedsTokenBudget { needed, budget } => format!(
                "this request needs about {needed} tokens (prompt estimate + max_tokens), more than the per-minute budget of {budget}; lower max_tokens or shorten the prompt"
            ),
            ApiError::UpstreamUnavailable { .. } => "the model server is unavailable".into(),
            ApiError::UpstreamTimeout => "the model server did not respond in time".into(),
            ApiError::UpstreamError => "the model server returned an invalid response".into(),
            ApiError::ShuttingDown => "server is shutting down".into(),
            ApiError::TelemetryUnavailable => {
                "the audit log is not keeping up; requests are refused until it does".into()
            }
            ApiError::PromptBlocked { rule_ids } => format!(
                "the request was blocked by the input guard (rules: {})",
                rule_ids.join(", ")
            ),
            ApiError::OutputBlocked { rule_ids } => format!(
                "the reply was stopped by the output guard (rules: {})",
                rule_ids.join(", ")
            ),
            ApiError::ToolNotAllowed { message, .. } => message.clone(),
            ApiError::InvalidTools { param, message } => format!("invalid tools: '{param}' {message}"),
            ApiError::SwitchedOff { scope, .. } => format!(
                "this request is switched off ({scope}) by the operators; see the runbook"
            ),
            ApiError::Throttled { scope, .. } => {
                format!("this request is throttled ({scope}) by the operators; retry later")
            }
            ApiError::Internal => "internal error".into(),
        }
    }

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RequestRateLimited { retry_after }
            | ApiError::TokenRateLimited { retry_after }
            | ApiError::Throttled { retry_after, .. }
            | ApiError::UpstreamUnavailable { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            ApiError::ShuttingDown
            | ApiError::TelemetryUnavailable
            | ApiError::GuardOverloaded
            | ApiError::GuardUnavailable => Some(1),
            ApiError::SwitchedOff { retry_after, .. } => {
                retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => None,
        }
    }

    /// The JSON error object (without the outer `{"error": ...}`), shared by plain responses and
    /// SSE error events.
    pub fn json(&self, request_id: &str) -> serde_json::Value {
        let mut v = json!({
            "message": self.message(),
            "type": self.kind(),
            "param": self.param(),
            "code": self.code(),
            "request_id": request_id,
        });
        if let ApiError::PromptBlocked { rule_ids } | ApiError::OutputBlocked { rule_ids } = self {
            v["rule_ids"] = json!(rule_ids);
        }
        if let ApiError::SwitchedOff { scope, runbook, .. } = self {
            v["scope"] = json!(scope);
            v["runbook"] = json!(runbook);
        }
        if let ApiError::Throttled { scope, runbook, .. } = self {
            v["scope"] = json!(scope);
            if let Some(r) = runbook {
                v["runbook"] = json!(r);
            }
        }
        v
    }

    /// The one mapping from an error to what the client receives.
    pub fn to_response(&self, request_id: &str) -> ErrorResponse {
        let body = json!({ "error": self.json(request_id) });
        ErrorResponse {
            status: self.status(),
            retry_after: self.retry_after(),
            body: Bytes::from(body.to_string()),
        }
    }

    /// An SSE event carrying this error, for failures after a stream has started.
    pub fn to_sse_event(&self, request_id: &str) -> Bytes {
        let body = json!({ "error": self.json(request_id) });
        Bytes::from(format!("data: {body}\n\n"))
    }
}

/// Client-supplied strings echoed in messages: bounded and control-free.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_is_openai_style() {
        let r = ApiError::MissingField {
            field: "model".into(),
        }
        .to_response("req-1");
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["code"], "missing_field");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["request_id"], "req-1");
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let e = ApiError::TokenRateLimited {
            retry_after: Duration::from_millis(1200),
        };
        assert_eq!(e.status(), 429);
        assert_eq!(e.retry_after(), Some(2));
    }
}
