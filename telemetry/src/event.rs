//! The request event: one row per request, whatever its outcome.
//!
//! Role: the typed form of a row of the `events` table. The proxy fills one at the end of every
//! request (served, rejected, blocked, failed or cancelled) and hands it to
//! [`crate::Telemetry::record`]. `telemetry/SCHEMA.md` is the spec of each field, with its MUST
//! rules; this struct mirrors it one to one (the writer adds `schema_version`).
//!
//! Guarantees by construction: prompt, message and client identities are [`KeyedHash`]es, which
//! only a [`crate::Hasher`] can produce, so caller text cannot land in a hash column. The one
//! field that may carry text, `raw_prompt`, is `None` unless the caller sets it.
//!
//! Non-goals: validation of business rules (e.g. "raw_prompt only when the tenant opted in"):
//! the caller owns the tenant policy; the spec states the rule.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::hash::KeyedHash;

/// One request, as audited. See `telemetry/SCHEMA.md` for the meaning and rules of each field.
///
/// Values that repeat across requests (tenant, route, upstream, region, pack version, config
/// hash, key id) are [`Arc<str>`]s the caller keeps and clones: an event then carries no copy of
/// them to allocate on the request path and free on the writer's thread (where freeing a dozen
/// strings per event was a fifth of the writer's time).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When Warden received the request (UTC, stored with microsecond precision). Partitions
    /// (`dt=`, `hour=`) are derived from it.
    pub time: SystemTime,
    /// Request id (the one returned to the client in `x-request-id`).
    pub request_id: String,
    /// Tenant resolved from the API key; `"anonymous"`-style values are the caller's choice.
    pub tenant: Arc<str>,
    /// Endpoint label, e.g. `chat_completions` (`other` for any other path).
    pub route: Arc<str>,
    /// Model named by the client.
    pub requested_model: String,
    /// Model that served the request; `None` if none did (rejected before routing).
    pub served_model: Option<String>,
    /// Version of the served model, when the upstream reports one.
    pub model_version: Option<String>,
    /// Upstream (worker) that served the request; `None` if none was contacted.
    pub upstream: Option<Arc<str>>,
    /// Region / residency zone of the upstream, when configured.
    pub region: Option<Arc<str>>,
    /// Whether the client asked for a streamed (SSE) response.
    pub stream: bool,
    /// HTTP status sent to the client (499 for a client that went away).
    pub status: u16,
    /// Stable error code of an OpenAI-style error body, if one was sent.
    pub error_code: Option<String>,
    /// Prompt tokens, when known (from the upstream's usage or our count).
    pub input_tokens: Option<u32>,
    /// Completion tokens, when known.
    pub output_tokens: Option<u32>,
    /// Time to first token (ms) as seen by the client; `None` if no token was sent.
    pub ttft_ms: Option<f32>,
    /// Whole request duration (ms), receipt to last byte.
    pub duration_ms: f32,
    /// Time per output token after the first (ms); `None` with fewer than 2 output tokens.
    pub tpot_ms: Option<f32>,
    /// Input-guard decision; `None` if the guards did not run.
    pub guard_decision: Option<GuardDecision>,
    /// Total anomaly score of the input guards; `None` if they did not run.
    pub guard_score: Option<u32>,
    /// Ids of the rules that matched (input and output), in match order, deduplicated.
    pub rule_ids: Vec<String>,
    /// Version of the active rule pack set; `None` if no pack was loaded.
    pub rule_pack_version: Option<Arc<str>>,
    /// Hash of the effective configuration that handled the request.
    pub config_hash: Arc<str>,
    /// The input guard classifier's highest probability over the request's texts; `None` when
    /// it did not run (off, not loaded, the rules blocked first, or it failed).
    pub classifier_score: Option<f32>,
    /// A refusal was detected in the response; `None` = not evaluated.
    pub refusal: Option<bool>,
    /// The per-request canary leaked into the output; `None` = not evaluated.
    pub canary_leak: Option<bool>,
    /// The request was served in a degraded mode (degrade ladder); `None` = not evaluated.
    pub degraded: Option<bool>,
    /// The request was throttled (delayed or shed); `None` = not evaluated.
    pub throttled: Option<bool>,
    /// Switchboard state that applied (e.g. `model:gpt-x=degraded`); `None` = all on.
    pub switch_state: Option<String>,
    /// Warden's own overhead (µs): request time minus time spent waiting on the upstream.
    pub overhead_us: u32,
    /// Keyed hash of the whole normalised prompt; `None` if the body was never parsed.
    pub prompt_hash: Option<KeyedHash>,
    /// Keyed hash of the effective (pinned or client) system prompt; `None` if there was none.
    pub system_prompt_hash: Option<KeyedHash>,
    /// Keyed hash of each message, in request order.
    pub message_hashes: Vec<KeyedHash>,
    /// Keyed hash of the client address; `None` if unknown.
    pub client_addr_hash: Option<KeyedHash>,
    /// Id of the key that produced every hash of this row ([`crate::Hasher::key_id`]).
    pub hash_key_id: Arc<str>,
    /// The prompt text, already masked by the caller, ONLY for tenants that opted in.
    pub raw_prompt: Option<String>,
    /// The input guard did not scan every text whole (scan budget reached: head and tail only;
    /// a text beyond the normaliser's bounds; engine-work cap reached). `Some(false)` only when
    /// it scanned everything whole; `None` if it did not run.
    pub guard_truncated: Option<bool>,
    /// Text bytes the input guard scanned, all texts together (saturating); `None` if it did
    /// not run.
    pub guard_scanned_bytes: Option<u32>,
    /// Time the input guard took (µs, saturating); `None` if it did not run.
    pub guard_us: Option<u32>,
    /// How unsupported the reply is by the request's documents and tool output, 0–1; `None`
    /// when the request had no such context or the reply nothing to judge.
    pub hallucination_score: Option<f32>,
    /// Mean and minimum log-probability of the reply's tokens (first choice); `None` when the
    /// upstream sent none.
    pub logprob_mean: Option<f32>,
    pub logprob_min: Option<f32>,
    /// Mean entropy of the reply's tokens over their top alternatives (nats); `None` without
    /// alternatives.
    pub token_entropy: Option<f32>,
}

