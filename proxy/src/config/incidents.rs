//! `[detectors]` (the change detectors over request outcomes) and `[runbooks]` (what they set
//! off): see `warden_runbooks`.

use std::path::PathBuf;
use std::time::Duration;

use warden_guards::toml_reader::{Errors, Table};

/// `[detectors]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorsConfig {
    /// `enabled` (default true).
    pub enabled: bool,
    /// `warmup`: requests per scope that only learn the baseline (default 50,000).
    pub warmup: u64,
    /// `threshold`: the CUSUM threshold h in nats (default 14.5: at most one false alarm per
    /// 10⁶ requests per rate; see `warden detect simulate`).
    pub threshold: f64,
    /// `max_scopes`: tenants, models and routes watched at once (default 1,024).
    pub max_scopes: usize,
    /// `ttft_slo_ms`, `tpot_slo_ms`: latency SLOs (none by default: no latency detector).
    pub ttft_slo: Option<Duration>,
    pub tpot_slo: Option<Duration>,
    /// `slo_quantile`: the SLOs' quantile (default 0.95: 5% may be slower).
    pub slo_quantile: f64,
    /// `hallucination_threshold`: a reply whose grounding score reaches this is flagged
    /// (default 0.25; see `warden_guards::grounding`).
    pub hallucination_threshold: f32,
    /// `logprobs`: ask the upstream for token log-probabilities (top 5) when the client did
    /// not, record their summary, and remove them from the reply (default false: it costs the
    /// upstream some work per token).
    pub logprobs: bool,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        let p = warden_runbooks::detect::RateParams::default();
        DetectorsConfig {
            enabled: true,
            warmup: p.warmup,
            threshold: p.threshold,
            max_scopes: 1024,
            ttft_slo: None,
            tpot_slo: None,
            slo_quantile: 0.95,
            hallucination_threshold: warden_guards::grounding::DEFAULT_THRESHOLD,
            logprobs: false,
        }
    }
}

/// `[runbooks]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunbooksConfig {
    /// `dir`: a directory of runbooks (`*.toml` with their pages); `None` = the shipped ones.
    pub dir: Option<PathBuf>,
    /// `page_base`: what a runbook's `page` is joined to in alerts and errors (default
    /// `runbooks/`, the repository's folder; set it to where your pages are served).
    pub page_base: Option<String>,
}

pub fn decode_detectors(t: &mut Table<'_>, errs: &mut Errors<'_>) -> DetectorsConfig {
    let d = DetectorsConfig::default();
    let ms = |t: &mut Table<'_>, errs: &mut Errors<'_>, key: &str| {
        t.uint(errs, key, 3_600_000).map(Duration::from_millis)
    };
    DetectorsConfig {
        enabled: t.boolean(errs, "enabled").unwrap_or(true),
        warmup: super::positive(t, errs, "warmup", 1 << 40).unwrap_or(d.warmup),
        threshold: t
            .number(errs, "threshold", 1.0..=100.0, " (nats)")
            .unwrap_or(d.threshold),
        max_scopes: t
            .uint(errs, "max_scopes", 1 << 20)
            .map_or(d.max_scopes, |n| n as usize),
        ttft_slo: ms(t, errs, "ttft_slo_ms"),
        tpot_slo: ms(t, errs, "tpot_slo_ms"),
        slo_quantile: t
            .number(errs, "slo_quantile", 0.5..=0.9999, "")
            .unwrap_or(d.slo_quantile),
        hallucination_threshold: t
            .number(errs, "hallucination_threshold", 0.01..=1.0, "")
            .map_or(d.hallucination_threshold, |x| x as f32),
        logprobs: t.boolean(errs, "logprobs").unwrap_or(false),
    }
}

pub fn decode_runbooks(t: &mut Table<'_>, errs: &mut Errors<'_>) -> RunbooksConfig {
    let dir = t.string(errs, "dir").map(PathBuf::from);
    if let Some(d) = &dir {
        if !d.is_dir() {
            errs.push(
                &t.child_path("dir"),
                t.value_span("dir"),
                format!("{}: no such directory", d.display()),
            );
        }
    }
    RunbooksConfig {
        dir,
        page_base: t.string(errs, "page_base"),
    }
}
