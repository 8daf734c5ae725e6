//! The response path, sans IO: every byte an upstream answers with goes through one
//! [`ResponsePipeline`], which decides what the client receives. Pingora's `response_filter`,
//! `response_body_filter` and `fail_to_proxy` only call it and write what it returns.
//!
//! - **SSE** (`text/event-stream`, 2xx): an incremental parser ([`crate::sse`]) yields whole
//!   events, which pass one by one. The usage-only event Warden asked for itself is dropped.
//!   With the output guard on, the text of each chunk (`choices[].delta.content`, or
//!   `choices[].text` for completions) goes through a [`OutputScanner`] per choice and the event
//!   is rewritten with what the scanner releases: masked matches, minus the tail that could still
//!   grow into a match, which follows in a later event. A `block` rule ends the stream: a chunk
//!   with `finish_reason: "content_filter"`, an error event (`output_blocked`, the rule ids, the
//!   request id), `[DONE]`. A stream that ends without `[DONE]`, holds an oversized event, or
//!   whose upstream fails gets a final error event instead of a silent cut; text the guard held
//!   back is then dropped, never sent unscanned.
//! - **JSON** (2xx): copied to read `usage`. With the output guard enforcing it is held whole and
//!   rewritten: each choice's content masked, or emptied with `finish_reason: "content_filter"`.
//!   A body past [`MAX_JSON_BYTES`] is scanned as raw text instead (masks apply in place; a block
//!   cuts the body).
//! - Anything else (the upstream's own errors) passes through.
//!
//! The output does not depend on how the upstream's bytes were split (tested with 1-byte,
//! random and whole-body splits of every fixture).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};
use warden_guards::leak::{Leak, LeakDetector, LeakKind};
use warden_guards::refusal::{RefusalRules, RefusalWatch};
use warden_guards::tool_calls::ToolCheck;
use warden_guards::{Engine, Normalizer, OutputScanner, Step, Target};

use crate::config::{LeakAction, OutputMode};
use crate::error::ApiError;
use crate::sse::{SseEvent, SseParser};

/// Largest single SSE event accepted from an upstream.
pub const MAX_SSE_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Non-streamed responses are held (output guard) or copied (usage) up to this size.
pub const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;

/// Token counts an upstream reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

/// Why Warden ended a stream with its own error event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream closed the stream without `[DONE]`.
    Truncated,
    /// One upstream event was larger than [`MAX_SSE_EVENT_BYTES`].
    EventTooLarge,
    /// The upstream connection failed mid-stream (code of the error sent).
    UpstreamFailed(&'static str),
    /// An output rule blocked the reply.
    OutputBlocked,
    /// A global kill switch cut the stream.
    SwitchedOff,
}

impl StreamEnd {
    /// The `kind` label of `warden_stream_errors_total`.
    pub fn kind(self) -> &'static str {
        match self {
            StreamEnd::Truncated => "truncated",
            StreamEnd::EventTooLarge => "event_too_large",
            StreamEnd::UpstreamFailed(_) => "upstream_failed",
            StreamEnd::OutputBlocked => "output_blocked",
            StreamEnd::SwitchedOff => "switched_off",
        }
    }

    /// The request's error code.
    pub fn code(self) -> &'static str {
        self.error().code
    }

    /// The request's error: its code and class.
    pub fn error(self) -> ErrorCode {
        use warden_telemetry::ErrorClass::{Policy, Upstream};
        match self {
            StreamEnd::Truncated => ErrorCode::new(Upstream, "upstream_stream_truncated"),
            StreamEnd::EventTooLarge => ErrorCode::new(Upstream, "upstream_event_too_large"),
            StreamEnd::UpstreamFailed(code) => ErrorCode::new(Upstream, code),
            StreamEnd::OutputBlocked => ErrorCode::new(Policy, "output_blocked"),
            StreamEnd::SwitchedOff => ErrorCode::new(Policy, "switched_off"),
        }
    }
}

use warden_telemetry::ErrorCode;
pub use warden_telemetry::OutputDecision;

/// What the output guard saw in one response: for metrics, the log and the audit event. Never
/// text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputOutcome {
    pub decision: OutputDecision,
    /// Only recorded: the client got the reply unchanged.
    pub monitor: bool,
    /// Matches masked (or that would have been, in monitor mode).
    pub masked: usize,
    /// Ids of the output rules that matched, in match order.
    pub rule_ids: Vec<String>,
    /// The most bytes held back at once.
    pub held_max: usize,
    /// The reply opens as a refusal; `None` when there was no text to judge.
    pub refusal: Option<bool>,
    /// What leaked first, if anything did.
    pub leak: Option<LeakKind>,
    /// Whether the planted canary appeared; `None` when none was planted.
    pub canary_leak: Option<bool>,
    /// Why the paraphrase check did not read the whole reply (`encoder_error`, `clause_limit`);
    /// `None` when it did or did not run.
    pub paraphrase_incomplete: Option<&'static str>,
    /// The first choice's `finish_reason` as the client got it (`content_filter` when the
    /// guard stopped the reply); `None` when none was sent.
    pub finish_reason: Option<String>,
}

/// What the output guard needs for one request.
pub struct OutputSetup {
    pub engine: Arc<Engine>,
    pub mode: OutputMode,
    /// The request's system prompt, protected strings and canary, compiled.
    pub leak: Option<LeakDetector>,
    pub on_leak: LeakAction,
    /// A canary was planted in the system prompt.
    pub canary: bool,
    /// The tools the request declared and the tenant allows: tool calls in the reply are
    /// checked against them.
    pub tools: ToolCheck,
    /// The request's documents and question, when it has context: the reply is scored for
    /// support by them (the hallucination signal).
    pub grounding: Option<(Vec<String>, String)>,
}

/// One response's path from upstream to client.
pub struct ResponsePipeline {
    request_id: String,
    /// Warden asked the upstream for usage; the client did not.
    injected_usage: bool,
    output: Option<Output>,
    body: Body,
    usage: Option<Usage>,
    end: Option<StreamEnd>,
    /// The reply's token log-probabilities, summed up; with `true`, Warden asked for them and
    /// removes them from what the client gets.
    logprobs: Option<(crate::logprobs::LogprobStats, bool)>,
}

enum Body {
    /// Not decided yet (before the response head).
    Unknown,
    Sse(SseState),
    Json(JsonState),
    /// Passed through untouched.
    Pass,
}

