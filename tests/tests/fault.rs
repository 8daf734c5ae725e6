//! The fault matrix: the real `warden` binary on loopback, one test per fault, each with the
//! behaviour it must keep written beside it (issue 16's hostile probe, reproduced).
//!
//! | fault | expected |
//! |---|---|
//! | three GETs, or two POSTs and a GET, in one write | one response each, in order, on the same connection |
//! | chunk size `zz`, 18 × `f`, `-5` | `400 malformed_request`, connection closed, no 5xx counted |
//! | audit lake unwritable | requests served; held events, their memory and age in `/readyz` and `/metrics`; every row written once it is back |
//! | worker stopped (SIGSTOP) | health check fails: `503 upstream_unavailable` at once, with `Retry-After`; back when it is |
//! | worker answering bytes that are not HTTP | `502 upstream_error`, never a 500; ejected after 3 in a row |
//! | worker breaking exchanges (closing without an answer) | `502 upstream_error`; after 3 in a row ejected (503 at once, not contacted); one probe brings it back |
//! | worker slow to the first byte, or silent mid-stream | `504 upstream_timeout` after `first_byte_timeout_ms`; the stream ends with an error event after `idle_timeout_ms`; a slow first token within its deadline is fine |
//! | SIGTERM with a request in flight | `/readyz` answers 503 `draining` (admin stays up), the request finishes, exit 0 |
//! | request head trickled, or a connection left idle | closed at `header_timeout_ms`, counted |
//! | 1,000 connections at once; past the per-address cap | past `max_connections` / `max_connections_per_ip` closed at once and counted; the admitted ones work |
//! | 2,000 requests without a key | no log line each but one summary; lake rows sampled, the rest counted |
//! | body trickled | `408 request_timeout` at `body_read_timeout_ms`, while the client is still sending |
//!
//! Also: a killed worker under `warden up` is restarted (tests/python/test_warden_up.py); a
//! refused connection fails over (tests/tests/proxy.rs); every malformed head of the probe is
//! `400 malformed_request` (tests/tests/proxy.rs); the HTTP/1 read path is fuzzed (proxy/fuzz).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::net::TcpStream;
use warden_tests::harness::{self, chat_body, error_of, UpstreamSpec, Warden, KEY};
use warden_tests::http1::Conn;
use warden_tests::upstream::FakeUpstream;

const MODEL: &str = "test-model";

async fn upstream() -> FakeUpstream {
    harness::recording_upstream(MODEL).await
}

async fn warden(up: &FakeUpstream, server_toml: &str, upstream_toml: &str) -> Warden {
    let w = Warden::start(
        &[UpstreamSpec::new("fake", up.addr(), &[MODEL]).extra(upstream_toml)],
        server_toml,
        "",
    );
    w.wait_ready().await;
    w
}

/// A ready Warden in front of `up` with an audit lake (extra `[telemetry]` lines), and the lake.
async fn warden_with_lake(
    up: &FakeUpstream,
    tag: &str,
    telemetry_toml: &str,
) -> (Warden, std::path::PathBuf) {
    let (lake, key_file) = harness::scratch_lake(tag, "cd");
    let server = format!(
        "\n[telemetry]\ndir = {:?}\nkey_file = {:?}\n{telemetry_toml}\n",
        lake.display().to_string(),
        key_file.display().to_string(),
    );
    let w = Warden::start(
        &[UpstreamSpec::new("fake", up.addr(), &[MODEL])],
        &server,
        "",
    );
    w.wait_ready().await;
    (w, lake)
}

