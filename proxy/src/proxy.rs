//! The OpenAI-compatible proxy: Pingora's `ProxyHttp` phases, kept thin.
//!
//! Phase map (Pingora order) and what Warden does in each:
//! - `request_filter`: request id, route, API key → tenant, body read under the size cap,
//!   validation and `max_tokens` clamp, model → upstream, quota. Any failure is answered here
//!   with an OpenAI-style error and nothing reaches the upstream.
//! - `upstream_peer`: the upstream chosen above, with its timeouts.
//! - `upstream_request_filter` / `request_body_filter`: strip the client's key, pass the request
//!   id (and, with tracing on, a `traceparent` naming this request's span), send the validated
//!   body.
//! - `response_filter`: request id on the response; the response pipeline
//!   ([`crate::response`]) chooses how the body is handled (SSE, JSON, pass-through).
//! - `response_body_filter` (synchronous): each piece of the body through the pipeline (SSE
//!   events, usage, the output guard, the end of the stream); what it returns goes out.
//! - `fail_to_proxy`: upstream failures become 502/504 JSON errors, or — once a stream has
//!   started — the pipeline's final SSE error event instead of a silently truncated stream.
//! - `logging`: metrics, quota reconciliation, one access-log line (no prompt text, no keys),
//!   the audit event and, with `[tracing]` on, the request's span (opened in `request_filter`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora_error::{ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::Value;

use crate::config::{ClassifierMode, OnFull, OutputMode};
use crate::error::ApiError;
use crate::events::{self, Identities};
use crate::guard::{self, GuardOutcome, GuardRun, Inspection, Refused};
use crate::guard_pool::Overloaded;
use crate::http1;
use crate::keys;
use crate::outlier::Exchange;
use crate::response::{OutputOutcome, OutputSetup, ResponsePipeline, Usage};
use crate::state::{App, InflightGuard, NoUpstream};
use crate::traces::{RequestSpan, SpanFacts};
use crate::validate::{self, Endpoint, Validated};
use warden_guards::classifier::{Classified, ClassifyError};
use warden_guards::leak::LeakDetector;
use warden_guards::tool_calls::ToolCheck;
use warden_telemetry::{ErrorClass, ErrorCode, Outcome};

/// Where a `switched_off` error points when `[switchboard] runbook_url` is not set.
const DEFAULT_RUNBOOK: &str = "runbooks/switched_off.md";

pub struct WardenProxy {
    app: Arc<App>,
}

