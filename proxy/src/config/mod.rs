//! Warden's configuration: one TOML file.
//!
//! Loading is two pure steps and no I/O beyond reading the file: [`Config::parse`] decodes the
//! document (unknown keys and wrong types are errors) and validates it (addresses, references
//! between sections, limits), returning *every* problem with its key path and line so an operator
//! fixes them all at once. `warden check-config FILE` runs exactly this offline.
//!
//! The commented example at `proxy/warden.example.toml` documents every key.

mod guard;
mod incidents;
mod telemetry;
mod traces;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use warden_guards::toml_reader::ConfigError;
use warden_guards::toml_reader::{Errors, Table};

use crate::keys::KeyHash;
pub use guard::{
    ClassifierMode, GuardConfig, LeakAction, OutputMode, Paraphrase, PoolConfig, SystemPromptMode,
    TenantGuard,
};
pub use incidents::{DetectorsConfig, RunbooksConfig};
pub use telemetry::{OnFull, TelemetryConfig};
pub use traces::TracingConfig;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// BLAKE3 of the config file's text (`b3:` + 16 hex), recorded with every audit event.
    pub hash: String,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub logging: LoggingConfig,
    pub guard: GuardConfig,
    pub telemetry: TelemetryConfig,
    /// OpenTelemetry traces over OTLP; off unless an endpoint is set.
    pub tracing: TracingConfig,
    pub switchboard: SwitchboardConfig,
    pub detectors: DetectorsConfig,
    pub runbooks: RunbooksConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub tenants: Vec<TenantConfig>,
}

/// `[switchboard]`: where kill switches live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchboardConfig {
    /// `state_file`: the switches, kept across restarts (replaced atomically on every change).
    /// None: switches live in memory only.
    pub state_file: Option<std::path::PathBuf>,
    /// `runbook_url`: the link a `switched_off` error carries (default: the runbook shipped in
    /// the repository, `runbooks/switched_off.md`).
    pub runbook_url: Option<String>,
    /// `redis_url`: a fleet shares its switches through this Redis (`redis://host:port`).
    pub redis_url: Option<String>,
    /// `redis_key`: the key that holds the fleet's board (default `warden:switchboard`); its
    /// changes are published on `KEY:changes`.
    pub redis_key: String,
    /// `shared_quotas`: the tenants' request and token buckets live in the same Redis, so the
    /// fleet enforces one budget (needs `redis_url`).
    pub shared_quotas: bool,
}

