//! The admin listener (loopback by default): `/healthz` (the process is up), `/readyz` (every
//! model has a healthy upstream and we are not draining; JSON detail per upstream), and
//! `/metrics` (Prometheus text). Read-only and free of secrets; mutating admin endpoints arrive
//! with role-based bearer auth in a later change.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::state::App;

pub struct AdminApp {
    pub app: Arc<App>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
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
                    .map(|u| json!({"name": u.config.name, "address": u.config.address.to_string(), "healthy": u.is_healthy()}))
                    .collect();
                let body = json!({
                    "status": if ready { "ready" } else { "not_ready" },
                    "draining": self.app.is_draining(),
                    "upstreams": upstreams,
                });
                reply(
                    if ready { 200 } else { 503 },
                    "application/json",
                    body.to_string().into_bytes(),
                )
            }
            "/metrics" => reply(200, "text/plain; version=0.0.4", self.app.metrics.render()),
            _ => reply(
                404,
                "application/json",
                br#"{"error":"not found"}"#.to_vec(),
            ),
        }
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