impl WardenProxy {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// Per-request state, from the first phase to `logging`.
pub struct RequestCtx {
    start: Instant,
    request_id: String,
    endpoint: Option<Endpoint>,
    tenant: Option<usize>,
    /// Set only once validated against the config, so it is safe as a metric label.
    model: Option<String>,
    upstream: Option<usize>,
    /// This request is `upstream`'s one probe after an ejection.
    probe: bool,
    /// A connection to `upstream` was attempted (`upstream_peer` ran), whatever came of it.
    contacted: bool,
    /// Upstreams that refused a connection for this request (failover skips them).
    failed_upstreams: Vec<usize>,
    /// The validated body, handed to the upstream in `request_body_filter`.
    body: Option<Bytes>,
    stream: bool,
    injected_usage: bool,
    charged_tokens: u64,
    /// Status sent to the client (0 until known).
    status: u16,
    error: Option<ErrorCode>,
    upstream_sent_at: Option<Instant>,
    /// Status the upstream answered with, if it answered.
    upstream_status: Option<u16>,
    first_byte_at: Option<Instant>,
    upstream_done_at: Option<Instant>,
    /// The response's path to the client (set in `response_filter`).
    response: Option<ResponsePipeline>,
    /// What the output guard saw (taken from the pipeline in `logging`).
    output: Option<OutputOutcome>,
    /// The request's system prompt, protected strings and canary, compiled for the output guard.
    leak: Option<LeakDetector>,
    /// A canary was planted in the pinned system prompt.
    canary: bool,
    /// The request's documents and question, for the reply's hallucination signal.
    grounding: Option<(Vec<String>, String)>,
    /// The reply's grounding score, taken from the pipeline in `logging`.
    hallucination: Option<f32>,
    /// Sum up the reply's log-probabilities (`Some`); `Some(true)`: Warden asked for them and
    /// removes them from the reply.
    logprobs: Option<bool>,
    /// Their summary, taken from the pipeline in `logging`.
    logprob_summary: Option<crate::logprobs::LogprobSummary>,
    /// The tools the request declared and the tenant allows, for the reply's tool calls.
    tools: Option<ToolCheck>,
    /// Degraded by these switch scopes (`x-warden-degraded`).
    degraded: Option<String>,
    /// The switch state that applied, for the audit row (`model:llama=degraded`).
    switch_state: Option<String>,
    /// Throttles were checked: whether one shed the request.
    throttled: Option<bool>,
    /// A kill switch cut this stream: the client has its final event, and what the upstream
    /// still sends is dropped (the pipeline is closed) until the upstream ends.
    cut: bool,
    usage: Option<Usage>,
    /// The input guard's decision (rule ids, score, pack version), for logs and telemetry.
    pub guard: Option<GuardOutcome>,
    /// With `classifier_mode = "overlap"`: the guard's decision still waiting for the
    /// classifier, settled before any response byte goes out ([`WardenProxy::settle_guard`]).
    pending_guard: Option<PendingGuard>,
    /// A refusal decided after the request was forwarded (the classifier, in overlap mode):
    /// what `fail_to_proxy` answers instead of an upstream error.
    refusal: Option<ApiError>,
    /// Wall-clock start, for the audit event's `time`.
    started_at: SystemTime,
    /// `model` as the client sent it (bounded), even when it is refused.
    requested_model: Option<String>,
    /// Client IP, hashed into the audit event.
    client_ip: Option<String>,
    /// Keyed hashes of the prompt (telemetry on).
    identities: Option<Identities>,
    /// The masked prompt text, for tenants with `log_raw_prompts`.
    raw_prompt: Option<String>,
    /// This request's OTLP span (tracing on and the request sampled or not).
    span: Option<RequestSpan>,
    _inflight: InflightGuard,
}

/// What `request_filter` decided.
enum Admission {
    /// Forward to the upstream.
    Forward,
    /// Answer locally with this JSON body (200).
    Local(Bytes),
}

#[async_trait]
impl ProxyHttp for WardenProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: String::new(),
            endpoint: None,
            tenant: None,
            model: None,
            upstream: None,
            probe: false,
            contacted: false,
            failed_upstreams: Vec::new(),
            body: None,
            stream: false,
            injected_usage: false,
            charged_tokens: 0,
            status: 0,
            error: None,
            upstream_sent_at: None,
            upstream_status: None,
            first_byte_at: None,
            upstream_done_at: None,
            response: None,
            output: None,
            leak: None,
            canary: false,
            grounding: None,
            hallucination: None,
            logprobs: None,
            logprob_summary: None,
            tools: None,
            degraded: None,
            switch_state: None,
            throttled: None,
            cut: false,
            usage: None,
            guard: None,
            pending_guard: None,
            refusal: None,
            started_at: SystemTime::now(),
            requested_model: None,
            client_ip: None,
            identities: None,
            raw_prompt: None,
            span: None,
            _inflight: self.app.track(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // HTTP/1.1 clients may send the next request before this one is answered (RFC 9112
        // §9.3.2): answer each in order instead of dropping what follows. Pingora keeps the
        // setting for the connection's later requests.
        session.set_pipelining_enabled(true);
        ctx.request_id = request_id(session.req_header());
        if let Some(t) = &self.app.traces {
            ctx.span = Some(t.begin(&session.req_header().headers, ctx.started_at));
        }
        if self.app.telemetry.is_some() {
            ctx.client_ip = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string());
        }
        let admitted = self.admit(session, ctx).await;
        if admitted.is_err() {
            self.abandon_guard(ctx);
        }
        match admitted {
            Ok(Admission::Forward) => Ok(false),
            Ok(Admission::Local(body)) => {
                ctx.status = 200;
                write_json(session, ctx, 200, None, body, false).await?;
                Ok(true)
            }
            Err(Rejection::Api(e)) => {
                self.respond_error(session, ctx, &e).await?;
                Ok(true)
            }
            Err(Rejection::Pingora(e)) => Err(e),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(u) = ctx.upstream.and_then(|i| self.app.upstreams.get(i)) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream chosen");
        };
        ctx.contacted = true;
        let cfg = &u.config;
        let mut peer = HttpPeer::new(cfg.address, false, String::new());
        peer.options.connection_timeout = Some(cfg.connect_timeout);
        // Until the first response byte; then `upstream_idle_read_timeout` between reads.
        peer.options.read_timeout = Some(cfg.first_byte_timeout);
        peer.options.write_timeout = Some(cfg.idle_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    fn request_header_timeout(&self) -> Option<Duration> {
        Some(self.app.config.server.header_timeout)
    }

    fn request_header_timed_out(&self) {
        self.app.metrics.header_timeouts.inc();
    }

    fn upstream_idle_read_timeout(&self, ctx: &RequestCtx) -> Option<Duration> {
        let u = self.app.upstreams.get(ctx.upstream?)?;
        Some(u.config.idle_timeout)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The client's key authenticates it to Warden; the upstream never sees it.
        req.remove_header("authorization");
        req.remove_header("expect");
        req.remove_header("transfer-encoding");
        let len = ctx.body.as_ref().map_or(0, Bytes::len);
        req.insert_header("content-length", len.to_string())?;
        req.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let (Some(t), Some(span)) = (&self.app.traces, &ctx.span) {
            // The worker joins Warden's trace; the client's own trace context is our parent.
            req.remove_header("tracestate");
            for (name, value) in t.propagation_headers(span) {
                req.insert_header(name, value)?;
            }
        }
        ctx.upstream_sent_at = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The body was read and validated in `request_filter`; send that version. Kept (a cheap
        // `Bytes` clone) so a retry on another connection or upstream can send it again.
        *body = if end_of_stream {
            ctx.body.clone()
        } else {
            None
        };
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Overlap mode: nothing of the response goes out before the classifier's verdict.
        if let Some(pending) = ctx.pending_guard.take() {
            if let Some(refused) = self.settle_guard(ctx, pending).await {
                // Ends the upstream exchange (its connection is closed, so the worker drops
                // the sequence); `fail_to_proxy` answers `ctx.refusal`.
                ctx.refusal = Some(refused);
                return Error::e_explain(
                    ErrorType::InternalError,
                    "the classifier refused the request after it was forwarded",
                );
            }
        }
        ctx.status = resp.status.as_u16();
        ctx.upstream_status = Some(ctx.status);
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(d) = &ctx.degraded {
            resp.insert_header("x-warden-degraded", d.as_str())?;
        }
        if let Some(reason) = ctx.guard.as_ref().and_then(|g| g.degraded) {
            resp.insert_header("x-warden-guard-degraded", reason)?;
        }
        let setup = self.output_guard(ctx);
        let mut pipeline = ResponsePipeline::new(&ctx.request_id, ctx.injected_usage, setup);
        if let Some(strip) = ctx.logprobs {
            pipeline.watch_logprobs(strip);
        }
        let content_type = resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        if pipeline.head(ctx.status, content_type).rechunk {
            // Events may be dropped, rewritten or added, so the length can change.
            resp.remove_header("content-length");
            resp.insert_header("transfer-encoding", "chunked")?;
        }
        ctx.response = Some(pipeline);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let now = Instant::now();
        if ctx.first_byte_at.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.first_byte_at = Some(now);
        }
        if let Some(pipeline) = ctx.response.as_mut() {
            let chunk = body.take();
            *body = pipeline.body(chunk.as_deref(), end_of_stream);
            ctx.usage = pipeline.usage().or(ctx.usage);
            // A global kill that cuts streams ends this one with its error event.
            if pipeline.stream_open() && self.app.switchboard.cuts_streams(SystemTime::now()) {
                let e = ApiError::SwitchedOff {
                    scope: "global".into(),
                    retry_after: None,
                    runbook: self
                        .app
                        .config
                        .switchboard
                        .runbook_url
                        .clone()
                        .unwrap_or_else(|| DEFAULT_RUNBOOK.to_string()),
                };
                if let Some(event) = pipeline.cut(&e) {
                    let mut out = BytesMut::new();
                    if let Some(b) = body.take() {
                        out.extend_from_slice(&b);
                    }
                    out.extend_from_slice(&event);
                    *body = Some(out.freeze());
                    ctx.cut = true;
                }
            }
        }
        if end_of_stream {
            ctx.upstream_done_at = Some(now);
        }
        Ok(None)
    }

    /// A refused or timed-out connect fails over to the next upstream serving the model.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let now = Instant::now();
        if let Some(i) = ctx.upstream {
            if let Some(api) = classify(&e) {
                self.count_upstream_error(i, &api);
            }
            self.app.report_exchange(i, Exchange::Failed, now);
            ctx.failed_upstreams.push(i);
        }
        let next = ctx
            .model
            .as_deref()
            .and_then(|m| self.app.route(m, &ctx.failed_upstreams, now).ok());
        if let Some(next) = next {
            tracing::warn!(request_id = %ctx.request_id, error = e.etype().as_str(), "upstream connect failed; trying the next upstream");
            ctx.upstream = Some(next.upstream);
            ctx.probe = next.probe;
            e.set_retry(true);
        } else {
            ctx.probe = false;
        }
        e
    }