impl Default for SwitchboardConfig {
    fn default() -> Self {
        SwitchboardConfig {
            state_file: None,
            runbook_url: None,
            redis_url: None,
            redis_key: "warden:switchboard".into(),
            shared_quotas: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Proxy listener (OpenAI-compatible API).
    pub listen: SocketAddr,
    /// Worker threads for the proxy service.
    pub threads: usize,
    /// Largest request body accepted; larger → 413.
    pub max_body_bytes: usize,
    /// After SIGTERM/SIGINT: how long in-flight requests (streams included) may take to finish.
    pub grace_period: Duration,
    /// How long a client may take to send its whole request body; slower → 408.
    pub body_read_timeout: Duration,
    /// How long a connection may wait for, or trickle, a request head before it is closed
    /// (keep-alive idle time included).
    pub header_timeout: Duration,
    /// Most open client connections; more are closed at once.
    pub max_connections: usize,
    /// Most open connections from one client address; none by default (a sidecar has one
    /// client, its own pod).
    pub max_connections_per_ip: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin listener: health, readiness, metrics. Loopback by default.
    pub listen: SocketAddr,
    /// Keys for the mutating admin endpoints (`POST /admin/...`). None = those endpoints refuse.
    pub keys: Vec<AdminKey>,
}

/// One operator allowed to call mutating admin endpoints.
#[derive(Debug, Clone)]
pub struct AdminKey {
    /// Who: recorded with every admin action.
    pub name: String,
    pub key_hash: KeyHash,
    /// What the key may do (see `admin::auth`); `admin` when not set.
    pub role: Role,
}

/// An admin key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Switches and throttles.
    Oncall,
    /// Rule packs.
    Security,
    /// Reads the audit trail and the state.
    Auditor,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Oncall, Role::Security, Role::Auditor, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Oncall => "oncall",
            Role::Security => "security",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `warden=debug,info`.
    pub level: String,
    /// Requests refused before a tenant was known: a line each, or one summary line per
    /// interval (`unauthenticated`, `summary_interval_s`).
    pub unauthenticated: crate::unauthenticated::LogPolicy,
}

impl LoggingConfig {
    /// Text at `info`, refused unauthenticated requests summarised every 10 s.
    pub fn new(format: LogFormat, level: &str) -> Self {
        LoggingConfig {
            format,
            level: level.into(),
            unauthenticated: crate::unauthenticated::LogPolicy::Summary(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub address: SocketAddr,
    pub models: Vec<String>,
    pub connect_timeout: Duration,
    /// Longest wait for the first response byte (`first_byte_timeout_ms`, default
    /// `read_timeout_ms`): a non-streaming answer whole, a stream's first event.
    pub first_byte_timeout: Duration,
    /// Longest wait between two reads once the first byte is in (`idle_timeout_ms`, default
    /// `read_timeout_ms`): the gap between a stream's events.
    pub idle_timeout: Duration,
    /// Passive outlier detection: failures in a row that eject the upstream, and for how long.
    pub outlier: crate::outlier::OutlierConfig,
    pub health_path: String,
    pub health_interval: Duration,
    /// Ask the upstream for `usage` on streams (`stream_options.include_usage`) so token quotas
    /// are reconciled exactly; the extra event is removed again if the client did not ask for it.
    pub stream_usage: bool,
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub name: String,
    pub api_keys: Vec<KeyHash>,
    /// Models this tenant may use; `["*"]` allows every configured model.
    pub models: Vec<String>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    /// Cap on `max_tokens` / `max_completion_tokens`; also the value used when a request sets none.
    pub max_tokens: u32,
    /// Input-guard policy: paranoia, threshold, exclusions, pinned system prompt, tools.
    pub guard: TenantGuard,
    /// Write the prompt text (after secrets/PII masking) into the audit lake. Off by default:
    /// only keyed hashes identify prompts.
    pub log_raw_prompts: bool,
}

/// The config failed to load; `errors` lists every problem found.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {} problem(s)", self.file, self.errors.len())?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const MIB: u64 = 1024 * 1024;

// === impl Config ===

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigError {
                path: "(file)".into(),
                line: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Config::parse(&src).map_err(|errors| ConfigErrors { file, errors })
    }

    /// Decode and validate a config document, reporting every problem.
    pub fn parse(src: &str) -> Result<Config, Vec<ConfigError>> {
        let mut errs = Errors::new(src);
        let doc = match toml_edit::ImDocument::parse(src) {
            Ok(doc) => doc,
            Err(e) => {
                // Some parse errors carry no short message; fall back to the full rendering's
                // last non-empty line (the explanation), never to an empty message.
                let mut message = e.message().trim().to_string();
                if message.is_empty() {
                    message = e
                        .to_string()
                        .lines()
                        .rev()
                        .map(str::trim)
                        .find(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with('^'))
                        .unwrap_or("invalid TOML")
                        .to_string();
                }
                errs.push("(syntax)", e.span(), message);
                return Err(errs.list);
            }
        };
        let mut root = Table::root(doc.as_table());
        let mut config = decode(&mut root, &mut errs);
        config.hash = format!("b3:{}", &blake3::hash(src.as_bytes()).to_hex()[..16]);
        root.finish(&mut errs);
        if errs.list.is_empty() {
            Ok(config)
        } else {
            errs.list.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(errs.list)
        }
    }
}

fn decode(root: &mut Table<'_>, errs: &mut Errors<'_>) -> Config {
    let server = match root.table(errs, "server") {
        Some(mut t) => {
            let s = decode_server(&mut t, errs);
            t.finish(errs);
            s
        }
        None => decode_server(&mut Table::root(&toml_edit::Table::new()), errs),
    };
    let admin = match root.table(errs, "admin") {
        Some(mut t) => {
            let a = decode_admin(&mut t, errs);
            t.finish(errs);
            a
        }
        None => AdminConfig {
            listen: default_addr(9090),
            keys: Vec::new(),
        },
    };
    let guard = match root.table(errs, "guard") {
        Some(mut t) => {
            let g = guard::decode_guard(&mut t, errs);
            t.finish(errs);
            g
        }
        None => GuardConfig::default(),
    };
    let telemetry = match root.table(errs, "telemetry") {
        Some(mut t) => {
            let c = telemetry::decode_telemetry(&mut t, errs);
            t.finish(errs);
            c
        }
        None => TelemetryConfig::default(),
    };
    let tracing = match root.table(errs, "tracing") {
        Some(mut t) => {
            let c = traces::decode_tracing(&mut t, errs);
            t.finish(errs);
            c
        }
        None => TracingConfig::default(),
    };
    let switchboard = match root.table(errs, "switchboard") {
        Some(mut t) => {
            let state_file = t.string(errs, "state_file").map(std::path::PathBuf::from);
            if let Some(dir) = state_file
                .as_ref()
                .and_then(|f| f.parent())
                .filter(|d| !d.as_os_str().is_empty())
            {
                if !dir.is_dir() {
                    errs.push(
                        &t.child_path("state_file"),
                        t.value_span("state_file"),
                        format!("{}: no such directory", dir.display()),
                    );
                }
            }
            let redis_url = t.string(errs, "redis_url");
            if let Some(u) = &redis_url {
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    errs.push(
                        &t.child_path("redis_url"),
                        t.value_span("redis_url"),
                        format!("{u:?}: expected redis://host:port"),
                    );
                }
            }
            let shared_quotas = t.boolean(errs, "shared_quotas").unwrap_or(false);
            if shared_quotas && redis_url.is_none() {
                errs.push(
                    &t.child_path("shared_quotas"),
                    t.value_span("shared_quotas"),
                    "needs redis_url: the fleet shares its quotas through Redis",
                );
            }
            let c = SwitchboardConfig {
                shared_quotas,
                state_file,
                runbook_url: t.string(errs, "runbook_url"),
                redis_url,
                redis_key: t
                    .string(errs, "redis_key")
                    .unwrap_or_else(|| "warden:switchboard".into()),
            };
            t.finish(errs);
            c
        }
        None => SwitchboardConfig::default(),
    };
    let detectors = match root.table(errs, "detectors") {
        Some(mut t) => {
            let c = incidents::decode_detectors(&mut t, errs);
            t.finish(errs);
            c
        }
        None => DetectorsConfig::default(),
    };
    let runbooks = match root.table(errs, "runbooks") {
        Some(mut t) => {
            let c = incidents::decode_runbooks(&mut t, errs);
            t.finish(errs);
            c
        }
        None => RunbooksConfig::default(),
    };
    let logging = match root.table(errs, "logging") {
        Some(mut t) => {
            let l = decode_logging(&mut t, errs);
            t.finish(errs);
            l
        }
        None => LoggingConfig::new(LogFormat::Text, "info"),
    };

    let mut upstreams = Vec::new();
    let mut upstream_names = HashSet::new();
    let upstream_tables = root.tables(errs, "upstreams");
    if upstream_tables.is_empty() {
        errs.push(
            "upstreams",
            None,
            "at least one [[upstreams]] entry is required",
        );
    }
    for mut t in upstream_tables {
        if let Some(u) = decode_upstream(&mut t, errs) {
            if !upstream_names.insert(u.name.clone()) {
                errs.push(
                    &t.child_path("name"),
                    t.value_span("name"),
                    format!("duplicate upstream name {:?}", u.name),
                );
            }
            upstreams.push(u);
        }
        t.finish(errs);
    }
    let served: HashSet<&str> = upstreams
        .iter()
        .flat_map(|u| u.models.iter().map(String::as_str))
        .collect();

    let mut tenants = Vec::new();
    let mut tenant_names = HashSet::new();
    let mut key_owner: HashMap<KeyHash, String> = HashMap::new();
    let tenant_tables = root.tables(errs, "tenants");
    if tenant_tables.is_empty() {
        errs.push(
            "tenants",
            None,
            "at least one [[tenants]] entry is required",
        );
    }
    for mut t in tenant_tables {
        if let Some(tenant) = decode_tenant(&mut t, errs, &served) {
            if !tenant_names.insert(tenant.name.clone()) {
                errs.push(
                    &t.child_path("name"),
                    t.value_span("name"),
                    format!("duplicate tenant name {:?}", tenant.name),
                );
            }
            for key in &tenant.api_keys {
                if let Some(other) = key_owner.insert(key.clone(), tenant.name.clone()) {
                    errs.push(
                        &t.child_path("api_keys"),
                        t.value_span("api_keys"),
                        format!("API key hash is also used by tenant {other:?}"),
                    );
                }
            }
            tenants.push(tenant);
        }
        t.finish(errs);
    }

    if server.listen == admin.listen {
        errs.push(
            "admin.listen",
            None,
            format!("must differ from server.listen ({})", server.listen),
        );
    }

    Config {
        hash: String::new(),
        server,
        admin,
        logging,
        guard,
        telemetry,
        tracing,
        switchboard,
        detectors,
        runbooks,
        upstreams,
        tenants,
    }
}

fn default_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn socket_addr(t: &mut Table<'_>, errs: &mut Errors<'_>, key: &'static str) -> Option<SocketAddr> {
    let raw = t.string(errs, key)?;
    match raw.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errs.push(
                &t.child_path(key),
                t.value_span(key),
                format!("{raw:?} is not an IP:port address (e.g. \"127.0.0.1:8080\")"),
            );
            None
        }
    }
}

