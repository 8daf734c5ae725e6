//! Runbook notifications: an Alertmanager-compatible JSON body POSTed to a webhook
//! (`http://host:port/path`, e.g. Alertmanager's `/api/v2/alerts` or a relay). Fire and forget,
//! off the request path, 5 s at most; the outcome is counted
//! (`warden_runbook_notifications_total{result}`) and a failure logged.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest a notification may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Posts `body` to `url` in the background; the outcome counts in `counter` (by result).
pub fn post(counter: prometheus::IntCounterVec, url: String, body: Value) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        counter.with_label_values(&["failed"]).inc();
        tracing::error!(
            webhook = %warden_runbooks::book::webhook_host(&url),
            "runbook notification not sent: no runtime"
        );
        return;
    };
    handle.spawn(async move {
        let result = tokio::time::timeout(TIMEOUT, send(&url, &body.to_string())).await;
        let outcome = match result {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("HTTP {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out".into()),
        };
        match outcome {
            Ok(()) => counter.with_label_values(&["sent"]).inc(),
            Err(e) => {
                counter.with_label_values(&["failed"]).inc();
                tracing::warn!(
                    webhook = %warden_runbooks::book::webhook_host(&url),
                    error = %e,
                    "runbook notification failed"
                );
            }
        }
    });
}

/// `http://host:port/path` → (host:port, path).
fn split(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// webhooks"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

async fn send(url: &str, body: &str) -> Result<u16, String> {
    let (authority, path) = split(url)?;
    let mut stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h);
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nuser-agent: warden\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = vec![0u8; 64];
    let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status line in {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_split_into_address_and_path() {
        assert_eq!(
            split("http://127.0.0.1:9093/api/v2/alerts").unwrap(),
            ("127.0.0.1:9093".into(), "/api/v2/alerts".into())
        );
        assert_eq!(
            split("http://alerts.internal").unwrap(),
            ("alerts.internal:80".into(), "/".into())
        );
        assert!(split("https://x").is_err());
    }
}