    /// Pingora never retries a POST. Warden holds the whole request body, so a failure on a
    /// *reused* pooled connection (the upstream closed it while idle) is retried on a fresh one.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        _session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        e.retry.decide_reuse(client_reused);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // Overlap mode, the upstream failed before it answered: the classifier's verdict first
        // (a blocked prompt is answered as such, whatever the upstream did).
        if let Some(pending) = ctx.pending_guard.take() {
            ctx.refusal = self.settle_guard(ctx, pending).await;
        }
        let refused = ctx.refusal.clone();
        // Connect failures were already counted in `fail_to_connect`; a stream a kill switch
        // cut, or a refusal of ours, is not the upstream's failure.
        let counted = is_connect_error(e) || ctx.cut || refused.is_some();
        let api = refused.or_else(|| classify(e));
        if let (Some(api), Some(i), false) = (&api, ctx.upstream, counted) {
            self.count_upstream_error(i, api);
        }
        let Some(api) = api else {
            // The client went away or sent garbage; there is nobody to answer.
            if ctx.status == 0 {
                ctx.status = 499;
            }
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if session.response_written().is_some() {
            // Headers are out: a stream gets a final error event, never a silent cut.
            if let Some(event) = ctx.response.as_mut().and_then(|p| p.upstream_failed(&api)) {
                if let Err(we) = session.write_response_body(Some(event), true).await {
                    tracing::debug!(request_id = %ctx.request_id, error = %we, "could not write final stream error event");
                }
            }
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let Err(we) = self.respond_error(session, ctx, &api).await {
            tracing::debug!(request_id = %ctx.request_id, error = %we, "could not write error response");
        }
        FailToProxy {
            error_code: api.status(),
            can_reuse_downstream: false,
        }
    }

    /// A refusal of ours after the request was forwarded ends the exchange with an error, but
    /// it is a decision, logged as a request like any other, not a proxy failure.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _e: &Error) -> bool {
        ctx.refusal.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // Overlap mode, nothing came back (the client left first): the verdict, for the record.
        if let Some(pending) = ctx.pending_guard.take() {
            self.settle_guard(ctx, pending).await;
        }
        let end = Instant::now();
        if ctx.status == 0 {
            ctx.status = session
                .response_written()
                .map_or(499, |r| r.status.as_u16());
        }
        if let Some(pipeline) = ctx.response.take() {
            if let Some(stream_end) = pipeline.end() {
                self.app
                    .metrics
                    .stream_errors
                    .with_label_values(&[stream_end.kind()])
                    .inc();
                ctx.error = ctx.error.or(Some(stream_end.error()));
            }
            ctx.output = pipeline.output();
            ctx.hallucination = pipeline.hallucination();
            ctx.logprob_summary = pipeline.logprobs();
        }
        // Once, for every sink below.
        let outcome = self.outcome(ctx, e, end);
        self.count(&outcome, ctx);
        self.report_exchange(ctx, e, end);
        self.reconcile_quota(ctx, end).await;
        let upstream = ctx.upstream.and_then(|i| self.app.upstreams.get(i));
        // Refused before a tenant was known (no key, a wrong one, garbage): summarised, and
        // sampled into the lake, so a flood of them floods neither (unauthenticated.rs).
        let refused = (ctx.tenant.is_none() && (400..500).contains(&ctx.status)).then(|| {
            self.app
                .unauthenticated
                .on_refused(outcome.error_code().unwrap_or("other"), end)
        });
        if refused.is_none_or(|d| d.log_line) {
            log_request(ctx, &outcome, upstream);
        }
        if let Some(span) = ctx.span.take() {
            span.finish(&SpanFacts {
                // Listing models is answered here, not a GenAI operation: the span is named
                // after the method and carries no gen_ai.* attributes.
                operation: ctx
                    .endpoint
                    .filter(|ep| *ep != Endpoint::Models)
                    .map(Endpoint::gen_ai_operation),
                method: session.req_header().method.as_str(),
                route: &outcome.route,
                request_id: &ctx.request_id,
                tenant: ctx.tenant.is_some().then_some(&*outcome.tenant),
                requested_model: ctx.requested_model.as_deref(),
                served_model: outcome.model.as_deref().filter(|_| outcome.forwarded),
                // As in the audit event: also the upstream whose connect failed.
                upstream: upstream
                    .filter(|_| ctx.contacted)
                    .map(|u| (u.config.name.as_str(), u.config.address)),
                stream: outcome.stream,
                status: outcome.status,
                error: outcome.error_code(),
                input_tokens: outcome.input_tokens,
                output_tokens: outcome.output_tokens,
                guard: ctx.guard.as_ref(),
                config_hash: &self.app.config.hash,
                ttft: outcome.ttft,
                overhead: outcome.overhead,
            });
        }
        let audit = |a| self.app.audit(a);
        self.app
            .incidents
            .observe(&self.app.effects(&audit), &outcome);
        if refused.is_none_or(|d| d.lake_row) {
            self.record_event(ctx, &outcome);
        } else if self.app.telemetry.is_some() {
            self.app
                .metrics
                .telemetry_unrecorded
                .with_label_values(&["unauthenticated"])
                .inc();
        }
    }
}

enum Rejection {
    Api(ApiError),
    Pingora(Box<Error>),
}

impl From<ApiError> for Rejection {
    fn from(e: ApiError) -> Self {
        Rejection::Api(e)
    }
}

impl From<NoUpstream> for Rejection {
    fn from(n: NoUpstream) -> Self {
        Rejection::Api(ApiError::UpstreamUnavailable {
            retry_after: n.retry_after,
        })
    }
}

// === impl WardenProxy ===

impl WardenProxy {
    /// Everything that decides whether a request may be forwarded, in order of cost.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Admission, Rejection> {
        let app = &self.app;
        if app.is_draining() {
            return Err(ApiError::ShuttingDown.into());
        }
        if let (Some((t, _)), OnFull::FailClosed) = (&app.telemetry, app.config.telemetry.on_full) {
            if t.stats().queue_depth >= app.config.telemetry.queue_capacity as u64 {
                return Err(ApiError::TelemetryUnavailable.into());
            }
        }
        let req = session.req_header();
        let endpoint = Endpoint::route(req.method.as_str(), req.uri.path())?;
        ctx.endpoint = Some(endpoint);

        let raw_key = req
            .headers
            .get("authorization")
            .and_then(|v| keys::bearer(v.as_bytes()))
            .ok_or(ApiError::MissingApiKey)?;
        let tenant_idx = app.tenant_for_key(raw_key).ok_or(ApiError::InvalidApiKey)?;
        ctx.tenant = Some(tenant_idx);
        let tenant = &app.tenants[tenant_idx];

        if endpoint == Endpoint::Models {
            return Ok(Admission::Local(self.models_body(tenant_idx)));
        }