fn millis(
    t: &mut Table<'_>,
    errs: &mut Errors<'_>,
    key: &'static str,
    default_ms: u64,
) -> Duration {
    match t.uint(errs, key, 3_600_000) {
        Some(0) => {
            errs.push(
                &t.child_path(key),
                t.value_span(key),
                "must be greater than 0",
            );
            Duration::from_millis(default_ms)
        }
        Some(ms) => Duration::from_millis(ms),
        None => Duration::from_millis(default_ms),
    }
}

fn decode_server(t: &mut Table<'_>, errs: &mut Errors<'_>) -> ServerConfig {
    let listen = socket_addr(t, errs, "listen").unwrap_or_else(|| default_addr(8080));
    let threads = match t.uint(errs, "threads", 256) {
        Some(0) => {
            errs.push(
                &t.child_path("threads"),
                t.value_span("threads"),
                "must be at least 1",
            );
            1
        }
        Some(n) => n as usize,
        None => 2,
    };
    let max_body_bytes = match t.uint(errs, "max_body_bytes", 64 * MIB) {
        Some(n) if n < 1024 => {
            errs.push(
                &t.child_path("max_body_bytes"),
                t.value_span("max_body_bytes"),
                "must be at least 1024",
            );
            MIB as usize
        }
        Some(n) => n as usize,
        None => MIB as usize,
    };
    let grace_period = Duration::from_secs(t.uint(errs, "grace_period_s", 3600).unwrap_or(30));
    let body_read_timeout = millis(t, errs, "body_read_timeout_ms", 30_000);
    let header_timeout = millis(t, errs, "header_timeout_ms", 60_000);
    let max_connections = positive(t, errs, "max_connections", 1 << 20).unwrap_or(4096) as usize;
    let max_connections_per_ip =
        positive(t, errs, "max_connections_per_ip", 1 << 20).map(|n| n as usize);
    ServerConfig {
        listen,
        threads,
        max_body_bytes,
        grace_period,
        body_read_timeout,
        header_timeout,
        max_connections,
        max_connections_per_ip,
    }
}

