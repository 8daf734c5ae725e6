//! The admin listener (loopback by default) and its API.
//!
//! - [`auth`]: the caller ([`auth::Principal`] from `[[admin.keys]]`, with a role) and the role
//!   matrix; [`error`]: the one error type, in the proxy's JSON error shape.
//! - Here: the route table ([`ROUTES`]: method, path, permission, handler), the handlers, and the
//!   listener. Open endpoints: `/healthz`, `/readyz` (JSON detail per upstream and of the audit
//!   lake), `/metrics`. With a key: `GET /admin/status`, `GET /admin/switches`,
//!   `POST /admin/switches`, `POST /admin/switches/clear`, `GET /admin/audit`,
//!   `POST /admin/rules/reload`. Every mutation is logged with the key's name (never the key)
//!   and written to the hash-chained audit table.
//!
//! The listener is Warden's own, not a Pingora listening service: on SIGTERM Pingora closes its
//! listeners at once, and a probe during the drain would get "connection refused" instead of
//! `/readyz` 503. This one stays open until the process exits, after the proxy has drained. One
//! request per connection.

pub mod auth;
pub mod error;

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora_http::ResponseHeader;
use serde_json::{json, Value};

use crate::state::App;
use crate::switchboard::{self, Degrade, Scope, State, Switch};
use auth::{Permission, Principal};
use error::AdminError;

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

/// One admin endpoint.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// `None`: open (probes, metrics).
    pub permission: Option<Permission>,
    handler: fn(&AdminApp, &Call<'_>) -> Result<Reply, AdminError>,
}

/// A request, as handlers see it.
pub struct Call<'a> {
    /// `None` on open endpoints.
    pub principal: Option<Principal>,
    pub body: &'a [u8],
}

/// A handler's answer.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }
}

/// Every admin endpoint. The role needed for each is its permission in [`auth::may`].
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/healthz", permission: None, handler: healthz },
    Route { method: "GET", path: "/readyz", permission: None, handler: readyz },
    Route { method: "GET", path: "/metrics", permission: None, handler: metrics },
    Route { method: "GET", path: "/admin/status", permission: Some(Permission::ReadState), handler: status },
    Route { method: "GET", path: "/admin/switches", permission: Some(Permission::ReadState), handler: switches_list },
    Route { method: "POST", path: "/admin/switches", permission: Some(Permission::ManageSwitches), handler: switch_set },
    Route { method: "POST", path: "/admin/switches/clear", permission: Some(Permission::ManageSwitches), handler: switch_clear },
    Route { method: "GET", path: "/admin/throttles", permission: Some(Permission::ReadState), handler: throttles_list },
    Route { method: "POST", path: "/admin/throttles", permission: Some(Permission::ManageSwitches), handler: throttle_set },
    Route { method: "POST", path: "/admin/throttles/clear", permission: Some(Permission::ManageSwitches), handler: throttle_clear },
    Route { method: "GET", path: "/admin/audit", permission: Some(Permission::ReadAudit), handler: audit_tail },
    Route { method: "GET", path: "/admin/alerts", permission: Some(Permission::ReadState), handler: alerts_list },
    Route { method: "POST", path: "/admin/alerts/approve", permission: Some(Permission::ManageSwitches), handler: alert_approve },
    Route { method: "POST", path: "/admin/rules/reload", permission: Some(Permission::ManageRules), handler: rules_reload },
];

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