        let cap = app.config.server.max_body_bytes;
        let declared = req
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            return Err(ApiError::BodyTooLarge { limit: cap }.into());
        }
        let content_type = req
            .headers
            .get("content-type")
            .map(|v| v.as_bytes().to_vec());
        let body = read_body(session, cap, app.config.server.body_read_timeout).await?;

        let mut v = validate::validate(
            endpoint,
            content_type.as_deref(),
            body,
            tenant.config.max_tokens,
        )?;
        ctx.requested_model = Some(v.model.chars().take(256).collect());
        if let Some((_, hasher)) = &app.telemetry {
            ctx.identities = Some(events::identities(hasher, &guard::texts(endpoint, v.doc())));
        }
        if !app.serves(&v.model) {
            return Err(ApiError::ModelNotFound { model: v.model }.into());
        }
        if !tenant.may_use(&v.model) {
            return Err(ApiError::ModelNotAllowed { model: v.model }.into());
        }
        ctx.model = Some(v.model.clone());
        // Kill switches, before anything is spent on the request.
        let switches = app.switchboard.snapshot();
        let now = std::time::SystemTime::now();
        let verdict = switches.check(&switch_request(ctx, app, &v, endpoint, None), now);
        self.apply_switches(ctx, verdict, &mut v)?;
        // An upstream known to be down answers now, before quotas and the guard spend anything.
        app.can_route(&v.model, Instant::now())?;
        ctx.stream = v.stream;
        let estimated_tokens = v.estimated_tokens;

        // Quota before the guard, so blocked requests still count against the request rate
        // (probing the rules is not free); their tokens are refunded in `logging`.
        if let Err(e) = self.admit_quota(tenant, estimated_tokens).await {
            let kind = match e {
                ApiError::RequestRateLimited { .. } => "requests",
                _ => "tokens",
            };
            app.metrics
                .rate_limited
                .with_label_values(&[&tenant.config.name, kind])
                .inc();
            return Err(e.into());
        }
        ctx.charged_tokens = estimated_tokens;

        let g = &tenant.config.guard;
        // A canary goes into the pinned system prompt (so only with one, and only when the output
        // guard is there to look for it).
        let canary = (g.canary
            && g.enabled
            && g.system_prompt.is_some()
            && g.output != OutputMode::Off
            && app.guards.is_some()
            && endpoint == Endpoint::ChatCompletions)
            .then(guard::new_canary);
        if let (Some(guards), true) = (&app.guards, tenant.config.guard.enabled) {
            // Large requests are inspected on the guard pool, so their scan never holds up the
            // other requests of this IO thread; small ones here, where a thread hop would cost
            // more than the scan.
            // A body within `inline_bytes` cannot hold more text than that, so only larger
            // ones pay for counting their texts.
            // The classifier costs milliseconds per window: never on an IO thread.
            let classified = guards.classifier.is_some() && g.classifier.enabled;
            let pooled = classified
                || (guards.pool.wants(v.body_len())
                    && guards.pool.wants(guard::text_bytes(endpoint, v.doc())));
            let disabled: Vec<String> = switches
                .rules_off(std::time::SystemTime::now())
                .map(str::to_string)
                .collect();
            let inspected = if pooled {
                let shared = Arc::clone(&self.app);
                let request_id = ctx.request_id.clone();
                let canary = canary.clone();
                let job = move || {
                    let r = inspect(
                        &shared,
                        tenant_idx,
                        endpoint,
                        (&request_id, canary.as_deref(), &disabled),
                        &mut v,
                    );
                    (v, r)
                };
                let done = guards.pool.run(job).await;
                app.metrics.guard_pool_jobs.set(guards.pool.depth() as i64);
                match done {
                    Ok((back, r)) => {
                        v = back;
                        r
                    }
                    Err(Overloaded) => {
                        app.metrics.guard_pool_rejected.inc();
                        return Err(ApiError::GuardOverloaded.into());
                    }
                }
            } else {
                inspect(
                    app,
                    tenant_idx,
                    endpoint,
                    (&ctx.request_id, canary.as_deref(), &disabled),
                    &mut v,
                )
            };
            let mut inspection = match inspected {
                Ok(i) => i,
                Err(refused) => {
                    let (e, outcome) = *refused;
                    ctx.guard = outcome;
                    return Err(e.into());
                }
            };
            if g.classifier_mode == ClassifierMode::Overlap && inspection.classifying() {
                // Forwarded now; the verdict is awaited before the response goes out.
                let verdict = tokio::spawn(inspection.classified());
                let forwarded_after = inspection.elapsed();
                ctx.pending_guard = Some(PendingGuard {
                    inspection,
                    verdict,
                    forwarded_after,
                });
            } else {
                // Awaited here, off this thread: the classifier's threads score the windows.
                let classified = inspection.classified().await;
                self.decide(ctx, inspection, classified, None)?;
            }
        }

        // What the output guard checks the reply against: the system prompt as sent (pinned,
        // canary included), the tenant's protected strings and the canary; the declared tools.
        if app.guards.is_some() && g.output != OutputMode::Off {
            let texts = guard::texts(endpoint, v.doc());
            let mut protected: Vec<&str> = texts
                .iter()
                .filter(|(t, _)| *t == warden_guards::Target::System)
                .map(|(_, s)| *s)
                .collect();
            protected.extend(g.protected.iter().map(String::as_str));
            let d = LeakDetector::new(&protected, canary.as_deref()).with_paraphrase(
                app.guards.as_ref().and_then(|gs| {
                    guard::paraphrase_check(gs, g, &protected, canary.as_deref(), &app.metrics)
                }),
            );
            ctx.leak = (!d.is_empty()).then_some(d);
            ctx.canary = canary.is_some();
            ctx.tools = Some(ToolCheck::new(v.doc(), g.tools.allowed.as_deref()));
            ctx.grounding = guard::grounding_context(endpoint, v.doc());
        }
        if app.telemetry.is_some() && tenant.config.log_raw_prompts {
            ctx.raw_prompt = Some(events::raw_prompt(&guard::texts(endpoint, v.doc())));
        }
        // Claimed last, so a probe is only ever a request that is really sent.
        let route = app.route(&v.model, &[], Instant::now())?;
        ctx.upstream = Some(route.upstream);
        ctx.probe = route.probe;
        // A switch on the chosen upstream (a probe claimed here is released in `logging`),
        // then the operators' throttles, on top of the tenant's quotas.
        if let Some(u) = app.upstreams.get(route.upstream) {
            let upstream = Some(u.config.name.as_str());
            let verdict = switches.check_upstream(
                &switch_request(ctx, app, &v, endpoint, upstream),
                std::time::SystemTime::now(),
            );
            self.apply_switches(ctx, verdict, &mut v)?;
            let r = switch_request(ctx, app, &v, endpoint, upstream);
            let shed = app.switchboard.throttle(
                &switches,
                &r,
                v.estimated_tokens,
                std::time::SystemTime::now(),
            );
            ctx.throttled = Some(shed.is_some());
            if let Some((scope, retry_after, runbook)) = shed {
                let kind = scope.split(':').next().unwrap_or("global").to_string();
                app.metrics
                    .switched_off
                    .with_label_values(&[&kind, "throttled"])
                    .inc();
                return Err(ApiError::Throttled {
                    scope,
                    retry_after,
                    runbook,
                }
                .into());
            }
        }
        if app.config.detectors.logprobs
            && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
        {
            let chat = endpoint == Endpoint::ChatCompletions;
            ctx.logprobs = Some(crate::logprobs::ask(v.doc_mut(), chat));
        }
        let prepared = v.prepare(app.upstreams[route.upstream].config.stream_usage)?;
        ctx.injected_usage = prepared.injected_usage;
        ctx.body = Some(prepared.body);
        Ok(Admission::Forward)
    }

    /// What the request came to, built once from the context for every sink.
    fn outcome(&self, ctx: &RequestCtx, e: Option<&Error>, end: Instant) -> Outcome {
        let app = &self.app;
        let tenant = ctx
            .tenant
            .and_then(|i| app.tenants.get(i))
            .map_or_else(|| app.labels.no_tenant.clone(), |t| t.name.clone());
        let total = end.duration_since(ctx.start);
        let overhead = match (ctx.upstream_sent_at, ctx.upstream_done_at) {
            (Some(sent), Some(done)) => {
                sent.duration_since(ctx.start) + end.saturating_duration_since(done)
            }
            (Some(sent), None) => sent.duration_since(ctx.start),
            _ => total,
        };
        let ttft = match (ctx.upstream_sent_at, ctx.first_byte_at) {
            (Some(sent), Some(first)) => Some(first.saturating_duration_since(sent)),
            _ => None,
        };
        let tpot = match (ctx.first_byte_at, ctx.upstream_done_at, ctx.usage) {
            (Some(first), Some(done), Some(u)) if ctx.stream => {
                Outcome::tpot_of(done.saturating_duration_since(first), u.output)
            }
            _ => None,
        };
        // A Pingora failure with no code of ours: what the client was told, or that it left.
        let error = ctx.error.or_else(|| {
            e.map(|e| match classify(e) {
                Some(api) => api.error_code(),
                None => ErrorCode::new(ErrorClass::Cancelled, "client_disconnected"),
            })
        });
        let mut o = Outcome::new(
            tenant,
            ctx.model.as_deref().map(Arc::from),
            app.labels.route(ctx.endpoint),
        );
        o.forwarded = ctx.upstream_sent_at.is_some();
        o.stream = ctx.stream;
        o.status = ctx.status;
        o.error = error;
        o.duration = total;
        o.overhead = overhead;
        o.ttft = ttft;
        o.tpot = tpot;
        o.input_tokens = ctx.usage.map(|u| u.input);
        o.output_tokens = ctx.usage.map(|u| u.output);
        o.guard = ctx.guard.as_ref().map(|g| match g.decision {
            warden_guards::Decision::Allow => warden_telemetry::GuardDecision::Allow,
            warden_guards::Decision::Flag => warden_telemetry::GuardDecision::Flag,
            warden_guards::Decision::Block => warden_telemetry::GuardDecision::Block,
        });
        if let Some(out) = &ctx.output {
            o.output = Some(out.decision);
            o.refusal = out.refusal;
            o.leak = out.leak.map(|k| k.name());
            o.canary_leak = out.canary_leak;
        }
        o.hallucination = ctx.hallucination;
        o.hallucination_flag = ctx
            .hallucination
            .map(|s| s >= app.config.detectors.hallucination_threshold);
        o.logprob_mean = ctx.logprob_summary.map(|l| l.mean);
        o.logprob_min = ctx.logprob_summary.map(|l| l.min);
        o.token_entropy = ctx.logprob_summary.and_then(|l| l.entropy);
        o
    }

    /// The request's metrics.
    fn count(&self, o: &Outcome, ctx: &RequestCtx) {
        let m = &self.app.metrics;
        let (tenant, route) = (&*o.tenant, &*o.route);
        let model = o.model.as_deref().unwrap_or("-");
        m.requests
            .with_label_values(&[tenant, model, route, &o.status.to_string()])
            .inc();
        m.request_duration
            .with_label_values(&[route])
            .observe(o.duration.as_secs_f64());
        m.overhead
            .with_label_values(&[route])
            .observe(o.overhead.as_secs_f64());
        if let Some(out) = &ctx.output {
            let mode = if out.monitor { "monitor" } else { "enforce" };
            m.output_decisions
                .with_label_values(&[tenant, out.decision.name(), mode])
                .inc();
            for id in &out.rule_ids {
                m.output_rule_hits.with_label_values(&[id]).inc();
            }
            if out.masked > 0 {
                m.output_masks
                    .with_label_values(&[tenant])
                    .inc_by(out.masked as u64);
            }
            if let Some(reason) = out.paraphrase_incomplete {
                m.output_paraphrase_incomplete
                    .with_label_values(&[reason])
                    .inc();
            }
        }
        if o.refusal == Some(true) {
            m.refusals.with_label_values(&[tenant, model]).inc();
        }
        if let Some(flag) = o.hallucination_flag {
            m.grounded_replies.with_label_values(&[tenant, model]).inc();
            if flag {
                m.hallucinations.with_label_values(&[tenant, model]).inc();
            }
        }
        if let Some(kind) = o.leak {
            m.output_leaks.with_label_values(&[tenant, kind]).inc();
        }
        let upstream = ctx.upstream.and_then(|i| self.app.upstreams.get(i));
        if let (Some(u), Some(ttft)) = (upstream, o.ttft) {
            m.time_to_first_byte
                .with_label_values(&[
                    u.config.name.as_str(),
                    if o.stream { "true" } else { "false" },
                ])
                .observe(ttft.as_secs_f64());
        }
        if let (true, Some(model), Some(ep)) = (o.forwarded, o.model.as_deref(), ctx.endpoint) {
            let op = ep.gen_ai_operation();
            let labels = [op, model];
            m.gen_ai_request_duration
                .with_label_values(&labels)
                .observe(o.duration.as_secs_f64());
            if let Some(ttft) = o.ttft {
                m.gen_ai_ttft
                    .with_label_values(&labels)
                    .observe(ttft.as_secs_f64());
            }
            if let Some(tpot) = o.tpot {
                m.gen_ai_tpot
                    .with_label_values(&labels)
                    .observe(tpot.as_secs_f64());
            }
            if let (Some(input), Some(output)) = (o.input_tokens, o.output_tokens) {
                m.gen_ai_token_usage
                    .with_label_values(&[op, model, "input"])
                    .observe(input as f64);
                m.gen_ai_token_usage
                    .with_label_values(&[op, model, "output"])
                    .observe(output as f64);
            }
        }
        if let (true, Some(input), Some(output)) =
            (ctx.tenant.is_some(), o.input_tokens, o.output_tokens)
        {
            m.tokens.with_label_values(&[tenant, "input"]).inc_by(input);
            m.tokens
                .with_label_values(&[tenant, "output"])
                .inc_by(output);
        }
    }

    /// The tenant's token charge, settled against what the upstream reported.
    async fn reconcile_quota(&self, ctx: &RequestCtx, end: Instant) {
        let Some(t) = ctx.tenant.and_then(|i| self.app.tenants.get(i)) else {
            return;
        };
        if ctx.charged_tokens == 0 {
            return;
        }
        // What the input guard scanned stays charged whatever it decided (a token for every
        // four bytes scanned): probing the rules with large prompts is not free.
        let scanned = ctx
            .guard
            .as_ref()
            .map_or(0, |g| (g.scanned_bytes as u64).div_ceil(4))
            .min(ctx.charged_tokens);
        let actual = match ctx.usage {
            Some(u) => u.input.saturating_add(u.output).max(scanned),
            // The request never reached an upstream (refused connect, rejected here).
            None if ctx.upstream_sent_at.is_none() => scanned,
            // The upstream refused it (queue full, bad request): nothing was generated.
            None if ctx.upstream_status.is_some_and(|s| s >= 400) => scanned,
            // Sent, but no usage came back (client hung up, upstream timed out or did not
            // report): keep the estimate, so hanging up never dodges the quota.
            None => ctx.charged_tokens,
        };
        t.quota.reconcile(ctx.charged_tokens, actual, end);
        if let Some(fq) = &self.app.fleet_quotas {
            fq.reconcile(
                &t.config.name,
                t.config.tokens_per_minute,
                ctx.charged_tokens,
                actual,
            )
            .await;
        }
    }

    /// The audit event of this request, handed to the telemetry writer (never waits on disk).
    /// The last use of the context in `logging`: it moves what the context owns into the event.
    fn record_event(&self, ctx: &mut RequestCtx, o: &Outcome) {
        let Some((telemetry, hasher)) = &self.app.telemetry else {
            return;
        };
        let app = &self.app;
        let upstream = ctx.upstream.and_then(|i| app.upstreams.get(i));
        let ms = |d: Duration| d.as_secs_f32() * 1e3;
        let tokens = |n: Option<u64>| n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let ids = ctx.identities.take().unwrap_or_default();
        let switches_checked = ctx.model.is_some();
        let event = warden_telemetry::Event {
            time: ctx.started_at,
            request_id: ctx.request_id.clone(),
            tenant: o.tenant.clone(),
            route: o.route.clone(),
            requested_model: ctx.requested_model.take().unwrap_or_default(),
            // The event is the last use of the context: move what it owns, copy nothing.
            served_model: ctx.model.take().filter(|_| o.forwarded),
            model_version: None,
            // Contacted: the request went out, or a connect to it was tried and refused or timed
            // out (the last one tried, after failover); auditors need to know which one failed.
            upstream: upstream.filter(|_| ctx.contacted).map(|u| u.name.clone()),
            region: app.labels.region.clone(),
            stream: o.stream,
            status: o.status,
            error_code: o.error_code().map(str::to_string),
            input_tokens: tokens(o.input_tokens),
            output_tokens: tokens(o.output_tokens),
            ttft_ms: o.ttft.map(ms),
            duration_ms: ms(o.duration),
            tpot_ms: o.tpot.map(ms),
            guard_decision: o.guard,
            guard_score: ctx.guard.as_ref().map(|g| g.score),
            guard_truncated: ctx.guard.as_ref().map(|g| g.truncated),
            guard_scanned_bytes: ctx
                .guard
                .as_ref()
                .map(|g| u32::try_from(g.scanned_bytes).unwrap_or(u32::MAX)),
            guard_us: ctx
                .guard
                .as_ref()
                .map(|g| u32::try_from(g.elapsed.as_micros()).unwrap_or(u32::MAX)),
            hallucination_score: o.hallucination,
            logprob_mean: o.logprob_mean,
            logprob_min: o.logprob_min,
            token_entropy: o.token_entropy,
            rule_ids: {
                let mut ids = ctx
                    .guard
                    .as_mut()
                    .map(|g| std::mem::take(&mut g.rule_ids))
                    .unwrap_or_default();
                // Input rules first, then the output rules (schema: deduplicated, match order).
                for id in ctx
                    .output
                    .as_mut()
                    .map(|o| std::mem::take(&mut o.rule_ids))
                    .unwrap_or_default()
                {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                ids
            },
            rule_pack_version: ctx.guard.as_ref().map(|g| g.pack_version.clone()),
            config_hash: app.labels.config_hash.clone(),
            classifier_score: ctx.guard.as_ref().and_then(|g| g.classifier_score),
            refusal: o.refusal,
            canary_leak: o.canary_leak,
            // Switches are checked once the model is known; before that, not evaluated.
            degraded: switches_checked.then_some(ctx.degraded.is_some()),
            throttled: ctx.throttled,
            switch_state: ctx.switch_state.take(),
            overhead_us: u32::try_from(o.overhead.as_micros()).unwrap_or(u32::MAX),
            prompt_hash: ids.prompt,
            system_prompt_hash: ids.system_prompt,
            message_hashes: ids.messages,
            client_addr_hash: ctx.client_ip.as_deref().map(|ip| hasher.client_addr(ip)),
            hash_key_id: hasher.key_id_shared(),
            raw_prompt: ctx.raw_prompt.take(),
        };
        if let Err(dropped) = telemetry.record(event) {
            tracing::warn!(
                request_id = %ctx.request_id,
                reason = %dropped,
                dropped_total = telemetry.stats().events_dropped(),
                "audit event dropped"
            );
        }
    }

    /// Passive outlier detection: how the exchange with the upstream ended. Connect failures
    /// were reported in `fail_to_connect`; a client that left before any answer says nothing
    /// about the upstream (but gives up the probe it held).
    fn report_exchange(&self, ctx: &RequestCtx, e: Option<&Error>, now: Instant) {
        let Some(i) = ctx.upstream else {
            return;
        };
        let upstream_failed = e.is_some_and(|e| {
            !is_connect_error(e)
                && matches!(
                    classify(e),
                    Some(ApiError::UpstreamTimeout | ApiError::UpstreamError)
                )
        }) || matches!(
            ctx.error.map(|e| e.code),
            Some("upstream_stream_truncated" | "upstream_event_too_large")
        );
        let outcome = match (ctx.contacted, upstream_failed, ctx.upstream_status) {
            (true, true, _) => Some(Exchange::Failed),
            (true, false, Some(_)) => Some(Exchange::Answered),
            // Never sent (refused after the route was chosen), or no answer before the client
            // left: nothing is learned.
            _ => None,
        };
        match outcome {
            Some(o) => self.app.report_exchange(i, o, now),
            // The probe it held is free for the next request (a connect failure already gave it
            // up in `fail_to_connect`).
            None if ctx.probe && !e.is_some_and(is_connect_error) => {
                if let Some(u) = self.app.upstreams.get(i) {
                    u.outlier.release_probe();
                }
            }
            None => {}
        }
    }

    fn count_upstream_error(&self, upstream: usize, api: &ApiError) {
        if let Some(u) = self.app.upstreams.get(upstream) {
            self.app
                .metrics
                .upstream_errors
                .with_label_values(&[&u.config.name, api.code()])
                .inc();
        }
    }

    fn models_body(&self, tenant: usize) -> Bytes {
        let t = &self.app.tenants[tenant];
        let data: Vec<Value> = self
            .app
            .models
            .iter()
            .filter(|m| t.may_use(m))
            .map(|m| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": "warden"}))
            .collect();
        Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
    }

    /// The tenant's quotas: the fleet's shared buckets when `shared_quotas` is on and Redis
    /// answers, else this sidecar's own (see `fleet_quota`).
    async fn admit_quota(
        &self,
        tenant: &crate::state::Tenant,
        tokens: u64,
    ) -> Result<(), ApiError> {
        let c = &tenant.config;
        if let (Some(fq), true) = (
            &self.app.fleet_quotas,
            c.requests_per_minute.is_some() || c.tokens_per_minute.is_some(),
        ) {
            if let Some(budget) = c.tokens_per_minute.filter(|&b| tokens > b) {
                return Err(ApiError::RequestExceedsTokenBudget {
                    needed: tokens,
                    budget,
                });
            }
            match fq
                .admit(&c.name, c.requests_per_minute, c.tokens_per_minute, tokens)
                .await
            {
                Ok(verdict) => return verdict,
                Err(e) => {
                    self.app.metrics.fleet_quota_fallbacks.inc();
                    tracing::debug!(error = %e, "fleet quota unavailable; using this sidecar's buckets");
                }
            }
        }
        tenant.quota.admit(tokens, Instant::now())
    }

    /// Acts on the kill switches' verdict on this request: refused with `switched_off`, or
    /// degraded (`max_tokens` clamped, `x-warden-degraded` on the response). Called once for
    /// the request's scopes and once more for its upstream's, so degraded scopes accumulate.
    fn apply_switches(
        &self,
        ctx: &mut RequestCtx,
        verdict: crate::switchboard::Verdict<'_>,
        v: &mut Validated,
    ) -> Result<(), Rejection> {
        use crate::switchboard::Verdict;
        let app = &self.app;
        match verdict {
            Verdict::Pass => Ok(()),
            Verdict::Off {
                switch,
                retry_after,
            } => {
                let scope = switch.scope.to_string();
                let kind = scope.split(':').next().unwrap_or("global").to_string();
                app.metrics
                    .switched_off
                    .with_label_values(&[&kind, "off"])
                    .inc();
                ctx.switch_state = Some(format!("{scope}=off"));
                Err(ApiError::SwitchedOff {
                    scope,
                    retry_after,
                    runbook: switch.runbook.clone().unwrap_or_else(|| {
                        app.config
                            .switchboard
                            .runbook_url
                            .clone()
                            .unwrap_or_else(|| DEFAULT_RUNBOOK.to_string())
                    }),
                }
                .into())
            }
            Verdict::Degraded { max_tokens, scopes } => {
                let names: Vec<String> = scopes.iter().map(ToString::to_string).collect();
                for s in &names {
                    let kind = s.split(':').next().unwrap_or("global");
                    app.metrics
                        .switched_off
                        .with_label_values(&[kind, "degraded"])
                        .inc();
                }
                v.clamp_max_tokens(max_tokens);
                let states: Vec<String> = names.iter().map(|n| format!("{n}=degraded")).collect();
                let join = |before: Option<String>, more: Vec<String>| {
                    before.into_iter().chain(more).collect::<Vec<_>>().join(",")
                };
                ctx.degraded = Some(join(ctx.degraded.take(), names));
                ctx.switch_state = Some(join(ctx.switch_state.take(), states));
                Ok(())
            }
        }
    }

    /// The output guard for this request's reply: the active packs and the tenant's mode, on
    /// the endpoints that return model text.
    fn output_guard(&self, ctx: &mut RequestCtx) -> Option<OutputSetup> {
        if !matches!(
            ctx.endpoint,
            Some(Endpoint::ChatCompletions | Endpoint::Completions)
        ) {
            return None;
        }
        let guards = self.app.guards.as_ref()?;
        let tenant = self.app.tenants.get(ctx.tenant?)?;
        let g = &tenant.config.guard;
        (g.output != OutputMode::Off).then(|| OutputSetup {
            engine: guards.active(),
            mode: g.output,
            leak: ctx.leak.take(),
            on_leak: g.on_leak,
            canary: ctx.canary,
            tools: ctx.tools.take().unwrap_or_default(),
            grounding: ctx.grounding.take(),
        })
    }

    /// Waits for an overlapping classifier's verdict and records the guard's outcome; the
    /// refusal to answer, when the verdict (or `fail_closed`) refuses the request.
    async fn settle_guard(&self, ctx: &mut RequestCtx, pending: PendingGuard) -> Option<ApiError> {
        let waiting = Instant::now();
        let classified = match pending.verdict.await {
            Ok(c) => c,
            Err(e) => Some((
                Classified::Failed {
                    error: ClassifyError::Failed(format!("the classifier's task ended: {e}")),
                    partial: None,
                },
                Instant::now(),
            )),
        };
        let held = waiting.elapsed();
        if let Some(t) = ctx.tenant.and_then(|i| self.app.tenants.get(i)) {
            self.app
                .metrics
                .guard_classifier_hold
                .with_label_values(&[&t.config.name])
                .observe(held.as_secs_f64());
        }
        let overlap = Some((pending.forwarded_after, held));
        self.decide(ctx, pending.inspection, classified, overlap)
            .err()
    }

    /// A request refused after its classifier was started for overlap (a throttle, a switch, no
    /// upstream): the classifier stops (its windows are dropped unrun) and the rules' decision
    /// is recorded.
    fn abandon_guard(&self, ctx: &mut RequestCtx) {
        let Some(pending) = ctx.pending_guard.take() else {
            return;
        };
        pending.verdict.abort();
        // The request is refused already: this only records what the guard decided.
        let _recorded = self.decide(ctx, pending.inspection, None, None).is_ok();
    }

    /// The guard's decision once the classifier's finding is in ([`guard::finish`]), into
    /// `ctx.guard`; `Err` with the refusal to answer. `overlap`: for a request forwarded while the
    /// classifier ran, the guard's time before forwarding and how long the response was held.
    fn decide(
        &self,
        ctx: &mut RequestCtx,
        inspection: Inspection,
        classified: Option<(Classified, Instant)>,
        overlap: Option<(Duration, Duration)>,
    ) -> Result<(), ApiError> {
        let (Some(tenant), Some(endpoint)) = (ctx.tenant, ctx.endpoint) else {
            return Err(ApiError::Internal);
        };
        let ids = (ctx.request_id.as_str(), None, &[][..]);
        let decided = with_guard_run(&self.app, tenant, endpoint, ids, |run| {
            guard::finish(
                run,
                inspection,
                classified,
                overlap.map(|(before, _)| before),
            )
        });
        let (outcome, refused) = match decided {
            Ok(outcome) => (Some(outcome), None),
            Err(refused) => {
                let (e, outcome) = *refused;
                (outcome, Some(e))
            }
        };
        ctx.guard = outcome.map(|o| GuardOutcome {
            held: overlap.map(|(_, held)| held),
            ..o
        });
        refused.map_or(Ok(()), Err)
    }

    async fn respond_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        e: &ApiError,
    ) -> Result<()> {
        ctx.status = e.status();
        ctx.error = Some(e.error_code());
        let r = e.to_response(&ctx.request_id);
        // Anything but a fully read request may leave unread body bytes on the connection, and
        // after broken framing nothing says where the next request would start.
        let close =
            matches!(e, ApiError::MalformedRequest) || !session.as_downstream_mut().is_body_done();
        write_json(session, ctx, r.status, r.retry_after, r.body, close).await
    }
}

