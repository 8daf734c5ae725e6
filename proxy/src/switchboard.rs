//! Kill switches: named, scoped states that on-call engineers flip while something is on fire.
//!
//! A switch has a scope (`global`, `tenant:NAME`, `model:NAME`, `route:NAME`, `upstream:NAME`,
//! `feature:NAME` with NAME one of `streaming`, `tools`, `logprobs`, `n`, or `rule:ID`), a state
//! (`on`, `off`, or `degraded` with parameters), the reason, who set it and when, and an optional
//! expiry after which it no longer applies (automatic revert). `on` is the same as no switch.
//!
//! The request path reads an immutable [`Snapshot`] through an atomic pointer ([`ArcSwap`]): no
//! lock, no allocation, a handful of hash lookups by `&str` however many switches exist. A change
//! builds a new snapshot, writes it to the state file (write a temporary file, fsync, rename: a
//! crash leaves the old file or the new one, never half of one) and swaps it in; a restart loads
//! the file, so every switch survives.
//!
//! Throttles are temporary request and token limits on a scope, on top of the config's quotas,
//! always with an expiry: `429 throttled` with `Retry-After` past them. Their buckets live
//! beside the snapshot ([`Switchboard::throttle`]).
//!
//! A fleet of sidecars shares one board through Redis (`[switchboard] redis_url`): the snapshot
//! is one JSON value under a key with its version. A change reads it, applies itself, and writes
//! it back only if the version has not moved (a Lua compare-and-set that also publishes the new
//! version); each sidecar's [`FleetSync`] listens on the channel, re-reads the key on every
//! message, on every (re)connect and every few seconds (pub/sub loses what is sent while a
//! subscriber is away), and adopts any newer version. With Redis unreachable a sidecar keeps the
//! last board it saw (and its state file), never an empty one, reports it in `/readyz` and
//! `warden_switchboard_redis_connected`, and refuses changes (`503`) rather than apply them to
//! itself alone.
//!
//! Effects, decided by [`Snapshot::check`] for one request:
//! - `off` on any scope the request touches: refused, `503 switched_off`, `Retry-After` from the
//!   expiry when there is one. `feature:streaming` off refuses streamed requests only, and so on.
//!   `rule:ID` off disables that rule in the input guard instead (an emergency exclusion).
//! - `degraded` with `max_tokens=N`: the request's `max_tokens` is clamped to N; with
//!   `stream=false`, a streamed request is refused as by `off` and the others go on. The response
//!   says `x-warden-degraded: SCOPE`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde_json::{json, Value};

/// A feature a switch can turn off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    Streaming,
    Tools,
    Logprobs,
    /// More than one choice (`n > 1`).
    N,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::Streaming => "streaming",
            Feature::Tools => "tools",
            Feature::Logprobs => "logprobs",
            Feature::N => "n",
        }
    }

    fn parse(s: &str) -> Option<Feature> {
        [
            Feature::Streaming,
            Feature::Tools,
            Feature::Logprobs,
            Feature::N,
        ]
        .into_iter()
        .find(|f| f.name() == s)
    }
}

/// Where a switch applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Global,
    Tenant(String),
    Model(String),
    /// `chat_completions`, `completions` or `embeddings`.
    Route(String),
    Upstream(String),
    Feature(Feature),
    /// One input-guard rule, by id.
    Rule(String),
}

impl Scope {
    /// Parses `global`, `tenant:NAME`, ...; the error says what was expected.
    pub fn parse(s: &str) -> Result<Scope, String> {
        if s == "global" {
            return Ok(Scope::Global);
        }
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected global or KIND:NAME"))?;
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(format!(
                "{s:?}: the name must be 1-128 printable characters"
            ));
        }
        let name = name.to_string();
        Ok(match kind {
            "tenant" => Scope::Tenant(name),
            "model" => Scope::Model(name),
            "route" => match name.as_str() {
                "chat_completions" | "completions" | "embeddings" => Scope::Route(name),
                _ => {
                    return Err(format!(
                        "{s:?}: routes are chat_completions, completions and embeddings"
                    ))
                }
            },
            "upstream" => Scope::Upstream(name),
            "feature" => {
                Scope::Feature(Feature::parse(&name).ok_or_else(|| {
                    format!("{s:?}: features are streaming, tools, logprobs and n")
                })?)
            }
            "rule" => Scope::Rule(name),
            _ => {
                return Err(format!(
                    "{s:?}: scopes are global, tenant:, model:, route:, upstream:, feature:, rule:"
                ))
            }
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Tenant(n) => write!(f, "tenant:{n}"),
            Scope::Model(n) => write!(f, "model:{n}"),
            Scope::Route(n) => write!(f, "route:{n}"),
            Scope::Upstream(n) => write!(f, "upstream:{n}"),
            Scope::Feature(x) => write!(f, "feature:{}", x.name()),
            Scope::Rule(n) => write!(f, "rule:{n}"),
        }
    }
}

