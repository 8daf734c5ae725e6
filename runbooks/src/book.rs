//! Runbooks: what to do when a detector fires, machine-readable (`runbooks/*.toml`, each with a
//! human page `runbooks/*.md`), and the engine that applies them.
//!
//! ```toml
//! id = "refusal-spike"
//! title = "Refusal spike"
//! page = "refusal_spike.md"     # the human page, beside this file
//! severity = "warning"          # info | warning | critical (the alert's label)
//! mode = "auto"                 # auto | approve | dry_run
//! cooldown_s = 900              # no second firing for the same scope within this
//! revert_after_s = 600          # throttles, switches and degradations are undone after this
//! max_scopes = 3                # blast radius: scopes under this runbook's actions at once
//!
//! [trigger]
//! detector = "refusal"          # see detect::Kind
//! scope = "tenant"              # tenant | model | route
//! min_shift = 2.0               # optional: ignore alarms of a smaller shift
//!
//! [[action]]
//! kind = "throttle"             # throttle | switch_off | degrade | notify | annotate
//! requests_per_minute = 60
//! ```
//!
//! The engine is sans-IO: a [`Detection`] goes in, [`Step`]s come out for the proxy to carry out
//! (set a throttle, post a webhook, write an audit row), and [`Engine::tick`] gives the reverts
//! that are due. Every alert is kept (bounded) for `/admin/alerts`.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use warden_guards::toml_reader::{Errors, Table};

use crate::detect::{Detection, Kind, Scope, ScopeKind};

/// The runbooks shipped with Warden (`runbooks/*.toml`), embedded in the binary.
pub const SHIPPED: [(&str, &str); 6] = [
    ("refusal_spike.toml", include_str!("../refusal_spike.toml")),
    (
        "hallucination_spike.toml",
        include_str!("../hallucination_spike.toml"),
    ),
    (
        "injection_wave.toml",
        include_str!("../injection_wave.toml"),
    ),
    ("output_leak.toml", include_str!("../output_leak.toml")),
    (
        "worker_overload.toml",
        include_str!("../worker_overload.toml"),
    ),
    ("key_abuse.toml", include_str!("../key_abuse.toml")),
];

/// How a runbook acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Act at once.
    Auto,
    /// Wait for an operator's `approve`.
    Approve,
    /// Record what would be done; do nothing.
    DryRun,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Approve => "approve",
            Mode::DryRun => "dry_run",
        }
    }
}

/// One action of a runbook.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A temporary limit on the scope (the switchboard's throttle).
    Throttle {
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u64>,
    },
    /// The scope switched off (`503 switched_off`).
    SwitchOff,
    /// The scope degraded: `max_tokens` clamped, and/or streaming refused.
    Degrade {
        max_tokens: Option<u64>,
        no_stream: bool,
    },
    /// An Alertmanager-compatible POST to a webhook.
    Notify { webhook: String },
    /// A note in the audit table, nothing else.
    Annotate,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Throttle { .. } => "throttle",
            Action::SwitchOff => "switch_off",
            Action::Degrade { .. } => "degrade",
            Action::Notify { .. } => "notify",
            Action::Annotate => "annotate",
        }
    }

    /// Throttles, switches and degradations change traffic and are reverted.
    pub fn reverts(&self) -> bool {
        matches!(
            self,
            Action::Throttle { .. } | Action::SwitchOff | Action::Degrade { .. }
        )
    }

    fn describe(&self) -> String {
        match self {
            Action::Throttle {
                requests_per_minute,
                tokens_per_minute,
            } => {
                let mut parts = Vec::new();
                if let Some(r) = requests_per_minute {
                    parts.push(format!("rpm={r}"));
                }
                if let Some(t) = tokens_per_minute {
                    parts.push(format!("tpm={t}"));
                }
                format!("throttle {}", parts.join(" "))
            }
            Action::SwitchOff => "switch off".into(),
            Action::Degrade {
                max_tokens,
                no_stream,
            } => {
                let mut parts = Vec::new();
                if let Some(m) = max_tokens {
                    parts.push(format!("max_tokens={m}"));
                }
                if *no_stream {
                    parts.push("stream=false".into());
                }
                format!("degrade {}", parts.join(" "))
            }
            Action::Notify { webhook } => format!("notify {}", webhook_host(webhook)),
            Action::Annotate => "annotate".into(),
        }
    }
}