fn decode_admin(t: &mut Table<'_>, errs: &mut Errors<'_>) -> AdminConfig {
    let listen = socket_addr(t, errs, "listen").unwrap_or_else(|| default_addr(9090));
    let mut keys: Vec<AdminKey> = Vec::new();
    for mut k in t.tables(errs, "keys") {
        let name = required_name(&mut k, errs);
        let hash = match k.string(errs, "key_hash") {
            Some(raw) => match KeyHash::parse(&raw) {
                Ok(h) => Some(h),
                Err(msg) => {
                    errs.push(&k.child_path("key_hash"), k.value_span("key_hash"), msg);
                    None
                }
            },
            None => {
                errs.push(
                    &k.child_path("key_hash"),
                    k.span(),
                    "missing required key (make one with `warden keys generate`)",
                );
                None
            }
        };
        let role = match k.string(errs, "role").as_deref() {
            None => Role::Admin,
            Some(r) => Role::parse(r).unwrap_or_else(|| {
                errs.push(
                    &k.child_path("role"),
                    k.value_span("role"),
                    format!("{r:?}: expected \"oncall\", \"security\", \"auditor\" or \"admin\""),
                );
                Role::Admin
            }),
        };
        if let (Some(name), Some(key_hash)) = (name, hash) {
            if keys.iter().any(|o| o.key_hash == key_hash) {
                errs.push(
                    &k.child_path("key_hash"),
                    k.value_span("key_hash"),
                    "key hash used twice",
                );
            }
            keys.push(AdminKey {
                name,
                key_hash,
                role,
            });
        }
        k.finish(errs);
    }
    AdminConfig { listen, keys }
}

