//! OpenTelemetry traces over OTLP/gRPC: one CLIENT span per request, named and attributed after
//! the GenAI semantic conventions (`gen_ai.*`), plus Warden's own decisions (`warden.*`).
//!
//! Guarantees:
//! - Off unless `[tracing] otlp_endpoint` is set: then no exporter, no thread, and a request pays
//!   one `Option` check.
//! - Never prompt text, completions, API keys or the client address: a span carries only values
//!   the audit event already records in the clear (ids, names from the config, counts, timings,
//!   the guard's decision and rule ids), plus the model name the client asked for.
//! - Export never touches serving: spans go to a bounded queue drained by the SDK's batch thread;
//!   the gRPC client runs on its own one-thread runtime. A collector that is down costs a warning
//!   when exports start failing and `warden_trace_spans_total{outcome="failed"}`; spans that find
//!   the queue full (a collector too slow for the traffic) are `{outcome="dropped"}`, counted
//!   by Warden before the SDK would drop them silently.
//! - A W3C `traceparent` from the client becomes the span's parent (and its sampled flag wins over
//!   `sample_ratio`); the upstream receives a `traceparent` naming Warden's span.
//!
//! Non-goals: logs or metrics over OTLP (metrics are Prometheus on the admin listener), TLS to
//! the collector (send to a local collector or agent), spans for the phases inside a request.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::config::TracingConfig;
use crate::guard::GuardOutcome;

/// The exporter and the tracer, shared by every request.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    stats: Arc<ExportStats>,
    /// Drives the gRPC client's I/O; the batch thread only waits on it.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Spans handed to the collector, by outcome (mirrored into Prometheus on every scrape).
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub failed: AtomicU64,
    /// Ended spans not handed to the SDK because its queue could be full.
    pub dropped: AtomicU64,
    /// Spans handed to the SDK's queue; those not yet exported or failed are still in it (or
    /// in the batch being exported).
    queued: AtomicU64,
    failing: AtomicBool,
}

/// The span of one request, from `request_filter` to `logging`.
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
}

/// What the span says about a request, assembled in `logging` from the request context and the
/// values computed there for metrics and the audit event.
#[derive(Debug)]
pub struct SpanFacts<'a> {
    /// `gen_ai.operation.name`; `None` for a path that is not an API route.
    pub operation: Option<&'static str>,
    /// The HTTP method, names the span when there is no operation.
    pub method: &'a str,
    pub route: &'a str,
    pub request_id: &'a str,
    pub tenant: Option<&'a str>,
    /// `model` as the client sent it (bounded).
    pub requested_model: Option<&'a str>,
    /// The model that served the request; `None` when nothing was forwarded.
    pub served_model: Option<&'a str>,
    /// Upstream name and address, when one was contacted (including a refused connect).
    pub upstream: Option<(&'a str, std::net::SocketAddr)>,
    pub stream: bool,
    pub status: u16,
    /// Stable error code (`upstream_timeout`, `guard_blocked`, ...) or Pingora's error type.
    pub error: Option<&'a str>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub guard: Option<&'a GuardOutcome>,
    pub config_hash: &'a str,
    pub ttft: Option<Duration>,
    pub overhead: Duration,
}

/// `gen_ai.provider.name` of every upstream: Warden speaks the OpenAI API to its workers.
const PROVIDER: &str = "openai";
/// How long shutdown waits for the last batch.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Capacity of the SDK's span queue, set explicitly (the SDK would also read it from
/// `OTEL_BSP_MAX_QUEUE_SIZE`), so [`Bounded`] knows the bound it must stay under.
const QUEUE_SPANS: usize = 2048;

// === impl Traces ===