struct SseState {
    parser: SseParser,
    saw_done: bool,
    /// Warden ended the stream; nothing more goes to the client.
    closed: bool,
    /// `id`, `object`, `created`, `model` of the last chunk, for the chunks Warden writes.
    meta: Map<String, Value>,
}

struct JsonState {
    buf: Vec<u8>,
    /// Held whole for the output guard (else forwarded as it comes, copied for usage).
    holding: bool,
    /// Past [`MAX_JSON_BYTES`]: no usage; when holding, scanned as raw text from here on.
    raw: Option<Box<OutputScanner>>,
    too_large: bool,
}

/// The output guard of one response: a scanner (and a leak detector) per choice, the refusal
/// watch on the first.
struct Output {
    engine: Arc<Engine>,
    enforce: bool,
    choices: Vec<Choice>,
    blocked: bool,
    held_max: usize,
    leak_template: Option<LeakDetector>,
    on_leak: LeakAction,
    canary: bool,
    leak: Option<Leak>,
    refusal: RefusalWatch,
    decoder: Normalizer,
    tools: ToolCheck,
    /// Why a tool call was stopped (`tool:...`), if one was.
    tool_error: Option<&'static str>,
    /// The first choice's `finish_reason`, as the upstream sent it.
    finish_reason: Option<String>,
    /// The request's documents and question, and the first choice's text so far (bounded).
    grounding: Option<(Vec<String>, String, String)>,
}

/// One choice of a response.
struct Choice {
    index: u64,
    scanner: OutputScanner,
    leak: Option<LeakDetector>,
    finished: bool,
    /// Streamed tool calls being assembled, held until complete and checked.
    calls: Vec<PendingCall>,
    /// Released by the scanner but held for the leak detector: it could be the beginning of
    /// the canary or a protected string.
    leak_held: String,
}

/// A streamed tool call: its deltas joined.
#[derive(Debug, Default)]
struct PendingCall {
    index: u64,
    id: Option<Value>,
    name: String,
    arguments: String,
}

/// What the pipeline wants done with the response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadChange {
    /// The body may change length: drop `content-length`, send chunked.
    pub rechunk: bool,
}

impl ResponsePipeline {
    /// `output`: the output guard, when it runs for this request.
    pub fn new(request_id: &str, injected_usage: bool, output: Option<OutputSetup>) -> Self {
        let output = output.and_then(|o| {
            (o.mode != OutputMode::Off).then(|| Output {
                engine: o.engine,
                enforce: o.mode == OutputMode::Enforce,
                choices: Vec::new(),
                blocked: false,
                held_max: 0,
                leak_template: o.leak,
                on_leak: o.on_leak,
                canary: o.canary,
                leak: None,
                refusal: RefusalWatch::default(),
                decoder: LeakDetector::normalizer(),
                tools: o.tools,
                tool_error: None,
                finish_reason: None,
                grounding: o.grounding.map(|(d, q)| (d, q, String::new())),
            })
        });
        ResponsePipeline {
            request_id: request_id.to_string(),
            injected_usage,
            output,
            body: Body::Unknown,
            usage: None,
            end: None,
            logprobs: None,
        }
    }

    /// Sums up the reply's token log-probabilities; with `strip`, Warden asked for them and the
    /// client gets none. Call before [`ResponsePipeline::head`].
    pub fn watch_logprobs(&mut self, strip: bool) {
        self.logprobs = Some((crate::logprobs::LogprobStats::default(), strip));
    }

    /// The first choice's log-probabilities, summed up (when watched and sent).
    pub fn logprobs(&self) -> Option<crate::logprobs::LogprobSummary> {
        self.logprobs.as_ref().and_then(|(s, _)| s.summary())
    }

    /// Takes the log-probabilities of `v` into the stats (and strips them when asked by
    /// Warden); `true` when `v` changed.
    fn take_logprobs(&mut self, v: &mut Value) -> bool {
        match self.logprobs.as_mut() {
            Some((stats, strip)) => stats.take(v, *strip),
            None => false,
        }
    }

    /// The response head arrived: choose how its body is handled.
    pub fn head(&mut self, status: u16, content_type: Option<&str>) -> HeadChange {
        let success = (200..300).contains(&status);
        let sse = content_type.is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        let enforce = self.output.as_ref().is_some_and(|o| o.enforce);
        // Log-probabilities Warden asked for are taken out of the whole body before it goes.
        let strip = self.logprobs.as_ref().is_some_and(|(_, strip)| *strip);
        self.body = if !success {
            Body::Pass
        } else if sse {
            Body::Sse(SseState {
                parser: SseParser::new(MAX_SSE_EVENT_BYTES),
                saw_done: false,
                closed: false,
                meta: Map::new(),
            })
        } else {
            Body::Json(JsonState {
                buf: Vec::new(),
                holding: enforce || strip,
                raw: None,
                too_large: false,
            })
        };
        HeadChange {
            rechunk: matches!(self.body, Body::Sse(_))
                || (matches!(self.body, Body::Json(_)) && (enforce || strip)),
        }
    }

    /// The next piece of the body (`None`: no bytes, only the end); what goes to the client.
    pub fn body(&mut self, chunk: Option<&[u8]>, end: bool) -> Option<Bytes> {
        match std::mem::replace(&mut self.body, Body::Pass) {
            Body::Sse(mut s) => {
                let out = self.sse(&mut s, chunk, end);
                self.body = Body::Sse(s);
                out
            }
            Body::Json(mut j) => {
                let out = self.json(&mut j, chunk, end);
                self.body = Body::Json(j);
                out
            }
            other => {
                self.body = other;
                chunk.map(Bytes::copy_from_slice)
            }
        }
    }

    /// The upstream failed after the response head went out: the final error event of a stream
    /// (once), else nothing.
    pub fn upstream_failed(&mut self, error: &ApiError) -> Option<Bytes> {
        self.end_stream(
            StreamEnd::UpstreamFailed(error.code()),
            &ApiError::UpstreamError,
        )
    }

    /// A stream still open to the client (not ended by `[DONE]` or Warden's own event).
    pub fn stream_open(&self) -> bool {
        matches!(&self.body, Body::Sse(s) if !s.saw_done && !s.closed)
    }