/// A switch's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    On,
    Off,
    Degraded(Degrade),
}

/// What `degraded` changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Degrade {
    /// `max_tokens=N`: requests are clamped to N tokens.
    pub max_tokens: Option<u64>,
    /// `stream=false`: streamed requests are refused (`switched_off`); others go on.
    pub no_stream: bool,
}

impl Degrade {
    /// From `k=v` parameters; every unknown key or bad value is an error.
    pub fn parse(params: &[(String, String)]) -> Result<Degrade, String> {
        let mut d = Degrade::default();
        for (k, v) in params {
            match k.as_str() {
                "max_tokens" => {
                    d.max_tokens =
                        Some(v.parse().ok().filter(|&n: &u64| n > 0).ok_or_else(|| {
                            format!("max_tokens={v:?}: expected a whole number above 0")
                        })?)
                }
                "stream" => match v.as_str() {
                    "false" => d.no_stream = true,
                    _ => return Err(format!("stream={v:?}: only stream=false degrades")),
                },
                _ => {
                    return Err(format!(
                        "{k:?}: the degraded parameters are max_tokens and stream"
                    ))
                }
            }
        }
        if d.max_tokens.is_none() && !d.no_stream {
            return Err("degraded needs a parameter: max_tokens=N or stream=false".into());
        }
        Ok(d)
    }
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::On => "on",
            State::Off => "off",
            State::Degraded(_) => "degraded",
        }
    }
}

/// One switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub scope: Scope,
    pub state: State,
    pub reason: String,
    /// The admin key's name that set it.
    pub actor: String,
    /// Unix seconds.
    pub set_at: u64,
    /// Unix seconds after which it no longer applies.
    pub expires_at: Option<u64>,
    /// A global `off` also ends the streams in flight.
    pub cut_streams: bool,
    /// Set by a runbook: its page, which a request it refuses links to.
    pub runbook: Option<String>,
}

