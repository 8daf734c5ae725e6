//! Boot the real `warden` binary on loopback for end-to-end tests.
//!
//! [`Warden::start`] writes a config into a fresh temporary directory, starts the binary built by
//! cargo (or `$WARDEN_BIN`) with its logs captured to a file, and waits for `/healthz`. The process
//! is killed when the handle drops. [`send`] and [`Client`] speak raw HTTP/1.1 so tests control
//! every byte, including malformed and half-finished requests.

// Test support: a failed setup step must fail the test loudly, so panics are the reporting.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::http1::{Conn, Error, Response};

/// The demo key used by test configs, and its hash.
pub const KEY: &str = "sk-test-0123456789abcdef";

/// Where cargo put the `warden` binary: `$WARDEN_BIN`, else next to this test executable.
pub fn warden_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WARDEN_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>/warden
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("warden")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A fresh audit-lake directory under the temp dir, and beside it a hash-key file (`k1`, the key
/// byte `key_byte` repeated, mode 0600 as Warden expects).
pub fn scratch_lake(tag: &str, key_byte: &str) -> (PathBuf, PathBuf) {
    let lake = std::env::temp_dir().join(format!(
        "warden-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&lake).unwrap_or_else(|e| panic!("{}: {e}", lake.display()));
    let key_file = lake.with_extension("key");
    std::fs::write(&key_file, format!("k1 {}\n", key_byte.repeat(32)))
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
        })
        .unwrap_or_else(|e| panic!("{}: {e}", key_file.display()));
    (lake, key_file)
}

/// Every file below `dir`, recursively (none when it cannot be read).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The hash of an API key, computed the same way `warden keys hash` does.
pub fn key_hash(key: &str) -> String {
    let out = Command::new(warden_bin())
        .args(["keys", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(key.as_bytes())?;
            }
            child.wait_with_output()
        });
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        other => panic!(
            "warden keys hash failed ({}): {other:?}",
            warden_bin().display()
        ),
    }
}

/// One upstream entry for a test config.
pub struct UpstreamSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub models: Vec<String>,
    /// Extra TOML lines for this `[[upstreams]]` table.
    pub extra: String,
}

impl UpstreamSpec {
    pub fn new(name: &str, addr: SocketAddr, models: &[&str]) -> Self {
        Self {
            name: name.into(),
            addr,
            models: models.iter().map(|m| m.to_string()).collect(),
            extra: String::new(),
        }
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra = toml.into();
        self
    }
}

/// A running `warden serve`.
pub struct Warden {
    child: Option<Child>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
}

