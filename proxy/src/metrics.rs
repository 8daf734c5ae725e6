//! The proxy's Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Label values come only from the config (tenant, model and upstream names) or from small fixed
//! sets (endpoint, status), never from request text, so a client cannot grow the label space.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the proxy records.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub overhead: HistogramVec,
    pub time_to_first_byte: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub stream_errors: IntCounterVec,
    pub tokens: IntCounterVec,
    pub inflight: IntGauge,
    pub upstream_healthy: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        // Sub-millisecond resolution: the proxy's own overhead is measured in microseconds.
        let overhead_buckets = vec![
            0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
            0.05, 0.1,
        ];
        let latency_buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
        ];
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new("warden_requests_total", "Requests answered, by tenant, model, endpoint and HTTP status"),
                &["tenant", "model", "endpoint", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new("warden_request_duration_seconds", "Total time from request start to the last byte sent")
                    .buckets(latency_buckets.clone()),
                &["endpoint"],
            )?,
            overhead: HistogramVec::new(
                HistogramOpts::new(
                    "warden_overhead_seconds",
                    "Time spent in Warden itself: request start until the upstream request is sent, plus last upstream byte until the response is finished (excludes waiting on the upstream)",
                )
                .buckets(overhead_buckets),
                &["endpoint"],
            )?,
            time_to_first_byte: HistogramVec::new(
                HistogramOpts::new("warden_upstream_time_to_first_byte_seconds", "Upstream request sent until the first response body byte (time to first token for streams)")
                    .buckets(latency_buckets),
                &["upstream", "stream"],
            )?,
            upstream_errors: IntCounterVec::new(
                Opts::new("warden_upstream_errors_total", "Failed upstream exchanges, by upstream and kind"),
                &["upstream", "kind"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new("warden_rate_limited_total", "Requests refused by a tenant quota"),
                &["tenant", "kind"],
            )?,
            stream_errors: IntCounterVec::new(
                Opts::new("warden_stream_errors_total", "Streams that ended with an error event sent by Warden"),
                &["kind"],
            )?,
            tokens: IntCounterVec::new(
                Opts::new("warden_tokens_total", "Tokens reported by upstreams, by tenant and type (input/output)"),
                &["tenant", "type"],
            )?,
            inflight: IntGauge::new("warden_inflight_requests", "Requests being processed")?,
            upstream_healthy: IntGaugeVec::new(
                Opts::new("warden_upstream_healthy", "1 when the upstream's last health check succeeded"),
                &["upstream"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.request_duration.clone()))?;
        m.registry.register(Box::new(m.overhead.clone()))?;
        m.registry
            .register(Box::new(m.time_to_first_byte.clone()))?;
        m.registry.register(Box::new(m.upstream_errors.clone()))?;
        m.registry.register(Box::new(m.rate_limited.clone()))?;
        m.registry.register(Box::new(m.stream_errors.clone()))?;
        m.registry.register(Box::new(m.tokens.clone()))?;
        m.registry.register(Box::new(m.inflight.clone()))?;
        m.registry.register(Box::new(m.upstream_healthy.clone()))?;
        Ok(m)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        buf
    }
}