impl AdminApp {
    /// Route, authorize and run one request.
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&[u8]>,
        body: &[u8],
    ) -> Reply {
        let result = (|| {
            let on_path: Vec<&Route> = ROUTES.iter().filter(|r| r.path == path).collect();
            if on_path.is_empty() {
                return Err(AdminError::new(404, "not_found", "unknown admin endpoint"));
            }
            let Some(route) = on_path.iter().find(|r| r.method == method) else {
                return Err(AdminError::new(
                    405,
                    "method_not_allowed",
                    "method not allowed for this endpoint",
                ));
            };
            let principal = match route.permission {
                Some(p) => Some(
                    auth::authorize(&self.app.config.admin.keys, authorization, p).inspect_err(
                        |e| {
                            if e.status == 401 {
                                tracing::warn!(path, "admin request with a missing or unknown key");
                            }
                        },
                    )?,
                ),
                None => None,
            };
            (route.handler)(self, &Call { principal, body })
        })();
        result.unwrap_or_else(|e| Reply {
            status: e.status,
            content_type: "application/json",
            body: e.body(),
        })
    }

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
        let mut body = Vec::new();
        let read = tokio::time::timeout(ADMIN_READ_TIMEOUT, async {
            while let Ok(Some(chunk)) = http.read_request_body().await {
                if body.len() + chunk.len() > MAX_ADMIN_BODY {
                    return false;
                }
                body.extend_from_slice(&chunk);
            }
            true
        })
        .await;
        let req = http.req_header();
        let (method, path) = (req.method.as_str().to_string(), req.uri.path().to_string());
        let authorization = req
            .headers
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        let r = match read {
            Ok(true) => self.handle(&method, &path, authorization.as_deref(), &body),
            Ok(false) => {
                let e = AdminError::new(
                    413,
                    "request_too_large",
                    "admin request bodies are at most 64 KiB",
                );
                Reply {
                    status: e.status,
                    content_type: "application/json",
                    body: e.body(),
                }
            }
            Err(_) => return,
        };
        let response = reply(r.status, r.content_type, r.body);
        let (parts, body) = response.into_parts();
        let head: ResponseHeader = parts.into();
        if http.write_response_header(Box::new(head)).await.is_err() {
            return;
        }
        if !body.is_empty() {
            let _ = http.write_response_body(body.into(), true).await;
        }
        let _ = http.finish().await;
    }
}

fn healthz(_: &AdminApp, _: &Call<'_>) -> Result<Reply, AdminError> {
    Ok(Reply::json(200, &json!({"status": "ok"})))
}

fn readyz(a: &AdminApp, _: &Call<'_>) -> Result<Reply, AdminError> {
    let app = &a.app;
    let ready = app.is_ready();
    let upstreams: Vec<_> = app
        .upstreams
        .iter()
        .map(|u| json!({"name": u.config.name, "address": u.config.address.to_string(), "healthy": u.is_healthy(), "ejected": u.outlier.is_ejected(std::time::Instant::now())}))
        .collect();
    // The proxy keeps serving while the audit lake cannot be written; the failure shows here
    // and in /metrics, not as unreadiness.
    let telemetry = app.telemetry.as_ref().map(|(t, _)| {
        let s = t.stats();
        let mut v = match t.health() {
            warden_telemetry::Health::Ok => json!({"status": "ok"}),
            warden_telemetry::Health::Failing { last_error, .. } => {
                json!({"status": "failing", "error": last_error})
            }
        };
        // What the lake owes: events accepted and not yet durable, their memory, and how long
        // the oldest has waited.
        v["queue_depth"] = json!(s.queue_depth + s.events_buffered);
        v["held_bytes"] = json!(s.events_buffered_bytes);
        v["oldest_held_s"] = json!(s.oldest_buffered_age.as_secs_f64());
        v["spools_pending"] = json!(s.spools_pending);
        v
    });
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "draining": app.is_draining(),
        "upstreams": upstreams,
        "telemetry": telemetry,
        "switchboard": {
            "version": app.switchboard.snapshot().version,
            "in_force": app.switchboard.snapshot().live(std::time::SystemTime::now()).len(),
            "redis": app.switchboard.fleet_connected().map(|c| if c { "connected" } else { "disconnected: keeping the last board" }),
        },
    });
    Ok(Reply::json(if ready { 200 } else { 503 }, &body))
}

fn metrics(a: &AdminApp, _: &Call<'_>) -> Result<Reply, AdminError> {
    let app = &a.app;
    let now = std::time::Instant::now();
    for u in &app.upstreams {
        app.metrics
            .upstream_ejected
            .with_label_values(&[&u.config.name])
            .set(i64::from(u.outlier.is_ejected(now)));
    }
    if let Some((t, _)) = &app.telemetry {
        let healthy = t.health() == warden_telemetry::Health::Ok;
        app.metrics.observe_telemetry(&t.stats(), healthy);
    }
    if let Some(t) = &app.traces {
        app.metrics.observe_traces(t.stats());
    }
    app.metrics.observe_switches(&app.switchboard);
    Ok(Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4",
        body: app.metrics.render(),
    })
}