impl Warden {
    /// Start with the given upstreams and extra TOML (tenants, `[server]` keys...). When
    /// `tenants_toml` is empty, one tenant `t` with [`KEY`] and no limits is configured.
    pub fn start(upstreams: &[UpstreamSpec], server_toml: &str, tenants_toml: &str) -> Warden {
        let dir = std::env::temp_dir().join(format!(
            "warden-test-{}-{:x}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .unwrap_or_else(|_| unreachable_addr());
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .unwrap_or_else(|_| unreachable_addr());
        let mut cfg = format!(
            "[server]\nlisten = \"{proxy}\"\nthreads = 2\ngrace_period_s = 10\n{server_toml}\n\n[admin]\nlisten = \"{admin}\"\n\n[logging]\nlevel = \"info\"\n\n"
        );
        for u in upstreams {
            let models: Vec<String> = u.models.iter().map(|m| format!("\"{m}\"")).collect();
            // Fast health checks unless the test sets its own.
            let interval = if u.extra.contains("health_interval_ms") {
                ""
            } else {
                "health_interval_ms = 200\n"
            };
            cfg.push_str(&format!(
                "[[upstreams]]\nname = \"{}\"\naddress = \"{}\"\nmodels = [{}]\n{interval}{}\n\n",
                u.name,
                u.addr,
                models.join(", "),
                u.extra
            ));
        }
        if tenants_toml.is_empty() {
            cfg.push_str(&format!(
                "[[tenants]]\nname = \"t\"\napi_keys = [\"{}\"]\n",
                key_hash(KEY)
            ));
        } else {
            cfg.push_str(tenants_toml);
        }
        let config_path = dir.join("warden.toml");
        std::fs::write(&config_path, &cfg).unwrap_or_else(|e| panic!("write config: {e}"));
        let log = std::fs::File::create(dir.join("warden.log"))
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(warden_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("HOME", &dir)
            // For a test that turns on the output guard's sentence encoder.
            .env(
                "ORT_DYLIB_PATH",
                repo_root().join("inference/.ort/libonnxruntime.so.1.31.1"),
            )
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", warden_bin().display()));
        let mut w = Warden {
            child: Some(child),
            proxy,
            admin,
            dir,
        };
        w.wait_listening();
        w
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.admin).is_ok()
                && std::net::TcpStream::connect(self.proxy).is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("warden exited early ({status}):\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("warden did not start listening:\n{}", self.logs());
    }

    /// Wait until `/readyz` says ready (upstream health checks passed).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = get(self.admin, "/readyz").await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("warden never became ready:\n{}", self.logs());
    }

    /// Wait (up to 5 s) until the log contains `needle`: the access-log line is written after
    /// the response is sent.
    pub async fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The `/metrics` text once it contains every needle (metrics of a request are recorded
    /// just after its response is sent); panics with the text after 15 s (a loaded machine runs
    /// many test stacks at once).
    pub async fn metrics_with(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = get(self.admin, "/metrics")
                .await
                .map(|r| r.text())
                .unwrap_or_default();
            let missing: Vec<_> = needles.iter().filter(|n| !text.contains(**n)).collect();
            if missing.is_empty() {
                return text;
            }
            if Instant::now() >= deadline {
                panic!("metrics never showed {missing:?}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("warden.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Send a signal (e.g. `"TERM"`) to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig} failed");
    }

    /// Wait for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running `warden worker` on the bundled model.
pub struct Worker {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Worker {
    /// Start on a free port with extra CLI flags; waits until `/health` answers.
    pub fn start(extra: &[&str]) -> Worker {
        let root = repo_root();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::env::temp_dir().join(format!(
            "warden-worker-{}-{}.log",
            std::process::id(),
            addr.port()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(warden_bin())
            .arg("worker")
            .arg("--model")
            .arg(root.join("inference/model"))
            .args([
                "--listen",
                &addr.to_string(),
                "--served-model-name",
                "warden-tiny",
            ])
            .args(extra)
            .env(
                "ORT_DYLIB_PATH",
                root.join("inference/.ort/libonnxruntime.so.1.31.1"),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn worker: {e}"));
        let mut w = Worker {
            child: Some(child),
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                return w;
            }
            if let Some(Ok(Some(status))) = w.child.as_mut().map(|c| c.try_wait()) {
                panic!("worker exited ({status}):\n{}", w.logs());
            }
            assert!(
                Instant::now() < deadline,
                "worker did not start:\n{}",
                w.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to ten seconds) until the worker has cancelled a sequence and holds no KV cache
    /// and no running sequence; panics with its logs (and `context`) otherwise.
    pub async fn wait_cancelled(&self, context: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cancelled = self.metric("warden_worker_cancelled_total").await;
            let kv = self.metric("warden_worker_kv_cache_usage_ratio").await;
            let running = self.metric("warden_worker_requests_running").await;
            if cancelled >= 1.0 && kv == 0.0 && running == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not cancelled: cancelled={cancelled} kv={kv} running={running}\n{context}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One metric's value from `/metrics` (first sample with that exact name).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = get(self.addr, "/metrics")
            .await
            .map(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn unreachable_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// A fake upstream on a free loopback port serving `model`, recording every request: what most
/// end-to-end tests put behind Warden.
pub async fn recording_upstream(model: &str) -> crate::upstream::FakeUpstream {
    let opts = crate::upstream::FakeOptions {
        models: vec![model.into()],
        record_requests: true,
        ..crate::upstream::FakeOptions::default()
    };
    crate::upstream::FakeUpstream::start("127.0.0.1:0", opts)
        .await
        .unwrap_or_else(|e| panic!("fake upstream: {e}"))
}

/// Send raw request bytes on a fresh connection and read one response.
pub async fn send(addr: SocketAddr, raw: &[u8]) -> Result<Response, Error> {
    let mut conn = Conn::new(TcpStream::connect(addr).await?);
    conn.write_all(raw).await?;
    let method = std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.split(' ').next())
        .unwrap_or("GET")
        .to_string();
    conn.read_response(&method).await
}

/// `GET path` with no auth.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, Error> {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Build a JSON POST with the test key and optional extra header lines (`"k: v\r\n"` each).
pub fn post(path: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A chat request body for `model`.
pub fn chat_body(model: &str, content: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
    })
    .to_string()
}

/// The `error` object of an OpenAI-style error response.
pub fn error_of(r: &Response) -> serde_json::Value {
    let v = r
        .json()
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", r.text()));
    v.get("error")
        .cloned()
        .unwrap_or_else(|| panic!("no error object: {}", r.text()))
}

/// A real `redis-server` (Debian package, installed by `tests/scripts/setup.sh`) on a free
/// loopback port, no persistence, its files in a temporary directory; stopped when dropped.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("warden-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut r = Redis {
            child: None,
            port,
            dir,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server (run tests/scripts/setup.sh): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `redis-cli -p PORT args...`, its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