/// `http://host:port` of a webhook URL: what alerts and audit rows show (a path may carry a
/// token).
pub fn webhook_host(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("http://{host}")
}

/// A parsed runbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Runbook {
    pub id: String,
    pub title: String,
    /// The human page (a path or URL), what every error the runbook causes links to.
    pub page: String,
    pub severity: String,
    pub mode: Mode,
    pub detector: Kind,
    pub scope: ScopeKind,
    pub min_shift: f64,
    pub actions: Vec<Action>,
    pub cooldown: Duration,
    pub revert_after: Duration,
    pub max_scopes: usize,
    /// Where it was read from.
    pub source: String,
}

/// Parses one runbook; every problem with its key path and line.
pub fn parse(name: &str, src: &str) -> Result<Runbook, Vec<String>> {
    let doc = match toml_edit::ImDocument::parse(src.to_string()) {
        Ok(d) => d,
        Err(e) => return Err(vec![format!("{name}: {e}")]),
    };
    let mut errs = Errors::new(src);
    let mut root = Table::root(doc.as_table());
    let need = |t: &mut Table<'_>, errs: &mut Errors<'_>, key: &str| {
        let v = t.string(errs, key);
        if v.is_none() {
            errs.push(&t.child_path(key), t.span(), "missing");
        }
        v.unwrap_or_default()
    };
    let id = need(&mut root, &mut errs, "id");
    let title = need(&mut root, &mut errs, "title");
    let page = need(&mut root, &mut errs, "page");
    let severity = root
        .string(&mut errs, "severity")
        .unwrap_or("warning".into());
    if !["info", "warning", "critical"].contains(&severity.as_str()) {
        errs.push(
            "severity",
            root.value_span("severity"),
            format!("{severity:?}: expected \"info\", \"warning\" or \"critical\""),
        );
    }
    let mode = match root.string(&mut errs, "mode").as_deref() {
        None | Some("auto") => Mode::Auto,
        Some("approve") => Mode::Approve,
        Some("dry_run") => Mode::DryRun,
        Some(other) => {
            errs.push(
                "mode",
                root.value_span("mode"),
                format!("{other:?}: expected \"auto\", \"approve\" or \"dry_run\""),
            );
            Mode::Auto
        }
    };
    let secs = |t: &mut Table<'_>, errs: &mut Errors<'_>, key: &str, default: u64| {
        Duration::from_secs(t.uint(errs, key, 7 * 86_400).unwrap_or(default))
    };
    let cooldown = secs(&mut root, &mut errs, "cooldown_s", 900);
    let revert_after = secs(&mut root, &mut errs, "revert_after_s", 600);
    if revert_after.is_zero() {
        errs.push(
            "revert_after_s",
            root.value_span("revert_after_s"),
            "must be at least 1",
        );
    }
    let max_scopes = root.uint(&mut errs, "max_scopes", 10_000).unwrap_or(3) as usize;
    if max_scopes == 0 {
        errs.push(
            "max_scopes",
            root.value_span("max_scopes"),
            "must be at least 1",
        );
    }
    let (mut detector, mut scope, mut min_shift) = (Kind::Refusal, ScopeKind::Tenant, 1.0);
    match root.table(&mut errs, "trigger") {
        None => errs.push("trigger", None, "missing"),
        Some(mut t) => {
            match t.string(&mut errs, "detector") {
                Some(d) => match Kind::parse(&d) {
                    Some(k) => detector = k,
                    None => {
                        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                        errs.push(
                            &t.child_path("detector"),
                            t.value_span("detector"),
                            format!("{d:?}: expected one of {}", names.join(", ")),
                        );
                    }
                },
                None => errs.push(&t.child_path("detector"), t.span(), "missing"),
            }
            match t
                .string(&mut errs, "scope")
                .as_deref()
                .map(|s| (s, ScopeKind::parse(s)))
            {
                None => {}
                Some((_, Some(k))) => scope = k,
                Some((s, None)) => errs.push(
                    &t.child_path("scope"),
                    t.value_span("scope"),
                    format!("{s:?}: expected \"tenant\", \"model\" or \"route\""),
                ),
            }
            if let Some(m) = t.number(&mut errs, "min_shift", 1.0..=1000.0, "") {
                min_shift = m;
            }
            t.finish(&mut errs);
        }
    }
    let mut actions = Vec::new();
    let tables = root.tables(&mut errs, "action");
    if tables.is_empty() {
        errs.push("action", None, "at least one [[action]] is needed");
    }
    for mut t in tables {
        let kind = t.string(&mut errs, "kind");
        let action = match kind.as_deref() {
            Some("throttle") => {
                let rpm = t
                    .uint(&mut errs, "requests_per_minute", 1 << 31)
                    .map(|n| n as u32);
                let tpm = t.uint(&mut errs, "tokens_per_minute", 1 << 40);
                if rpm.is_none() && tpm.is_none() {
                    errs.push(
                        &t.child_path("kind"),
                        t.span(),
                        "a throttle needs requests_per_minute or tokens_per_minute",
                    );
                }
                Some(Action::Throttle {
                    requests_per_minute: rpm,
                    tokens_per_minute: tpm,
                })
            }
            Some("switch_off") => Some(Action::SwitchOff),
            Some("degrade") => {
                let max_tokens = t.uint(&mut errs, "max_tokens", 1 << 20);
                let no_stream = t.boolean(&mut errs, "stream") == Some(false);
                if max_tokens.is_none() && !no_stream {
                    errs.push(
                        &t.child_path("kind"),
                        t.span(),
                        "a degradation needs max_tokens or stream = false",
                    );
                }
                Some(Action::Degrade {
                    max_tokens,
                    no_stream,
                })
            }
            Some("notify") => match t.string(&mut errs, "webhook") {
                Some(w)
                    if w.starts_with("http://")
                        && !w["http://".len()..]
                            .split('/')
                            .next()
                            .unwrap_or("")
                            .contains('@') =>
                {
                    Some(Action::Notify { webhook: w })
                }
                Some(w) => {
                    errs.push(
                        &t.child_path("webhook"),
                        t.value_span("webhook"),
                        format!(
                            "{}: an http:// URL without credentials (an Alertmanager, or a relay to one)",
                            webhook_host(&w)
                        ),
                    );
                    None
                }
                None => {
                    errs.push(&t.child_path("webhook"), t.span(), "missing");
                    None
                }
            },
            Some("annotate") => Some(Action::Annotate),
            Some(other) => {
                errs.push(
                    &t.child_path("kind"),
                    t.value_span("kind"),
                    format!(
                        "{other:?}: expected \"throttle\", \"switch_off\", \"degrade\", \"notify\" or \"annotate\""
                    ),
                );
                None
            }
            None => {
                errs.push(&t.child_path("kind"), t.span(), "missing");
                None
            }
        };
        actions.extend(action);
        t.finish(&mut errs);
    }
    root.finish(&mut errs);
    if !errs.list.is_empty() {
        return Err(errs.list.iter().map(|e| format!("{name}: {e}")).collect());
    }
    Ok(Runbook {
        id,
        title,
        page,
        severity,
        mode,
        detector,
        scope,
        min_shift,
        actions,
        cooldown,
        revert_after,
        max_scopes,
        source: name.to_string(),
    })
}

