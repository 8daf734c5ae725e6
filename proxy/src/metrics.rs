//! The proxy's Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Label values come only from the config (tenant, model and upstream names) or from small fixed
//! sets (endpoint, status), never from request text, so a client cannot grow the label space.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Histogram buckets, each set covering the whole range its values can take, so nothing a
/// request can produce lands in `+Inf` only. Durations are bounded by the config's timeouts
/// (at most 3,600,000 ms each); token counts by `server.max_body_bytes` (at most 64 MiB, and a
/// token is at least one byte).
pub mod buckets {
    /// Longest a timeout can be configured, in seconds: the top of every duration range.
    pub const MAX_TIMEOUT_S: f64 = 3600.0;

    /// Request and upstream durations (total, time to first byte or token): 1 ms to the
    /// longest timeout.
    pub const LATENCY: &[f64] = &[
        0.001,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
        60.0,
        120.0,
        300.0,
        600.0,
        1800.0,
        MAX_TIMEOUT_S,
    ];
    /// Warden's own time: microseconds on the fast path, up to a body trickled in for
    /// `body_read_timeout_ms`.
    pub const OVERHEAD: &[f64] = &[
        0.000_025,
        0.000_05,
        0.000_1,
        0.000_25,
        0.000_5,
        0.001,
        0.002_5,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        1.0,
        2.5,
        10.0,
        30.0,
        120.0,
        MAX_TIMEOUT_S,
    ];
    /// The input guard: microseconds for a short prompt, fine steps around the 1–2 ms a 64 KiB
    /// prompt takes, up to a budget-sized scan on a starved CPU.
    pub const GUARD: &[f64] = &[
        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.001_5,
        0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    /// Time per output token: sub-millisecond on a GPU, up to a read timeout between tokens.
    pub const PER_TOKEN: &[f64] = &[
        0.000_5,
        0.001,
        0.002_5,
        0.005,
        0.01,
        0.025,
        0.05,
        0.075,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
        60.0,
        300.0,
        MAX_TIMEOUT_S,
    ];
    /// Tokens per request and type: powers of 4 up to 64 Mi (the largest body allowed).
    pub const TOKENS: &[f64] = &[
        1.0,
        4.0,
        16.0,
        64.0,
        256.0,
        1024.0,
        4096.0,
        16384.0,
        65536.0,
        262_144.0,
        1_048_576.0,
        4_194_304.0,
        16_777_216.0,
        67_108_864.0,
    ];
}

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
    pub connections_open: IntGauge,
    pub connections_rejected: IntCounterVec,
    pub header_timeouts: IntCounter,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_ejections: IntCounterVec,
    pub upstream_ejected: IntGaugeVec,
    pub guard_decisions: IntCounterVec,
    pub guard_rule_hits: IntCounterVec,
    pub output_decisions: IntCounterVec,
    pub output_rule_hits: IntCounterVec,
    pub output_masks: IntCounterVec,
    pub output_hold_bytes: IntGauge,
    pub output_leaks: IntCounterVec,
    pub output_paraphrase_incomplete: IntCounterVec,
    pub detections: IntCounterVec,
    pub grounded_replies: IntCounterVec,
    pub hallucinations: IntCounterVec,
    pub runbook_notifications: IntCounterVec,
    pub guard_encoder_loaded: IntGauge,
    pub guard_classifier_loaded: IntGauge,
    pub guard_classifier_seconds: HistogramVec,
    pub guard_classifier_failures: IntCounterVec,
    pub guard_classifier_hold: HistogramVec,
    pub switches: IntGaugeVec,
    pub switchboard_version: IntGauge,
    pub switchboard_redis_connected: IntGauge,
    pub fleet_quota_fallbacks: IntCounter,
    pub switched_off: IntCounterVec,
    pub refusals: IntCounterVec,
    pub guard_seconds: HistogramVec,
    pub guard_truncated: IntCounterVec,
    pub guard_oversize: IntCounterVec,
    pub guard_scanned_bytes: IntCounterVec,
    pub guard_work: IntCounterVec,
    pub guard_pool_jobs: IntGauge,
    pub guard_classifier_queue: IntGauge,
    pub guard_pool_workers: IntGauge,
    pub guard_pool_rejected: IntCounter,
    pub guard_shadow_disagreements: IntCounterVec,
    pub rule_pack_info: IntGaugeVec,
    pub rule_reloads: IntCounterVec,
    /// OpenTelemetry GenAI semantic-convention metrics, Prometheus-named.
    pub gen_ai_ttft: HistogramVec,
    pub gen_ai_tpot: HistogramVec,
    pub gen_ai_token_usage: HistogramVec,
    pub gen_ai_request_duration: HistogramVec,
    pub telemetry_queue_depth: IntGauge,
    pub telemetry_held_bytes: IntGauge,
    pub telemetry_oldest_held: prometheus::Gauge,
    pub telemetry_spools_pending: IntGauge,
    pub telemetry_healthy: IntGauge,
    /// Totals mirrored from the telemetry pipeline's own counters on every scrape.
    pub telemetry_events: IntCounterVec,
    pub telemetry_write_errors: IntCounter,
    pub telemetry_unrecorded: IntCounterVec,
    pub telemetry_bytes_written: IntCounter,
    pub telemetry_files_written: IntCounter,
    /// OTLP spans by outcome, mirrored from the exporter's counters on every scrape.
    pub trace_spans: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new("warden_requests_total", "Requests answered, by tenant, model, endpoint and HTTP status"),
                &["tenant", "model", "endpoint", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new("warden_request_duration_seconds", "Total time from request start to the last byte sent")
                    .buckets(buckets::LATENCY.to_vec()),
                &["endpoint"],
            )?,
            overhead: HistogramVec::new(
                HistogramOpts::new(
                    "warden_overhead_seconds",
                    "Time spent in Warden itself: request start until the upstream request is sent, plus last upstream byte until the response is finished (excludes waiting on the upstream)",
                )
                .buckets(buckets::OVERHEAD.to_vec()),
                &["endpoint"],
            )?,
            time_to_first_byte: HistogramVec::new(
                HistogramOpts::new("warden_upstream_time_to_first_byte_seconds", "Upstream request sent until the first response body byte (time to first token for streams)")
                    .buckets(buckets::LATENCY.to_vec()),
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
            connections_open: IntGauge::new("warden_connections_open", "Client connections open on the proxy listener")?,
            connections_rejected: IntCounterVec::new(
                Opts::new("warden_connections_rejected_total", "Client connections closed at once because a cap was reached (reason: max_connections, max_connections_per_ip)"),
                &["reason"],
            )?,
            header_timeouts: IntCounter::new("warden_header_timeouts_total", "Client connections closed because no complete request head arrived within server.header_timeout_ms (idle keep-alive included)")?,
            upstream_healthy: IntGaugeVec::new(
                Opts::new("warden_upstream_healthy", "1 when the upstream's last health check succeeded"),
                &["upstream"],
            )?,
            upstream_ejections: IntCounterVec::new(
                Opts::new("warden_upstream_ejections_total", "Times an upstream was ejected by passive outlier detection (failures in a row)"),
                &["upstream"],
            )?,
            upstream_ejected: IntGaugeVec::new(
                Opts::new("warden_upstream_ejected", "1 while an upstream is ejected (no requests but its one probe) after repeated failures"),
                &["upstream"],
            )?,
            guard_decisions: IntCounterVec::new(
                Opts::new("warden_guard_decisions_total", "Input-guard decisions, by tenant, decision (allow/flag/block/tools) and rule-pack version"),
                &["tenant", "decision", "pack_version"],
            )?,
            guard_rule_hits: IntCounterVec::new(
                Opts::new("warden_guard_rule_hits_total", "Requests each rule matched, by rule id and action; rule ids come from the loaded packs"),
                &["rule", "action"],
            )?,
            output_decisions: IntCounterVec::new(
                Opts::new("warden_output_decisions_total", "Output-guard decisions on replies, by tenant, decision (allow/mask/block) and mode (enforce/monitor)"),
                &["tenant", "decision", "mode"],
            )?,
            output_rule_hits: IntCounterVec::new(
                Opts::new("warden_output_rule_hits_total", "Replies each output rule matched, by rule id"),
                &["rule"],
            )?,
            output_masks: IntCounterVec::new(
                Opts::new("warden_output_masks_total", "Matches the output guard masked in replies, by tenant"),
                &["tenant"],
            )?,
            output_hold_bytes: IntGauge::new(
                "warden_output_hold_bytes",
                "The most bytes of a reply the output guard holds back at once: the longest match of any output rule in the loaded packs",
            )?,
            output_leaks: IntCounterVec::new(
                Opts::new("warden_output_leaks_total", "Replies that revealed the system prompt, a protected string or the canary, by tenant and kind (canary/verbatim/near_verbatim/encoded/paraphrase)"),
                &["tenant", "kind"],
            )?,
            output_paraphrase_incomplete: IntCounterVec::new(
                Opts::new("warden_output_paraphrase_incomplete_total", "Replies (or system prompts) the paraphrase check did not read whole, by reason (encoder_error: the encoder failed; clause_limit: past the clauses one reply may embed)"),
                &["reason"],
            )?,
            detections: IntCounterVec::new(
                Opts::new("warden_detections_total", "Detector alarms, by detector and scope kind (tenant/model/route)"),
                &["detector", "scope"],
            )?,
            grounded_replies: IntCounterVec::new(
                Opts::new("warden_grounded_replies_total", "Replies scored against their request's documents and tool output (the hallucination signal), by tenant and model"),
                &["tenant", "model"],
            )?,
            hallucinations: IntCounterVec::new(
                Opts::new("warden_hallucinations_total", "Of those, replies flagged as unsupported ([detectors] hallucination_threshold), by tenant and model"),
                &["tenant", "model"],
            )?,
            runbook_notifications: IntCounterVec::new(
                Opts::new("warden_runbook_notifications_total", "Runbook webhook notifications, by result (sent/failed)"),
                &["result"],
            )?,
            guard_encoder_loaded: IntGauge::new(
                "warden_guard_encoder_loaded",
                "1 when the sentence encoder of the output guard's paraphrase check is loaded, 0 when that check is off",
            )?,
            guard_classifier_loaded: IntGauge::new(
                "warden_guard_classifier_loaded",
                "1 when the input guard's prompt-injection classifier is loaded, 0 when that layer is off",
            )?,
            guard_classifier_seconds: HistogramVec::new(
                HistogramOpts::new("warden_guard_classifier_seconds", "Time the classifier layer took per request it ran on (all its texts and windows), by tenant")
                    .buckets(buckets::GUARD.to_vec()),
                &["tenant"],
            )?,
            guard_classifier_hold: HistogramVec::new(
                HistogramOpts::new("warden_guard_classifier_hold_seconds", "classifier_mode = \"overlap\": how long the upstream's response was held for the classifier's verdict, by tenant")
                    .buckets(buckets::GUARD.to_vec()),
                &["tenant"],
            )?,
            guard_classifier_failures: IntCounterVec::new(
                Opts::new("warden_guard_classifier_failures_total", "Requests the classifier could not score, by tenant, reason (deadline/error) and what the tenant's on_error did (fail_open/fail_closed)"),
                &["tenant", "reason", "on_error"],
            )?,
            switches: IntGaugeVec::new(
                Opts::new("warden_switches", "Kill switches in force, by state (off/degraded)"),
                &["state"],
            )?,
            switchboard_version: IntGauge::new(
                "warden_switchboard_version",
                "Version of the switchboard this sidecar holds (the fleet's, when shared through Redis)",
            )?,
            switchboard_redis_connected: IntGauge::new(
                "warden_switchboard_redis_connected",
                "1 while the fleet's Redis answers; 0 while this sidecar keeps the last board it saw (absent from the value without [switchboard] redis_url: then always 0)",
            )?,
            fleet_quota_fallbacks: IntCounter::new(
                "warden_fleet_quota_fallbacks_total",
                "Requests whose quota this sidecar checked on its own buckets because the fleet's Redis did not answer",
            )?,
            switched_off: IntCounterVec::new(
                Opts::new("warden_switched_off_total", "Requests refused or degraded by a kill switch, by scope kind and effect"),
                &["kind", "effect"],
            )?,
            refusals: IntCounterVec::new(
                Opts::new("warden_refusals_total", "Replies that open as a refusal, by tenant and model"),
                &["tenant", "model"],
            )?,
            guard_seconds: HistogramVec::new(
                HistogramOpts::new("warden_guard_seconds", "Time the input guard took per request (normalise, scan, score, mask)")
                    .buckets(buckets::GUARD.to_vec()),
                &["endpoint"],
            )?,
            guard_truncated: IntCounterVec::new(
                Opts::new("warden_guard_truncated_total", "Requests whose text the input guard did not scan whole (over the tenant's scan budget: head and tail only; or past the work cap)"),
                &["tenant"],
            )?,
            guard_oversize: IntCounterVec::new(
                Opts::new("warden_guard_oversize_total", "Requests over the tenant's guard budget (bytes or work), by the on_oversize policy that applied"),
                &["tenant", "on_oversize"],
            )?,
            guard_scanned_bytes: IntCounterVec::new(
                Opts::new("warden_guard_scanned_bytes_total", "Text bytes the input guard scanned, by tenant, whatever the verdict"),
                &["tenant"],
            )?,
            guard_work: IntCounterVec::new(
                Opts::new("warden_guard_work_total", "Engine work the input guard spent (bytes stepped by its automata or handed to exact regexes), by tenant"),
                &["tenant"],
            )?,
            guard_pool_jobs: IntGauge::new("warden_guard_pool_jobs", "Inspections queued or running on the guard pool")?,
            guard_classifier_queue: IntGauge::new("warden_guard_classifier_queue_windows", "Windows waiting for the classifier's threads (all requests), just after the last request's were queued (its own included)")?,
            guard_pool_workers: IntGauge::new("warden_guard_pool_workers", "Threads of the guard pool")?,
            guard_pool_rejected: IntCounter::new("warden_guard_pool_rejected_total", "Requests refused with 503 guard_overloaded because the guard pool's queue was full")?,
            guard_shadow_disagreements: IntCounterVec::new(
                Opts::new("warden_guard_shadow_disagreements_total", "Requests where the shadow pack would have decided differently, by active and shadow decision"),
                &["tenant", "active", "shadow"],
            )?,
            rule_pack_info: IntGaugeVec::new(
                Opts::new("warden_rule_pack_info", "1 for each loaded rule-pack version (role: active or shadow)"),
                &["role", "version", "source"],
            )?,
            rule_reloads: IntCounterVec::new(
                Opts::new("warden_rule_reloads_total", "Rule-pack reloads, by result (ok/failed)"),
                &["result"],
            )?,
            gen_ai_ttft: HistogramVec::new(
                HistogramOpts::new("gen_ai_server_time_to_first_token_seconds", "gen_ai.server.time_to_first_token: upstream request sent until the first token (streams) or the response body (non-streaming)")
                    .buckets(buckets::LATENCY.to_vec()),
                &["gen_ai_operation_name", "gen_ai_request_model"],
            )?,
            gen_ai_tpot: HistogramVec::new(
                HistogramOpts::new("gen_ai_server_time_per_output_token_seconds", "gen_ai.server.time_per_output_token: (last token - first token) / (output tokens - 1)")
                    .buckets(buckets::PER_TOKEN.to_vec()),
                &["gen_ai_operation_name", "gen_ai_request_model"],
            )?,
            gen_ai_token_usage: HistogramVec::new(
                HistogramOpts::new("gen_ai_client_token_usage", "gen_ai.client.token.usage: tokens per request, by type (input/output), as the upstream reported them")
                    .buckets(buckets::TOKENS.to_vec()),
                &["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
            )?,
            gen_ai_request_duration: HistogramVec::new(
                HistogramOpts::new("gen_ai_server_request_duration_seconds", "gen_ai.server.request.duration: request start until the last byte, for requests forwarded to a model")
                    .buckets(buckets::LATENCY.to_vec()),
                &["gen_ai_operation_name", "gen_ai_request_model"],
            )?,
            telemetry_queue_depth: IntGauge::new("warden_telemetry_queue_depth", "Audit events accepted and not yet durable: in the queue plus held in the writer's memory (grows while the lake cannot be written)")?,
            telemetry_held_bytes: IntGauge::new("warden_telemetry_held_bytes", "Memory of the audit events the writer holds while it cannot write them")?,
            telemetry_oldest_held: prometheus::Gauge::new("warden_telemetry_oldest_held_seconds", "Age of the oldest audit event accepted and not yet durable (0 when none is held)")?,
            telemetry_spools_pending: IntGauge::new("warden_telemetry_spools_pending", "Sealed spool files waiting for conversion to Parquet")?,
            telemetry_healthy: IntGauge::new("warden_telemetry_healthy", "1 while the audit lake is being written, 0 while writes fail (events are held, bounded, and retried)")?,
            telemetry_events: IntCounterVec::new(
                Opts::new("warden_telemetry_events_total", "Audit events by outcome: recorded (queued), synced (fsynced to the spool), written (in Parquet), dropped (queue full, closed, or failure backlog full)"),
                &["outcome"],
            )?,
            telemetry_unrecorded: IntCounterVec::new(
                Opts::new("warden_telemetry_unrecorded_total", "Requests given no audit-lake row by policy (reason unauthenticated: refused before a tenant was known, past [telemetry] unauthenticated_rows_per_s or with unauthenticated = \"counted\")"),
                &["reason"],
            )?,
            telemetry_write_errors: IntCounter::new("warden_telemetry_write_errors_total", "Spool write, fsync and Parquet conversion errors")?,
            telemetry_bytes_written: IntCounter::new("warden_telemetry_bytes_written_total", "Bytes of Parquet files put in place")?,
            telemetry_files_written: IntCounter::new("warden_telemetry_files_written_total", "Parquet files put in place")?,
            trace_spans: IntCounterVec::new(
                Opts::new("warden_trace_spans_total", "Spans of the OTLP exporter, by outcome (exported, failed, dropped: queue full); only with [tracing] on"),
                &["outcome"],
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
        m.registry.register(Box::new(m.connections_open.clone()))?;
        m.registry
            .register(Box::new(m.connections_rejected.clone()))?;
        m.registry.register(Box::new(m.header_timeouts.clone()))?;
        m.registry.register(Box::new(m.upstream_healthy.clone()))?;
        m.registry
            .register(Box::new(m.upstream_ejections.clone()))?;
        m.registry.register(Box::new(m.upstream_ejected.clone()))?;
        m.registry.register(Box::new(m.guard_decisions.clone()))?;
        m.registry.register(Box::new(m.guard_rule_hits.clone()))?;
        m.registry.register(Box::new(m.output_decisions.clone()))?;
        m.registry.register(Box::new(m.output_rule_hits.clone()))?;
        m.registry.register(Box::new(m.output_masks.clone()))?;
        m.registry.register(Box::new(m.output_hold_bytes.clone()))?;
        m.registry.register(Box::new(m.output_leaks.clone()))?;
        m.registry
            .register(Box::new(m.output_paraphrase_incomplete.clone()))?;
        m.registry
            .register(Box::new(m.guard_encoder_loaded.clone()))?;
        m.registry
            .register(Box::new(m.guard_classifier_loaded.clone()))?;
        m.registry
            .register(Box::new(m.guard_classifier_seconds.clone()))?;
        m.registry
            .register(Box::new(m.guard_classifier_failures.clone()))?;
        m.registry
            .register(Box::new(m.guard_classifier_hold.clone()))?;
        m.registry.register(Box::new(m.detections.clone()))?;
        m.registry.register(Box::new(m.grounded_replies.clone()))?;
        m.registry.register(Box::new(m.hallucinations.clone()))?;
        m.registry
            .register(Box::new(m.runbook_notifications.clone()))?;
        m.registry.register(Box::new(m.switches.clone()))?;
        m.registry
            .register(Box::new(m.switchboard_version.clone()))?;
        m.registry
            .register(Box::new(m.switchboard_redis_connected.clone()))?;
        m.registry
            .register(Box::new(m.fleet_quota_fallbacks.clone()))?;
        m.registry.register(Box::new(m.switched_off.clone()))?;
        m.registry.register(Box::new(m.refusals.clone()))?;
        m.registry.register(Box::new(m.guard_seconds.clone()))?;
        m.registry.register(Box::new(m.guard_truncated.clone()))?;
        m.registry.register(Box::new(m.guard_oversize.clone()))?;
        m.registry
            .register(Box::new(m.guard_scanned_bytes.clone()))?;
        m.registry.register(Box::new(m.guard_work.clone()))?;
        m.registry.register(Box::new(m.guard_pool_jobs.clone()))?;
        m.registry
            .register(Box::new(m.guard_classifier_queue.clone()))?;
        m.registry
            .register(Box::new(m.guard_pool_workers.clone()))?;
        m.registry
            .register(Box::new(m.guard_pool_rejected.clone()))?;
        m.registry
            .register(Box::new(m.guard_shadow_disagreements.clone()))?;
        m.registry.register(Box::new(m.rule_pack_info.clone()))?;
        m.registry.register(Box::new(m.rule_reloads.clone()))?;
        m.registry.register(Box::new(m.gen_ai_ttft.clone()))?;
        m.registry.register(Box::new(m.gen_ai_tpot.clone()))?;
        m.registry
            .register(Box::new(m.gen_ai_token_usage.clone()))?;
        m.registry
            .register(Box::new(m.gen_ai_request_duration.clone()))?;
        m.registry
            .register(Box::new(m.telemetry_queue_depth.clone()))?;
        m.registry
            .register(Box::new(m.telemetry_held_bytes.clone()))?;
        m.registry
            .register(Box::new(m.telemetry_oldest_held.clone()))?;
        m.registry
            .register(Box::new(m.telemetry_spools_pending.clone()))?;
        m.registry.register(Box::new(m.telemetry_healthy.clone()))?;
        m.registry.register(Box::new(m.telemetry_events.clone()))?;
        m.registry
            .register(Box::new(m.telemetry_write_errors.clone()))?;
        m.registry
            .register(Box::new(m.telemetry_unrecorded.clone()))?;
        m.registry
            .register(Box::new(m.telemetry_bytes_written.clone()))?;
        m.registry
            .register(Box::new(m.telemetry_files_written.clone()))?;
        m.registry.register(Box::new(m.trace_spans.clone()))?;
        Ok(m)
    }

    /// Mirror the telemetry pipeline's counters (called before each scrape).
    pub fn observe_telemetry(&self, stats: &warden_telemetry::Stats, healthy: bool) {
        let advance = |c: &IntCounter, total: u64| {
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        };
        for (outcome, total) in [
            ("recorded", stats.events_recorded),
            ("synced", stats.events_synced),
            ("written", stats.events_written),
            ("dropped", stats.events_dropped()),
        ] {
            advance(&self.telemetry_events.with_label_values(&[outcome]), total);
        }
        advance(&self.telemetry_write_errors, stats.write_errors);
        advance(&self.telemetry_bytes_written, stats.bytes_written);
        advance(&self.telemetry_files_written, stats.files_written);
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.telemetry_queue_depth.set(gauge(
            stats.queue_depth.saturating_add(stats.events_buffered),
        ));
        self.telemetry_held_bytes
            .set(gauge(stats.events_buffered_bytes));
        self.telemetry_oldest_held
            .set(stats.oldest_buffered_age.as_secs_f64());
        self.telemetry_spools_pending
            .set(gauge(stats.spools_pending));
        self.telemetry_healthy.set(i64::from(healthy));
    }

    /// Mirror the OTLP exporter's counters (called before each scrape).
    /// `warden_switches{state}`, the version and the Redis link from the switchboard.
    pub fn observe_switches(&self, board: &crate::switchboard::Switchboard) {
        let snap = board.snapshot();
        self.switchboard_version.set(snap.version as i64);
        self.switchboard_redis_connected
            .set(i64::from(board.fleet_connected() == Some(true)));
        let live = snap.live(std::time::SystemTime::now());
        for state in ["off", "degraded"] {
            let n = live.iter().filter(|s| s.state.name() == state).count();
            self.switches.with_label_values(&[state]).set(n as i64);
        }
    }

    pub fn observe_traces(&self, stats: &crate::traces::ExportStats) {
        use std::sync::atomic::Ordering;
        for (outcome, total) in [
            ("exported", stats.exported.load(Ordering::Relaxed)),
            ("failed", stats.failed.load(Ordering::Relaxed)),
            ("dropped", stats.dropped.load(Ordering::Relaxed)),
        ] {
            let c = self.trace_spans.with_label_values(&[outcome]);
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every histogram is listed here with the largest value it can record; a new histogram
    /// fails this test until its range is reviewed (issue 16: `warden_guard_seconds` stopped at
    /// 0.1 s and 44 of 151 observations of a probe fell in `+Inf`).
    #[test]
    fn every_histogram_covers_the_range_of_its_values() {
        let max_tokens = (64 * 1024 * 1024) as f64;
        let ranges: &[(&str, f64)] = &[
            ("warden_request_duration_seconds", buckets::MAX_TIMEOUT_S),
            ("warden_overhead_seconds", buckets::MAX_TIMEOUT_S),
            (
                "warden_upstream_time_to_first_byte_seconds",
                buckets::MAX_TIMEOUT_S,
            ),
            ("warden_guard_seconds", 60.0),
            ("warden_guard_classifier_seconds", 60.0),
            ("warden_guard_classifier_hold_seconds", 60.0),
            (
                "gen_ai_server_time_to_first_token_seconds",
                buckets::MAX_TIMEOUT_S,
            ),
            (
                "gen_ai_server_time_per_output_token_seconds",
                buckets::MAX_TIMEOUT_S,
            ),
            ("gen_ai_client_token_usage", max_tokens),
            (
                "gen_ai_server_request_duration_seconds",
                buckets::MAX_TIMEOUT_S,
            ),
        ];
        let m = Metrics::new().unwrap();
        for h in [
            &m.request_duration,
            &m.overhead,
            &m.guard_seconds,
            &m.guard_classifier_seconds,
            &m.guard_classifier_hold,
        ] {
            h.with_label_values(&["x"]).observe(0.0);
        }
        m.time_to_first_byte
            .with_label_values(&["x", "y"])
            .observe(0.0);
        m.gen_ai_ttft.with_label_values(&["x", "y"]).observe(0.0);
        m.gen_ai_tpot.with_label_values(&["x", "y"]).observe(0.0);
        m.gen_ai_request_duration
            .with_label_values(&["x", "y"])
            .observe(0.0);
        m.gen_ai_token_usage
            .with_label_values(&["x", "y", "z"])
            .observe(0.0);
        let mut seen = 0;
        for family in m.registry.gather() {
            if family.get_field_type() != prometheus::proto::MetricType::HISTOGRAM {
                continue;
            }
            let name = family.name();
            let Some((_, max)) = ranges.iter().find(|(n, _)| *n == name) else {
                panic!("{name}: a new histogram; list the range of its values here");
            };
            seen += 1;
            for metric in family.get_metric() {
                let top = metric
                    .get_histogram()
                    .get_bucket()
                    .iter()
                    .map(|b| b.upper_bound())
                    .filter(|b| b.is_finite())
                    .fold(0.0, f64::max);
                assert!(top >= *max, "{name}: largest bucket {top} < {max}");
            }
        }
        assert_eq!(seen, ranges.len(), "every listed histogram was observed");
    }
}
