//! Structured logs via `tracing`, to stderr, as text or JSON. Pingora's own `log` records are
//! bridged in. No log line carries API keys, prompts or completions: the proxy logs ids, names,
//! sizes and timings only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

pub fn init(cfg: &LoggingConfig) {
    // RUST_LOG overrides the config for debugging sessions.
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Pingora's own debug records include raw request bytes (headers with the client's key,
    // chunk buffers with prompt text). Whatever level is asked for, its targets stay at info.
    if filter
        .max_level_hint()
        .is_none_or(|l| l >= tracing::level_filters::LevelFilter::DEBUG)
    {
        for target in ["pingora_core", "pingora_proxy", "pingora"] {
            if let Ok(d) = format!("{target}=info").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "logging was already initialised");
    }
}