impl Switch {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "scope": self.scope.to_string(),
            "state": self.state.name(),
            "reason": self.reason,
            "actor": self.actor,
            "set_at": self.set_at,
            "expires_at": self.expires_at,
            "cut_streams": self.cut_streams,
        });
        if let Some(r) = &self.runbook {
            v["runbook"] = json!(r);
        }
        if let State::Degraded(d) = &self.state {
            v["params"] = json!({"max_tokens": d.max_tokens});
            if d.no_stream {
                v["params"]["stream"] = json!(false);
            }
        }
        v
    }

    fn from_json(v: &Value) -> Result<Switch, String> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .ok_or(format!("{k}: missing"))
        };
        let scope = Scope::parse(s("scope")?)?;
        let state = match s("state")? {
            "on" => State::On,
            "off" => State::Off,
            "degraded" => State::Degraded(Degrade {
                max_tokens: v.pointer("/params/max_tokens").and_then(Value::as_u64),
                no_stream: v.pointer("/params/stream") == Some(&Value::Bool(false)),
            }),
            other => return Err(format!("state {other:?}")),
        };
        Ok(Switch {
            scope,
            state,
            reason: s("reason")?.to_string(),
            actor: s("actor")?.to_string(),
            set_at: v.get("set_at").and_then(Value::as_u64).unwrap_or(0),
            expires_at: v.get("expires_at").and_then(Value::as_u64),
            cut_streams: v
                .get("cut_streams")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            runbook: v.get("runbook").and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// A temporary limit on a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    pub scope: Scope,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub reason: String,
    pub actor: String,
    pub set_at: u64,
    /// Throttles always expire (unix seconds).
    pub expires_at: u64,
    /// Set by a runbook: its page, which a request it sheds links to.
    pub runbook: Option<String>,
}

impl Throttle {
    pub fn to_json(&self) -> Value {
        json!({
            "scope": self.scope.to_string(),
            "rpm": self.requests_per_minute,
            "tpm": self.tokens_per_minute,
            "reason": self.reason,
            "actor": self.actor,
            "set_at": self.set_at,
            "expires_at": self.expires_at,
            "runbook": self.runbook,
        })
    }

    fn from_json(v: &Value) -> Result<Throttle, String> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .ok_or(format!("{k}: missing"))
        };
        Ok(Throttle {
            scope: Scope::parse(s("scope")?)?,
            requests_per_minute: v.get("rpm").and_then(Value::as_u64).map(|n| n as u32),
            tokens_per_minute: v.get("tpm").and_then(Value::as_u64),
            reason: s("reason")?.to_string(),
            actor: s("actor")?.to_string(),
            set_at: v.get("set_at").and_then(Value::as_u64).unwrap_or(0),
            expires_at: v
                .get("expires_at")
                .and_then(Value::as_u64)
                .ok_or("expires_at: missing")?,
            runbook: v.get("runbook").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// Whether it applies to `r`.
    fn covers(&self, r: &Request<'_>) -> bool {
        match &self.scope {
            Scope::Global => true,
            Scope::Tenant(n) => n == r.tenant,
            Scope::Model(n) => n == r.model,
            Scope::Route(n) => n == r.route,
            Scope::Upstream(n) => r.upstream == Some(n.as_str()),
            Scope::Feature(Feature::Streaming) => r.stream,
            Scope::Feature(Feature::Tools) => r.tools,
            Scope::Feature(Feature::Logprobs) => r.logprobs,
            Scope::Feature(Feature::N) => r.n > 1,
            Scope::Rule(_) => false,
        }
    }
}

/// What one request is, as far as switches care.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub route: &'a str,
    pub upstream: Option<&'a str>,
    pub stream: bool,
    pub tools: bool,
    pub logprobs: bool,
    pub n: u64,
}

/// What the switches say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    Pass,
    Off {
        switch: &'a Switch,
        /// Until the switch expires, when it does.
        retry_after: Option<Duration>,
    },
    Degraded {
        /// The smallest `max_tokens` of the degraded scopes.
        max_tokens: u64,
        scopes: Vec<&'a Scope>,
    },
}

/// All switches at one moment: what the request path reads.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    global: Option<Switch>,
    tenants: HashMap<String, Switch>,
    models: HashMap<String, Switch>,
    routes: HashMap<String, Switch>,
    upstreams: HashMap<String, Switch>,
    features: HashMap<Feature, Switch>,
    rules: HashMap<String, Switch>,
    /// Few, so a list.
    pub throttles: Vec<Throttle>,
}

impl Snapshot {
    /// A snapshot holding `switches` (a later one replaces an earlier one of the same scope).
    pub fn from_switches(version: u64, switches: impl IntoIterator<Item = Switch>) -> Snapshot {
        let mut s = Snapshot {
            version,
            ..Snapshot::default()
        };
        for sw in switches {
            s.insert(sw);
        }
        s
    }

    /// From the text of the state file or the fleet key.
    pub fn parse(text: &[u8]) -> Result<Snapshot, String> {
        let v: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
        Snapshot::from_json(&v)
    }