fn switches_json(a: &AdminApp) -> Value {
    let snap = a.app.switchboard.snapshot();
    let now = std::time::SystemTime::now();
    let live: Vec<Value> = snap.live(now).into_iter().map(Switch::to_json).collect();
    let throttles: Vec<Value> = snap
        .live_throttles(now)
        .map(switchboard::Throttle::to_json)
        .collect();
    json!({"version": snap.version, "switches": live, "throttles": throttles})
}

fn status(a: &AdminApp, _: &Call<'_>) -> Result<Reply, AdminError> {
    let pack = a
        .app
        .guards
        .as_ref()
        .map(|g| g.active().version().to_string());
    let mut v = switches_json(a);
    v["pack_version"] = json!(pack);
    v["ready"] = json!(a.app.is_ready());
    v["draining"] = json!(a.app.is_draining());
    v["redis"] = json!(a.app.switchboard.fleet_connected());
    v["state_file"] = json!(a
        .app
        .config
        .switchboard
        .state_file
        .as_ref()
        .map(|p| p.display().to_string()));
    Ok(Reply::json(200, &v))
}

fn switches_list(a: &AdminApp, _: &Call<'_>) -> Result<Reply, AdminError> {
    Ok(Reply::json(200, &switches_json(a)))
}

/// The JSON object of a request body.
fn body_object(call: &Call<'_>) -> Result<serde_json::Map<String, Value>, AdminError> {
    match serde_json::from_slice::<Value>(call.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AdminError::new(
            400,
            "invalid_json",
            "the body must be a JSON object",
        )),
    }
}

/// Who made the call (handlers behind a permission always have one).
fn caller(call: &Call<'_>) -> Principal {
    call.principal.clone().unwrap_or(Principal {
        name: "-".into(),
        role: auth::Role::Admin,
    })
}

/// A change that could not be saved (the state file, or the fleet's Redis): nothing changed.
fn not_saved(what: &'static str) -> impl Fn(String) -> AdminError {
    move |e| {
        AdminError::new(
            503,
            "state_not_saved",
            format!("the {what} was not saved: {e}"),
        )
    }
}

/// One admin change: the hash-chained audit action.
fn record(
    a: &AdminApp,
    who: &Principal,
    action: &str,
    target: String,
    (before, after): (Option<String>, Option<String>),
    reason: Option<String>,
) {
    a.app.audit(warden_telemetry::AdminAction {
        actor: who.name.clone(),
        role: who.role.name().into(),
        action: action.into(),
        target,
        before,
        after,
        reason,
    });
}

fn reason_of(body: &serde_json::Map<String, Value>) -> Result<String, AdminError> {
    match body.get("reason").and_then(Value::as_str).map(str::trim) {
        Some(r) if !r.is_empty() && r.len() <= 1024 => Ok(r.to_string()),
        _ => Err(AdminError::invalid(
            "reason",
            "a reason (1-1024 characters) is required for every change",
        )),
    }
}

/// `POST /admin/switches`: `{"scope", "state": "on"|"off"|"degraded", "params"?: {"max_tokens":
/// N}, "reason", "ttl"?: "15m", "cut_streams"?: bool}`.
fn switch_set(a: &AdminApp, call: &Call<'_>) -> Result<Reply, AdminError> {
    let body = body_object(call)?;
    let scope = scope_of(&body)?;
    let params: Vec<(String, String)> = match body.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(_) => return Err(AdminError::invalid("params", "must be an object")),
    };
    let state = match body.get("state").and_then(Value::as_str) {
        Some("on") => State::On,
        Some("off") => State::Off,
        Some("degraded") => {
            State::Degraded(Degrade::parse(&params).map_err(|e| AdminError::invalid("params", e))?)
        }
        _ => {
            return Err(AdminError::invalid(
                "state",
                "state must be \"on\", \"off\" or \"degraded\"",
            ))
        }
    };
    if !params.is_empty() && !matches!(state, State::Degraded(_)) {
        return Err(AdminError::invalid(
            "params",
            "only a degraded switch takes parameters",
        ));
    }
    let reason = reason_of(&body)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires_at = match body.get("ttl") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(
            now + switchboard::parse_ttl(t)
                .map_err(|e| AdminError::invalid("ttl", e))?
                .as_secs(),
        ),
        Some(_) => return Err(AdminError::invalid("ttl", "a duration such as \"15m\"")),
    };
    let cut_streams = body
        .get("cut_streams")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if cut_streams && (scope != Scope::Global || state != State::Off) {
        return Err(AdminError::invalid(
            "cut_streams",
            "only a global off cuts the streams in flight",
        ));
    }
    let principal = caller(call);
    let switch = Switch {
        scope: scope.clone(),
        state,
        reason: reason.clone(),
        actor: principal.name.clone(),
        set_at: now,
        expires_at,
        cut_streams,
        runbook: None,
    };
    let change = a.app.switchboard.set(switch).map_err(not_saved("switch"))?;
    record_change(a, &principal, "switch.set", &scope, &change, &reason);
    Ok(Reply::json(
        200,
        &json!({"version": change.version, "switch": change.after.as_ref().map(Switch::to_json), "before": change.before.as_ref().map(Switch::to_json)}),
    ))
}