/// Input-guard decision, stored as the strings `allow`, `flag`, `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardDecision {
    /// Passed.
    Allow,
    /// Passed, marked for review.
    Flag,
    /// Refused.
    Block,
}

// === impl Event ===

impl Default for Event {
    /// A blank row at the Unix epoch: callers overwrite what they know.
    fn default() -> Self {
        Event {
            time: UNIX_EPOCH,
            request_id: String::new(),
            tenant: Arc::from(""),
            route: Arc::from(""),
            requested_model: String::new(),
            served_model: None,
            model_version: None,
            upstream: None,
            region: None,
            stream: false,
            status: 0,
            error_code: None,
            input_tokens: None,
            output_tokens: None,
            ttft_ms: None,
            duration_ms: 0.0,
            tpot_ms: None,
            guard_decision: None,
            guard_score: None,
            rule_ids: Vec::new(),
            rule_pack_version: None,
            config_hash: Arc::from(""),
            classifier_score: None,
            refusal: None,
            canary_leak: None,
            degraded: None,
            throttled: None,
            switch_state: None,
            overhead_us: 0,
            prompt_hash: None,
            system_prompt_hash: None,
            message_hashes: Vec::new(),
            client_addr_hash: None,
            hash_key_id: Arc::from(""),
            raw_prompt: None,
            guard_truncated: None,
            guard_scanned_bytes: None,
            guard_us: None,
            hallucination_score: None,
            logprob_mean: None,
            logprob_min: None,
            token_entropy: None,
        }
    }
}

// === impl GuardDecision ===

impl GuardDecision {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardDecision::Allow => "allow",
            GuardDecision::Flag => "flag",
            GuardDecision::Block => "block",
        }
    }
}
