//! Assembling and running the server: the proxy service, the admin service, health checks, and
//! shutdown.
//!
//! Shutdown: on SIGTERM or SIGINT, the proxy listener stops accepting, `/readyz` turns 503 (the
//! admin listener stays open until the process exits), and in-flight requests (streams
//! included) get `server.grace_period_s` to finish. The process exits 0 as soon
//! as none are left — Pingora's own grace period is an unconditional sleep, so a drain watcher
//! ends the process instead of waiting it out. A second signal exits at once.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::{AdminApp, AdminListener};
use crate::config::Config;
use crate::connections::Capped;
use crate::guard::Guards;
use crate::health::HealthChecker;
use crate::proxy::WardenProxy;
use crate::state::App;
use crate::traces::Traces;

#[derive(Debug)]
pub enum StartError {
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    Metrics(prometheus::Error),
    /// The rule packs did not load, compile or pass their tests.
    Rules(Vec<String>),
    /// The audit lake could not be opened (or its key read).
    Telemetry(String),
    /// The OTLP trace exporter could not be built.
    Traces(String),
    /// The switchboard's state file could not be read.
    Switchboard(String),
    /// The runbooks did not load.
    Runbooks(Vec<String>),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind { what, addr, source } => {
                write!(f, "cannot listen on {addr} ({what}): {source}")
            }
            StartError::Metrics(e) => write!(f, "metrics setup failed: {e}"),
            StartError::Telemetry(e) => write!(f, "telemetry: {e}"),
            StartError::Traces(e) => write!(f, "tracing: {e}"),
            StartError::Switchboard(e) => write!(f, "switchboard: {e}"),
            StartError::Runbooks(errors) => {
                write!(f, "runbooks failed ({} problem(s)):", errors.len())?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
            StartError::Rules(errors) => {
                write!(f, "rule packs failed ({} problem(s)):", errors.len())?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for StartError {}

/// Run until shut down. Returns after a clean drain.
pub fn run(config: Config) -> Result<(), StartError> {
    // Pingora reports a busy port by panicking in a service thread; check first for a clear error.
    let bind = |what, addr| {
        TcpListener::bind(addr).map_err(|source| StartError::Bind { what, addr, source })
    };
    bind("proxy", config.server.listen)?;
    // Kept: the admin listener is Warden's own (see admin.rs), open until the process exits.
    let admin_listener = bind("admin", config.admin.listen)?;
    let guards = if config.guard.enabled {
        let g = Guards::load(&config.guard).map_err(StartError::Rules)?;
        let a = g.active();
        tracing::info!(
            version = a.version(),
            source = %a.set().source,
            rules = a.rules().len(),
            compile_ms = a.compile_time.as_secs_f64() * 1e3,
            shadow = g.shadow().map(|s| s.version().to_string()),
            "rule packs loaded and tested"
        );
        Some(g)
    } else {
        tracing::warn!(
            "input guard disabled (guard.enabled = false): prompts are forwarded unscanned"
        );
        None
    };
    let telemetry = if config.telemetry.enabled {
        Some(open_telemetry(&config.telemetry).map_err(StartError::Telemetry)?)
    } else {
        None
    };
    let traces = Traces::start(&config.tracing).map_err(StartError::Traces)?;
    let switchboard = crate::switchboard::Switchboard::open(
        config.switchboard.state_file.clone(),
        fleet_config(&config).as_ref(),
    )
    .map_err(StartError::Switchboard)?;
    let incidents = crate::incidents::Incidents::new(&config.detectors, &config.runbooks)
        .map_err(StartError::Runbooks)?;
    let app = App::new(config, guards, telemetry, traces, switchboard, incidents)
        .map_err(StartError::Metrics)?;
    if let Some(g) = &app.guards {
        g.publish(&app.metrics);
        app.metrics.guard_pool_workers.set(g.pool.workers() as i64);
        app.metrics
            .guard_encoder_loaded
            .set(i64::from(g.paraphraser.is_some()));
        app.metrics
            .guard_classifier_loaded
            .set(i64::from(g.classifier.is_some()));
        g.warm();
    }
    let cfg = &app.config;

    let conf = ServerConf {
        threads: cfg.server.threads,
        // Our drain watcher exits as soon as nothing is in flight; this is only the upper bound.
        grace_period_seconds: Some(cfg.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // The proxy behind the connection caps (connections.rs).
    let mut proxy = Service::new(
        "warden proxy".to_string(),
        Capped::new(
            pingora_proxy::http_proxy(&server.configuration, WardenProxy::new(app.clone())),
            app.clone(),
        ),
    );
    proxy.add_tcp(&cfg.server.listen.to_string());

    let admin = background_service(
        "warden admin",
        AdminListener {
            admin: Arc::new(AdminApp { app: app.clone() }),
            listener: std::sync::Mutex::new(Some(admin_listener)),
        },
    );

    let health = background_service("upstream health", HealthChecker { app: app.clone() });
    let reloader = background_service("rule reload on SIGHUP", ReloadOnHangup { app: app.clone() });
    let summaries = background_service(
        "summary of refused unauthenticated requests",
        SummarizeRefused { app: app.clone() },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(health);
    server.add_service(reloader);
    server.add_service(summaries);
    server.add_service(background_service(
        "runbook reverts",
        RunbookTick { app: app.clone() },
    ));
    if app.switchboard.fleet_connected().is_some() {
        server.add_service(background_service(
            "switchboard fleet sync",
            FleetSync { app: app.clone() },
        ));
    }
    tracing::info!(
        proxy = %cfg.server.listen,
        admin = %cfg.admin.listen,
        upstreams = cfg.upstreams.len(),
        tenants = cfg.tenants.len(),
        "warden listening"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { app }),
    });
    Ok(())
}

struct Signals {
    app: Arc<App>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                tracing::error!("cannot install signal handlers; shutting down");
                return ShutdownSignal::FastShutdown;
            }
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let grace = self.app.config.server.grace_period;
        tracing::info!(
            signal = name,
            inflight = self.app.inflight(),
            grace_s = grace.as_secs(),
            "draining"
        );
        self.app.begin_drain();
        let app = self.app.clone();
        std::thread::spawn(move || drain_then_exit(&app, grace));
        // A second signal: stop now.
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::warn!("second signal: exiting without waiting for in-flight requests");
            std::process::exit(0);
        });
        ShutdownSignal::GracefulTerminate
    }
}