    /// From the JSON of the state file or the fleet key.
    pub fn from_json(v: &Value) -> Result<Snapshot, String> {
        let mut snap = Snapshot {
            version: v.get("version").and_then(Value::as_u64).unwrap_or(0),
            ..Snapshot::default()
        };
        for (i, t) in v
            .get("throttles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            snap.throttles
                .push(Throttle::from_json(t).map_err(|e| format!("throttles[{i}]: {e}"))?);
        }
        for (i, s) in v
            .get("switches")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            snap.insert(Switch::from_json(s).map_err(|e| format!("switches[{i}]: {e}"))?);
        }
        Ok(snap)
    }

    fn slot(&mut self, scope: &Scope) -> SlotMut<'_> {
        match scope {
            Scope::Global => SlotMut::Global(&mut self.global),
            Scope::Tenant(n) => SlotMut::Map(&mut self.tenants, n.clone()),
            Scope::Model(n) => SlotMut::Map(&mut self.models, n.clone()),
            Scope::Route(n) => SlotMut::Map(&mut self.routes, n.clone()),
            Scope::Upstream(n) => SlotMut::Map(&mut self.upstreams, n.clone()),
            Scope::Rule(n) => SlotMut::Map(&mut self.rules, n.clone()),
            Scope::Feature(f) => SlotMut::Feature(&mut self.features, *f),
        }
    }

    fn insert(&mut self, s: Switch) -> Option<Switch> {
        let scope = s.scope.clone();
        match self.slot(&scope) {
            SlotMut::Global(g) => g.replace(s),
            SlotMut::Map(m, k) => m.insert(k, s),
            SlotMut::Feature(m, f) => m.insert(f, s),
        }
    }

    fn remove(&mut self, scope: &Scope) -> Option<Switch> {
        match self.slot(scope) {
            SlotMut::Global(g) => g.take(),
            SlotMut::Map(m, k) => m.remove(&k),
            SlotMut::Feature(m, f) => m.remove(&f),
        }
    }

    /// Every switch, in scope order.
    pub fn all(&self) -> Vec<&Switch> {
        let mut v: Vec<&Switch> = self
            .global
            .iter()
            .chain(self.tenants.values())
            .chain(self.models.values())
            .chain(self.routes.values())
            .chain(self.upstreams.values())
            .chain(self.features.values())
            .chain(self.rules.values())
            .collect();
        v.sort_by_key(|s| s.scope.to_string());
        v
    }

    /// The switches in force now (not `on`, not expired), in scope order.
    pub fn live(&self, now: SystemTime) -> Vec<&Switch> {
        let now = unix(now);
        self.all()
            .into_iter()
            .filter(|s| s.live(now) && s.state != State::On)
            .collect()
    }

    /// Input-guard rules switched off now: excluded from the guard.
    pub fn rules_off(&self, now: SystemTime) -> impl Iterator<Item = &str> {
        let now = unix(now);
        self.rules
            .values()
            .filter(move |s| s.live(now) && s.state == State::Off)
            .map(|s| match &s.scope {
                Scope::Rule(id) => id.as_str(),
                _ => "",
            })
    }

    /// The throttles in force now (not expired).
    pub fn live_throttles(&self, now: SystemTime) -> impl Iterator<Item = &Throttle> {
        let now = unix(now);
        self.throttles.iter().filter(move |t| now < t.expires_at)
    }

    /// The throttles in force now that cover `r`.
    pub fn throttles_for<'a>(
        &'a self,
        r: &'a Request<'_>,
        now: SystemTime,
    ) -> impl Iterator<Item = &'a Throttle> + 'a {
        self.live_throttles(now).filter(move |t| t.covers(r))
    }

    /// Whether a global `off` that cuts streams is in force.
    pub fn cuts_streams(&self, now: SystemTime) -> bool {
        let now = unix(now);
        self.global
            .as_ref()
            .is_some_and(|s| s.live(now) && s.state == State::Off && s.cut_streams)
    }

    /// The switches' verdict on one request (its upstream's switch too when `r.upstream` is
    /// set).
    pub fn check(&self, r: &Request<'_>, now: SystemTime) -> Verdict<'_> {
        let features = [
            (r.stream, Feature::Streaming),
            (r.tools, Feature::Tools),
            (r.logprobs, Feature::Logprobs),
            (r.n > 1, Feature::N),
        ];
        let applying = self
            .global
            .iter()
            .chain(self.tenants.get(r.tenant))
            .chain(self.models.get(r.model))
            .chain(self.routes.get(r.route))
            .chain(r.upstream.and_then(|u| self.upstreams.get(u)))
            .chain(
                features
                    .iter()
                    .filter(|(used, _)| *used)
                    .filter_map(|(_, f)| self.features.get(f)),
            );
        verdict(applying, r.stream, now)
    }

    /// The verdict of the switch on `r.upstream` alone: for a request whose other scopes were
    /// checked before its upstream was chosen.
    pub fn check_upstream(&self, r: &Request<'_>, now: SystemTime) -> Verdict<'_> {
        verdict(
            r.upstream.and_then(|u| self.upstreams.get(u)),
            r.stream,
            now,
        )
    }
}

/// What the `applying` switches say about a request (`stream`: it streams): the first live
/// `off` (or `degraded` with `stream=false`, for a stream) refuses it; live `degraded` ones
/// combine, the smallest `max_tokens` winning.
fn verdict<'a>(
    applying: impl IntoIterator<Item = &'a Switch>,
    stream: bool,
    now: SystemTime,
) -> Verdict<'a> {
    let now_s = unix(now);
    let mut degraded: Option<(u64, Vec<&Scope>)> = None;
    for s in applying.into_iter().filter(|s| s.live(now_s)) {
        match &s.state {
            State::On => {}
            State::Degraded(d) if !(d.no_stream && stream) => {
                let cap = d.max_tokens.unwrap_or(u64::MAX);
                let entry = degraded.get_or_insert((u64::MAX, Vec::new()));
                entry.0 = entry.0.min(cap);
                entry.1.push(&s.scope);
            }
            State::Off | State::Degraded(_) => {
                return Verdict::Off {
                    switch: s,
                    retry_after: s
                        .expires_at
                        .map(|e| Duration::from_secs(e.saturating_sub(now_s).max(1))),
                }
            }
        }
    }
    match degraded {
        Some((max_tokens, scopes)) => Verdict::Degraded { max_tokens, scopes },
        None => Verdict::Pass,
    }
}

