//! The admin listener (loopback by default): `/healthz` (the process is up), `/readyz` (every
//! model has an upstream in service and we are not draining; JSON detail per upstream and of the
//! audit lake), `/metrics` (Prometheus text), and the mutating endpoints, which need
//! `Authorization: Bearer` with one of the `[[admin.keys]]`: `POST /admin/rules/reload`. Without
//! admin keys configured, mutating endpoints answer 403; a wrong or missing key gets 401. Every
//! admin action is logged with the key's name (never the key).
//!
//! The listener is Warden's own, not a Pingora listening service: on SIGTERM Pingora closes its
//! listeners at once, and a probe during the drain would get "connection refused" instead of
//! `/readyz` 503. This one stays open until the process exits, after the proxy has drained. One
//! request per connection.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora_http::ResponseHeader;
use serde_json::json;

use crate::keys::KeyHash;
use crate::state::App;

pub struct AdminApp {
    pub app: Arc<App>,
}

/// The admin listener, bound before the server starts, served until the process exits.
pub struct AdminListener {
    pub admin: Arc<AdminApp>,
    pub listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

/// Longest an admin client may take to send its request head.
const ADMIN_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[async_trait]
impl BackgroundService for AdminListener {
    /// Ignores the shutdown signal on purpose: the drain watcher exits the process once the
    /// proxy has drained, and until then `/readyz` answers 503 (draining).
    async fn start(&self, _shutdown: ShutdownWatch) {
        let taken = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let listener = match taken.map(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        }) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                tracing::error!(error = %e, "admin listener failed");
                return;
            }
            None => return,
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let admin = Arc::clone(&self.admin);
                    // Each connection ends by itself (one request, a read deadline); none holds
                    // up shutdown, which is a process exit.
                    tokio::spawn(async move { admin.serve_one(stream).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        if method == http::Method::POST && path == "/admin/rules/reload" {
            let actor = match self.authorize(session) {
                Ok(name) => name,
                Err(resp) => return *resp,
            };
            let (status, body) = reload_rules(&self.app, &actor);
            return reply(status, "application/json", body.to_string().into_bytes());
        }
        if method != http::Method::GET {
            return reply(
                405,
                "application/json",
                br#"{"error":"method not allowed"}"#.to_vec(),
            );
        }
        match path.as_str() {
            "/healthz" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let ready = self.app.is_ready();
                let upstreams: Vec<_> = self
                    .app
                    .upstreams
                    .iter()
                    .map(|u| json!({"name": u.config.name, "address": u.config.address.to_string(), "healthy": u.is_healthy(), "ejected": u.outlier.is_ejected(std::time::Instant::now())}))
                    .collect();
                // The proxy keeps serving while the audit lake cannot be written; the failure
                // shows here and in /metrics, not as unreadiness.
                let telemetry = self.app.telemetry.as_ref().map(|(t, _)| {
                    let s = t.stats();
                    let mut v = match t.health() {
                        warden_telemetry::Health::Ok => json!({"status": "ok"}),
                        warden_telemetry::Health::Failing { last_error, .. } => {
                            json!({"status": "failing", "error": last_error})
                        }
                    };
                    // What the lake owes: events accepted and not yet durable, their memory,
                    // and how long the oldest has waited.
                    v["queue_depth"] = json!(s.queue_depth + s.events_buffered);
                    v["held_bytes"] = json!(s.events_buffered_bytes);
                    v["oldest_held_s"] = json!(s.oldest_buffered_age.as_secs_f64());
                    v["spools_pending"] = json!(s.spools_pending);
                    v
                });
                let body = json!({
                    "status": if ready { "ready" } else { "not_ready" },
                    "draining": self.app.is_draining(),
                    "upstreams": upstreams,
                    "telemetry": telemetry,
                });
                reply(
                    if ready { 200 } else { 503 },
                    "application/json",
                    body.to_string().into_bytes(),
                )
            }
            "/metrics" => {
                let now = std::time::Instant::now();
                for u in &self.app.upstreams {
                    self.app
                        .metrics
                        .upstream_ejected
                        .with_label_values(&[&u.config.name])
                        .set(i64::from(u.outlier.is_ejected(now)));
                }
                if let Some((t, _)) = &self.app.telemetry {
                    let healthy = t.health() == warden_telemetry::Health::Ok;
                    self.app.metrics.observe_telemetry(&t.stats(), healthy);
                }
                if let Some(t) = &self.app.traces {
                    self.app.metrics.observe_traces(t.stats());
                }
                reply(200, "text/plain; version=0.0.4", self.app.metrics.render())
            }
            _ => reply(
                404,
                "application/json",
                br#"{"error":"not found"}"#.to_vec(),
            ),
        }
    }
}