/// Rows in the lake's Parquet files.
fn lake_rows(lake: &std::path::Path) -> usize {
    harness::files_under(&lake.join("events"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| parquet_rows(p))
        .sum()
}

/// A keep-alive request (no `connection: close`) with the test key and an `x-request-id`.
fn keep_alive(method: &str, path: &str, body: &str, id: &str) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nx-request-id: {id}\r\n"
    );
    if !body.is_empty() {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

/// HTTP/1.1 pipelining (RFC 9112 §9.3.2): every request in one write is answered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_each_answered_in_order() {
    let up = upstream().await;
    let w = warden(&up, "", "").await;
    let chat = chat_body(MODEL, "hi", false);
    let cases: [&[(&str, &str, &str)]; 2] = [
        &[("GET", "/v1/models", ""); 3],
        &[
            ("POST", "/v1/chat/completions", &chat),
            ("POST", "/v1/chat/completions", &chat),
            ("GET", "/v1/models", ""),
        ],
    ];
    for (c, reqs) in cases.iter().enumerate() {
        let mut raw = Vec::new();
        for (i, (method, path, body)) in reqs.iter().enumerate() {
            raw.extend(keep_alive(method, path, body, &format!("pipe-{c}-{i}")));
        }
        let mut conn = Conn::new(TcpStream::connect(w.proxy).await.unwrap());
        conn.write_all(&raw).await.unwrap();
        for (i, (method, _, _)) in reqs.iter().enumerate() {
            let r = tokio::time::timeout(Duration::from_secs(10), conn.read_response(method))
                .await
                .unwrap_or_else(|_| panic!("case {c}: no response {i}"))
                .unwrap_or_else(|e| panic!("case {c}: response {i}: {e}"));
            assert_eq!(r.status(), 200, "case {c} response {i}: {}", r.text());
            let id = format!("pipe-{c}-{i}");
            assert_eq!(r.header("x-request-id"), Some(id.as_str()), "in order");
        }
        // Still open for one more.
        conn.write_all(&keep_alive("GET", "/v1/models", "", "after"))
            .await
            .unwrap();
        let r = conn.read_response("GET").await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// A chunk size that is not hex, overflows, or is negative is the client's fault: 400
/// `malformed_request` (not 500), the connection closes, and no server error is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunk_sizes_are_a_400_not_a_500() {
    let up = upstream().await;
    let w = warden(&up, "", "").await;
    for size in ["zz", "ffffffffffffffffff", "-5"] {
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
        );
        let mut conn = Conn::new(TcpStream::connect(w.proxy).await.unwrap());
        conn.write_all(raw.as_bytes()).await.unwrap();
        let r = conn.read_response("POST").await.unwrap();
        assert_eq!(r.status(), 400, "chunk size {size}: {}", r.text());
        assert_eq!(
            error_of(&r)["code"],
            "malformed_request",
            "chunk size {size}"
        );
        assert!(
            !r.head.keep_alive(),
            "the framing is lost: the connection must close"
        );
        conn.drain_until_eof().await;
    }
    let m = w.metrics_with(&["status=\"400\",tenant=\"t\"} 3"]).await;
    assert!(
        !m.contains("status=\"500\""),
        "counted as a server error:\n{m}"
    );
    assert!(up.posts().is_empty());
}