    /// End an open stream now with `error` as its final event (a global kill switch that cuts
    /// streams); `None` when there is no open stream.
    pub fn cut(&mut self, error: &ApiError) -> Option<Bytes> {
        self.end_stream(StreamEnd::SwitchedOff, error)
    }

    /// Close an open stream with `event` as Warden's final event, recording why.
    fn end_stream(&mut self, why: StreamEnd, event: &ApiError) -> Option<Bytes> {
        let Body::Sse(s) = &mut self.body else {
            return None;
        };
        if s.saw_done || s.closed {
            return None;
        }
        s.closed = true;
        s.parser.take_pending();
        self.end = Some(why);
        Some(event.to_sse_event(&self.request_id))
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Why Warden ended the stream itself, if it did.
    pub fn end(&self) -> Option<StreamEnd> {
        self.end
    }

    /// How unsupported the first choice's text is by the request's documents, 0–1 (`None`: no
    /// context, no output guard, or nothing to judge). Computed when asked: once, at the end.
    pub fn hallucination(&self) -> Option<f32> {
        let (docs, q, reply) = self.output.as_ref()?.grounding.as_ref()?;
        let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
        warden_guards::grounding::grounding(&docs, q, reply).map(|g| g.score)
    }

    /// The output guard's outcome; `None` when it did not run.
    pub fn output(&self) -> Option<OutputOutcome> {
        let o = self.output.as_ref()?;
        let mut rules: Vec<usize> = Vec::new();
        let mut masked = 0;
        let mut held_max = o.held_max;
        for c in &o.choices {
            let s = &c.scanner;
            for &r in s.rules() {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
            masked += s.masked();
            held_max = held_max.max(s.held_max());
        }
        if let Body::Json(JsonState { raw: Some(s), .. }) = &self.body {
            for &r in s.rules() {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
            masked += s.masked();
            held_max = held_max.max(s.held_max());
        }
        let decision = if o.blocked {
            OutputDecision::Block
        } else if masked > 0 {
            OutputDecision::Mask
        } else {
            OutputDecision::Allow
        };
        let mut rule_ids: Vec<String> = rules
            .iter()
            .filter_map(|&r| o.engine.rules().get(r).map(|r| r.id.clone()))
            .collect();
        if let Some(l) = o.leak {
            rule_ids.push(format!("leak:{}", l.kind.name()));
        }
        if let Some(code) = o.tool_error {
            rule_ids.push(code.to_string());
        }
        Some(OutputOutcome {
            decision,
            monitor: !o.enforce,
            masked,
            rule_ids,
            held_max,
            refusal: o.refusal.decided(),
            leak: o.leak.map(|l| l.kind),
            canary_leak: o
                .canary
                .then(|| o.leak.is_some_and(|l| l.kind == LeakKind::Canary)),
            paraphrase_incomplete: o
                .choices
                .iter()
                .filter_map(|c| c.leak.as_ref().and_then(LeakDetector::paraphrase))
                .find_map(|p| {
                    if p.errors() > 0 {
                        Some("encoder_error")
                    } else {
                        p.skipped().then_some("clause_limit")
                    }
                }),
            finish_reason: if o.blocked && o.enforce {
                Some("content_filter".into())
            } else {
                o.finish_reason.clone()
            },
        })
    }

    fn sse(&mut self, s: &mut SseState, chunk: Option<&[u8]>, end: bool) -> Option<Bytes> {
        if s.closed {
            return None;
        }
        let mut events: Vec<SseEvent> = Vec::new();
        let mut oversized = false;
        if let Some(chunk) = chunk {
            oversized = s.parser.feed(chunk, &mut events).is_err();
        }
        if end {
            s.parser.finish(&mut events);
        }
        let mut out: Vec<Bytes> = Vec::with_capacity(events.len());
        for ev in events {
            self.event(s, ev, &mut out);
            if s.closed {
                return join(out);
            }
        }
        if oversized || (end && !s.saw_done) {
            s.closed = true;
            self.end = Some(if oversized {
                StreamEnd::EventTooLarge
            } else {
                StreamEnd::Truncated
            });
            // A partial event is dropped: appended to it, our event would be corrupted.
            s.parser.take_pending();
            out.push(ApiError::UpstreamError.to_sse_event(&self.request_id));
        }
        join(out)
    }

    /// One whole upstream event: forwarded, rewritten, dropped, or the end of the stream.
    fn event(&mut self, s: &mut SseState, ev: SseEvent, out: &mut Vec<Bytes>) {
        let Some(data) = ev.data.as_deref() else {
            out.push(ev.raw);
            return;
        };
        if data.trim() == "[DONE]" {
            s.saw_done = true;
            // Text still held (a stream without a finish_reason) goes out before the end.
            if let Some(o) = self.output.as_mut() {
                match o.finish_all() {
                    Ok(tail) if o.enforce && !tail.is_empty() => {
                        out.push(sse_data(&tail_chunk(&s.meta, tail)));
                    }
                    Ok(_) => {}
                    Err(()) if o.enforce => {
                        self.block(s, out);
                        return;
                    }
                    Err(()) => {}
                }
            }
            out.push(ev.raw);
            return;
        }
        let usage_event = data.contains("\"usage\"");
        let guarded = self.output.is_some();
        let logprob_event = self.logprobs.is_some() && data.contains("\"logprobs\"");
        if !usage_event && !guarded && !logprob_event {
            out.push(ev.raw);
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            out.push(ev.raw);
            return;
        };
        let stripped = logprob_event && self.take_logprobs(&mut v);
        // The event as it goes out when the output guard does not rewrite it.
        let unguarded = |ev: &SseEvent, v: &Value| -> Bytes {
            if stripped {
                rewritten(ev, v)
            } else {
                ev.raw.clone()
            }
        };
        if usage_event {
            if let Some(u) = usage_of(&v) {
                self.usage = Some(u);
                let usage_only = v
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.is_empty());
                if self.injected_usage && usage_only {
                    return;
                }
            }
        }
        let Some(o) = self.output.as_mut() else {
            out.push(unguarded(&ev, &v));
            return;
        };
        if let Some(obj) = v.as_object() {
            for key in ["id", "object", "created", "model"] {
                if let Some(x) = obj.get(key) {
                    s.meta.insert(key.to_string(), x.clone());
                }
            }
        }
        match o.chunk(&mut v) {
            Err(()) if o.enforce => self.block(s, out),
            _ if o.enforce => out.push(rewritten(&ev, &v)),
            _ => out.push(unguarded(&ev, &v)),
        }
    }

    /// End the stream for an output block: `content_filter`, the error event, `[DONE]`.
    fn block(&mut self, s: &mut SseState, out: &mut Vec<Bytes>) {
        s.closed = true;
        s.parser.take_pending();
        self.end = Some(StreamEnd::OutputBlocked);
        let Some(o) = self.output.as_ref() else {
            return;
        };
        let mut chunk = Value::Object(s.meta.clone());
        let completions = chunk.get("object").and_then(Value::as_str) == Some("text_completion");
        let choices: Vec<Value> = o
            .choices
            .iter()
            .map(|c| c.index)
            .map(|i| {
                if completions {
                    json!({"index": i, "text": "", "finish_reason": "content_filter"})
                } else {
                    json!({"index": i, "delta": {}, "finish_reason": "content_filter"})
                }
            })
            .collect();
        chunk["choices"] = Value::Array(choices);
        out.push(sse_data(&chunk));
        let error = ApiError::OutputBlocked {
            rule_ids: self.output().map(|o| o.rule_ids).unwrap_or_default(),
        };
        out.push(error.to_sse_event(&self.request_id));
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }

    fn json(&mut self, j: &mut JsonState, chunk: Option<&[u8]>, end: bool) -> Option<Bytes> {
        if let Some(raw) = j.raw.as_mut() {
            // Past the size limit with the output guard enforcing: raw text, streamed.
            let mut out = String::new();
            if let Some(c) = chunk {
                match raw.push(&String::from_utf8_lossy(c)) {
                    Step::Text(t) => out.push_str(&t),
                    Step::Blocked => self.block_raw(),
                }
            }
            if end {
                if let Step::Text(t) = raw.finish() {
                    out.push_str(&t);
                } else {
                    self.block_raw();
                }
            }
            return (!out.is_empty()).then(|| Bytes::from(out));
        }
        if let Some(c) = chunk {
            if !j.too_large && j.buf.len() + c.len() <= MAX_JSON_BYTES {
                j.buf.extend_from_slice(c);
            } else if j.holding && self.output.is_none() {
                // Held only to take out log-probabilities Warden asked for, and too large to
                // hold: the body goes on as it is (those log-probabilities included), never lost.
                j.too_large = true;
                j.holding = false;
                let mut all = std::mem::take(&mut j.buf);
                all.extend_from_slice(c);
                return Some(Bytes::from(all));
            } else if j.holding {
                // Too large to hold: scan what was held and the rest as raw text.
                j.too_large = true;
                let held = std::mem::take(&mut j.buf);
                let mut scanner = self
                    .output
                    .as_ref()
                    .map(|o| OutputScanner::new(o.engine.clone(), Target::Output))?;
                let mut out = String::new();
                for part in [&held[..], c] {
                    match scanner.push(&String::from_utf8_lossy(part)) {
                        Step::Text(t) => out.push_str(&t),
                        Step::Blocked => self.block_raw(),
                    }
                }
                j.raw = Some(Box::new(scanner));
                if end {
                    return self.json(j, None, true).map(|tail| {
                        let mut all = BytesMut::from(out.as_bytes());
                        all.extend_from_slice(&tail);
                        all.freeze()
                    });
                }
                return (!out.is_empty()).then(|| Bytes::from(out));
            } else {
                j.too_large = true;
                j.buf = Vec::new();
            }
        }
        if !j.holding {
            if end && !j.too_large {
                if let Ok(mut v) = serde_json::from_slice::<Value>(&j.buf) {
                    self.usage = usage_of(&v);
                    self.take_logprobs(&mut v);
                }
            }
            return chunk.map(Bytes::copy_from_slice);
        }
        if !end {
            return None;
        }
        let buf = std::mem::take(&mut j.buf);
        let mut v = match serde_json::from_slice::<Value>(&buf) {
            Ok(v) if v.get("choices").is_some() => v,
            // Not a completion, held only for log-probabilities: as it came.
            _ if self.output.is_none() => return Some(Bytes::from(buf)),
            // Not a completion: scanned as raw text, masks in place.
            _ => {
                let mut scanner = self
                    .output
                    .as_ref()
                    .map(|o| OutputScanner::new(o.engine.clone(), Target::Output))?;
                let text = scanner.whole(&String::from_utf8_lossy(&buf));
                j.raw = Some(Box::new(scanner));
                return match text {
                    Step::Text(t) => Some(Bytes::from(t)),
                    Step::Blocked => {
                        self.block_raw();
                        None
                    }
                };
            }
        };
        self.usage = usage_of(&v);
        self.take_logprobs(&mut v);
        if let Some(o) = self.output.as_mut() {
            o.whole(&mut v);
        }
        Some(Bytes::from(v.to_string()))
    }

    fn block_raw(&mut self) {
        if let Some(o) = self.output.as_mut() {
            o.blocked = true;
        }
    }
}

impl Output {
    /// The position in `choices` of choice `index`, added on first sight.
    fn choice(&mut self, index: u64) -> usize {
        if let Some(pos) = self.choices.iter().position(|c| c.index == index) {
            return pos;
        }
        let scanner = OutputScanner::new(self.engine.clone(), Target::Output);
        self.choices.push(Choice {
            index,
            scanner,
            leak: self.leak_template.clone(),
            finished: false,
            calls: Vec::new(),
            leak_held: String::new(),
        });
        self.choices.len() - 1
    }

    /// A leak found: recorded (the first one); `Err` when the tenant blocks on leaks.
    fn leaked(&mut self, leak: Leak) -> Result<(), ()> {
        self.leak.get_or_insert(leak);
        if self.on_leak == LeakAction::Block {
            self.blocked = true;
            return Err(());
        }
        Ok(())
    }

    /// The next text of the choice at `pos` (and its end, when `finishing`): what may be sent.
    /// `Err` on a block (an output rule, or a leak under `on_leak = "block"`).
    fn feed(&mut self, pos: usize, text: Option<&str>, finishing: bool) -> Result<String, ()> {
        let mut out = String::new();
        if let Some(t) = text {
            if pos == 0 {
                self.refusal.push(RefusalRules::shared(), t);
                if let Some((_, _, reply)) = self.grounding.as_mut() {
                    if reply.len() < warden_guards::grounding::MAX_BYTES {
                        reply.push_str(t);
                    }
                }
            }
            if let Some(leak) = self.choices[pos].leak.as_mut().and_then(|d| d.push(t)) {
                self.leaked(leak)?;
            }
            match self.choices[pos].scanner.push(t) {
                Step::Text(r) => out.push_str(&r),
                Step::Blocked => {
                    self.blocked = true;
                    return Err(());
                }
            }
        }
        let choice = &mut self.choices[pos];
        out.insert_str(0, &std::mem::take(&mut choice.leak_held));
        if !finishing {
            if let Some(d) = &choice.leak {
                let hold = d.pending_prefix(&out);
                choice.leak_held = out.split_off(out.len() - hold);
            }
        }
        if finishing && !self.choices[pos].finished {
            self.choices[pos].finished = true;
            if pos == 0 {
                self.refusal.finish(RefusalRules::shared());
            }
            let decoder = &self.decoder;
            if let Some(leak) = self.choices[pos]
                .leak
                .as_mut()
                .and_then(|d| d.finish(decoder))
            {
                self.leaked(leak)?;
            }
            match self.choices[pos].scanner.finish() {
                Step::Text(r) => out.push_str(&r),
                Step::Blocked => {
                    self.blocked = true;
                    return Err(());
                }
            }
        }
        Ok(out)
    }

    /// One streamed chunk: each choice's text replaced by what its scanner releases (finished
    /// at its `finish_reason`). `Err` on a block.
    fn chunk(&mut self, v: &mut Value) -> Result<(), ()> {
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        for (k, choice) in choices.iter_mut().enumerate() {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(k as u64);
            let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            if finishing && k == 0 {
                self.finish_reason = choice["finish_reason"].as_str().map(str::to_string);
            }
            let chat = choice.get("delta").is_some();
            let text = if chat {
                choice.pointer("/delta/content").and_then(Value::as_str)
            } else {
                choice.get("text").and_then(Value::as_str)
            };
            let text = text.map(str::to_string);
            let deltas = choice
                .get_mut("delta")
                .and_then(Value::as_object_mut)
                .and_then(|d| d.remove("tool_calls"));
            if text.is_none() && !finishing && deltas.is_none() {
                continue;
            }
            let pos = self.choice(index);
            let calls = self.tool_deltas(pos, deltas, finishing)?;
            if !calls.is_empty() {
                if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                    delta.insert("tool_calls".into(), Value::Array(calls));
                }
            }
            let released = self.feed(pos, text.as_deref(), finishing)?;
            if text.is_none() && released.is_empty() {
                continue;
            }
            set_text(choice, chat, released);
        }
        Ok(())
    }

    /// Every choice not finished yet, finished: the text they held, as `(index, text)`.
    fn finish_all(&mut self) -> Result<Vec<(u64, String, Vec<Value>)>, ()> {
        let mut out = Vec::new();
        for pos in 0..self.choices.len() {
            if self.choices[pos].finished {
                continue;
            }
            let calls = self.tool_deltas(pos, None, true)?;
            let t = self.feed(pos, None, true)?;
            if !t.is_empty() || !calls.is_empty() {
                out.push((self.choices[pos].index, t, calls));
            }
        }
        Ok(out)
    }

    /// A streamed chunk's `tool_calls` deltas for the choice at `pos`: joined per call and held;
    /// a call is complete when a later call begins or the choice ends (`finishing`). Complete
    /// calls are checked ([`ToolCheck`]) and their arguments masked, and returned whole, as
    /// the `tool_calls` the client gets in this chunk. `Err` on a stopped call.
    fn tool_deltas(
        &mut self,
        pos: usize,
        deltas: Option<Value>,
        finishing: bool,
    ) -> Result<Vec<Value>, ()> {
        let mut complete: Vec<PendingCall> = Vec::new();
        for d in deltas
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = d.get("index").and_then(Value::as_u64).unwrap_or(0);
            let calls = &mut self.choices[pos].calls;
            if !calls.iter().any(|c| c.index == index) {
                // A new call: the ones before it are complete.
                complete.append(calls);
                calls.push(PendingCall {
                    index,
                    ..PendingCall::default()
                });
            }
            let Some(call) = calls.iter_mut().find(|c| c.index == index) else {
                continue;
            };
            if let Some(id) = d.get("id") {
                call.id = Some(id.clone());
            }
            if let Some(n) = d.pointer("/function/name").and_then(Value::as_str) {
                call.name.push_str(n);
            }
            if let Some(a) = d.pointer("/function/arguments").and_then(Value::as_str) {
                call.arguments.push_str(a);
            }
        }
        if finishing {
            complete.append(&mut self.choices[pos].calls);
        }
        let mut out = Vec::with_capacity(complete.len());
        for call in complete {
            let arguments = self.check_call(&call.name, &call.arguments)?;
            out.push(json!({
                "index": call.index,
                "id": call.id.unwrap_or(Value::Null),
                "type": "function",
                "function": {"name": call.name, "arguments": arguments},
            }));
        }
        Ok(out)
    }

