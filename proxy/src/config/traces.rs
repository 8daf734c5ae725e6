//! The `[tracing]` section: OpenTelemetry traces over OTLP/gRPC (see `crate::traces`).
//!
//! Off unless `otlp_endpoint` is set; the other keys are validated either way, so a config that
//! turns traces on later does not surprise its operator.

use std::time::Duration;

use warden_guards::toml_reader::{Errors, Table};

#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. `None` = traces off (no exporter, no
    /// background thread).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of new traces kept (0..=1). A request that carries a `traceparent` follows its
    /// parent's sampled flag instead.
    pub sample_ratio: f64,
    /// Longest one export may take (connect, send, retries).
    pub timeout: Duration,
    /// How often finished spans are sent in a batch.
    pub export_interval: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            service_name: "warden".into(),
            sample_ratio: 1.0,
            timeout: Duration::from_secs(5),
            export_interval: Duration::from_secs(5),
        }
    }
}

pub fn decode_tracing(t: &mut Table<'_>, errs: &mut Errors<'_>) -> TracingConfig {
    let mut c = TracingConfig::default();
    if let Some(endpoint) = t.string(errs, "otlp_endpoint") {
        match check_endpoint(&endpoint) {
            Ok(()) => c.otlp_endpoint = Some(endpoint),
            Err(msg) => errs.push(
                &t.child_path("otlp_endpoint"),
                t.value_span("otlp_endpoint"),
                msg,
            ),
        }
    }
    match t.string(errs, "service_name") {
        Some(name) if name.trim().is_empty() => errs.push(
            &t.child_path("service_name"),
            t.value_span("service_name"),
            "must not be empty",
        ),
        Some(name) => c.service_name = name,
        None => {}
    }
    if let Some(ratio) = t.number(
        errs,
        "sample_ratio",
        0.0..=1.0,
        ": 0.1 keeps one trace in ten",
    ) {
        c.sample_ratio = ratio;
    }
    c.timeout = super::millis(t, errs, "timeout_ms", 5_000);
    c.export_interval = super::millis(t, errs, "export_interval_ms", 5_000);
    c
}

/// An `http://host:port` URL. No TLS is built in, so `https` is refused here rather than at the
/// first export; a local collector (or an agent on the node) forwards over TLS if needed.
fn check_endpoint(raw: &str) -> Result<(), String> {
    let uri: http::Uri = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a URL (e.g. \"http://127.0.0.1:4317\")"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{raw:?}: https is not supported (this build has no TLS for OTLP); send to a local collector over http://"
            ))
        }
        _ => return Err(format!("{raw:?}: must start with http:// (e.g. \"http://127.0.0.1:4317\")")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{raw:?}: no host"));
    };
    if authority.port_u16().is_none() {
        return Err(format!(
            "{raw:?}: give the port (OTLP over gRPC is usually 4317)"
        ));
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "{raw:?}: credentials in the URL would be logged; use OTEL_EXPORTER_OTLP_HEADERS"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const KEY: &str = "blake3:0000000000000000000000000000000000000000000000000000000000000000";

    fn with(section: &str) -> String {
        format!(
            "{section}\n[[upstreams]]\nname = \"w\"\naddress = \"127.0.0.1:8081\"\nmodels = [\"m\"]\n\n[[tenants]]\nname = \"t\"\napi_keys = [\"{KEY}\"]\n"
        )
    }

    #[test]
    fn off_by_default() {
        let c = Config::parse(&with("")).unwrap();
        assert_eq!(c.tracing, super::TracingConfig::default());
        assert!(c.tracing.otlp_endpoint.is_none());
        // A section without an endpoint is still off.
        let c = Config::parse(&with("[tracing]\nsample_ratio = 0.5\n")).unwrap();
        assert!(c.tracing.otlp_endpoint.is_none());
        assert_eq!(c.tracing.sample_ratio, 0.5);
    }

    #[test]
    fn every_key_is_read() {
        let c = Config::parse(&with(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"warden-eu\"\nsample_ratio = 1\ntimeout_ms = 250\nexport_interval_ms = 50\n",
        ))
        .unwrap();
        let t = c.tracing;
        assert_eq!(t.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(t.service_name, "warden-eu");
        assert_eq!(t.sample_ratio, 1.0);
        assert_eq!(t.timeout.as_millis(), 250);
        assert_eq!(t.export_interval.as_millis(), 50);
    }

    #[test]
    fn every_problem_is_reported_with_its_path_and_line() {
        let src = with(
            "[tracing]\notlp_endpoint = \"https://collector:4317\"\nservice_name = \"\"\nsample_ratio = 1.5\ntimeout_ms = 0\nexport_interval_ms = \"soon\"\nsampler = \"always\"\n",
        );
        let errors = Config::parse(&src).unwrap_err();
        let rendered: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let want = [
            ("tracing.otlp_endpoint", 2, "https"),
            ("tracing.service_name", 3, "empty"),
            ("tracing.sample_ratio", 4, "out of range (0..=1)"),
            ("tracing.timeout_ms", 5, "greater than 0"),
            ("tracing.export_interval_ms", 6, "integer"),
            ("tracing.sampler", 7, "unknown key"),
        ];
        for (path, line, words) in want {
            assert!(
                errors
                    .iter()
                    .any(|e| e.path == path && e.line == Some(line) && e.message.contains(words)),
                "missing {path} at line {line} ({words}) in {rendered:#?}"
            );
        }
        assert_eq!(errors.len(), want.len(), "{rendered:#?}");
    }

    #[test]
    fn endpoints_must_be_plain_http_with_a_port() {
        for (endpoint, words) in [
            ("127.0.0.1:4317", "http://"),
            ("grpc://127.0.0.1:4317", "http://"),
            ("http://collector", "port"),
            ("http://user:pw@collector:4317", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let src = with(&format!("[tracing]\notlp_endpoint = {endpoint:?}\n"));
            let errors = Config::parse(&src).unwrap_err();
            assert!(
                errors.len() == 1
                    && errors[0].path == "tracing.otlp_endpoint"
                    && errors[0].message.contains(words),
                "{endpoint}: {errors:?}"
            );
        }
        let src = with("[tracing]\notlp_endpoint = \"http://[::1]:4317\"\n");
        assert!(Config::parse(&src).is_ok());
    }

    #[test]
    fn a_ratio_of_the_wrong_type_is_one_error() {
        let errors = Config::parse(&with("[tracing]\nsample_ratio = \"half\"\n")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "tracing.sample_ratio");
        assert_eq!(errors[0].line, Some(2));
    }
}