/// The lake's disk refuses writes: requests are still served, and the pressure shows — events
/// held, their memory and the oldest one's age, in `/readyz` and `/metrics` (the probe saw
/// 14,336 events held while every figure said 0). When the disk returns, every request has its
/// row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_lake_shows_what_it_holds_and_loses_nothing() {
    let up = upstream().await;
    let (mut w, lake) = warden_with_lake(&up, "fault-lake", "sync_interval_ms = 20").await;
    let chat = harness::post(
        "/v1/chat/completions",
        &chat_body(MODEL, "hello", false),
        "",
    );

    // The spool directory becomes a plain file before the first event: no spool can be
    // created. (The writer opens its spool at the first sync after an event and keeps writing
    // to that open file, wherever the directory moves; renaming after a request raced that
    // sync.)
    let spool = lake.join("spool");
    let moved = lake.join("spool.moved");
    std::fs::rename(&spool, &moved).unwrap();
    std::fs::write(&spool, b"not a directory").unwrap();
    for _ in 0..21 {
        let r = harness::send(w.proxy, &chat).await.unwrap();
        assert_eq!(r.status(), 200, "served while the lake is down");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let t = loop {
        let v = harness::get(w.admin, "/readyz")
            .await
            .unwrap()
            .json()
            .unwrap();
        let t = v["telemetry"].clone();
        if t["status"] == "failing" && t["queue_depth"].as_u64() >= Some(21) {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "not visible: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(t["held_bytes"].as_u64() > Some(0), "{t}");
    assert!(t["oldest_held_s"].as_f64() > Some(0.0), "{t}");
    let m = w.metrics_with(&["warden_telemetry_healthy 0"]).await;
    let gauge = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert!(gauge("warden_telemetry_queue_depth") >= 21.0);
    assert!(gauge("warden_telemetry_held_bytes") > 0.0);
    assert!(gauge("warden_telemetry_oldest_held_seconds") > 0.0);

    // The disk comes back: nothing held, and on exit every request has its row.
    std::fs::remove_file(&spool).unwrap();
    std::fs::rename(&moved, &spool).unwrap();
    w.metrics_with(&[
        "warden_telemetry_healthy 1",
        "warden_telemetry_queue_depth 0",
    ])
    .await;
    w.signal("TERM");
    assert!(w.wait_exit(Duration::from_secs(20)).is_some());
    let rows = lake_rows(&lake);
    assert_eq!(rows, 21, "one row per request");
}

fn parquet_rows(path: &std::path::Path) -> usize {
    let f = std::fs::File::open(path).unwrap();
    let r = parquet::file::reader::SerializedFileReader::new(f).unwrap();
    use parquet::file::reader::FileReader;
    r.metadata().file_metadata().num_rows() as usize
}

/// A `fake-upstream` process (so it can be stopped with a signal), and its address.
struct UpstreamProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl UpstreamProcess {
    fn start() -> UpstreamProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fake-upstream"))
            .args(["--listen", "127.0.0.1:0", "--model", MODEL])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .parse()
            .unwrap();
        UpstreamProcess { child, addr }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chat(headers: &str) -> Vec<u8> {
    harness::post(
        "/v1/chat/completions",
        &chat_body(MODEL, "hello", false),
        headers,
    )
}

/// Polls `/readyz` until `upstreams[0]` has `field == want`.
async fn wait_upstream(w: &Warden, field: &str, want: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = harness::get(w.admin, "/readyz")
            .await
            .ok()
            .and_then(|r| r.json().ok())
            .unwrap_or_default();
        if v["upstreams"][0][field] == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{field} never {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The worker is stopped (SIGSTOP): its health check times out, and requests are answered at
/// once with 503 `upstream_unavailable` and `Retry-After` instead of hanging until the read
/// timeout (the probe waited 120 s). It comes back when the worker does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_is_not_routed_to() {
    let worker = UpstreamProcess::start();
    let w = Warden::start(
        &[UpstreamSpec::new("worker", worker.addr, &[MODEL]).extra("read_timeout_ms = 120000")],
        "",
        "",
    );
    w.wait_ready().await;
    assert_eq!(
        harness::send(w.proxy, &chat("")).await.unwrap().status(),
        200
    );

    worker.signal("STOP");
    wait_upstream(&w, "healthy", false).await;
    let t = std::time::Instant::now();
    let r = harness::send(w.proxy, &chat("")).await.unwrap();
    assert_eq!(r.status(), 503, "{}", r.text());
    assert_eq!(error_of(&r)["code"], "upstream_unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "answered at once: {:?}",
        t.elapsed()
    );
    let ready = harness::get(w.admin, "/readyz").await.unwrap();
    assert_eq!(ready.status(), 503);

    worker.signal("CONT");
    wait_upstream(&w, "healthy", true).await;
    assert_eq!(
        harness::send(w.proxy, &chat("")).await.unwrap().status(),
        200
    );
}

/// An upstream that passes its health checks but breaks every exchange (closes the connection
/// without answering) is ejected after `eject_after_failures` in a row: the next request gets
/// 503 at once without reaching it. After `eject_ms` one request probes it; when it answers,
/// it is back in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_eject_the_upstream_and_a_probe_brings_it_back() {
    let up = upstream().await;
    let w = warden(&up, "", "eject_after_failures = 3\neject_ms = 1500").await;
    for _ in 0..3 {
        let r = harness::send(w.proxy, &chat("x-fault: close\r\n"))
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{}", r.text());
        assert_eq!(error_of(&r)["code"], "upstream_error");
    }
    let posts = |up: &FakeUpstream| up.posts().len();
    assert_eq!(posts(&up), 3);
    let r = harness::send(w.proxy, &chat("")).await.unwrap();
    assert_eq!(r.status(), 503, "ejected: {}", r.text());
    assert_eq!(error_of(&r)["code"], "upstream_unavailable");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&retry),
        "retry-after {retry}: when the ejection ends"
    );
    assert_eq!(posts(&up), 3, "an ejected upstream is not sent requests");
    wait_upstream(&w, "ejected", true).await;
    assert_eq!(
        harness::get(w.admin, "/readyz").await.unwrap().status(),
        503
    );
    w.metrics_with(&[
        "warden_upstream_ejections_total{upstream=\"fake\"} 1",
        "warden_upstream_ejected{upstream=\"fake\"} 1",
    ])
    .await;

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = harness::send(w.proxy, &chat("")).await.unwrap();
    assert_eq!(r.status(), 200, "the probe: {}", r.text());
    assert_eq!(posts(&up), 4);
    wait_upstream(&w, "ejected", false).await;
    assert_eq!(
        harness::send(w.proxy, &chat("")).await.unwrap().status(),
        200
    );
    assert!(w.logs().contains("upstream ejected"));
}

/// Connect, first byte and idle between events are separate deadlines: a slow first token
/// within `first_byte_timeout_ms` is fine even when it is longer than `idle_timeout_ms`; no first
/// byte in time is 504 `upstream_timeout`; a stream that goes quiet for longer than
/// `idle_timeout_ms` ends with an error event, never silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_and_idle_timeouts_are_separate() {
    let up = upstream().await;
    let w = warden(
        &up,
        "",
        "first_byte_timeout_ms = 1500\nidle_timeout_ms = 300\neject_after_failures = 0",
    )
    .await;
    let stream = |fault: &str| {
        harness::post(
            "/v1/chat/completions",
            &chat_body(MODEL, "hello", true),
            &format!("x-fault: {fault}\r\n"),
        )
    };
    // A first token after 800 ms: within the first-byte deadline, though over the idle one.
    let r = harness::send(w.proxy, &stream("slow-first-token=800"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().contains("[DONE]"), "{}", r.text());

    let t = std::time::Instant::now();
    let r = harness::send(w.proxy, &chat("x-fault: slow-first-token=5000\r\n"))
        .await
        .unwrap();
    assert_eq!(r.status(), 504, "{}", r.text());
    assert_eq!(error_of(&r)["code"], "upstream_timeout");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // The first event, then 2 s of silence: cut at the idle deadline with an error event.
    let t = std::time::Instant::now();
    let r = harness::send(w.proxy, &stream("pause-after-first=2000"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text();
    assert!(text.contains("upstream_error"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "cut at the idle deadline: {:?}",
        t.elapsed()
    );
}

/// SIGTERM: while an in-flight request drains, the admin listener stays up and `/readyz`
/// answers 503 `draining` (the probe got "connection refused" at once), and the process exits
/// when the request is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_draining() {
    let up = upstream().await;
    let mut w = warden(&up, "", "").await;
    let proxy = w.proxy;
    let slow = tokio::spawn(async move {
        harness::send(proxy, &chat("x-fault: slow-first-token=1500\r\n")).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = harness::get(w.admin, "/readyz")
        .await
        .expect("admin still listening");
    assert_eq!(r.status(), 503);
    let v = r.json().unwrap();
    assert_eq!(v["draining"], true, "{v}");
    assert!(harness::get(w.admin, "/metrics").await.is_ok());
    // New proxy connections are not accepted.
    assert!(
        TcpStream::connect(w.proxy).await.is_err() || {
            let r = harness::send(w.proxy, &chat("")).await;
            r.map_or(true, |r| r.status() == 503)
        }
    );
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the in-flight request finishes");
    let status = w
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert!(status.success());
}

/// Reads until the peer closes the connection; `Err` when it is still open at `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> Result<(), ()> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Slowloris: a request head trickled one line at a time (the probe kept one open past 100 s)
/// is cut at `header_timeout_ms`, and so is an idle connection; both are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_at_the_header_deadline() {
    use tokio::io::AsyncWriteExt;
    let up = upstream().await;
    let w = warden(&up, "header_timeout_ms = 1000", "").await;
    let t = std::time::Instant::now();
    let mut slow = TcpStream::connect(w.proxy).await.unwrap();
    slow.write_all(b"GET /v1/models HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut cut = false;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if slow
            .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
    }
    if !cut {
        closed_within(&mut slow, Duration::from_secs(1))
            .await
            .expect("closed");
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "cut at the deadline: {:?}",
        t.elapsed()
    );

    let mut idle = TcpStream::connect(w.proxy).await.unwrap();
    closed_within(&mut idle, Duration::from_secs(3))
        .await
        .expect("an idle connection too");
    w.metrics_with(&["warden_header_timeouts_total 2"]).await;
    // A prompt client is unaffected.
    let r = harness::send(w.proxy, &chat("")).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A burst of connections past `max_connections` (and, where set, `max_connections_per_ip`):
/// the extra ones are closed at once and counted, the admitted ones keep working, and closed
/// connections free their places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_caps_are_closed_at_once() {
    let up = upstream().await;
    let w = warden(&up, "max_connections = 200", "").await;
    let mut held = Vec::new();
    for _ in 0..1000 {
        match TcpStream::connect(w.proxy).await {
            Ok(c) => held.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let m = w
        .metrics_with(&[
            "warden_connections_rejected_total{reason=\"max_connections\"} 800",
            "warden_connections_open 200",
        ])
        .await;
    assert!(m.contains("warden_connections_open 200"));
    // Which ones were admitted is up to the scheduler (accepts are handled concurrently), not
    // the connect order.
    let mut admitted = Vec::new();
    for mut c in held.drain(..) {
        if closed_within(&mut c, Duration::from_millis(5))
            .await
            .is_err()
        {
            admitted.push(c);
        }
    }
    let mut held = admitted;
    assert_eq!(held.len(), 200, "every connection past the cap is closed");
    // An admitted connection still works.
    let mut conn = Conn::new(held.swap_remove(0));
    conn.write_all(&keep_alive("GET", "/v1/models", "", "held"))
        .await
        .unwrap();
    assert_eq!(conn.read_response("GET").await.unwrap().status(), 200);
    drop(conn);
    held.clear();
    w.metrics_with(&["warden_connections_open 0"]).await;
    assert_eq!(
        harness::send(w.proxy, &chat("")).await.unwrap().status(),
        200
    );

    // Per address: every test client is 127.0.0.1.
    let w = warden(&up, "max_connections_per_ip = 3", "").await;
    // A client of another test that reaches this port (see below) and holds one of the three
    // places while ours connect makes a third of ours refused: the five are tried again (up to
    // three times), and a cap that admits two would refuse three every time.
    let mut closed = 0;
    for _ in 0..3 {
        let mut conns = Vec::new();
        for _ in 0..5 {
            conns.push(TcpStream::connect(w.proxy).await.unwrap());
        }
        closed = 0;
        for c in conns.iter_mut() {
            if closed_within(c, Duration::from_millis(500)).await.is_ok() {
                closed += 1;
            }
        }
        if closed == 2 {
            break;
        }
        drop(conns);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(closed, 2);
    // Ours are two of the rejections counted. The test binary's other tests run beside this one,
    // and a client of theirs that reaches this port (the OS hands a freed port to the next
    // listener) while the three are held is refused too: at least two, not exactly two.
    let m = w
        .metrics_with(&["warden_connections_rejected_total{reason=\"max_connections_per_ip\"}"])
        .await;
    let rejected: u64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("warden_connections_rejected_total{reason=\"max_connections_per_ip\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(rejected >= 2, "{m}");
}

/// A flood of requests without a key (the probe: 5,000/s for 10 s wrote 11.6 MiB of log and
/// 14.6 MiB of spool) gives one summary log line per interval, not a line each, and at most
/// `unauthenticated_rows_per_s` lake rows a second; every request is still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_without_a_key_floods_neither_the_log_nor_the_lake() {
    let up = upstream().await;
    // The summary interval is its default, 10 s; the last summary is logged at shutdown.
    let (mut w, lake) =
        warden_with_lake(&up, "fault-flood", "unauthenticated_rows_per_s = 5").await;
    let t = std::time::Instant::now();
    let unauthenticated = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n".repeat(100);
    for _ in 0..20 {
        let mut conn = Conn::new(TcpStream::connect(w.proxy).await.unwrap());
        conn.write_all(&unauthenticated).await.unwrap();
        for _ in 0..100 {
            let r = conn.read_response("GET").await.unwrap();
            assert_eq!(r.status(), 401);
        }
    }
    let flood = t.elapsed();
    w.metrics_with(&["status=\"401\",tenant=\"-\"} 2000"]).await;
    let m = w.metrics_with(&["warden_telemetry_unrecorded_total"]).await;
    let unrecorded: f64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("warden_telemetry_unrecorded_total{reason=\"unauthenticated\"} ")?
                .parse()
                .ok()
        })
        .unwrap();
    w.signal("TERM");
    assert!(w.wait_exit(Duration::from_secs(20)).is_some());
    let rows = lake_rows(&lake);
    let most = 5 + (flood.as_secs_f64() * 5.0).ceil() as usize + 1;
    assert!(rows <= most, "{rows} rows in {flood:?}, at most {most}");
    assert!(rows >= 5, "the first ones are kept: {rows}");
    assert_eq!(
        rows + unrecorded as usize,
        2000,
        "every request a row or counted"
    );
    let logs = w.logs();
    let lines = logs
        .lines()
        .filter(|l| l.contains("missing_api_key"))
        .count();
    assert!(
        lines <= 1,
        "no line per request: {lines} lines mention them"
    );
    assert!(
        logs.contains("refused=2000"),
        "the summary counts them all:\n{logs}"
    );
}

/// Slowloris on the body: a body trickled in slower than `body_read_timeout_ms` allows gets
/// 408 `request_timeout` at the deadline, while the client is still sending, and the connection
/// closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_at_the_body_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream().await;
    let w = warden(&up, "body_read_timeout_ms = 1000", "").await;
    let mut s = TcpStream::connect(w.proxy).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let t = std::time::Instant::now();
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    while t.elapsed() < Duration::from_secs(5) {
        // One byte every 200 ms: each read is quick, the whole body never is.
        let _ = s.write_all(b" ").await;
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "closed at the deadline: {:?}",
        t.elapsed()
    );
    assert_eq!(up.posts().len(), 0);
}

/// An upstream that passes its health checks but answers requests with bytes that are not HTTP:
/// `502 upstream_error`, never a hang or a 500, and after three in a row it is ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answering_garbage_is_a_502_and_then_ejected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let garbage = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let reply: &[u8] = if buf[..n].starts_with(b"GET") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                } else {
                    b"\x00\x01 NOT HTTP \xff\xfe\r\n\r\ngarbage"
                };
                let _ = s.write_all(reply).await;
            });
        }
    });
    let w = Warden::start(&[UpstreamSpec::new("garbage", addr, &[MODEL])], "", "");
    w.wait_ready().await;
    for _ in 0..3 {
        let r = harness::send(w.proxy, &chat("")).await.unwrap();
        assert_eq!(r.status(), 502, "{}", r.text());
        assert_eq!(error_of(&r)["code"], "upstream_error");
    }
    let r = harness::send(w.proxy, &chat("")).await.unwrap();
    assert_eq!(r.status(), 503, "ejected: {}", r.text());
    w.metrics_with(&["warden_upstream_ejections_total{upstream=\"garbage\"} 1"])
        .await;
    assert!(!w.metrics_with(&[]).await.contains("status=\"500\""));
    garbage.abort();
}