/// `POST /admin/switches/clear`: `{"scope", "reason"}`.
fn switch_clear(a: &AdminApp, call: &Call<'_>) -> Result<Reply, AdminError> {
    let body = body_object(call)?;
    let scope = scope_of(&body)?;
    let reason = reason_of(&body)?;
    let principal = caller(call);
    let change = a
        .app
        .switchboard
        .clear(&scope)
        .map_err(not_saved("switch"))?;
    record_change(a, &principal, "switch.clear", &scope, &change, &reason);
    Ok(Reply::json(
        200,
        &json!({"version": change.version, "cleared": change.before.as_ref().map(Switch::to_json)}),
    ))
}

/// A switch change: the audit row (hash-chained) and the log line.
fn record_change(
    a: &AdminApp,
    who: &Principal,
    action: &str,
    scope: &Scope,
    change: &switchboard::Change,
    reason: &str,
) {
    let state = |s: &Option<Switch>| s.as_ref().map(|s| s.to_json().to_string());
    record(
        a,
        who,
        action,
        format!("switch:{scope}"),
        (state(&change.before), state(&change.after)),
        Some(reason.to_string()),
    );
    tracing::warn!(
        actor = %who.name,
        role = who.role.name(),
        action,
        scope = %scope,
        state = change.after.as_ref().map_or("on", |s| s.state.name()),
        version = change.version,
        "switch changed"
    );
}

/// `GET /admin/alerts`: the runbooks' alerts, newest first, and the runbooks loaded.
fn alerts_list(a: &AdminApp, _: &Call<'_>) -> Result<Reply, AdminError> {
    Ok(Reply::json(200, &a.app.incidents.alerts_json()))
}

/// `POST /admin/alerts/approve`: `{"id": N, "reason"}`: an alert of a runbook in `approve`
/// mode acts now; the approval is an audit row.
fn alert_approve(a: &AdminApp, call: &Call<'_>) -> Result<Reply, AdminError> {
    let body = body_object(call)?;
    let id = body
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| AdminError::invalid("id", "the alert's id (a number) is required"))?;
    let reason = reason_of(&body)?;
    let who = caller(call);
    let audit = |x| a.app.audit(x);
    let alert = a
        .app
        .incidents
        .approve(&a.app.effects(&audit), id, &who.name)
        .map_err(|e| AdminError::new(409, "not_pending", &e))?;
    a.app.audit(warden_telemetry::AdminAction {
        actor: who.name.clone(),
        role: who.role.name().into(),
        action: "runbook.approve".into(),
        target: alert["scope"].as_str().unwrap_or("-").to_string(),
        before: Some("pending_approval".into()),
        after: Some(format!("alert {id}")),
        reason: Some(reason),
    });
    Ok(Reply::json(200, &json!({"alert": alert})))
}

fn throttles_list(a: &AdminApp, _: &Call<'_>) -> Result<Reply, AdminError> {
    let v = switches_json(a);
    Ok(Reply::json(
        200,
        &json!({"version": v["version"], "throttles": v["throttles"]}),
    ))
}