enum SlotMut<'a> {
    Global(&'a mut Option<Switch>),
    Map(&'a mut HashMap<String, Switch>, String),
    Feature(&'a mut HashMap<Feature, Switch>, Feature),
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The switches of this process: the snapshot the request path reads, and the state file.
pub struct Switchboard {
    current: ArcSwap<Snapshot>,
    /// The Redis the fleet shares, when there is one.
    fleet: Option<Fleet>,
    /// The buckets of the throttles, by scope and the time each was set (a new throttle on a
    /// scope starts full).
    buckets: Mutex<HashMap<(String, u64), crate::quota::TenantQuota>>,
    file: Option<PathBuf>,
    /// Serialises changes (readers never take it).
    write: Mutex<()>,
}

/// `[switchboard] redis_url` and `redis_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub url: String,
    pub key: String,
}

struct Fleet {
    client: redis::Client,
    key: String,
    channel: String,
    connected: AtomicBool,
}

/// Write `next` where the fleet keeps the board if the version there is still `expected`, and
/// publish the new version; 1 when written, 0 when someone else wrote first.
const CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
local v = 0
if cur then v = cjson.decode(cur)['version'] or 0 end
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
";

/// How long a change waits for Redis.
const FLEET_TIMEOUT: Duration = Duration::from_secs(2);

/// A change, for the audit row and the reply.
#[derive(Debug, Clone)]
pub struct Change {
    pub before: Option<Switch>,
    pub after: Option<Switch>,
    pub version: u64,
}

impl Switchboard {
    /// Loads the state file when there is one (a missing file is an empty board); with `fleet`,
    /// the board is shared through Redis (see the module docs; [`FleetSync`] keeps it current).
    pub fn open(file: Option<PathBuf>, fleet: Option<&FleetConfig>) -> Result<Switchboard, String> {
        let mut snap = Snapshot::default();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    snap =
                        Snapshot::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        let fleet = match fleet {
            Some(f) => Some(Fleet {
                client: redis::Client::open(f.url.as_str())
                    .map_err(|e| format!("redis_url: {e}"))?,
                key: f.key.clone(),
                channel: format!("{}:changes", f.key),
                connected: AtomicBool::new(false),
            }),
            None => None,
        };
        Ok(Switchboard {
            fleet,
            buckets: Mutex::new(HashMap::new()),
            current: ArcSwap::from_pointee(snap),
            file,
            write: Mutex::new(()),
        })
    }

    /// The snapshot in force (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Sets (or replaces) a switch; `on` removes it.
    pub fn set(&self, s: Switch) -> Result<Change, String> {
        self.change(|snap| {
            let after = (s.state != State::On).then(|| s.clone());
            let before = match &after {
                Some(a) => snap.insert(a.clone()),
                None => snap.remove(&s.scope),
            };
            (before, after)
        })
    }

    /// Sets (or replaces) the throttle of its scope.
    pub fn set_throttle(&self, t: Throttle) -> Result<(Option<Throttle>, u64), String> {
        let mut before = None;
        let change = self.change(|snap| {
            before = snap
                .throttles
                .iter()
                .position(|o| o.scope == t.scope)
                .map(|i| snap.throttles.remove(i));
            snap.throttles.push(t.clone());
            (None, None)
        })?;
        Ok((before, change.version))
    }

    /// Removes the throttle of `scope`.
    pub fn clear_throttle(&self, scope: &Scope) -> Result<(Option<Throttle>, u64), String> {
        let mut before = None;
        let change = self.change(|snap| {
            before = snap
                .throttles
                .iter()
                .position(|o| &o.scope == scope)
                .map(|i| snap.throttles.remove(i));
            (None, None)
        })?;
        Ok((before, change.version))
    }

    /// Charges `tokens` to every throttle in force on `r`: the first one that is exhausted, as
    /// `(scope, retry after, the runbook that set it)`.
    pub fn throttle(
        &self,
        snap: &Snapshot,
        r: &Request<'_>,
        tokens: u64,
        now: SystemTime,
    ) -> Option<(String, Duration, Option<String>)> {
        let mut applying = snap.throttles_for(r, now).peekable();
        applying.peek()?;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let instant = std::time::Instant::now();
        for t in applying {
            let key = (t.scope.to_string(), t.set_at);
            let q = buckets.entry(key).or_insert_with(|| {
                crate::quota::TenantQuota::new(t.requests_per_minute, t.tokens_per_minute)
            });
            if let Err(e) = q.admit(tokens, instant) {
                let wait = match e {
                    crate::error::ApiError::RequestRateLimited { retry_after }
                    | crate::error::ApiError::TokenRateLimited { retry_after } => retry_after,
                    _ => Duration::from_secs(1),
                };
                return Some((t.scope.to_string(), wait, t.runbook.clone()));
            }
        }
        None
    }

    /// Removes the switch of `scope`.
    pub fn clear(&self, scope: &Scope) -> Result<Change, String> {
        self.change(|snap| (snap.remove(scope), None))
    }

    fn change(
        &self,
        mut f: impl FnMut(&mut Snapshot) -> (Option<Switch>, Option<Switch>),
    ) -> Result<Change, String> {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let wall = SystemTime::now();
        let now = unix(wall);
        // The board a change starts from (the fleet's, when it is shared), the next one, its
        // new version and what it did.
        let mut next_of = |base: &Snapshot| {
            let mut next = Snapshot {
                version: base.version + 1,
                ..Snapshot::default()
            };
            // Expired switches and throttles are dropped as the board changes.
            for s in base.all().into_iter().filter(|s| s.live(now)) {
                next.insert(s.clone());
            }
            next.throttles = base.live_throttles(wall).cloned().collect();
            let (before, after) = f(&mut next);
            (next, before, after)
        };
        let (next, before, after) = match &self.fleet {
            None => next_of(&self.current.load_full()),
            Some(fleet) => {
                let mut con = fleet
                    .client
                    .get_connection_with_timeout(FLEET_TIMEOUT)
                    .map_err(|e| {
                        fleet.connected.store(false, Ordering::Relaxed);
                        format!("fleet state (Redis) unreachable, nothing changed: {e}")
                    })?;
                let _ = con.set_read_timeout(Some(FLEET_TIMEOUT));
                let _ = con.set_write_timeout(Some(FLEET_TIMEOUT));
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let remote: Option<String> = redis::cmd("GET")
                        .arg(&fleet.key)
                        .query(&mut con)
                        .map_err(|e| format!("fleet state (Redis): {e}"))?;
                    let base = match remote {
                        Some(text) => Snapshot::parse(text.as_bytes())
                            .map_err(|e| format!("fleet state (Redis) unreadable: {e}"))?,
                        // A fleet starting empty takes this sidecar's board.
                        None => Snapshot::from_switches(0, Vec::new()),
                    };
                    let expected = base.version;
                    let (next, before, after) = next_of(&base);
                    let written: i64 = redis::Script::new(CAS_SCRIPT)
                        .key(&fleet.key)
                        .key(&fleet.channel)
                        .arg(expected)
                        .arg(String::from_utf8_lossy(&state_json(&next)).into_owned())
                        .arg(next.version)
                        .invoke(&mut con)
                        .map_err(|e| format!("fleet state (Redis): {e}"))?;
                    if written == 1 {
                        break (next, before, after);
                    }
                    if attempt == 5 {
                        return Err(
                            "fleet state (Redis) changed five times under this change; try again"
                                .into(),
                        );
                    }
                }
            }
        };
        if let Some(path) = &self.file {
            write_atomically(path, &state_json(&next))?;
        }
        let version = next.version;
        self.current.store(Arc::new(next));
        Ok(Change {
            before,
            after,
            version,
        })
    }

    /// Takes `remote` when it is newer than the board in force (and writes the state file).
    pub fn adopt(&self, remote: Snapshot) -> bool {
        let _w = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if remote.version <= self.current.load().version {
            return false;
        }
        if let Some(path) = &self.file {
            if let Err(e) = write_atomically(path, &state_json(&remote)) {
                tracing::warn!(error = %e, "could not write the switchboard state file");
            }
        }
        self.current.store(Arc::new(remote));
        true
    }

    /// Whether a global `off` that cuts streams is in force (read without taking a reference
    /// on the snapshot: this is asked on every chunk of an open stream).
    pub fn cuts_streams(&self, now: SystemTime) -> bool {
        self.current.load().cuts_streams(now)
    }

    /// `None` without a fleet; else whether Redis answered last time it was asked.
    pub fn fleet_connected(&self) -> Option<bool> {
        self.fleet
            .as_ref()
            .map(|f| f.connected.load(Ordering::Relaxed))
    }

    /// Keeps this board in step with the fleet's until the process exits (see [`FleetSync`]).
    pub async fn sync(&self) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.sync_once(fleet).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    if fleet.connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "switchboard lost Redis; keeping the last board it saw");
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One connection's life: subscribe, read the board, then re-read on every message and
    /// every few seconds. Returns when the connection fails.
    async fn sync_once(&self, fleet: &Fleet) -> Result<(), String> {
        use futures_util::StreamExt;
        let mut pubsub = fleet
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| e.to_string())?;
        pubsub
            .subscribe(&fleet.channel)
            .await
            .map_err(|e| e.to_string())?;
        let mut con = fleet
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        // Subscribed first, then read: a change made in between is seen either way.
        self.read_fleet(fleet, &mut con).await?;
        if !fleet.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(
                version = self.current.load().version,
                "switchboard connected to Redis"
            );
        }
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                m = messages.next() => {
                    if m.is_none() {
                        return Err("subscription closed".into());
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
            self.read_fleet(fleet, &mut con).await?;
        }
    }

    async fn read_fleet(
        &self,
        fleet: &Fleet,
        con: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), String> {
        let remote: Option<String> = tokio::time::timeout(
            FLEET_TIMEOUT,
            redis::cmd("GET").arg(&fleet.key).query_async(con),
        )
        .await
        .map_err(|_| "Redis did not answer in time".to_string())?
        .map_err(|e| e.to_string())?;
        if let Some(text) = remote {
            match Snapshot::parse(text.as_bytes()) {
                Ok(snap) => {
                    let version = snap.version;
                    if self.adopt(snap) {
                        tracing::info!(version, "switchboard updated from the fleet");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the fleet's switchboard does not parse; kept the last one")
                }
            }
        }
        Ok(())
    }
}

