//! `warden up`: the whole stack on one machine, on loopback, with an embedded default config.
//!
//! Starts two child processes of this same binary — `warden worker` with the bundled model and
//! `warden serve` in front of it — writes their config, logs and a demo API key under a data
//! directory (default `./warden-data`), waits until the proxy is ready, prints the endpoint, the
//! key and a `curl` example, and on Ctrl-C or SIGTERM stops both cleanly (the proxy drains first).
//!
//! Supervision: once the stack has been ready, a worker that exits is restarted with backoff (1 s,
//! doubling to 30 s while it keeps dying within a minute of starting), each restart logged on
//! stdout and appended to the worker's log, and counted in the new worker's
//! `warden_worker_restarts` gauge. Meanwhile the proxy's health checks fail and it answers
//! `503 upstream_unavailable` with `Retry-After`. A worker that exits before the stack was ever
//! ready (a bad model, a busy port) is an error, as is the proxy exiting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{health, keys};

/// Restart delay after the `n`-th quick death in a row (1-based): 1 s, doubling, at most 30 s.
fn restart_backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// A worker that ran this long before dying is restarted after the shortest delay again.
const STABLE_RUN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub worker: SocketAddr,
    pub model_dir: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub model_name: String,
    /// The demo tenant's limits.
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
}

#[derive(Debug)]
pub enum UpError {
    NoModel(Vec<PathBuf>),
    Io(String, std::io::Error),
    ChildExited(&'static str, ExitStatus, PathBuf),
    NotReady(PathBuf),
}

impl std::fmt::Display for UpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpError::NoModel(tried) => write!(
                f,
                "no model directory found (tried {}); pass --model DIR",
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            UpError::Io(what, e) => write!(f, "{what}: {e}"),
            UpError::ChildExited(which, status, log) => {
                write!(f, "the {which} exited ({status}); see {}", log.display())
            }
            UpError::NotReady(log) => write!(
                f,
                "the stack did not become ready in time; see {}",
                log.display()
            ),
        }
    }
}

impl std::error::Error for UpError {}

/// The bundled model: `--model`, `$WARDEN_MODEL_DIR`, `./inference/model`, or the repository
/// the binary was built in (`target/<profile>/warden` → `inference/model`).
pub fn find_model(explicit: Option<&Path>) -> Result<PathBuf, UpError> {
    let mut tried = Vec::new();
    if let Some(p) = explicit {
        tried.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("WARDEN_MODEL_DIR") {
        tried.push(PathBuf::from(p));
    }
    tried.push(PathBuf::from("inference/model"));
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            tried.push(up.join("inference/model"));
        }
    }
    tried
        .iter()
        .find(|p| p.join("model.onnx").is_file())
        .cloned()
        .ok_or(UpError::NoModel(tried))
}

fn demo_key(data_dir: &Path) -> Result<String, UpError> {
    secret_key(data_dir, "demo-api-key")
}

/// A key kept in `data_dir/name` (0600), made once per install.
fn secret_key(data_dir: &Path, name: &str) -> Result<String, UpError> {
    let path = data_dir.join(name);
    if let Ok(k) = std::fs::read_to_string(&path) {
        let k = k.trim().to_string();
        if k.starts_with("sk-") {
            return Ok(k);
        }
    }
    let key = keys::generate();
    write_secret(&path, &format!("{key}\n"))?;
    Ok(key)
}

/// The key file for the audit lake's prompt hashes (`key_id hex64`), made once per install.
fn telemetry_key(data_dir: &Path) -> Result<PathBuf, UpError> {
    let path = data_dir.join("telemetry.key");
    if !path.exists() {
        let id: [u8; 4] = rand::random();
        let key: [u8; 32] = rand::random();
        write_secret(
            &path,
            &format!("up-{} {}\n", hex::encode(id), hex::encode(key)),
        )?;
    }
    Ok(path)
}

/// Created 0600 from the start: never readable by others, not even briefly.
fn write_secret(path: &Path, content: &str) -> Result<(), UpError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| UpError::Io(path.display().to_string(), e))
}