/// Open the audit lake: the hash key from `key_file`, else the `key_env` variable, else a
/// random per-process key (hashes then do not match across restarts: warned loudly).
/// The fleet's Redis, when `[switchboard] redis_url` is set.
fn fleet_config(config: &Config) -> Option<crate::switchboard::FleetConfig> {
    let c = &config.switchboard;
    c.redis_url
        .as_ref()
        .map(|url| crate::switchboard::FleetConfig {
            url: url.clone(),
            key: c.redis_key.clone(),
        })
}

/// Keeps the switchboard in step with the fleet's Redis (nothing without one).
struct FleetSync {
    app: Arc<App>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for FleetSync {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        self.app.switchboard.sync().await;
    }
}

/// The audit lake's settings as the telemetry crate takes them.
fn lake_config(c: &crate::config::TelemetryConfig) -> warden_telemetry::Config {
    let mut lake = warden_telemetry::Config::new(&c.dir);
    lake.queue_capacity = c.queue_capacity;
    lake.sync_interval = c.sync_interval;
    lake.rotate_bytes = c.rotate_bytes;
    lake.rotate_interval = c.rotate_interval;
    lake.retention_days = c.retention_days;
    lake
}

/// Everything `serve` checks before it starts, short of binding ports and opening files for
/// writing: the rule packs load, compile and pass their tests; the audit lake's settings are
/// valid and its key file reads; the switchboard's state file parses. Every problem, with the
/// config key it comes from. `warden check-config` runs exactly this after decoding the file.
pub fn preflight(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if config.guard.enabled {
        for (role, dir) in [
            ("rules_dir", config.guard.rules_dir.as_deref()),
            ("shadow_rules_dir", config.guard.shadow_rules_dir.as_deref()),
        ] {
            if role == "shadow_rules_dir" && dir.is_none() {
                continue;
            }
            if let Err(errors) = crate::guard::build_engine(dir) {
                problems.extend(errors.into_iter().map(|e| format!("guard.{role}: {e}")));
            }
        }
        if config.guard.paraphrase == crate::config::Paraphrase::On {
            if let Err(e) = crate::guard::load_paraphraser(&config.guard) {
                problems.push(format!("guard.paraphrase: {e}"));
            }
        }
        if config.guard.classifier == crate::config::Paraphrase::On {
            if let Err(e) = crate::guard::load_classifier(&config.guard) {
                problems.push(format!("guard.classifier: {e}"));
            }
        }
    }
    if let Err(errors) = warden_runbooks::book::load(config.runbooks.dir.as_deref()) {
        problems.extend(errors.into_iter().map(|e| format!("runbooks: {e}")));
    }
    if config.telemetry.enabled {
        let c = &config.telemetry;
        if let Some(path) = &c.key_file {
            if let Err(e) = warden_telemetry::Hasher::from_key_file(path) {
                problems.push(format!("telemetry.key_file: {e}"));
            }
        }
        if let Err(errs) = lake_config(c).validate() {
            problems.extend(errs.into_iter().map(|e| format!("telemetry.{e}")));
        }
    }
    if let Err(e) = crate::switchboard::Switchboard::open(
        config.switchboard.state_file.clone(),
        fleet_config(config).as_ref(),
    ) {
        problems.push(format!("switchboard.state_file: {e}"));
    }
    problems
}

