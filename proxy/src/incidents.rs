//! The detectors and the runbook engine wired to the proxy: every request's [`Outcome`] goes
//! into the detectors; a detection goes to the runbooks; their steps are carried out here, on
//! the switchboard (throttles, switches, degradations), the admin audit table and webhooks.
//! A background tick ([`Incidents::tick`], every second) carries out the reverts that are due.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use warden_runbooks::book::{Action, Alert, Engine, Step};
use warden_runbooks::detect::{Detection, Detectors, RateParams, Slos};
use warden_telemetry::Outcome;

use crate::config::{DetectorsConfig, RunbooksConfig};
use crate::metrics::Metrics;
use crate::switchboard::{Degrade, Scope, State, Switch, Switchboard, Throttle};

/// What carrying out a runbook's steps touches: the switchboard, the metrics and the admin
/// audit trail (the app hands these out, see `App::effects`).
pub struct Effects<'a> {
    pub switchboard: &'a Switchboard,
    pub metrics: &'a Metrics,
    pub audit: &'a dyn Fn(warden_telemetry::AdminAction),
}

/// What a runbook's `page` is joined to when `[runbooks] page_base` is not set.
const DEFAULT_PAGE_BASE: &str = "runbooks/";

/// Detectors and runbooks.
#[derive(Debug)]
pub struct Incidents {
    detectors: Option<Mutex<Detectors>>,
    engine: Mutex<Engine>,
    page_base: String,
    /// Tells this process's alerts from another sidecar's on a shared board (alert ids restart
    /// at 1 in every process).
    nonce: String,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Incidents {
    /// Loads the runbooks (every problem listed) and sets up the detectors.
    pub fn new(det: &DetectorsConfig, books: &RunbooksConfig) -> Result<Incidents, Vec<String>> {
        let runbooks = warden_runbooks::book::load(books.dir.as_deref())?;
        let detectors = det.enabled.then(|| {
            Mutex::new(Detectors::new(
                RateParams {
                    warmup: det.warmup,
                    threshold: det.threshold,
                    ..RateParams::default()
                },
                Slos {
                    ttft: det.ttft_slo,
                    tpot: det.tpot_slo,
                    quantile: det.slo_quantile,
                },
                det.max_scopes,
            ))
        });
        Ok(Incidents {
            detectors,
            engine: Mutex::new(Engine::new(runbooks)),
            page_base: books
                .page_base
                .clone()
                .unwrap_or_else(|| DEFAULT_PAGE_BASE.into()),
            nonce: format!("{:08x}", rand::random::<u32>()),
        })
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The link of a runbook page.
    pub fn page_url(&self, page: &str) -> String {
        if page.contains("://") {
            page.to_string()
        } else {
            format!("{}{page}", self.page_base)
        }
    }

    /// One request's outcome.
    pub fn observe(&self, app: &Effects<'_>, o: &Outcome) {
        let Some(d) = &self.detectors else {
            return;
        };
        let now = SystemTime::now();
        let detections = d
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(o, now);
        for det in detections {
            self.detected(app, &det);
        }
    }

    fn detected(&self, app: &Effects<'_>, det: &Detection) {
        app.metrics
            .detections
            .with_label_values(&[det.detector.name(), det.scope.kind.name()])
            .inc();
        tracing::warn!(
            detector = det.detector.name(),
            scope = %det.scope,
            baseline = det.alarm.baseline,
            observed = det.alarm.observed,
            shift = det.alarm.shift,
            "detector fired"
        );
        let steps = self.engine().on_detection(det);
        self.carry_out(app, steps);
    }

    /// The reverts that are due.
    pub fn tick(&self, app: &Effects<'_>, now: SystemTime) {
        let steps = self.engine().tick(now);
        self.carry_out(app, steps);
    }

    /// `POST /admin/alerts/{id}/approve`.
    pub fn approve(&self, app: &Effects<'_>, id: u64, actor: &str) -> Result<Value, String> {
        let steps = self.engine().approve(id, actor, SystemTime::now())?;
        self.carry_out(app, steps);
        Ok(self.alert_json(id).unwrap_or(Value::Null))
    }

    /// `GET /admin/alerts`: newest first.
    pub fn alerts_json(&self) -> Value {
        let engine = self.engine();
        let alerts: Vec<Value> = engine.alerts().rev().map(|a| self.json(a)).collect();
        let runbooks: Vec<Value> = engine
            .runbooks()
            .iter()
            .map(|b| {
                json!({
                    "id": b.id, "title": b.title, "mode": b.mode.name(),
                    "detector": b.detector.name(), "scope": b.scope.name(),
                    "page": self.page_url(&b.page),
                })
            })
            .collect();
        json!({"alerts": alerts, "runbooks": runbooks})
    }

    fn alert_json(&self, id: u64) -> Option<Value> {
        self.engine().alert(id).map(|a| self.json(a))
    }

    fn json(&self, a: &Alert) -> Value {
        let mut v = a.to_json();
        v["runbook_page"] = json!(self.page_url(&a.page));
        v
    }

    fn carry_out(&self, app: &Effects<'_>, steps: Vec<Step>) {
        for step in steps {
            let alert = match &step {
                Step::Apply { alert, .. }
                | Step::Revert { alert, .. }
                | Step::Notify { alert, .. }
                | Step::Audit { alert, .. } => *alert,
            };
            let Some(a) = self.engine().alert(alert).cloned() else {
                continue;
            };
            match step {
                Step::Apply { action, until, .. } => self.apply(app, &a, &action, until),
                Step::Revert { action, .. } => self.revert(app, &a, &action),
                Step::Notify {
                    webhook, resolved, ..
                } => {
                    let mut body = a.alertmanager_body(resolved);
                    body[0]["annotations"]["runbook_url"] = json!(self.page_url(&a.page));
                    crate::notify::post(app.metrics.runbook_notifications.clone(), webhook, body);
                }
                Step::Audit {
                    action,
                    actor,
                    detail,
                    ..
                } => (app.audit)(warden_telemetry::AdminAction {
                    actor,
                    role: "runbook".into(),
                    action: action.into(),
                    target: a.scope.to_string(),
                    before: None,
                    after: Some(format!("alert {} ({})", a.id, a.runbook)),
                    reason: Some(detail),
                }),
            }
        }
    }

    /// What this process's alert writes as the reason of what it sets (and looks for on revert).
    fn reason(&self, a: &Alert) -> String {
        format!("runbook {} alert {} ({})", a.runbook, a.id, self.nonce)
    }

    fn apply(&self, app: &Effects<'_>, a: &Alert, action: &Action, until: SystemTime) {
        let Ok(scope) = Scope::parse(&a.scope.to_string()) else {
            return;
        };
        let now = unix(SystemTime::now());
        // A little past the engine's revert, so the revert (and its audit row) is what ends it.
        let expires = unix(until) + 60;
        let reason = self.reason(a);
        let actor = format!("runbook:{}", a.runbook);
        // An operator's throttle or switch on the scope stays as it is: a runbook neither
        // replaces it nor, on its revert, removes it.
        let snap = app.switchboard.snapshot();
        let now_t = SystemTime::now();
        let operators = match action {
            Action::Throttle { .. } => snap
                .live_throttles(now_t)
                .any(|t| t.scope == scope && !t.actor.starts_with("runbook:")),
            _ => snap
                .live(now_t)
                .iter()
                .any(|s| s.scope == scope && !s.actor.starts_with("runbook:")),
        };
        if operators {
            (app.audit)(warden_telemetry::AdminAction {
                actor,
                role: "runbook".into(),
                action: "runbook.skipped".into(),
                target: a.scope.to_string(),
                before: None,
                after: Some(format!("alert {} ({})", a.id, a.runbook)),
                reason: Some(format!(
                    "an operator's {} is in force on {}; left as it is",
                    if matches!(action, Action::Throttle { .. }) {
                        "throttle"
                    } else {
                        "switch"
                    },
                    a.scope
                )),
            });
            return;
        }
        let page = Some(self.page_url(&a.page));
        let result = match action {
            Action::Throttle {
                requests_per_minute,
                tokens_per_minute,
            } => app
                .switchboard
                .set_throttle(Throttle {
                    scope,
                    requests_per_minute: *requests_per_minute,
                    tokens_per_minute: *tokens_per_minute,
                    reason,
                    actor,
                    set_at: now,
                    expires_at: expires,
                    runbook: page,
                })
                .map(|_| ()),
            Action::SwitchOff | Action::Degrade { .. } => app
                .switchboard
                .set(Switch {
                    scope,
                    state: match action {
                        Action::Degrade {
                            max_tokens,
                            no_stream,
                        } => State::Degraded(Degrade {
                            max_tokens: *max_tokens,
                            no_stream: *no_stream,
                        }),
                        _ => State::Off,
                    },
                    reason,
                    actor,
                    set_at: now,
                    expires_at: Some(expires),
                    cut_streams: false,
                    runbook: page,
                })
                .map(|_| ()),
            Action::Notify { .. } | Action::Annotate => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(alert = a.id, runbook = %a.runbook, error = %e, "runbook action not applied");
        }
    }

    /// Undoes what this alert set, unless an operator has replaced it since.
    fn revert(&self, app: &Effects<'_>, a: &Alert, action: &Action) {
        let Ok(scope) = Scope::parse(&a.scope.to_string()) else {
            return;
        };
        let ours = self.reason(a);
        let snap = app.switchboard.snapshot();
        let result = match action {
            Action::Throttle { .. } => {
                let mine = snap
                    .live_throttles(SystemTime::now())
                    .any(|t| t.scope == scope && t.reason == ours);
                if mine {
                    app.switchboard.clear_throttle(&scope).map(|_| ())
                } else {
                    Ok(())
                }
            }
            _ => {
                let mine = snap
                    .all()
                    .iter()
                    .any(|s| s.scope == scope && s.reason == ours);
                if mine {
                    app.switchboard.clear(&scope).map(|_| ())
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(alert = a.id, runbook = %a.runbook, error = %e, "runbook revert not applied");
        }
    }
}

/// How often the reverts are looked at.
pub const TICK: Duration = Duration::from_secs(1);