/// What the switchboard needs to know of a request.
fn switch_request<'a>(
    ctx: &RequestCtx,
    app: &'a App,
    v: &'a Validated,
    endpoint: Endpoint,
    upstream: Option<&'a str>,
) -> crate::switchboard::Request<'a> {
    let tenant = ctx
        .tenant
        .and_then(|i| app.tenants.get(i))
        .map_or("", |t| t.config.name.as_str());
    let doc = v.doc();
    crate::switchboard::Request {
        tenant,
        model: &v.model,
        route: endpoint.label(),
        upstream,
        stream: v.stream,
        tools: doc
            .get("tools")
            .or_else(|| doc.get("functions"))
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty()),
        logprobs: doc
            .get("logprobs")
            .is_some_and(|l| l == &Value::Bool(true) || l.is_u64()),
        n: doc.get("n").and_then(Value::as_u64).unwrap_or(1),
    }
}

/// The input guard's first part ([`guard::begin`]) on a validated request of tenant `tenant`,
/// with the packs loaded now.
fn inspect(
    app: &App,
    tenant: usize,
    endpoint: Endpoint,
    (request_id, canary, disabled_rules): (&str, Option<&str>, &[String]),
    v: &mut Validated,
) -> Result<Inspection, Refused> {
    with_guard_run(
        app,
        tenant,
        endpoint,
        (request_id, canary, disabled_rules),
        |run| guard::begin(run, v),
    )
}