/// The embedded default proxy config.
pub fn default_config(
    o: &UpOptions,
    key_hash: &str,
    admin_hash: &str,
    data: &Path,
    lake_key: &Path,
) -> String {
    format!(
        r#"# Written by `warden up`; edit and run `warden serve --config` for anything else.
[server]
listen = "{listen}"
grace_period_s = 10

[admin]
listen = "{admin}"

# The local admin key (in admin-key next to this file): `warden ctl --token-file .../admin-key`.
[[admin.keys]]
name = "local-admin"
key_hash = "{admin_hash}"
role = "admin"

# Kill switches survive restarts in this file.
[switchboard]
state_file = {switches:?}

# The audit lake: one Parquet row per request, prompts as keyed hashes only.
[telemetry]
dir = {lake:?}
key_file = {lake_key:?}
retention_days = 30

[[upstreams]]
name = "local-worker"
address = "{worker}"
models = ["{model}"]
read_timeout_ms = 120000
health_path = "/health"
health_interval_ms = 1000

[[tenants]]
name = "demo"
api_keys = ["{key_hash}"]
requests_per_minute = {rpm}
tokens_per_minute = {tpm}
# Well inside the bundled model's 512-token context, so prompt + max_tokens fits.
max_tokens = 256
"#,
        listen = o.listen,
        admin = o.admin,
        lake = data.join("lake").display().to_string(),
        switches = data.join("switches.json").display().to_string(),
        admin_hash = admin_hash,
        lake_key = lake_key.display().to_string(),
        worker = o.worker,
        model = o.model_name,
        rpm = o.requests_per_minute,
        tpm = o.tokens_per_minute,
    )
}

struct Stack {
    worker: Child,
    proxy: Option<Child>,
}

impl Stack {
    fn stop(&mut self) {
        // Proxy first (it drains in-flight requests), then the worker.
        if let Some(p) = self.proxy.as_mut() {
            term(p);
            wait(p, Duration::from_secs(15));
        }
        term(&mut self.worker);
        wait(&mut self.worker, Duration::from_secs(10));
    }
}

fn term(child: &mut Child) {
    // Already exited (and reaped): its PID may belong to someone else by now.
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
        let _ = child.kill();
    }
}

