//! The worker's Prometheus metrics (`GET /metrics`).
//!
//! Besides `warden_worker_*` names, the queue and KV gauges are also exported under the names
//! vLLM uses (`vllm:num_requests_waiting`, `vllm:num_requests_running`,
//! `vllm:gpu_cache_usage_perc`), so the proxy's admission control reads this worker and any
//! vLLM-style worker the same way.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder,
};

use crate::engine::EngineStats;

/// Environment variable in which a supervisor tells a restarted worker how many times it has
/// restarted it (exported as `warden_worker_restarts`).
pub const RESTARTS_ENV: &str = "WARDEN_WORKER_RESTARTS";

pub struct WorkerMetrics {
    registry: Registry,
    pub waiting: IntGauge,
    pub running: IntGauge,
    pub kv_usage: Gauge,
    pub prefix_hit_ratio: Gauge,
    vllm_waiting: IntGauge,
    vllm_running: IntGauge,
    vllm_kv_usage: Gauge,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    prompt_tps: Gauge,
    generation_tps: Gauge,
    pub cancelled: IntCounter,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub queue_time: Histogram,
    pub step_time: Histogram,
    pub batch_size: Histogram,
    restarts: IntGauge,
    window: Mutex<(Instant, u64, u64)>,
}

fn hist(name: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram, prometheus::Error> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
}

impl WorkerMetrics {
    pub fn new() -> Result<WorkerMetrics, prometheus::Error> {
        // A long prompt queued behind a full batch on a CPU waits minutes, not seconds.
        let secs = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ];
        let m = WorkerMetrics {
            registry: Registry::new(),
            waiting: IntGauge::new(
                "warden_worker_requests_waiting",
                "Requests queued, not yet admitted",
            )?,
            running: IntGauge::new(
                "warden_worker_requests_running",
                "Sequences in the running batch",
            )?,
            kv_usage: Gauge::new(
                "warden_worker_kv_cache_usage_ratio",
                "Reserved KV cache / KV budget (0..1)",
            )?,
            prefix_hit_ratio: Gauge::new(
                "warden_worker_prefix_cache_hit_ratio",
                "Prefix-cache lookups that reused cached KV",
            )?,
            vllm_waiting: IntGauge::new(
                "vllm:num_requests_waiting",
                "vLLM-compatible: requests waiting",
            )?,
            vllm_running: IntGauge::new(
                "vllm:num_requests_running",
                "vLLM-compatible: requests running",
            )?,
            vllm_kv_usage: Gauge::new(
                "vllm:gpu_cache_usage_perc",
                "vLLM-compatible: KV cache usage (0..1)",
            )?,
            prompt_tokens: IntCounter::new(
                "warden_worker_prompt_tokens_total",
                "Prompt tokens computed (prefix-cache hits excluded)",
            )?,
            generation_tokens: IntCounter::new(
                "warden_worker_generation_tokens_total",
                "Tokens generated",
            )?,
            prompt_tps: Gauge::new(
                "warden_worker_prompt_tokens_per_second",
                "Prompt tokens/s over the last few seconds",
            )?,
            generation_tps: Gauge::new(
                "warden_worker_generation_tokens_per_second",
                "Generated tokens/s over the last few seconds",
            )?,
            cancelled: IntCounter::new(
                "warden_worker_cancelled_total",
                "Sequences cancelled because the client went away",
            )?,
            ttft: hist(
                "warden_worker_time_to_first_token_seconds",
                "Arrival to first token",
                secs.clone(),
            )?,
            tpot: hist(
                "warden_worker_time_per_output_token_seconds",
                "Time between consecutive tokens of a sequence",
                secs.clone(),
            )?,
            queue_time: hist(
                "warden_worker_queue_time_seconds",
                "Time waiting for admission",
                secs.clone(),
            )?,
            step_time: hist(
                "warden_worker_step_seconds",
                "Duration of one batched decode step",
                secs,
            )?,
            batch_size: hist(
                "warden_worker_batch_size",
                "Sequences per decode step",
                vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            )?,
            restarts: IntGauge::new(
                "warden_worker_restarts",
                "Times the supervisor (`warden up`) restarted this worker after it exited",
            )?,
            window: Mutex::new((Instant::now(), 0, 0)),
        };
        // Set once: a restart is a new process.
        m.restarts.set(
            std::env::var(RESTARTS_ENV)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        );
        let r = &m.registry;
        r.register(Box::new(m.waiting.clone()))?;
        r.register(Box::new(m.running.clone()))?;
        r.register(Box::new(m.kv_usage.clone()))?;
        r.register(Box::new(m.prefix_hit_ratio.clone()))?;
        r.register(Box::new(m.vllm_waiting.clone()))?;
        r.register(Box::new(m.vllm_running.clone()))?;
        r.register(Box::new(m.vllm_kv_usage.clone()))?;
        r.register(Box::new(m.prompt_tokens.clone()))?;
        r.register(Box::new(m.generation_tokens.clone()))?;
        r.register(Box::new(m.prompt_tps.clone()))?;
        r.register(Box::new(m.generation_tps.clone()))?;
        r.register(Box::new(m.cancelled.clone()))?;
        r.register(Box::new(m.ttft.clone()))?;
        r.register(Box::new(m.tpot.clone()))?;
        r.register(Box::new(m.queue_time.clone()))?;
        r.register(Box::new(m.step_time.clone()))?;
        r.register(Box::new(m.batch_size.clone()))?;
        r.register(Box::new(m.restarts.clone()))?;
        Ok(m)
    }

    /// Refresh the gauges from the engine's counters (called once per engine iteration).
    pub fn update(&self, s: &EngineStats, kv_usage: f64, prefix_hit_ratio: f64) {
        let waiting = s.waiting.load(Ordering::Relaxed) as i64;
        let running = s.running.load(Ordering::Relaxed) as i64;
        self.waiting.set(waiting);
        self.vllm_waiting.set(waiting);
        self.running.set(running);
        self.vllm_running.set(running);
        self.kv_usage.set(kv_usage);
        self.vllm_kv_usage.set(kv_usage);
        self.prefix_hit_ratio.set(prefix_hit_ratio);
        if let Ok(mut w) = self.window.lock() {
            let dt = w.0.elapsed().as_secs_f64();
            if dt >= 2.0 {
                let (p, g) = (self.prompt_tokens.get(), self.generation_tokens.get());
                self.prompt_tps.set((p - w.1) as f64 / dt);
                self.generation_tps.set((g - w.2) as f64 / dt);
                *w = (Instant::now(), p, g);
            }
        }
    }

    pub fn render(&self, stats: &EngineStats) -> Vec<u8> {
        // Waiting changes on submission, between engine iterations too.
        let waiting = stats.waiting.load(Ordering::Relaxed) as i64;
        self.waiting.set(waiting);
        self.vllm_waiting.set(waiting);
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        buf
    }
}