fn decode_logging(t: &mut Table<'_>, errs: &mut Errors<'_>) -> LoggingConfig {
    let format = match t.string(errs, "format").as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errs.push(
                &t.child_path("format"),
                t.value_span("format"),
                format!("{other:?} is not one of \"text\", \"json\""),
            );
            LogFormat::Text
        }
    };
    let level = t.string(errs, "level").unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        errs.push(
            &t.child_path("level"),
            t.value_span("level"),
            format!("{level:?} is not a valid log filter (e.g. \"info\", \"warden_proxy=debug\")"),
        );
    }
    let mut c = LoggingConfig::new(format, &level);
    let every = positive(t, errs, "summary_interval_s", 86_400).unwrap_or(10);
    match t.string(errs, "unauthenticated").as_deref() {
        None | Some("summary") => {
            c.unauthenticated =
                crate::unauthenticated::LogPolicy::Summary(Duration::from_secs(every));
        }
        Some("each") => c.unauthenticated = crate::unauthenticated::LogPolicy::Each,
        Some(other) => errs.push(
            &t.child_path("unauthenticated"),
            t.value_span("unauthenticated"),
            format!("{other:?}: expected \"summary\" or \"each\""),
        ),
    }
    c
}

fn required_name(t: &mut Table<'_>, errs: &mut Errors<'_>) -> Option<String> {
    match t.string(errs, "name") {
        Some(n)
            if !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            Some(n)
        }
        Some(n) => {
            errs.push(
                &t.child_path("name"),
                t.value_span("name"),
                format!("{n:?}: names use letters, digits, '-', '_' and '.' only"),
            );
            None
        }
        None => {
            errs.push(&t.child_path("name"), t.span(), "missing required key");
            None
        }
    }
}