fn scope_of(body: &serde_json::Map<String, Value>) -> Result<Scope, AdminError> {
    body.get("scope")
        .and_then(Value::as_str)
        .ok_or_else(|| AdminError::invalid("scope", "a scope is required"))
        .and_then(|s| Scope::parse(s).map_err(|e| AdminError::invalid("scope", e)))
}

/// `POST /admin/throttles`: `{"scope", "rpm"?, "tpm"?, "ttl", "reason"}`.
fn throttle_set(a: &AdminApp, call: &Call<'_>) -> Result<Reply, AdminError> {
    let body = body_object(call)?;
    let scope = scope_of(&body)?;
    if matches!(scope, Scope::Rule(_)) {
        return Err(AdminError::invalid("scope", "rules cannot be throttled"));
    }
    let positive = |k: &str| -> Result<Option<u64>, AdminError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0 && *n <= u64::from(u32::MAX))
                .map(Some)
                .ok_or_else(|| AdminError::invalid(k, "a whole number above 0")),
        }
    };
    let (rpm, tpm) = (positive("rpm")?, positive("tpm")?);
    if rpm.is_none() && tpm.is_none() {
        return Err(AdminError::invalid(
            "rpm",
            "a throttle needs rpm, tpm or both",
        ));
    }
    let ttl = body
        .get("ttl")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            AdminError::invalid(
                "ttl",
                "a throttle always expires: give a ttl such as \"15m\"",
            )
        })
        .and_then(|t| switchboard::parse_ttl(t).map_err(|e| AdminError::invalid("ttl", e)))?;
    let reason = reason_of(&body)?;
    let who = caller(call);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = switchboard::Throttle {
        scope: scope.clone(),
        requests_per_minute: rpm.map(|n| n as u32),
        tokens_per_minute: tpm,
        reason: reason.clone(),
        actor: who.name.clone(),
        set_at: now,
        expires_at: now + ttl.as_secs(),
        runbook: None,
    };
    let (before, version) = a
        .app
        .switchboard
        .set_throttle(t.clone())
        .map_err(not_saved("throttle"))?;
    record(
        a,
        &who,
        "throttle.set",
        format!("throttle:{scope}"),
        (
            before.as_ref().map(|b| b.to_json().to_string()),
            Some(t.to_json().to_string()),
        ),
        Some(reason),
    );
    tracing::warn!(actor = %who.name, scope = %scope, rpm, tpm, version, "throttle set");
    Ok(Reply::json(
        200,
        &json!({"version": version, "throttle": t.to_json()}),
    ))
}

/// `POST /admin/throttles/clear`: `{"scope", "reason"?}`.
fn throttle_clear(a: &AdminApp, call: &Call<'_>) -> Result<Reply, AdminError> {
    let body = body_object(call)?;
    let scope = scope_of(&body)?;
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    let who = caller(call);
    let (before, version) = a
        .app
        .switchboard
        .clear_throttle(&scope)
        .map_err(not_saved("throttle"))?;
    record(
        a,
        &who,
        "throttle.clear",
        format!("throttle:{scope}"),
        (before.as_ref().map(|b| b.to_json().to_string()), None),
        reason,
    );
    Ok(Reply::json(
        200,
        &json!({"version": version, "cleared": before.as_ref().map(switchboard::Throttle::to_json)}),
    ))
}

fn audit_tail(a: &AdminApp, _: &Call<'_>) -> Result<Reply, AdminError> {
    Ok(Reply::json(
        200,
        &json!({"actions": a.app.recent_actions()}),
    ))
}

fn rules_reload(a: &AdminApp, call: &Call<'_>) -> Result<Reply, AdminError> {
    let (name, role) = call
        .principal
        .as_ref()
        .map_or(("-", "admin"), |p| (p.name.as_str(), p.role.name()));
    let (status, body) = reload_rules_as(&a.app, name, role);
    Ok(Reply::json(status, &body))
}

/// Reload the rule packs; `(status, body)`. `SIGHUP` reloads as the `system` role.
pub fn reload_rules(app: &App, actor: &str) -> (u16, serde_json::Value) {
    reload_rules_as(app, actor, "system")
}

/// Reload the rule packs for `actor` with `role`; `(status, body)`.
fn reload_rules_as(app: &App, actor: &str, role: &str) -> (u16, serde_json::Value) {
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
                role: role.into(),
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
                role: role.into(),
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