impl AdminApp {
    /// Read one request, answer it, close the connection.
    async fn serve_one(&self, stream: tokio::net::TcpStream) {
        let stream: pingora::protocols::Stream =
            Box::new(pingora::protocols::l4::stream::Stream::from(stream));
        let mut http = ServerSession::new_http1(stream);
        http.set_keepalive(None);
        match tokio::time::timeout(ADMIN_READ_TIMEOUT, http.read_request()).await {
            Ok(Ok(true)) => {}
            _ => return,
        }
        let (parts, body) = self.response(&mut http).await.into_parts();
        let head: ResponseHeader = parts.into();
        if http.write_response_header(Box::new(head)).await.is_err() {
            return;
        }
        if !body.is_empty() {
            let _ = http.write_response_body(body.into(), true).await;
        }
        let _ = http.finish().await;
    }

    /// The name of the admin key presented, or the error response.
    fn authorize(&self, session: &ServerSession) -> Result<String, Box<Response<Vec<u8>>>> {
        let keys = &self.app.config.admin.keys;
        if keys.is_empty() {
            return Err(Box::new(reply(
                403,
                "application/json",
                json!({"error": {"code": "admin_disabled", "message": "no [[admin.keys]] configured: mutating admin endpoints are off"}})
                    .to_string()
                    .into_bytes(),
            )));
        }
        let presented = session
            .req_header()
            .headers
            .get("authorization")
            .and_then(|v| crate::keys::bearer(v.as_bytes()))
            .map(KeyHash::of);
        match presented.and_then(|h| keys.iter().find(|k| k.key_hash == h)) {
            Some(k) => Ok(k.name.clone()),
            None => {
                tracing::warn!(path = %session.req_header().uri.path(), "admin request with a missing or unknown key");
                Err(Box::new(reply(
                    401,
                    "application/json",
                    json!({"error": {"code": "invalid_admin_key", "message": "send an admin key as 'Authorization: Bearer KEY'"}})
                        .to_string()
                        .into_bytes(),
                )))
            }
        }
    }
}

/// Reload the rule packs; `(status, body)`. Shared by SIGHUP and `POST /admin/rules/reload`.
pub fn reload_rules(app: &App, actor: &str) -> (u16, serde_json::Value) {
    let Some(guards) = &app.guards else {
        return (
            409,
            json!({"status": "failed", "errors": ["the input guard is disabled (guard.enabled = false)"]}),
        );
    };
    let target = guards
        .config
        .rules_dir
        .as_ref()
        .map_or("embedded".to_string(), |d| d.display().to_string());
    match guards.reload(&app.metrics) {
        Ok(r) => {
            app.audit(warden_telemetry::AdminAction {
                actor: actor.to_string(),
                role: role_of(actor).into(),
                action: "rules.reload".into(),
                target: target.clone(),
                before: Some(r.previous.clone()),
                after: Some(r.version.clone()),
                reason: None,
            });
            tracing::info!(
                actor,
                action = "rules.reload",
                previous = %r.previous,
                version = %r.version,
                rules = r.rules,
                compile_ms = r.compile.as_secs_f64() * 1e3,
                "rule packs reloaded"
            );
            (
                200,
                json!({
                    "status": "ok",
                    "previous_version": r.previous,
                    "version": r.version,
                    "rules": r.rules,
                    "compile_ms": r.compile.as_secs_f64() * 1e3,
                    "shadow_version": r.shadow,
                }),
            )
        }
        Err(errors) => {
            let kept = guards.active().version().to_string();
            app.audit(warden_telemetry::AdminAction {
                actor: actor.to_string(),
                role: role_of(actor).into(),
                action: "rules.reload.failed".into(),
                target,
                before: Some(kept.clone()),
                after: None,
                reason: Some(format!(
                    "{} problem(s); first: {}",
                    errors.len(),
                    errors.first().map_or("", String::as_str)
                )),
            });
            tracing::error!(
                actor,
                action = "rules.reload",
                kept = %kept,
                problems = errors.len(),
                first = %errors.first().map_or("", String::as_str),
                "rule reload failed; the previous packs stay active"
            );
            (
                422,
                json!({"status": "failed", "active_version": kept, "errors": errors}),
            )
        }
    }
}

/// Role recorded with an admin action: admin keys act as `admin`; signals as `system`.
fn role_of(actor: &str) -> &'static str {
    if actor.starts_with("SIG") {
        "system"
    } else {
        "admin"
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}