fn decode_upstream(t: &mut Table<'_>, errs: &mut Errors<'_>) -> Option<UpstreamConfig> {
    let name = required_name(t, errs);
    let address = socket_addr(t, errs, "address");
    if !has_key(t, "address") {
        errs.push(&t.child_path("address"), t.span(), "missing required key");
    }
    let models = t.string_list(errs, "models").unwrap_or_default();
    if models.is_empty() {
        errs.push(
            &t.child_path("models"),
            t.span(),
            "list at least one model this upstream serves",
        );
    }
    let connect_timeout = millis(t, errs, "connect_timeout_ms", 1_000);
    let read_timeout = millis(t, errs, "read_timeout_ms", 60_000);
    let first_byte_timeout = millis(
        t,
        errs,
        "first_byte_timeout_ms",
        read_timeout.as_millis() as u64,
    );
    let idle_timeout = millis(t, errs, "idle_timeout_ms", read_timeout.as_millis() as u64);
    let mut outlier = crate::outlier::OutlierConfig::default();
    if let Some(n) = t.uint(errs, "eject_after_failures", 1_000_000) {
        // 0: never eject (health checks alone decide).
        outlier.eject_after = n as u32;
    }
    outlier.base = millis(t, errs, "eject_ms", outlier.base.as_millis() as u64);
    outlier.max = millis(t, errs, "max_eject_ms", outlier.max.as_millis() as u64);
    if outlier.max < outlier.base {
        errs.push(
            &t.child_path("max_eject_ms"),
            t.value_span("max_eject_ms").or(t.value_span("eject_ms")),
            "must be at least eject_ms",
        );
    }
    let health_path = t
        .string(errs, "health_path")
        .unwrap_or_else(|| "/v1/models".into());
    if !health_path.starts_with('/') {
        errs.push(
            &t.child_path("health_path"),
            t.value_span("health_path"),
            "must start with '/'",
        );
    }
    let health_interval = millis(t, errs, "health_interval_ms", 2_000);
    let stream_usage = t.boolean(errs, "stream_usage").unwrap_or(true);
    Some(UpstreamConfig {
        name: name?,
        address: address?,
        models,
        connect_timeout,
        first_byte_timeout,
        idle_timeout,
        outlier,
        health_path,
        health_interval,
        stream_usage,
    })
}

fn has_key(t: &Table<'_>, key: &str) -> bool {
    t.value_span(key).is_some()
}

fn decode_tenant(
    t: &mut Table<'_>,
    errs: &mut Errors<'_>,
    served: &HashSet<&str>,
) -> Option<TenantConfig> {
    let name = required_name(t, errs);
    let raw_keys = t.string_list(errs, "api_keys").unwrap_or_default();
    if raw_keys.is_empty() {
        errs.push(
            &t.child_path("api_keys"),
            t.span(),
            "list at least one API key hash (make one with `warden keys hash`)",
        );
    }
    let mut api_keys = Vec::new();
    for (i, raw) in raw_keys.iter().enumerate() {
        match KeyHash::parse(raw) {
            Ok(k) => api_keys.push(k),
            Err(msg) => errs.push(
                &format!("{}[{i}]", t.child_path("api_keys")),
                t.value_span("api_keys"),
                msg,
            ),
        }
    }
    let models = t
        .string_list(errs, "models")
        .unwrap_or_else(|| vec!["*".into()]);
    for (i, m) in models.iter().enumerate() {
        if m != "*" && !served.contains(m.as_str()) {
            errs.push(
                &format!("{}[{i}]", t.child_path("models")),
                t.value_span("models"),
                format!("model {m:?} is not served by any upstream"),
            );
        }
    }
    let requests_per_minute =
        positive(t, errs, "requests_per_minute", u32::MAX as u64).map(|n| n as u32);
    let tokens_per_minute = positive(t, errs, "tokens_per_minute", u64::from(u32::MAX));
    let max_tokens = positive(t, errs, "max_tokens", 1_000_000).map_or(4096, |n| n as u32);
    let log_raw_prompts = t.boolean(errs, "log_raw_prompts").unwrap_or(false);
    let guard = match t.table(errs, "guard") {
        Some(mut g) => {
            let decoded = guard::decode_tenant_guard(&mut g, errs);
            g.finish(errs);
            decoded
        }
        None => TenantGuard::default(),
    };
    Some(TenantConfig {
        name: name?,
        api_keys,
        models,
        requests_per_minute,
        tokens_per_minute,
        max_tokens,
        guard,
        log_raw_prompts,
    })
}

