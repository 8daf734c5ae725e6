//! The `[telemetry]` section: the audit lake (`warden-telemetry`).

use std::path::PathBuf;
use std::time::Duration;

use warden_guards::toml_reader::{Errors, Table};

/// What to do when the telemetry queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Keep serving; count and log every dropped event (default).
    Drop,
    /// Refuse new requests with 503 `telemetry_unavailable` until the writer catches up.
    FailClosed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Write the audit lake. Off unless a `[telemetry]` section turns it on.
    pub enabled: bool,
    /// Lake root: `events/dt=…/hour=…/*.parquet`, `audit/`, `spool/`.
    pub dir: PathBuf,
    /// File with the BLAKE3 keys for prompt hashes (`key_id hex64` per line, current first).
    pub key_file: Option<PathBuf>,
    /// Environment variable with `key_id:hex64`, used when `key_file` is not set.
    pub key_env: String,
    pub queue_capacity: usize,
    pub on_full: OnFull,
    pub sync_interval: Duration,
    pub rotate_bytes: u64,
    pub rotate_interval: Duration,
    /// Delete `dt=` partitions older than this many days; `None` keeps everything.
    pub retention_days: Option<u32>,
    /// Written into every event's `region` column.
    pub region: Option<String>,
    /// Which requests refused before a tenant was known become rows (`unauthenticated`,
    /// `unauthenticated_rows_per_s`).
    pub unauthenticated: crate::unauthenticated::RowPolicy,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: false,
            dir: PathBuf::from("warden-lake"),
            key_file: None,
            key_env: "WARDEN_TELEMETRY_KEY".into(),
            queue_capacity: 16_384,
            on_full: OnFull::Drop,
            sync_interval: Duration::from_millis(200),
            rotate_bytes: 128 * 1024 * 1024,
            unauthenticated: crate::unauthenticated::RowPolicy::Sampled(10.0),
            rotate_interval: Duration::from_secs(300),
            retention_days: None,
            region: None,
        }
    }
}

pub fn decode_telemetry(t: &mut Table<'_>, errs: &mut Errors<'_>) -> TelemetryConfig {
    let mut c = TelemetryConfig {
        enabled: t.boolean(errs, "enabled").unwrap_or(true),
        ..TelemetryConfig::default()
    };
    match t.string(errs, "dir") {
        Some(d) if !d.is_empty() => c.dir = PathBuf::from(d),
        Some(_) => errs.push(
            &t.child_path("dir"),
            t.value_span("dir"),
            "must not be empty",
        ),
        None if c.enabled => errs.push(
            &t.child_path("dir"),
            t.span(),
            "missing: the directory of the audit lake (e.g. \"/var/lib/warden/lake\")",
        ),
        None => {}
    }
    c.key_file = t.string(errs, "key_file").map(PathBuf::from);
    if let Some(env) = t.string(errs, "key_env") {
        c.key_env = env;
    }
    if let Some(n) = t.uint(errs, "queue_capacity", 16 * 1024 * 1024) {
        if n == 0 {
            errs.push(
                &t.child_path("queue_capacity"),
                t.value_span("queue_capacity"),
                "must be at least 1",
            );
        } else {
            c.queue_capacity = n as usize;
        }
    }
    match t.string(errs, "on_full").as_deref() {
        None | Some("drop") => {}
        Some("fail_closed") => c.on_full = OnFull::FailClosed,
        Some(other) => errs.push(
            &t.child_path("on_full"),
            t.value_span("on_full"),
            format!("{other:?}: expected \"drop\" or \"fail_closed\""),
        ),
    }
    if let Some(ms) = t.uint(errs, "sync_interval_ms", 60_000) {
        c.sync_interval = Duration::from_millis(ms.max(1));
    }
    if let Some(mb) = t.uint(errs, "rotate_mb", 1024 * 1024) {
        c.rotate_bytes = mb.max(1) * 1024 * 1024;
    }
    if let Some(min) = t.uint(errs, "rotate_minutes", 24 * 60) {
        c.rotate_interval = Duration::from_secs(min.max(1) * 60);
    }
    c.retention_days = t.uint(errs, "retention_days", 36_500).map(|d| d as u32);
    c.region = t.string(errs, "region");
    let per_s = super::positive(t, errs, "unauthenticated_rows_per_s", 1_000_000).unwrap_or(10);
    match t.string(errs, "unauthenticated").as_deref() {
        None | Some("sampled") => {
            c.unauthenticated = crate::unauthenticated::RowPolicy::Sampled(per_s as f64);
        }
        Some("all") => c.unauthenticated = crate::unauthenticated::RowPolicy::All,
        Some("counted") => c.unauthenticated = crate::unauthenticated::RowPolicy::Counted,
        Some(other) => errs.push(
            &t.child_path("unauthenticated"),
            t.value_span("unauthenticated"),
            format!("{other:?}: expected \"sampled\", \"all\" or \"counted\""),
        ),
    }
    c
}