    /// One complete tool call: checked against the request's tools and the tenant's allowlist,
    /// its arguments scanned as `output_tool_args` (masked). `Err` when it is stopped.
    fn check_call(&mut self, name: &str, arguments: &str) -> Result<String, ()> {
        if let Err(e) = self.tools.check(name, arguments) {
            self.tool_error.get_or_insert(e.code);
            self.blocked = true;
            return Err(());
        }
        let mut scanner = OutputScanner::new(self.engine.clone(), Target::OutputToolArgs);
        let step = scanner.whole(arguments);
        // The scanner's rules join the first choice's, for the outcome.
        if let Some(first) = self.choices.first_mut() {
            first.scanner.absorb(&scanner);
        }
        match step {
            Step::Text(t) => Ok(t),
            Step::Blocked => {
                self.blocked = true;
                Err(())
            }
        }
    }

    /// A whole (non-streamed) completion: each choice's content masked, or emptied with
    /// `finish_reason: "content_filter"` when a block rule matched or a leak is blocked.
    fn whole(&mut self, v: &mut Value) {
        let enforce = self.enforce;
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return;
        };
        let mut blocked = false;
        for (k, choice) in choices.iter_mut().enumerate() {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(k as u64);
            let chat = choice.get("message").is_some();
            if k == 0 {
                self.finish_reason = choice
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            let text = if chat {
                choice.pointer("/message/content").and_then(Value::as_str)
            } else {
                choice.get("text").and_then(Value::as_str)
            };
            let text = text.map(str::to_string);
            let pos = self.choice(index);
            if let Some(calls) = choice
                .pointer_mut("/message/tool_calls")
                .and_then(Value::as_array_mut)
            {
                for call in calls.iter_mut() {
                    let name = call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let args = call
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    match self.check_call(&name, &args) {
                        Ok(masked) if enforce => {
                            if let Some(f) = call.get_mut("function").and_then(Value::as_object_mut)
                            {
                                f.insert("arguments".into(), Value::String(masked));
                            }
                        }
                        Ok(_) => {}
                        Err(()) => blocked = true,
                    }
                }
            }
            if blocked {
                break;
            }
            let Some(text) = text else {
                continue;
            };
            match self.feed(pos, Some(&text), true) {
                Ok(t) if enforce => {
                    if chat {
                        choice["message"]["content"] = Value::String(t);
                    } else {
                        choice["text"] = Value::String(t);
                    }
                }
                Ok(_) => {}
                Err(()) => {
                    blocked = true;
                    break;
                }
            }
        }
        if blocked {
            self.blocked = true;
            if enforce {
                // One choice blocked withholds them all: they answer the same prompt.
                for choice in choices.iter_mut() {
                    if let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut)
                    {
                        message.insert("content".into(), Value::Null);
                        message.remove("tool_calls");
                    } else {
                        choice["text"] = Value::String(String::new());
                    }
                    choice["finish_reason"] = Value::String("content_filter".into());
                }
            }
        }
    }
}