fn open_telemetry(
    c: &crate::config::TelemetryConfig,
) -> Result<(warden_telemetry::Telemetry, warden_telemetry::Hasher), String> {
    use warden_telemetry::Hasher;
    let hasher = match &c.key_file {
        Some(path) => Hasher::from_key_file(path).map_err(|e| e.to_string())?,
        None => match std::env::var(&c.key_env) {
            Ok(v) => Hasher::parse_env_value(&v, &c.key_env).map_err(|e| e.to_string())?,
            Err(_) => {
                tracing::warn!(
                    key_env = %c.key_env,
                    "no telemetry.key_file and no key in the environment: prompt hashes use a random key for this process only and cannot be matched across restarts"
                );
                Hasher::ephemeral()
            }
        },
    };
    let lake = lake_config(c);
    lake.validate().map_err(|errs| errs.join("; "))?;
    let telemetry = warden_telemetry::Telemetry::open(lake).map_err(|e| e.to_string())?;
    tracing::info!(lake = %c.dir.display(), key_id = hasher.key_id(), "audit lake open");
    Ok((telemetry, hasher))
}

/// The last summary of refused requests, then the audit lake and the traces closed.
fn before_exit(app: &App) {
    log_refused(app, true);
    close_telemetry(app);
}

/// Flush and close the audit lake and the trace exporter before the process exits.
fn close_telemetry(app: &App) {
    if let Some(t) = &app.traces {
        t.shutdown();
    }
    if let Some((t, _)) = &app.telemetry {
        let stats = t.close();
        tracing::info!(
            written = stats.events_written,
            dropped = stats.events_dropped(),
            "audit lake closed"
        );
    }
}

/// SIGHUP reloads the rule packs (same path as `POST /admin/rules/reload`).
struct ReloadOnHangup {
    app: Arc<App>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler; reload with POST /admin/rules/reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    crate::admin::reload_rules(&self.app, "SIGHUP");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One log line per `[logging] summary_interval_s` with the requests refused before a tenant was
/// known (see unauthenticated.rs); nothing when there were none.
struct SummarizeRefused {
    app: Arc<App>,
}

/// Carries out the runbooks' reverts when they are due.
struct RunbookTick {
    app: Arc<App>,
}

#[async_trait]
impl pingora::services::background::BackgroundService for RunbookTick {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(crate::incidents::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let audit = |a| self.app.audit(a);
            self.app
                .incidents
                .tick(&self.app.effects(&audit), std::time::SystemTime::now());
        }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for SummarizeRefused {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(every) = self.app.unauthenticated.summary_interval() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // The last counts are logged by the drain watcher, just before the exit.
                _ = shutdown.changed() => return,
            }
            log_refused(&self.app, false);
        }
    }
}

/// The summary line of requests refused before a tenant was known, when one is due (or, with
/// `final_`, whatever is left).
fn log_refused(app: &App, final_: bool) {
    if let Some(s) = app.unauthenticated.take_summary(Instant::now(), final_) {
        let by_code: Vec<String> = s.by_code.iter().map(|(c, n)| format!("{c}={n}")).collect();
        tracing::info!(
            interval_s = s.interval.as_secs_f64().round(),
            refused = s.by_code.values().sum::<u64>(),
            by_code = by_code.join(","),
            "requests refused before authentication (summary; one line per interval)"
        );
    }
}

/// Wait until no request is in flight (or the grace period is over), then exit.
fn drain_then_exit(app: &App, grace: Duration) {
    let start = Instant::now();
    // Give connections accepted just before the listeners closed time to register.
    std::thread::sleep(Duration::from_millis(100));
    loop {
        let inflight = app.inflight();
        if inflight == 0 {
            tracing::info!(
                elapsed_ms = start.elapsed().as_millis() as u64,
                "drained; exiting"
            );
            before_exit(app);
            std::process::exit(0);
        }
        if start.elapsed() >= grace {
            tracing::warn!(
                inflight,
                "grace period over; exiting with requests in flight"
            );
            before_exit(app);
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