fn wait(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts this binary with `args`, its stderr to `log` (appended to on a restart, so the log of
/// the run that died is kept). `restarts` goes to a restarted worker's environment.
fn spawn(args: &[String], log: &Path, restarts: u64) -> Result<Child, UpError> {
    let exe = std::env::current_exe().map_err(|e| UpError::Io("current executable".into(), e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(restarts > 0)
        .truncate(restarts == 0)
        .open(log)
        .map_err(|e| UpError::Io(log.display().to_string(), e))?;
    use std::os::unix::process::CommandExt;
    Command::new(exe)
        .args(args)
        .env(
            warden_inference::metrics::RESTARTS_ENV,
            restarts.to_string(),
        )
        // Own process group: a terminal's Ctrl-C reaches only `warden up`, which then stops the
        // proxy first (so it drains) and the worker after; children signalled directly by the
        // terminal would all stop at once.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| UpError::Io("spawning a child process".into(), e))
}

/// Run the stack until Ctrl-C / SIGTERM. `report` receives the lines to show the user.
pub fn run(o: UpOptions, report: &mut dyn FnMut(&str)) -> Result<(), UpError> {
    let model = find_model(o.model_dir.as_deref())?;
    std::fs::create_dir_all(&o.data_dir)
        .map_err(|e| UpError::Io(o.data_dir.display().to_string(), e))?;
    let key = demo_key(&o.data_dir)?;
    let data = std::fs::canonicalize(&o.data_dir).unwrap_or_else(|_| o.data_dir.clone());
    let lake_key = telemetry_key(&data)?;
    let config_path = o.data_dir.join("warden.toml");
    std::fs::write(
        &config_path,
        default_config(
            &o,
            &keys::KeyHash::of(&key).to_string(),
            &keys::KeyHash::of(&secret_key(&data, "admin-key")?).to_string(),
            &data,
            &lake_key,
        ),
    )
    .map_err(|e| UpError::Io(config_path.display().to_string(), e))?;
    let (worker_log, proxy_log) = (o.data_dir.join("worker.log"), o.data_dir.join("proxy.log"));

    // Readiness is asked the same way the proxy asks its upstreams.
    let probe = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UpError::Io("starting the readiness probe".into(), e))?;
    // Signals are watched from the start so Ctrl-C during start-up also stops cleanly.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    watch_signals(stop.clone());

    let worker_args: Vec<String> = vec![
        "worker".into(),
        "--model".into(),
        model.display().to_string(),
        "--listen".into(),
        o.worker.to_string(),
        "--served-model-name".into(),
        o.model_name.clone(),
    ];
    let worker = spawn(&worker_args, &worker_log, 0)?;
    let mut stack = Stack {
        worker,
        proxy: None,
    };
    match spawn(
        &[
            "serve".into(),
            "--config".into(),
            config_path.display().to_string(),
        ],
        &proxy_log,
        0,
    ) {
        Ok(p) => stack.proxy = Some(p),
        Err(e) => {
            // Do not leave the worker running (and holding its port).
            stack.stop();
            return Err(e);
        }
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut announced = false;
    let (mut restarts, mut quick_deaths) = (0u64, 0u32);
    let mut worker_started = Instant::now();
    let result = loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break Ok(());
        }
        if let Ok(Some(status)) = stack.worker.try_wait() {
            if !announced {
                break Err(UpError::ChildExited("worker", status, worker_log.clone()));
            }
            quick_deaths = if worker_started.elapsed() >= STABLE_RUN {
                1
            } else {
                quick_deaths + 1
            };
            restarts += 1;
            let delay = restart_backoff(quick_deaths);
            report(&format!(
                "worker exited ({status}); restarting it in {} s (restart {restarts}); the proxy answers 503 upstream_unavailable meanwhile. Log: {}",
                delay.as_secs(),
                worker_log.display()
            ));
            let until = Instant::now() + delay;
            while Instant::now() < until && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break Ok(());
            }
            match spawn(&worker_args, &worker_log, restarts) {
                Ok(w) => {
                    stack.worker = w;
                    worker_started = Instant::now();
                }
                Err(e) => break Err(e),
            }
            continue;
        }
        if let Some(Ok(Some(status))) = stack.proxy.as_mut().map(Child::try_wait) {
            break Err(UpError::ChildExited("proxy", status, proxy_log.clone()));
        }
        if !announced {
            if probe.block_on(health::probe(
                o.admin,
                "/readyz",
                Duration::from_millis(500),
            )) {
                announced = true;
                report(&format!(
                    "Warden is up.\n  OpenAI endpoint: http://{listen}/v1  (model \"{model_name}\")\n  API key:         {key}\n  Admin:           http://{admin}/metrics  /readyz  /healthz\n  Kill switches:   warden ctl --admin http://{admin} --token-file {data}/admin-key switch list\n  Worker:          http://{worker}/metrics (model {model})\n  Data and logs:   {data}\n\nTry:\n  curl -s http://{listen}/v1/chat/completions \\\n    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -d '{{\"model\": \"{model_name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Tell me a story.\"}}], \"max_tokens\": 60}}'\n\nCtrl-C stops both processes.",
                    listen = o.listen,
                    admin = o.admin,
                    worker = o.worker,
                    model = model.display(),
                    model_name = o.model_name,
                    data = o.data_dir.display(),
                ));
            } else if Instant::now() > deadline {
                break Err(UpError::NotReady(proxy_log.clone()));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stack.stop();
    if result.is_ok() {
        report("stopped.");
    }
    result
}

fn watch_signals(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut t), Ok(mut i)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! {
                    _ = t.recv() => {},
                    _ = i.recv() => {},
                }
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_from_one_second_to_thirty() {
        let secs: Vec<u64> = (1..=8).map(|n| restart_backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(restart_backoff(u32::MAX).as_secs(), 30);
    }
}
