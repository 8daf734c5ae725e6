//! What one request came to, built once when it ends and read by every sink: the proxy's
//! metrics, the access log, the span, the audit [`crate::Event`] and the detectors
//! (`warden-runbooks`). No text of the request or the reply, only decisions, codes and timings.

use std::sync::Arc;
use std::time::Duration;

use crate::GuardDecision;

/// Why a request did not end well: a stable code (the API's `error.code`, a stream end, or a
/// transport failure) and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub class: ErrorClass,
    /// Stable: `invalid_json`, `switched_off`, `upstream_timeout`, `upstream_stream_truncated`, ...
    pub code: &'static str,
}

/// Who an error is on, which is what a detector or an operator asks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The client sent something Warden refuses (malformed, unauthenticated, unknown model).
    Client,
    /// A policy refused it: a guard, a quota, a switch or a throttle.
    Policy,
    /// The upstream failed (connect, timeout, 5xx, a broken stream).
    Upstream,
    /// Warden itself (overloaded, shutting down, internal error).
    Warden,
    /// The client went away before the reply ended.
    Cancelled,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Client => "client",
            ErrorClass::Policy => "policy",
            ErrorClass::Upstream => "upstream",
            ErrorClass::Warden => "warden",
            ErrorClass::Cancelled => "cancelled",
        }
    }
}

impl ErrorCode {
    pub fn new(class: ErrorClass, code: &'static str) -> ErrorCode {
        ErrorCode { class, code }
    }
}

/// The output guard's decision on a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputDecision {
    Allow,
    Mask,
    Block,
}

impl OutputDecision {
    pub fn name(self) -> &'static str {
        match self {
            OutputDecision::Allow => "allow",
            OutputDecision::Mask => "mask",
            OutputDecision::Block => "block",
        }
    }
}

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The tenant's name, `-` before one was known.
    pub tenant: Arc<str>,
    /// The model as validated against the config (`None` when refused before).
    pub model: Option<Arc<str>>,
    /// The endpoint label (`chat_completions`, ...).
    pub route: Arc<str>,
    /// The request went to an upstream.
    pub forwarded: bool,
    pub stream: bool,
    /// Status sent to the client (499: it left before one was sent).
    pub status: u16,
    pub error: Option<ErrorCode>,
    /// Whole request, as the client saw it.
    pub duration: Duration,
    /// Warden's own share: before the upstream was asked and after it finished.
    pub overhead: Duration,
    /// Upstream request sent → first byte back.
    pub ttft: Option<Duration>,
    /// Time per output token after the first (streams of more than one token).
    pub tpot: Option<Duration>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// The input guard's decision (`None`: it did not run).
    pub guard: Option<GuardDecision>,
    /// The output guard's decision (`None`: no reply went through it).
    pub output: Option<OutputDecision>,
    /// The reply opens as a refusal (`None`: no text to judge).
    pub refusal: Option<bool>,
    /// What leaked, if the output guard found a leak (`canary`, `verbatim`, ...).
    pub leak: Option<&'static str>,
    /// The planted canary appeared (`None`: none was planted).
    pub canary_leak: Option<bool>,
    /// How unsupported the reply is by the documents it was given, 0–1 (`None`: not judged).
    pub hallucination: Option<f32>,
    /// The reply was flagged as a hallucination (the score at the configured threshold).
    pub hallucination_flag: Option<bool>,
    /// Mean and minimum log-probability of the first choice's tokens, and their mean entropy
    /// over the top alternatives (nats), when the upstream sent them.
    pub logprob_mean: Option<f32>,
    pub logprob_min: Option<f32>,
    pub token_entropy: Option<f32>,
}

impl Outcome {
    /// An outcome with only the scope set; the rest empty.
    pub fn new(tenant: Arc<str>, model: Option<Arc<str>>, route: Arc<str>) -> Outcome {
        Outcome {
            tenant,
            model,
            route,
            forwarded: false,
            stream: false,
            status: 0,
            error: None,
            duration: Duration::ZERO,
            overhead: Duration::ZERO,
            ttft: None,
            tpot: None,
            input_tokens: None,
            output_tokens: None,
            guard: None,
            output: None,
            refusal: None,
            leak: None,
            canary_leak: None,
            hallucination: None,
            hallucination_flag: None,
            logprob_mean: None,
            logprob_min: None,
            token_entropy: None,
        }
    }

    /// The error's code, for logs and rows.
    pub fn error_code(&self) -> Option<&'static str> {
        self.error.map(|e| e.code)
    }

    /// The input guard refused the prompt.
    pub fn input_blocked(&self) -> bool {
        self.guard == Some(GuardDecision::Block)
    }

    /// The output guard stopped the reply.
    pub fn output_blocked(&self) -> bool {
        self.output == Some(OutputDecision::Block)
    }

    /// Failed on the serving side (the upstream or Warden), not by policy or the client.
    pub fn failed(&self) -> bool {
        self.error
            .is_some_and(|e| matches!(e.class, ErrorClass::Upstream | ErrorClass::Warden))
    }

    /// Time per output token, computed once: (done − first byte) / (output tokens − 1).
    pub fn tpot_of(first_to_done: Duration, output_tokens: u64) -> Option<Duration> {
        (output_tokens > 1)
            .then(|| first_to_done / u32::try_from(output_tokens - 1).unwrap_or(u32::MAX))
    }
}