fn state_json(s: &Snapshot) -> Vec<u8> {
    let switches: Vec<Value> = s.all().into_iter().map(Switch::to_json).collect();
    let throttles: Vec<Value> = s.throttles.iter().map(Throttle::to_json).collect();
    let mut out = serde_json::to_vec_pretty(
        &json!({"version": s.version, "switches": switches, "throttles": throttles}),
    )
    .unwrap_or_default();
    out.push(b'\n');
    out
}

/// Write `bytes` to `path` so that a crash leaves the old content or the new, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("switches")
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| format!("{}: {e}", path.display()))
}

/// `15m`, `2h`, `90s`, `1d` → a duration.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (s, m, h, d)"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: units are s, m, h and d")),
    };
    if secs == 0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>() -> Request<'a> {
        Request {
            tenant: "acme",
            model: "llama",
            route: "chat_completions",
            upstream: Some("gpu-1"),
            stream: false,
            tools: false,
            logprobs: false,
            n: 1,
        }
    }

    fn switch(scope: &str, state: State, expires_at: Option<u64>) -> Switch {
        Switch {
            scope: Scope::parse(scope).unwrap(),
            state,
            reason: "incident 42".into(),
            actor: "oncall".into(),
            set_at: 1,
            expires_at,
            cut_streams: false,
            runbook: None,
        }
    }

    #[test]
    fn scopes_parse_and_print_back() {
        for s in [
            "global",
            "tenant:acme",
            "model:llama",
            "route:embeddings",
            "upstream:gpu-1",
            "feature:streaming",
            "feature:n",
            "rule:PI-1001",
        ] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "",
            "tenant:",
            "route:chat",
            "feature:images",
            "team:x",
            "tenant",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_narrowest_off_refuses_and_expiry_reverts() {
        let dir = std::env::temp_dir().join(format!("warden-switch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switches.json");
        let _ = std::fs::remove_file(&file);
        let b = Switchboard::open(Some(file.clone()), None).unwrap();
        let now = SystemTime::now();
        assert_eq!(b.snapshot().check(&req(), now), Verdict::Pass);
        b.set(switch("model:llama", State::Off, None)).unwrap();
        assert!(matches!(
            b.snapshot().check(&req(), now),
            Verdict::Off {
                retry_after: None,
                ..
            }
        ));
        let other = Request {
            model: "mistral",
            ..req()
        };
        assert_eq!(b.snapshot().check(&other, now), Verdict::Pass);
        // Features apply only to requests that use them.
        b.set(switch("feature:streaming", State::Off, None))
            .unwrap();
        let streamed = Request {
            model: "mistral",
            stream: true,
            ..req()
        };
        assert!(matches!(
            b.snapshot().check(&streamed, now),
            Verdict::Off { .. }
        ));
        assert_eq!(b.snapshot().check(&other, now), Verdict::Pass);
        // An expiry in the past: no longer applies.
        b.set(switch("tenant:acme", State::Off, Some(unix(now) - 1)))
            .unwrap();
        assert_eq!(b.snapshot().check(&other, now), Verdict::Pass);
        // Degraded: the smallest cap wins.
        b.set(switch(
            "route:chat_completions",
            State::Degraded(Degrade {
                max_tokens: Some(64),
                no_stream: false,
            }),
            None,
        ))
        .unwrap();
        b.set(switch(
            "upstream:gpu-1",
            State::Degraded(Degrade {
                max_tokens: Some(32),
                no_stream: false,
            }),
            None,
        ))
        .unwrap();
        match b.snapshot().check(&other, now) {
            Verdict::Degraded { max_tokens, scopes } => {
                assert_eq!(max_tokens, 32);
                assert_eq!(scopes.len(), 2);
            }
            v => panic!("{v:?}"),
        }
        // A restart keeps every switch (the expired one was dropped by the next change).
        let again = Switchboard::open(Some(file.clone()), None).unwrap();
        assert_eq!(again.snapshot().all().len(), 4);
        assert_eq!(again.snapshot().live(now).len(), 4);
        again.clear(&Scope::parse("model:llama").unwrap()).unwrap();
        assert_eq!(again.snapshot().all().len(), 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ttl_and_params_are_checked() {
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_ttl("0s").is_err() && parse_ttl("5w").is_err() && parse_ttl("m").is_err());
        let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(
            Degrade::parse(&p("max_tokens", "64")).unwrap().max_tokens,
            Some(64)
        );
        assert!(Degrade::parse(&p("max_tokens", "0")).is_err());
        assert!(Degrade::parse(&p("temperature", "0")).is_err());
        assert!(Degrade::parse(&p("stream", "false")).unwrap().no_stream);
        assert!(Degrade::parse(&p("stream", "true")).is_err());
        assert!(Degrade::parse(&[]).is_err());
    }
}