/// Put `text` in a streamed choice: `delta.content` (chat) or `text` (completions).
fn set_text(choice: &mut Value, chat: bool, text: String) {
    if chat {
        if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
            delta.insert("content".into(), Value::String(text));
        }
    } else if let Some(obj) = choice.as_object_mut() {
        obj.insert("text".into(), Value::String(text));
    }
}

/// A chunk carrying text the guard held until the end of a stream without a `finish_reason`.
fn tail_chunk(meta: &Map<String, Value>, tail: Vec<(u64, String, Vec<Value>)>) -> Value {
    let mut chunk = Value::Object(meta.clone());
    let completions = chunk.get("object").and_then(Value::as_str) == Some("text_completion");
    let choices: Vec<Value> = tail
        .into_iter()
        .map(|(i, t, calls)| {
            if completions {
                json!({"index": i, "text": t, "finish_reason": null})
            } else if calls.is_empty() {
                json!({"index": i, "delta": {"content": t}, "finish_reason": null})
            } else {
                json!({"index": i, "delta": {"content": t, "tool_calls": calls}, "finish_reason": null})
            }
        })
        .collect();
    chunk["choices"] = Value::Array(choices);
    chunk
}

fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// The events of one call as one buffer; the common case, one event, without a copy.
fn join(mut out: Vec<Bytes>) -> Option<Bytes> {
    match out.len() {
        0 => None,
        1 => out.pop(),
        _ => Some(
            out.iter()
                .fold(BytesMut::new(), |mut acc, raw| {
                    acc.extend_from_slice(raw);
                    acc
                })
                .freeze(),
        ),
    }
}