/// Every runbook of a directory (`*.toml` but `Cargo.toml`), or the shipped ones; each one's page must exist
/// beside it (shipped: in `runbooks/`), and ids must be unique. Every problem is listed.
pub fn load(dir: Option<&Path>) -> Result<Vec<Runbook>, Vec<String>> {
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    match dir {
        None => sources.extend(SHIPPED.iter().map(|(n, s)| (n.to_string(), s.to_string()))),
        Some(d) => match std::fs::read_dir(d) {
            Err(e) => return Err(vec![format!("{}: {e}", d.display())]),
            Ok(entries) => {
                let mut paths: Vec<_> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    // The crate's own manifest lives beside the shipped runbooks.
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "toml")
                            && p.file_name().is_some_and(|n| n != "Cargo.toml")
                    })
                    .collect();
                paths.sort();
                for p in paths {
                    match std::fs::read_to_string(&p) {
                        Ok(s) => sources.push((p.display().to_string(), s)),
                        Err(e) => errors.push(format!("{}: {e}", p.display())),
                    }
                }
            }
        },
    }
    let mut books = Vec::new();
    for (name, src) in &sources {
        match parse(name, src) {
            Ok(b) => books.push(b),
            Err(e) => errors.extend(e),
        }
    }
    for b in &books {
        if books.iter().filter(|o| o.id == b.id).count() > 1
            && !errors.iter().any(|e| e.contains(&format!("id {:?}", b.id)))
        {
            errors.push(format!(
                "{}: id {:?} is used by more than one runbook",
                b.source, b.id
            ));
        }
        if let Some(d) = dir {
            if !b.page.contains("://") && !d.join(&b.page).is_file() {
                errors.push(format!(
                    "{}: page: {} not found beside it",
                    b.source, b.page
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(books)
    } else {
        Err(errors)
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for an operator (`approve` mode).
    Pending,
    /// Actions applied; reverted at `revert_at`.
    Acting,
    /// Actions undone.
    Reverted,
    /// Dry run: recorded what would have been done.
    DryRun,
    /// Not acted on: the runbook's blast radius was full.
    Suppressed,
    /// Waited for approval longer than [`PENDING_TTL`].
    Expired,
}

/// How long an alert waits for approval.
pub const PENDING_TTL: Duration = Duration::from_secs(24 * 3600);

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending_approval",
            Status::Acting => "acting",
            Status::Reverted => "reverted",
            Status::DryRun => "dry_run",
            Status::Suppressed => "suppressed",
            Status::Expired => "expired",
        }
    }
}

/// A detection a runbook took up.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: u64,
    pub runbook: String,
    pub page: String,
    pub severity: String,
    pub detector: Kind,
    pub scope: Scope,
    pub fired_at: SystemTime,
    pub baseline: f64,
    pub observed: f64,
    pub shift: f64,
    pub status: Status,
    pub approved_by: Option<String>,
    pub revert_at: Option<SystemTime>,
    pub actions: Vec<Action>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Alert {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "runbook": self.runbook,
            "runbook_page": self.page,
            "severity": self.severity,
            "detector": self.detector.name(),
            "scope": self.scope.to_string(),
            "fired_at": unix(self.fired_at),
            "baseline": self.baseline,
            "observed": self.observed,
            "shift": self.shift,
            "status": self.status.name(),
            "approved_by": self.approved_by,
            "revert_at": self.revert_at.map(unix),
            "actions": self.actions.iter().map(Action::describe).collect::<Vec<_>>(),
        })
    }

    /// The Alertmanager v2 `POST /api/v2/alerts` body for this alert (a one-element list).
    pub fn alertmanager_body(&self, resolved: bool) -> Value {
        let rfc3339 = |t: SystemTime| format_rfc3339(unix(t));
        let mut a = json!({
            "labels": {
                "alertname": self.runbook,
                "severity": self.severity,
                "detector": self.detector.name(),
                "scope": self.scope.to_string(),
                "service": "warden",
                "warden_alert_id": self.id.to_string(),
            },
            "annotations": {
                "summary": format!("{} on {}", self.detector.name(), self.scope),
                "description": format!(
                    "{} rate {:.4} against a baseline of {:.4} ({:.1}x); actions: {}",
                    self.detector.name(), self.observed, self.baseline, self.shift,
                    self.actions.iter().map(Action::describe).collect::<Vec<_>>().join(", ")
                ),
                "runbook_url": self.page,
            },
            "startsAt": rfc3339(self.fired_at),
        });
        if resolved {
            a["endsAt"] = json!(rfc3339(SystemTime::now()));
        }
        json!([a])
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a unix time (UTC).
fn format_rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What the proxy must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Apply `action` to the alert's scope until `until` (throttle, switch, degrade).
    Apply {
        alert: u64,
        action: Action,
        until: SystemTime,
    },
    /// Undo `action` on the alert's scope.
    Revert { alert: u64, action: Action },
    /// Post the alert to a webhook (`resolved`: the revert).
    Notify {
        alert: u64,
        webhook: String,
        resolved: bool,
    },
    /// Write an audit row: `action` (`runbook.alert`, `runbook.act`, ...) on the alert.
    Audit {
        alert: u64,
        action: &'static str,
        actor: String,
        detail: String,
    },
}