impl Traces {
    /// Build the exporter and provider. No connection is made here: the gRPC channel connects on
    /// the first export, so a collector that is down does not stop Warden from starting.
    pub fn start(c: &TracingConfig) -> Result<Option<Traces>, String> {
        let Some(endpoint) = &c.otlp_endpoint else {
            return Ok(None);
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("warden-otlp")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the OTLP runtime: {e}"))?;
        // tonic spawns its connection tasks on the runtime it is built in.
        let exporter = {
            let _in_runtime = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.as_str())
                .with_timeout(c.timeout)
                .build()
                .map_err(|e| format!("OTLP exporter: {e}"))?
        };
        let stats = Arc::new(ExportStats::default());
        let exporter = Counted {
            inner: exporter,
            stats: stats.clone(),
        };
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(c.export_interval)
                    .with_max_queue_size(QUEUE_SPANS)
                    .build(),
            )
            .build();
        let batch = Bounded {
            inner: batch,
            stats: stats.clone(),
            capacity: QUEUE_SPANS as u64,
        };
        let resource = Resource::builder()
            .with_service_name(c.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                c.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("warden")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(
            endpoint = %endpoint,
            service_name = %c.service_name,
            sample_ratio = c.sample_ratio,
            "OTLP traces on"
        );
        Ok(Some(Traces {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            stats,
            runtime: Some(runtime),
        }))
    }

    /// Open a request's span, as a child of the client's `traceparent` when it sent a valid one.
    /// The name is provisional: `finish` names it once the model is known.
    pub fn begin(&self, headers: &http::HeaderMap, start: SystemTime) -> RequestSpan {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder("warden")
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .start_with_context(&self.tracer, &parent);
        RequestSpan { span }
    }

    /// `traceparent` (and `tracestate`) naming this request's span, for the upstream request.
    pub fn propagation_headers(&self, span: &RequestSpan) -> Vec<(&'static str, String)> {
        let cx = Context::new().with_remote_span_context(span.span.span_context().clone());
        let mut out = HeaderInjector(Vec::with_capacity(2));
        self.propagator.inject_context(&cx, &mut out);
        out.0
    }

    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Export what is queued (bounded by a few seconds) and stop the exporter.
    pub fn shutdown(&self) {
        match self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            Ok(()) => tracing::info!(
                exported = self.stats.exported.load(Ordering::Relaxed),
                failed = self.stats.failed.load(Ordering::Relaxed),
                dropped = self.stats.dropped.load(Ordering::Relaxed),
                "OTLP traces flushed"
            ),
            Err(e) => tracing::warn!(error = %e, "OTLP traces: shutdown did not complete"),
        }
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's task.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// === impl RequestSpan ===

impl RequestSpan {
    /// Name, attribute and end the span.
    pub fn finish(mut self, f: &SpanFacts<'_>) {
        let span = &mut self.span;
        if !span.is_recording() {
            // Not sampled: nothing is exported, so nothing is assembled.
            return;
        }
        let name = match (f.operation, f.requested_model) {
            (Some(op), Some(model)) => Cow::Owned(format!("{op} {model}")),
            (Some(op), None) => Cow::Borrowed(op),
            (None, _) => Cow::Owned(f.method.to_string()),
        };
        span.update_name(name);
        let mut attrs = Vec::with_capacity(24);
        if let Some(op) = f.operation {
            attrs.push(KeyValue::new("gen_ai.operation.name", op));
            attrs.push(KeyValue::new("gen_ai.provider.name", PROVIDER));
        }
        if let Some(m) = f.requested_model {
            attrs.push(KeyValue::new("gen_ai.request.model", m.to_string()));
        }
        if let Some(m) = f.served_model {
            attrs.push(KeyValue::new("gen_ai.response.model", m.to_string()));
        }
        if let Some(n) = f.input_tokens {
            attrs.push(KeyValue::new("gen_ai.usage.input_tokens", saturating(n)));
        }
        if let Some(n) = f.output_tokens {
            attrs.push(KeyValue::new("gen_ai.usage.output_tokens", saturating(n)));
        }
        if let Some((name, addr)) = f.upstream {
            attrs.push(KeyValue::new("server.address", addr.ip().to_string()));
            attrs.push(KeyValue::new("server.port", i64::from(addr.port())));
            attrs.push(KeyValue::new("warden.upstream", name.to_string()));
        }
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(f.status),
        ));
        let failed = f.status >= 400;
        let error_type = f
            .error
            .map(str::to_string)
            .or_else(|| failed.then(|| f.status.to_string()));
        if let Some(t) = &error_type {
            attrs.push(KeyValue::new("error.type", t.clone()));
        }
        attrs.push(KeyValue::new("warden.request_id", f.request_id.to_string()));
        if let Some(t) = f.tenant {
            attrs.push(KeyValue::new("warden.tenant", t.to_string()));
        }
        attrs.push(KeyValue::new("warden.route", f.route.to_string()));
        attrs.push(KeyValue::new("warden.stream", f.stream));
        if let Some(g) = f.guard {
            attrs.push(KeyValue::new("warden.guard.decision", g.decision.name()));
            attrs.push(KeyValue::new("warden.guard.score", i64::from(g.score)));
            let ids: Vec<StringValue> = g.rule_ids.iter().cloned().map(Into::into).collect();
            attrs.push(KeyValue::new(
                "warden.guard.rule_ids",
                Value::Array(Array::String(ids)),
            ));
            attrs.push(KeyValue::new(
                "warden.rules.version",
                g.pack_version.clone(),
            ));
            if let Some(p) = g.classifier_score {
                attrs.push(KeyValue::new("warden.guard.classifier_score", f64::from(p)));
            }
            if let Some((text, window)) = g.classifier_at {
                attrs.push(KeyValue::new("warden.guard.classifier_text", text as i64));
                attrs.push(KeyValue::new(
                    "warden.guard.classifier_window",
                    window as i64,
                ));
            }
            if let Some(blob) = g.classifier_blob {
                attrs.push(KeyValue::new("warden.guard.classifier_blob", blob as i64));
            }
            if let Some(reason) = g.degraded {
                attrs.push(KeyValue::new("warden.guard.degraded", reason));
            }
        }
        attrs.push(KeyValue::new(
            "warden.config_hash",
            f.config_hash.to_string(),
        ));
        if let Some(t) = f.ttft {
            attrs.push(KeyValue::new("warden.ttft_ms", t.as_secs_f64() * 1e3));
        }
        attrs.push(KeyValue::new(
            "warden.overhead_us",
            saturating(f.overhead.as_micros() as u64),
        ));
        span.set_attributes(attrs);
        if failed {
            span.set_status(Status::error(error_type.unwrap_or_default()));
        }
        span.end();
    }
}

fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// === impl ExportStats ===

impl ExportStats {
    fn record(&self, spans: usize, result: &OTelSdkResult) {
        let spans = spans as u64;
        match result {
            Ok(()) => {
                self.exported.fetch_add(spans, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("OTLP trace export recovered");
                }
            }
            Err(e) => {
                self.failed.fetch_add(spans, Ordering::Relaxed);
                // One warning when exports start failing, not one per batch.
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, spans, "OTLP trace export failed; spans are dropped until the collector answers");
                }
            }
        }
    }
}

/// In front of the SDK's batch processor: hands it a span only while fewer than `capacity` spans
/// are unresolved (queued or being exported), so its queue can never be full and every span it
/// would have dropped silently is counted here instead. The SDK exports with `block_on`, so
/// every span handed over is eventually counted as exported or failed.
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    stats: Arc<ExportStats>,
    capacity: u64,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let s = &self.stats;
        // Reserve a place first, so concurrent requests cannot overshoot together.
        let queued = s.queued.fetch_add(1, Ordering::Relaxed) + 1;
        let resolved = s.exported.load(Ordering::Relaxed) + s.failed.load(Ordering::Relaxed);
        if queued.saturating_sub(resolved) > self.capacity {
            s.queued.fetch_sub(1, Ordering::Relaxed);
            let n = s.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped_total = n,
                    "OTLP span queue full: the collector is slower than the traffic; spans dropped"
                );
            }
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it exports and what it fails to.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    stats: Arc<ExportStats>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.stats.record(n, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Collects what the propagator writes; only the W3C header names are kept.
struct HeaderInjector(Vec<(&'static str, String)>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        if !value.is_empty() {
            self.0.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Keeps exported spans in memory.
    #[derive(Debug, Clone, Default)]
    struct Capture(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Capture {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn traces_into(capture: &Capture, sampler: Sampler) -> Traces {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(capture.clone())
            .with_sampler(sampler)
            .build();
        let tracer = provider.tracer("test");
        Traces {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            stats: Arc::default(),
            runtime: None,
        }
    }

    #[test]
    fn spans_beyond_the_queue_bound_are_counted_as_dropped_not_handed_over() {
        let capture = Capture::default();
        let stats = Arc::new(ExportStats::default());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: opentelemetry_sdk::trace::SimpleSpanProcessor::new(capture.clone()),
                stats: stats.clone(),
                capacity: 2,
            })
            .build();
        let tracer = provider.tracer("test");
        let t = Traces {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            stats: stats.clone(),
            runtime: None,
        };
        let end = |t: &Traces| {
            t.begin(&http::HeaderMap::new(), SystemTime::now())
                .finish(&facts(None, 200));
        };
        // `Capture` is not `Counted`: nothing resolves, so two spans fill the bound.
        for _ in 0..5 {
            end(&t);
        }
        assert_eq!(capture.0.lock().unwrap().len(), 2);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
        // Once the exporter reports them, there is room again.
        stats.exported.fetch_add(2, Ordering::Relaxed);
        end(&t);
        assert_eq!(capture.0.lock().unwrap().len(), 3);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
    }

    fn facts<'a>(guard: Option<&'a GuardOutcome>, status: u16) -> SpanFacts<'a> {
        SpanFacts {
            operation: Some("chat"),
            method: "POST",
            route: "chat_completions",
            request_id: "req-1",
            tenant: Some("acme"),
            requested_model: Some("m"),
            served_model: (status == 200).then_some("m"),
            upstream: (status == 200).then(|| ("w", "127.0.0.1:8081".parse().unwrap())),
            stream: false,
            status,
            error: (status == 400).then_some("prompt_blocked"),
            input_tokens: (status == 200).then_some(12),
            output_tokens: (status == 200).then_some(34),
            guard,
            config_hash: "b3:0123456789abcdef",
            ttft: (status == 200).then(|| Duration::from_millis(7)),
            overhead: Duration::from_micros(250),
        }
    }

    fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_served_request_carries_gen_ai_usage_and_an_unset_status() {
        let capture = Capture::default();
        let t = traces_into(&capture, Sampler::AlwaysOn);
        let guard = GuardOutcome {
            decision: warden_guards::Decision::Allow,
            score: 0,
            rule_ids: Vec::new(),
            pack_version: "packs-1".into(),
            truncated: false,
            oversize: false,
            scanned_bytes: 0,
            work: 0,
            elapsed: Duration::ZERO,
            classifier_score: None,
            classifier_at: None,
            classifier_blob: None,
            classifier_elapsed: Duration::ZERO,
            degraded: None,
            held: None,
        };
        t.begin(&http::HeaderMap::new(), SystemTime::now())
            .finish(&facts(Some(&guard), 200));
        let spans = capture.0.lock().unwrap();
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.name, "chat m");
        assert_eq!(s.span_kind, SpanKind::Client);
        assert_eq!(s.status, Status::Unset);
        for (key, want) in [
            ("gen_ai.operation.name", Value::from("chat")),
            ("gen_ai.provider.name", Value::from("openai")),
            ("gen_ai.request.model", Value::from("m")),
            ("gen_ai.response.model", Value::from("m")),
            ("gen_ai.usage.input_tokens", Value::I64(12)),
            ("gen_ai.usage.output_tokens", Value::I64(34)),
            ("http.response.status_code", Value::I64(200)),
            ("server.address", Value::from("127.0.0.1")),
            ("server.port", Value::I64(8081)),
            ("warden.tenant", Value::from("acme")),
            ("warden.guard.decision", Value::from("allow")),
            ("warden.rules.version", Value::from("packs-1")),
            ("warden.ttft_ms", Value::F64(7.0)),
            ("warden.overhead_us", Value::I64(250)),
        ] {
            assert_eq!(attr(s, key), Some(&want), "{key}");
        }
        assert!(attr(s, "error.type").is_none());
    }

    #[test]
    fn a_blocked_request_is_an_error_with_its_rule_ids() {
        let capture = Capture::default();
        let t = traces_into(&capture, Sampler::AlwaysOn);
        let guard = GuardOutcome {
            decision: warden_guards::Decision::Block,
            score: 10,
            rule_ids: vec!["pi-001".into(), "pi-007".into()],
            pack_version: "packs-1".into(),
            truncated: false,
            oversize: false,
            scanned_bytes: 0,
            work: 0,
            elapsed: Duration::ZERO,
            classifier_score: None,
            classifier_at: None,
            classifier_blob: None,
            classifier_elapsed: Duration::ZERO,
            degraded: None,
            held: None,
        };
        t.begin(&http::HeaderMap::new(), SystemTime::now())
            .finish(&facts(Some(&guard), 400));
        let spans = capture.0.lock().unwrap();
        let s = &spans[0];
        assert_eq!(s.status, Status::error("prompt_blocked"));
        assert_eq!(attr(s, "error.type"), Some(&Value::from("prompt_blocked")));
        assert_eq!(
            attr(s, "warden.guard.rule_ids"),
            Some(&Value::Array(Array::String(vec![
                "pi-001".into(),
                "pi-007".into()
            ])))
        );
        assert_eq!(attr(s, "warden.guard.score"), Some(&Value::I64(10)));
        assert!(attr(s, "gen_ai.response.model").is_none());
        assert!(attr(s, "gen_ai.usage.input_tokens").is_none());
    }

    #[test]
    fn an_unsampled_request_exports_nothing() {
        let capture = Capture::default();
        let t = traces_into(&capture, Sampler::AlwaysOff);
        let span = t.begin(&http::HeaderMap::new(), SystemTime::now());
        // The upstream is still told, with the sampled flag off.
        let out = t.propagation_headers(&span);
        assert!(out[0].1.ends_with("-00"), "{out:?}");
        span.finish(&facts(None, 200));
        assert!(capture.0.lock().unwrap().is_empty());
    }

    /// The SDK's default sampling (parent-based, else on), spans captured and dropped.
    fn traces() -> Traces {
        traces_into(
            &Capture::default(),
            Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        )
    }

    #[test]
    fn off_without_an_endpoint() {
        assert!(Traces::start(&TracingConfig::default()).unwrap().is_none());
    }

    #[test]
    fn a_client_traceparent_is_the_parent_and_the_upstream_gets_ours() {
        let t = traces();
        let mut headers = http::HeaderMap::new();
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        headers.insert(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        let span = t.begin(&headers, SystemTime::now());
        let out = t.propagation_headers(&span);
        assert_eq!(out.len(), 1, "{out:?}");
        let (name, value) = &out[0];
        assert_eq!(*name, "traceparent");
        assert!(value.starts_with(&format!("00-{trace_id}-")), "{value}");
        assert!(
            !value.contains("00f067aa0ba902b7"),
            "a new span id: {value}"
        );
        assert!(value.ends_with("-01"), "{value}");
    }

    #[test]
    fn without_a_traceparent_a_new_trace_starts() {
        let t = traces();
        let a = t.begin(&http::HeaderMap::new(), SystemTime::now());
        let b = t.begin(&http::HeaderMap::new(), SystemTime::now());
        let (pa, pb) = (t.propagation_headers(&a), t.propagation_headers(&b));
        assert_eq!(pa.len(), 1);
        assert_ne!(pa[0].1[3..35], pb[0].1[3..35], "trace ids differ");
    }
}