/// An event written again with the data `v`, under its `event:` name when it had one.
fn rewritten(ev: &SseEvent, v: &Value) -> Bytes {
    let mut raw = BytesMut::new();
    if let Some(name) = &ev.event {
        raw.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    raw.extend_from_slice(&sse_data(v));
    raw.freeze()
}

pub fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    let input = u.get("prompt_tokens").and_then(Value::as_u64)?;
    let output = u
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(Usage { input, output })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_guards::pack::RuleSet;

    const KEY: &str = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";

    fn setup(engine: &Arc<Engine>, mode: OutputMode) -> OutputSetup {
        OutputSetup {
            engine: engine.clone(),
            mode,
            leak: None,
            on_leak: LeakAction::Block,
            canary: false,
            tools: ToolCheck::default(),
            grounding: None,
        }
    }

    fn shipped() -> Arc<Engine> {
        Arc::new(Engine::compile(RuleSet::embedded().unwrap()).unwrap())
    }

    /// Log-probabilities Warden asked for are taken out of a whole body, with the output guard
    /// off too; a body it cannot parse, or one too large to hold, goes on as it came.
    #[test]
    fn injected_logprobs_are_stripped_and_no_body_is_lost() {
        let run = |body: &[u8]| {
            let mut p = ResponsePipeline::new("r", false, None);
            p.watch_logprobs(true);
            assert!(p.head(200, Some("application/json")).rechunk);
            let mut out = Vec::new();
            for part in body.chunks(1 << 20) {
                if let Some(b) = p.body(Some(part), false) {
                    out.extend_from_slice(&b);
                }
            }
            if let Some(b) = p.body(None, true) {
                out.extend_from_slice(&b);
            }
            (out, p.logprobs())
        };
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":{"content":[{"token":"Hi","logprob":-0.5,"top_logprobs":[]}]},"finish_reason":"stop"}]}"#;
        let (out, summary) = run(body);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
        assert_eq!(summary.map(|s| s.mean), Some(-0.5));
        let (out, _) = run(b"plain text, not JSON");
        assert_eq!(out, b"plain text, not JSON");
        let big = format!(
            r#"{{"choices":[{{"index":0,"text":"{}","logprobs":null}}]}}"#,
            "a".repeat(MAX_JSON_BYTES + 10)
        );
        let (out, _) = run(big.as_bytes());
        assert_eq!(out, big.as_bytes());
    }

    /// The first choice's text is scored against the request's documents once the reply ends,
    /// however it was split.
    #[test]
    fn replies_are_scored_against_the_request_documents() {
        let engine = shipped();
        let score = |pieces: &[&str]| {
            let mut o = setup(&engine, OutputMode::Enforce);
            o.grounding = Some((
                vec!["Paris is the capital of France.".into()],
                "What is the capital of France?".into(),
            ));
            let mut p = ResponsePipeline::new("r", false, Some(o));
            p.head(200, Some("text/event-stream"));
            p.body(Some(stream(pieces, true, true).as_bytes()), true);
            p.hallucination()
        };
        assert_eq!(score(&["The capital is ", "Paris."]), Some(0.0));
        assert!(score(&["Lyon, since ", "1850."]).is_some_and(|s| s > 0.5));
    }

    /// The shipped packs plus an output rule that blocks.
    fn with_block_rule() -> Arc<Engine> {
        let mut files: Vec<(String, String)> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules"))
                .unwrap()
                .filter_map(|e| {
                    let p = e.ok()?.path();
                    (p.extension()? == "toml").then_some(())?;
                    Some((
                        p.file_name()?.to_str()?.to_string(),
                        std::fs::read_to_string(&p).ok()?,
                    ))
                })
                .collect();
        files.push((
            "zz-test-output.toml".into(),
            r#"
[pack]
name = "test-output"
title = "Test output rules"
description = "An output rule that blocks."

[[rule]]
id = "TST-9001"
title = "Plan name"
description = "A protected code name."
severity = "critical"
paranoia = 1
targets = ["output"]
action = "block"
views = ["folded"]
literals = ["operation nightjar"]
must_match = ["the plan is Operation Nightjar"]
must_not_match = ["a nightjar is a bird"]
"#
            .into(),
        ));
        files.sort();
        Arc::new(Engine::compile(RuleSet::from_sources("test", &files).unwrap()).unwrap())
    }

    fn chunk(content: Option<&str>, finish: Option<&str>) -> String {
        let mut delta = serde_json::Map::new();
        if let Some(c) = content {
            delta.insert("content".into(), Value::String(c.into()));
        }
        let v = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        format!("data: {v}\n\n")
    }

    fn stream(pieces: &[&str], finish: bool, done: bool) -> String {
        let mut s = chunk(Some(""), None).replace("\"content\":\"\"", "\"role\":\"assistant\"");
        for p in pieces {
            s.push_str(&chunk(Some(p), None));
        }
        if finish {
            s.push_str(&chunk(None, Some("stop")));
        }
        s.push_str(
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n",
        );
        if done {
            s.push_str("data: [DONE]\n\n");
        }
        s
    }

    struct Fixture {
        name: &'static str,
        engine: Arc<Engine>,
        status: u16,
        content_type: &'static str,
        body: String,
    }

    fn fixtures() -> Vec<Fixture> {
        let shipped = shipped();
        let block = with_block_rule();
        let sse = "text/event-stream";
        let json = "application/json";
        let f = |name, engine: &Arc<Engine>, status, content_type, body: String| Fixture {
            name,
            engine: engine.clone(),
            status,
            content_type,
            body,
        };
        let completion = |content: &str| {
            json!({
                "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            })
            .to_string()
        };
        vec![
            f(
                "plain stream",
                &shipped,
                200,
                sse,
                stream(&["Hello", ", Zoë", "! How can I help?"], true, true),
            ),
            f(
                "key split over three chunks",
                &shipped,
                200,
                sse,
                stream(
                    &[
                        "Your token: ",
                        &KEY[..9],
                        &KEY[9..25],
                        &KEY[25..],
                        " — keep it safe.",
                    ],
                    true,
                    true,
                ),
            ),
            f(
                "card number and e-mail",
                &shipped,
                200,
                sse,
                stream(
                    &[
                        "Card 4111 1111 ",
                        "1111 1111 and mail ",
                        "jane.doe@fabr",
                        "ikam.org ok",
                    ],
                    true,
                    true,
                ),
            ),
            f(
                "no finish_reason before [DONE]",
                &shipped,
                200,
                sse,
                stream(&["Token ", KEY], false, true),
            ),
            f(
                "truncated",
                &shipped,
                200,
                sse,
                stream(&["cut ", "short"], false, false),
            ),
            f(
                "crlf and comments",
                &shipped,
                200,
                sse,
                stream(&["a", "b"], true, true)
                    .replace("\n", "\r\n")
                    .replacen("data:", ": keep-alive\r\n\r\ndata:", 1),
            ),
            f(
                "blocked stream",
                &block,
                200,
                sse,
                stream(
                    &[
                        "The plan is Operation ",
                        "Night",
                        "jar, and it starts Monday.",
                    ],
                    true,
                    true,
                ),
            ),
            f(
                "undeclared tool call",
                &shipped,
                200,
                sse,
                [
                    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"shell\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
                    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"cmd\\\": \\\"ls\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
                    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
                    "data: [DONE]\n\n",
                ]
                .concat(),
            ),
            f(
                "json masked",
                &shipped,
                200,
                json,
                completion(&format!("the key is {KEY}.")),
            ),
            f(
                "json blocked",
                &block,
                200,
                json,
                completion("It is operation nightjar."),
            ),
            f(
                "json clean",
                &shipped,
                200,
                json,
                completion("Nothing to see."),
            ),
            f(
                "upstream error",
                &shipped,
                500,
                json,
                "{\"error\":{\"message\":\"boom\"}}".into(),
            ),
        ]
    }

    /// Runs `body` split into `pieces` through a pipeline: the client's bytes and what was
    /// recorded.
    fn run(
        f: &Fixture,
        splits: &[usize],
    ) -> (
        Vec<u8>,
        Option<OutputOutcome>,
        Option<StreamEnd>,
        Option<Usage>,
    ) {
        let mut p =
            ResponsePipeline::new("req-1", true, Some(setup(&f.engine, OutputMode::Enforce)));
        p.head(f.status, Some(f.content_type));
        let bytes = f.body.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        for &n in splits {
            let end = (at + n).min(bytes.len());
            if let Some(b) = p.body(Some(&bytes[at..end]), false) {
                out.extend_from_slice(&b);
            }
            at = end;
        }
        if let Some(b) = p.body(Some(&bytes[at..]), true) {
            out.extend_from_slice(&b);
        }
        (out, p.output(), p.end(), p.usage())
    }

    /// ripgrep-style: every fixture gives the same client bytes and the same decisions whether
    /// its body arrives whole, a byte at a time, or in random pieces.
    #[test]
    fn every_split_of_every_fixture_gives_the_same_bytes_and_decisions() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for f in fixtures() {
            let whole = run(&f, &[]);
            let ones = run(&f, &vec![1; f.body.len()]);
            assert_eq!(ones, whole, "{}: 1-byte pieces", f.name);
            for _ in 0..20 {
                let splits: Vec<usize> = (0..f.body.len())
                    .map(|_| {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        1 + (x >> 58) as usize
                    })
                    .collect();
                assert_eq!(run(&f, &splits), whole, "{}: random pieces", f.name);
            }
        }
    }

    fn client_text(out: &[u8]) -> String {
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// The content the client assembles from a stream's chunks.
    fn assembled(out: &str) -> String {
        out.split("\n\n")
            .filter_map(|ev| ev.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }

    #[test]
    fn fixtures_show_what_clients_get() {
        let all = fixtures();
        let get = |name: &str| all.iter().find(|f| f.name == name).unwrap();

        let (out, o, end, usage) = run(get("plain stream"), &[]);
        let text = client_text(&out);
        assert_eq!(assembled(&text), "Hello, Zoë! How can I help?");
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(!text.contains("\"usage\""), "injected usage is dropped");
        let o = o.unwrap();
        assert_eq!(o.decision, OutputDecision::Allow);
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            (end, usage),
            (
                None,
                Some(Usage {
                    input: 9,
                    output: 12
                })
            )
        );

        for name in [
            "key split over three chunks",
            "no finish_reason before [DONE]",
        ] {
            let (out, o, end, _) = run(get(name), &vec![1; get(name).body.len()]);
            let text = client_text(&out);
            assert!(!text.contains("ghp_"), "{name}: {text}");
            assert!(
                assembled(&text).contains("[REDACTED:SEC-5003]"),
                "{name}: {text}"
            );
            let o = o.unwrap();
            assert_eq!(
                (o.decision, o.masked, end),
                (OutputDecision::Mask, 1, None),
                "{name}"
            );
            assert_eq!(o.rule_ids, ["SEC-5003"]);
        }

        let (out, o, _, _) = run(get("card number and e-mail"), &[]);
        let text = assembled(&client_text(&out));
        assert!(
            !text.contains("4111") && !text.contains("jane.doe"),
            "{text}"
        );
        assert_eq!(o.unwrap().masked, 2);

        let (out, _, end, _) = run(get("truncated"), &[]);
        let text = client_text(&out);
        assert_eq!(end, Some(StreamEnd::Truncated));
        assert!(text.contains("\"code\":\"upstream_error\""), "{text}");

        let (out, o, end, _) = run(get("blocked stream"), &[]);
        let text = client_text(&out);
        assert_eq!(end, Some(StreamEnd::OutputBlocked));
        assert!(
            !assembled(&text).to_lowercase().contains("nightjar"),
            "{text}"
        );
        assert!(
            text.contains("\"finish_reason\":\"content_filter\""),
            "{text}"
        );
        assert!(text.contains("\"code\":\"output_blocked\""), "{text}");
        assert!(text.contains("\"rule_ids\":[\"TST-9001\"]"), "{text}");
        assert!(text.contains("\"request_id\":\"req-1\""), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let o = o.unwrap();
        assert_eq!(o.decision, OutputDecision::Block);
        assert_eq!(o.finish_reason.as_deref(), Some("content_filter"));

        let (out, o, end, _) = run(get("undeclared tool call"), &[]);
        let text = client_text(&out);
        assert!(!text.contains("cmd") && !text.contains("shell"), "{text}");
        assert_eq!(end, Some(StreamEnd::OutputBlocked));
        assert_eq!(o.unwrap().rule_ids, ["tool:undeclared"]);

        let (out, o, _, usage) = run(get("json masked"), &[]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v.pointer("/choices/0/message/content").unwrap(),
            "the key is [REDACTED:SEC-5003]."
        );
        assert_eq!(o.unwrap().decision, OutputDecision::Mask);
        assert_eq!(
            usage,
            Some(Usage {
                input: 5,
                output: 7
            })
        );

        let (out, o, _, _) = run(get("json blocked"), &[]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v.pointer("/choices/0/finish_reason").unwrap(),
            "content_filter"
        );
        assert!(v.pointer("/choices/0/message/content").unwrap().is_null());
        assert_eq!(o.unwrap().decision, OutputDecision::Block);

        let f = get("upstream error");
        let (out, o, _, _) = run(f, &[]);
        assert_eq!(out, f.body.as_bytes());
        assert_eq!(o.unwrap().decision, OutputDecision::Allow);
    }

    #[test]
    fn a_canary_split_over_chunks_cuts_the_stream_and_refusals_are_judged() {
        let engine = shipped();
        let leak = LeakDetector::new(&["Be brief."], Some("wdn-0123456789ab"));
        let run = |pieces: &[&str], leak: Option<LeakDetector>| {
            let mut p = ResponsePipeline::new(
                "r",
                false,
                Some(OutputSetup {
                    engine: engine.clone(),
                    mode: OutputMode::Enforce,
                    canary: leak.is_some(),
                    leak,
                    on_leak: LeakAction::Block,
                    tools: ToolCheck::default(),
                    grounding: None,
                }),
            );
            p.head(200, Some("text/event-stream"));
            let out = p.body(Some(stream(pieces, true, true).as_bytes()), true);
            (
                String::from_utf8(out.unwrap().to_vec()).unwrap(),
                p.output().unwrap(),
                p.end(),
            )
        };
        let (text, o, end) = run(
            &["Sure: wdn-01234", "56789ab is the ref."],
            Some(leak.clone()),
        );
        // Not even the beginning of the canary: it was held until the copy was complete.
        assert!(
            !text.contains("wdn-0") && !text.contains("56789ab"),
            "{text}"
        );
        assert_eq!(end, Some(StreamEnd::OutputBlocked));
        assert_eq!(
            (o.leak, o.canary_leak),
            (Some(LeakKind::Canary), Some(true))
        );
        assert_eq!(o.rule_ids, ["leak:canary"]);

        let (_, o, end) = run(&["I'm sorry, but I ", "can't help with that."], Some(leak));
        assert_eq!(
            (o.refusal, o.canary_leak, end),
            (Some(true), Some(false), None)
        );
        let (_, o, _) = run(&["Here you go: ", "a poem."], None);
        assert_eq!((o.refusal, o.canary_leak), (Some(false), None));
    }

    #[test]
    fn monitor_mode_records_and_changes_nothing() {
        let f = &fixtures()[1];
        let mut p = ResponsePipeline::new("r", false, Some(setup(&f.engine, OutputMode::Monitor)));
        p.head(200, Some("text/event-stream"));
        let out = p.body(Some(f.body.as_bytes()), true).unwrap();
        assert_eq!(&out[..], f.body.as_bytes());
        let o = p.output().unwrap();
        assert!(o.monitor);
        assert_eq!((o.decision, o.masked), (OutputDecision::Mask, 1));
    }
}