/// An integer key that must be above 0: the error names it, and the caller keeps its default.
pub(crate) fn positive(
    t: &mut Table<'_>,
    errs: &mut Errors<'_>,
    key: &'static str,
    max: u64,
) -> Option<u64> {
    match t.uint(errs, key, max) {
        Some(0) => {
            errs.push(
                &t.child_path(key),
                t.value_span(key),
                "must be greater than 0",
            );
            None
        }
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const KEY: &str = "blake3:0000000000000000000000000000000000000000000000000000000000000000";

    /// The smallest valid config: one upstream, one tenant.
    pub(crate) fn minimal() -> String {
        format!(
            r#"
[[upstreams]]
name = "w"
address = "127.0.0.1:8081"
models = ["m"]

[[tenants]]
name = "t"
api_keys = ["{KEY}"]
"#
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(&minimal()).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
        assert_eq!(c.tenants[0].models, vec!["*"]);
        assert_eq!(c.tenants[0].max_tokens, 4096);
    }

    #[test]
    fn upstream_deadlines_default_to_read_timeout_and_ejection_is_checked() {
        let src = minimal().replace(
            "models = [\"m\"]",
            "models = [\"m\"]\nread_timeout_ms = 7000\nidle_timeout_ms = 500",
        );
        let u = &Config::parse(&src).unwrap().upstreams[0];
        assert_eq!(u.first_byte_timeout, Duration::from_secs(7));
        assert_eq!(u.idle_timeout, Duration::from_millis(500));
        assert_eq!(u.outlier, crate::outlier::OutlierConfig::default());

        let src = minimal().replace(
            "models = [\"m\"]",
            "models = [\"m\"]\neject_ms = 9000\nmax_eject_ms = 1000\nfirst_byte_timeout_ms = 0",
        );
        let errors = Config::parse(&src).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"upstreams[0].max_eject_ms"), "{errors:?}");
        assert!(
            paths.contains(&"upstreams[0].first_byte_timeout_ms"),
            "{errors:?}"
        );
    }

    #[test]
    fn classifier_settings_parse_and_bad_ones_name_their_key() {
        let src = format!(
            "[guard]\nclassifier_batch = 4\n{}[tenants.guard]\nclassifier_mode = \"overlap\"\n",
            minimal()
        );
        let c = Config::parse(&src).unwrap();
        assert_eq!(c.guard.classifier_batch, 4);
        assert_eq!(c.tenants[0].guard.classifier_mode, ClassifierMode::Overlap);
        assert_eq!(
            Config::parse(&minimal()).unwrap().tenants[0]
                .guard
                .classifier_mode,
            ClassifierMode::Before
        );
        let src = format!(
            "[guard]\nclassifier_batch = 0\n{}[tenants.guard]\nclassifier_mode = \"after\"\n",
            minimal()
        );
        let errors = Config::parse(&src).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"guard.classifier_batch"), "{errors:?}");
        assert!(
            paths.contains(&"tenants[0].guard.classifier_mode"),
            "{errors:?}"
        );
    }

    #[test]
    fn example_config_is_valid() {
        let src = include_str!("../../warden.example.toml");
        if let Err(errors) = Config::parse(src) {
            panic!("example config invalid: {errors:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_path_and_line() {
        let src = r#"
[server]
listen = "not an address"
threads = "two"
colour = "blue"

[[upstreams]]
name = "w"
address = "127.0.0.1:8081"
models = ["m", 3]

[[tenants]]
name = "t"
api_keys = ["sha1:abc"]
models = ["nope"]
max_tokens = 0
"#;
        let errors = Config::parse(src).unwrap_err();
        let rendered: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let want = [
            ("server.listen", 3),
            ("server.threads", 4),
            ("server.colour", 5),
            ("upstreams[0].models[1]", 10),
            ("tenants[0].api_keys[0]", 14),
            ("tenants[0].models[0]", 15),
            ("tenants[0].max_tokens", 16),
        ];
        for (path, line) in want {
            assert!(
                errors
                    .iter()
                    .any(|e| e.path == path && e.line == Some(line)),
                "missing {path} at line {line} in {rendered:#?}"
            );
        }
        assert_eq!(errors.len(), want.len(), "{rendered:#?}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errors = Config::parse("[server\nlisten = 1").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(1));
    }

    #[test]
    fn duplicates_are_rejected() {
        let src = format!(
            "{}\n[[tenants]]\nname = \"t\"\napi_keys = [\"{KEY}\"]\n",
            minimal()
        );
        let errors = Config::parse(&src).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("duplicate tenant")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("also used by tenant")),
            "{errors:?}"
        );
    }
}