/// Runs `f` with what the guard needs for one request of tenant `tenant`: the packs loaded now,
/// the tenant's policy, the classifier.
fn with_guard_run<T>(
    app: &App,
    tenant: usize,
    endpoint: Endpoint,
    (request_id, canary, disabled_rules): (&str, Option<&str>, &[String]),
    f: impl FnOnce(&GuardRun<'_>) -> Result<T, Refused>,
) -> Result<T, Refused> {
    let (Some(guards), Some(t)) = (&app.guards, app.tenants.get(tenant)) else {
        return Err(Box::new((ApiError::Internal, None)));
    };
    let engine = guards.active();
    let shadow = guards.shadow();
    let run = GuardRun {
        endpoint,
        tenant: &t.config.name,
        policy: &t.config.guard,
        engine: &engine,
        shadow: shadow.as_deref(),
        metrics: &app.metrics,
        request_id,
        canary,
        disabled_rules,
        classifier: guards.classifier.as_deref(),
    };
    f(&run)
}

/// A request forwarded while the classifier runs (`classifier_mode = "overlap"`).
struct PendingGuard {
    inspection: Inspection,
    verdict: tokio::task::JoinHandle<Option<(Classified, Instant)>>,
    /// The guard's time before the request was forwarded (the outcome's `elapsed`).
    forwarded_after: Duration,
}

/// The access-log line of a request: ids, names, sizes and timings, never text or keys.
fn log_request(ctx: &RequestCtx, o: &Outcome, upstream: Option<&crate::state::Upstream>) {
    tracing::info!(
        request_id = %ctx.request_id,
        tenant = &*o.tenant,
        model = o.model.as_deref().unwrap_or("-"),
        endpoint = &*o.route,
        status = o.status,
        error_code = o.error_code().unwrap_or(""),
        error_class = o.error.map(|e| e.class.name()),
        stream = o.stream,
        upstream = upstream.map_or("-", |u| u.config.name.as_str()),
        input_tokens = o.input_tokens,
        output_tokens = o.output_tokens,
        duration_ms = o.duration.as_secs_f64() * 1e3,
        overhead_us = o.overhead.as_micros() as u64,
        ttft_ms = o.ttft.map(|d| d.as_secs_f64() * 1e3),
        tpot_ms = o.tpot.map(|d| d.as_secs_f64() * 1e3),
        guard = ctx.guard.as_ref().map(|g| g.decision.name()),
        guard_score = ctx.guard.as_ref().map(|g| g.score),
        guard_rules = ctx.guard.as_ref().map(|g| g.rule_ids.join(",")),
        guard_us = ctx.guard.as_ref().map(|g| g.elapsed.as_micros() as u64),
        classifier_score = ctx.guard.as_ref().and_then(|g| g.classifier_score),
        classifier_us = ctx
            .guard
            .as_ref()
            .filter(|g| g.classifier_score.is_some() || g.degraded.is_some())
            .map(|g| g.classifier_elapsed.as_micros() as u64),
        classifier_text = ctx.guard.as_ref().and_then(|g| g.classifier_at.map(|a| a.0)),
        classifier_window = ctx.guard.as_ref().and_then(|g| g.classifier_at.map(|a| a.1)),
        classifier_blob = ctx.guard.as_ref().and_then(|g| g.classifier_blob),
        guard_degraded = ctx.guard.as_ref().and_then(|g| g.degraded),
        guard_hold_us = ctx.guard.as_ref().and_then(|g| g.held.map(|h| h.as_micros() as u64)),
        output = o.output.map(|d| d.name()),
        output_rules = ctx.output.as_ref().map(|out| out.rule_ids.join(",")),
        output_masked = ctx.output.as_ref().map(|out| out.masked),
        refusal = o.refusal,
        leak = o.leak,
        hallucination = o.hallucination,
        logprob_mean = o.logprob_mean,
        logprob_min = o.logprob_min,
        token_entropy = o.token_entropy,
        finish_reason = ctx.output.as_ref().and_then(|out| out.finish_reason.as_deref()),
        guard_bytes = ctx.guard.as_ref().map(|g| g.scanned_bytes),
        guard_truncated = ctx.guard.as_ref().map(|g| g.truncated),
        pack_version = ctx.guard.as_ref().map(|g| &*g.pack_version),
        "request"
    );
}

/// Read the whole request body, enforcing the size cap and a deadline.
async fn read_body(
    session: &mut Session,
    cap: usize,
    timeout: Duration,
) -> Result<Bytes, Rejection> {
    let downstream = session.as_downstream_mut();
    if downstream
        .get_header("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        downstream
            .write_continue_response()
            .await
            .map_err(Rejection::Pingora)?;
    }
    // Lets Pingora forward bodies up to 64 KiB from its retry buffer; larger ones are handed over
    // in `request_body_filter` (see proxy/vendor/pingora-proxy/WARDEN-PATCH.md).
    downstream.enable_retry_buffering();
    let mut buf = BytesMut::new();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match tokio::time::timeout(left, session.read_request_body()).await {
            Err(_) => return Err(ApiError::RequestTimeout.into()),
            Ok(Err(e)) if matches!(e.etype(), ErrorType::ReadTimedout) => {
                return Err(ApiError::RequestTimeout.into())
            }
            // Broken framing is the client's fault; the connection closes after the answer
            // (`respond_error` sees the body unfinished).
            Ok(Err(e)) if http1::is_malformed(&e) => return Err(ApiError::MalformedRequest.into()),
            Ok(Err(e)) => return Err(Rejection::Pingora(e)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if buf.len() + chunk.len() > cap {
            return Err(ApiError::BodyTooLarge { limit: cap }.into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn write_json(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    retry_after: Option<u64>,
    body: Bytes,
    close: bool,
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(5))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(s) = retry_after {
        h.insert_header("retry-after", s.to_string())?;
    }
    if close {
        h.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Map a Pingora failure to the client-facing error; `None` when the client itself is gone.
fn classify(e: &Error) -> Option<ApiError> {
    use ErrorType::*;
    match e.esource() {
        ErrorSource::Upstream => Some(match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout => ApiError::UpstreamTimeout,
            ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError => {
                ApiError::UpstreamUnavailable {
                    retry_after: Duration::from_secs(1),
                }
            }
            _ => ApiError::UpstreamError,
        }),
        ErrorSource::Downstream => match e.etype() {
            ReadTimedout => Some(ApiError::RequestTimeout),
            _ => None,
        },
        ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
            ConnectTimedout => Some(ApiError::UpstreamTimeout),
            ConnectRefused | ConnectNoRoute | ConnectError => Some(ApiError::UpstreamUnavailable {
                retry_after: Duration::from_secs(1),
            }),
            _ => Some(ApiError::Internal),
        },
    }
}

fn is_connect_error(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError
    )
}

/// Accept the client's `x-request-id` when it is a sane token, else mint one.
fn request_id(req: &RequestHeader) -> String {
    if let Some(v) = req.headers.get("x-request-id") {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return String::from_utf8_lossy(b).into_owned();
        }
    }
    format!("req_{:032x}", rand::random::<u128>())
}