/// Alerts kept for `/admin/alerts`.
const KEEP_ALERTS: usize = 500;

/// The runbook engine.
#[derive(Debug)]
pub struct Engine {
    books: Vec<Runbook>,
    alerts: VecDeque<Alert>,
    next_id: u64,
    /// (runbook, scope) → when it last fired.
    last: HashMap<(String, Scope), SystemTime>,
}

impl Engine {
    pub fn new(books: Vec<Runbook>) -> Engine {
        Engine {
            books,
            alerts: VecDeque::new(),
            next_id: 1,
            last: HashMap::new(),
        }
    }

    pub fn runbooks(&self) -> &[Runbook] {
        &self.books
    }

    /// Alerts, newest last.
    pub fn alerts(&self) -> impl DoubleEndedIterator<Item = &Alert> {
        self.alerts.iter()
    }

    pub fn alert(&self, id: u64) -> Option<&Alert> {
        self.alerts.iter().find(|a| a.id == id)
    }

    /// A detection: an alert per runbook that takes it up, and the steps to carry out.
    pub fn on_detection(&mut self, d: &Detection) -> Vec<Step> {
        let mut steps = Vec::new();
        let matching: Vec<Runbook> = self
            .books
            .iter()
            .filter(|b| {
                b.detector == d.detector && b.scope == d.scope.kind && d.alarm.shift >= b.min_shift
            })
            .cloned()
            .collect();
        for book in matching {
            let key = (book.id.clone(), d.scope.clone());
            if self
                .last
                .get(&key)
                .is_some_and(|&t| d.at.duration_since(t).unwrap_or_default() < book.cooldown)
            {
                continue;
            }
            self.last.insert(key, d.at);
            let acting = self
                .alerts
                .iter()
                .filter(|a| a.runbook == book.id && a.status == Status::Acting)
                .count();
            let status = match book.mode {
                Mode::DryRun => Status::DryRun,
                _ if acting >= book.max_scopes => Status::Suppressed,
                Mode::Approve => Status::Pending,
                Mode::Auto => Status::Acting,
            };
            let id = self.next_id;
            self.next_id += 1;
            let alert = Alert {
                id,
                runbook: book.id.clone(),
                page: book.page.clone(),
                severity: book.severity.clone(),
                detector: d.detector,
                scope: d.scope.clone(),
                fired_at: d.at,
                baseline: d.alarm.baseline,
                observed: d.alarm.observed,
                shift: d.alarm.shift,
                status,
                approved_by: None,
                revert_at: None,
                actions: book.actions.clone(),
            };
            steps.push(Step::Audit {
                alert: id,
                action: "runbook.alert",
                actor: format!("detector:{}", d.detector.name()),
                detail: format!(
                    "{} on {}: {:.4} against {:.4} ({:.1}x); {} ({})",
                    d.detector.name(),
                    d.scope,
                    d.alarm.observed,
                    d.alarm.baseline,
                    d.alarm.shift,
                    status.name(),
                    book.mode.name()
                ),
            });
            self.push(alert);
            match status {
                Status::Acting => steps.extend(self.act(id, d.at, None)),
                Status::DryRun => steps.push(Step::Audit {
                    alert: id,
                    action: "runbook.dry_run",
                    actor: format!("runbook:{}", book.id),
                    detail: format!(
                        "would: {}",
                        book.actions
                            .iter()
                            .map(Action::describe)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
                _ => {}
            }
            // Notifications go out whatever the mode: an operator must hear of it.
            for a in &book.actions {
                if let Action::Notify { webhook } = a {
                    steps.push(Step::Notify {
                        alert: id,
                        webhook: webhook.clone(),
                        resolved: false,
                    });
                }
            }
        }
        steps
    }

    /// An operator approves a pending alert: its actions are applied now.
    pub fn approve(&mut self, id: u64, actor: &str, now: SystemTime) -> Result<Vec<Step>, String> {
        let Some(alert) = self.alerts.iter_mut().find(|a| a.id == id) else {
            return Err(format!("no alert {id}"));
        };
        if alert.status != Status::Pending {
            return Err(format!(
                "alert {id} is {}, not pending approval",
                alert.status.name()
            ));
        }
        let runbook = alert.runbook.clone();
        let limit = self
            .books
            .iter()
            .find(|b| b.id == runbook)
            .map_or(1, |b| b.max_scopes);
        let acting = self
            .alerts
            .iter()
            .filter(|a| a.runbook == runbook && a.status == Status::Acting)
            .count();
        if acting >= limit {
            return Err(format!(
                "runbook {runbook} already acts on {acting} scope(s), its max_scopes"
            ));
        }
        let Some(alert) = self.alerts.iter_mut().find(|a| a.id == id) else {
            return Err(format!("no alert {id}"));
        };
        alert.status = Status::Acting;
        alert.approved_by = Some(actor.to_string());
        Ok(self.act(id, now, Some(actor)))
    }

    fn act(&mut self, id: u64, now: SystemTime, approver: Option<&str>) -> Vec<Step> {
        let Some(book_id) = self.alert(id).map(|a| a.runbook.clone()) else {
            return Vec::new();
        };
        let Some(book) = self.books.iter().find(|b| b.id == book_id).cloned() else {
            return Vec::new();
        };
        let until = now + book.revert_after;
        if let Some(a) = self.alerts.iter_mut().find(|a| a.id == id) {
            a.revert_at = Some(until);
        }
        let mut steps = Vec::new();
        for action in &book.actions {
            let actor = approver.map_or_else(|| format!("runbook:{}", book.id), str::to_string);
            match action {
                Action::Notify { .. } => {}
                Action::Annotate => steps.push(Step::Audit {
                    alert: id,
                    action: "runbook.annotate",
                    actor,
                    detail: book.title.clone(),
                }),
                a => {
                    steps.push(Step::Apply {
                        alert: id,
                        action: a.clone(),
                        until,
                    });
                    steps.push(Step::Audit {
                        alert: id,
                        action: "runbook.act",
                        actor,
                        detail: format!("{} until {}", a.describe(), format_rfc3339(unix(until))),
                    });
                }
            }
        }
        steps
    }

    /// The reverts due at `now`.
    pub fn tick(&mut self, now: SystemTime) -> Vec<Step> {
        let mut steps = Vec::new();
        for a in self.alerts.iter_mut() {
            if a.status == Status::Pending
                && now.duration_since(a.fired_at).unwrap_or_default() >= PENDING_TTL
            {
                a.status = Status::Expired;
                steps.push(Step::Audit {
                    alert: a.id,
                    action: "runbook.expired",
                    actor: format!("runbook:{}", a.runbook),
                    detail: format!("not approved within {} h", PENDING_TTL.as_secs() / 3600),
                });
                continue;
            }
            if a.status != Status::Acting || a.revert_at.is_none_or(|t| t > now) {
                continue;
            }
            a.status = Status::Reverted;
            for action in a.actions.iter().filter(|x| x.reverts()) {
                steps.push(Step::Revert {
                    alert: a.id,
                    action: action.clone(),
                });
                steps.push(Step::Audit {
                    alert: a.id,
                    action: "runbook.revert",
                    actor: format!("runbook:{}", a.runbook),
                    detail: format!("{} undone on {} (automatic)", action.describe(), a.scope),
                });
            }
            for action in &a.actions {
                if let Action::Notify { webhook } = action {
                    steps.push(Step::Notify {
                        alert: a.id,
                        webhook: webhook.clone(),
                        resolved: true,
                    });
                }
            }
        }
        steps
    }

    fn push(&mut self, alert: Alert) {
        // Forget the oldest alerts that are done with.
        while self.alerts.len() >= KEEP_ALERTS {
            match self
                .alerts
                .iter()
                .position(|a| !matches!(a.status, Status::Acting | Status::Pending))
            {
                Some(i) => {
                    self.alerts.remove(i);
                }
                None => break,
            }
        }
        self.alerts.push_back(alert);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Alarm;

    #[test]
    fn the_shipped_runbooks_parse_and_their_pages_exist() {
        let books = load(None).unwrap();
        assert_eq!(books.len(), SHIPPED.len());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        for b in &books {
            assert!(dir.join(&b.page).is_file(), "{}: {}", b.id, b.page);
        }
        assert!(load(Some(dir)).is_ok());
    }

    #[test]
    fn every_problem_is_listed_with_its_key() {
        let src = r#"
id = "x"
title = "X"
page = "x.md"
mode = "sometimes"
colour = "red"
[trigger]
detector = "vibes"
scope = "planet"
[[action]]
kind = "throttle"
[[action]]
kind = "notify"
webhook = "https://example.com"
[[action]]
kind = "launch"
[[action]]
kind = "notify"
webhook = "http://user:secret@alerts.internal/hook"
"#;
        let errs = parse("x.toml", src).unwrap_err().join("\n");
        for want in [
            "mode: \"sometimes\"",
            "colour: unknown key",
            "trigger.detector: \"vibes\"",
            "trigger.scope: \"planet\"",
            "needs requests_per_minute or tokens_per_minute",
            "action[1].webhook",
            "action[2].kind: \"launch\"",
            "action[3].webhook",
        ] {
            assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
        }
        assert!(!errs.contains("secret"), "credentials echoed: {errs}");
    }

    fn detection(scope: &str, at: SystemTime) -> Detection {
        Detection {
            detector: Kind::Refusal,
            scope: Scope {
                kind: ScopeKind::Tenant,
                name: scope.into(),
            },
            alarm: Alarm {
                baseline: 0.02,
                shift: 3.0,
                observed: 0.06,
            },
            at,
        }
    }

    fn book(mode: Mode) -> Runbook {
        let mut b = load(None)
            .unwrap()
            .into_iter()
            .find(|b| b.id == "refusal-spike")
            .unwrap();
        b.mode = mode;
        b.max_scopes = 2;
        b
    }

    #[test]
    fn auto_acts_then_reverts_with_cooldown_and_blast_radius() {
        let mut e = Engine::new(vec![book(Mode::Auto)]);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let steps = e.on_detection(&detection("a", t0));
        assert!(
            steps.iter().any(|s| matches!(s, Step::Apply { .. })),
            "{steps:?}"
        );
        assert!(steps.iter().any(|s| matches!(
            s,
            Step::Audit {
                action: "runbook.alert",
                ..
            }
        )));
        // Cooldown: the same scope again at once does nothing.
        assert!(e
            .on_detection(&detection("a", t0 + Duration::from_secs(1)))
            .is_empty());
        e.on_detection(&detection("b", t0));
        // Blast radius 2: a third scope is suppressed.
        let third = e.on_detection(&detection("c", t0));
        assert!(!third.iter().any(|s| matches!(s, Step::Apply { .. })));
        assert_eq!(e.alerts().last().unwrap().status, Status::Suppressed);
        let b = e.books[0].clone();
        assert!(e
            .tick(t0 + b.revert_after - Duration::from_secs(1))
            .is_empty());
        let reverts = e.tick(t0 + b.revert_after);
        assert_eq!(
            reverts
                .iter()
                .filter(|s| matches!(s, Step::Revert { .. }))
                .count(),
            2
        );
        assert!(e.alerts().take(2).all(|a| a.status == Status::Reverted));
    }

    #[test]
    fn approve_waits_and_dry_run_only_records() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut e = Engine::new(vec![book(Mode::Approve)]);
        let steps = e.on_detection(&detection("a", t0));
        assert!(!steps.iter().any(|s| matches!(s, Step::Apply { .. })));
        let id = e.alerts().next().unwrap().id;
        let applied = e.approve(id, "alice", t0).unwrap();
        assert!(applied.iter().any(|s| matches!(s, Step::Apply { .. })));
        assert!(e.approve(id, "alice", t0).is_err());
        assert_eq!(e.alert(id).unwrap().approved_by.as_deref(), Some("alice"));

        // Unapproved alerts lapse after a day.
        let mut e = Engine::new(vec![book(Mode::Approve)]);
        e.on_detection(&detection("b", t0));
        let steps = e.tick(t0 + PENDING_TTL);
        assert!(steps.iter().any(|s| matches!(
            s,
            Step::Audit {
                action: "runbook.expired",
                ..
            }
        )));
        assert_eq!(e.alerts().next().unwrap().status, Status::Expired);

        let mut e = Engine::new(vec![book(Mode::DryRun)]);
        let steps = e.on_detection(&detection("a", t0));
        assert!(!steps.iter().any(|s| matches!(s, Step::Apply { .. })));
        assert!(steps.iter().any(|s| matches!(
            s,
            Step::Audit {
                action: "runbook.dry_run",
                ..
            }
        )));
    }

    #[test]
    fn the_alertmanager_body_has_the_fields_alertmanager_reads() {
        let mut e = Engine::new(vec![book(Mode::Auto)]);
        e.on_detection(&detection(
            "a",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_000),
        ));
        let body = e.alerts().next().unwrap().alertmanager_body(false);
        let a = &body[0];
        assert_eq!(a["labels"]["alertname"], "refusal-spike");
        assert_eq!(a["startsAt"], "2025-12-06T05:46:40Z");
        assert!(a["annotations"]["runbook_url"].is_string());
    }
}
