//! `loadgen`: an open-loop HTTP/1.1 load generator for comparing "direct to the fake upstream"
//! with "through the proxy".
//!
//! Requests are scheduled at a constant rate by a dedicated timer thread and handed to a pool
//! of `--connections` keep-alive connections, each carrying one request at a time and opened
//! before the clock starts. The timer thread sleeps on the OS timer and busy-waits the last
//! `--spin-us` before each slot: Tokio's timer wheel has 1 ms resolution and the kernel's timer
//! slack adds ~50 us, and either would be charged as latency. Latency is measured from the
//! *scheduled* send time, so a request that waits for a free connection (or for a slow server)
//! is charged for the wait: no coordinated omission.
//!
//! Output: one JSON object on stdout, for requests scheduled after the warmup:
//! `sent` (scheduled), `ok` (2xx, body complete), `non_2xx` (complete non-2xx responses),
//! `errors` (connect/write/read failures, truncated bodies, and requests still outstanding
//! 5 s after the run), `achieved_rps` (`(ok + non_2xx) / duration_s`), `latency_us`
//! (scheduled → last body byte, 2xx only), `ttfb_us` (scheduled → first body byte, 2xx only),
//! plus `statuses` (count per status code) and `send_delay_us` (scheduled → a connection
//! starts sending it; large values mean the pool or the generator itself is the bottleneck).
//! Percentiles are exact (all samples sorted), `null` when there are no samples.
//!
//! Bounded: it stops by itself after warmup + duration + at most 5 s of drain. Only loopback
//! targets are accepted. A request that fails on a reused connection is not retried.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use warden_tests::http1::Conn;

/// How long outstanding requests may take after the last one is scheduled.
const DRAIN: Duration = Duration::from_secs(5);
/// Connect timeout for the initial pool and for reconnects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Open-loop HTTP/1.1 load generator (loopback targets only).
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Target, e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Measured seconds (after warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Keep-alive connections in the pool.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    connections: u16,
    /// Request body read from a file.
    #[arg(long, conflicts_with = "body")]
    body_file: Option<PathBuf>,
    /// Request body (default: a small chat completion for "test-model").
    #[arg(long)]
    body: Option<String>,
    /// Extra request header "Name: value" (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Set "stream": true in the JSON body.
    #[arg(long)]
    stream: bool,
    /// HTTP method; GET and HEAD send no body.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Microseconds the timer thread busy-waits before each send instead of sleeping (the OS
    /// timer overshoots by ~50 us); costs spin_us * rate / 1e6 of a core. 0 disables.
    #[arg(long, default_value_t = 100)]
    spin_us: u64,
    /// Tokio worker threads (1 = current-thread runtime); the timer thread is extra.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

#[derive(Clone, Copy, Debug)]
struct Job {
    seq: u64,
    scheduled: Instant,
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Response {
        status: u16,
        first_byte: Instant,
        done: Instant,
    },
    Error,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    job: Job,
    sent: Instant,
    outcome: Outcome,
}

/// What every worker needs to issue the request.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    method: String,
    request: Vec<u8>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = warden_tests::runtime(args.threads);
    let result = match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => Err(format!("cannot start runtime: {e}")),
    };
    match result.and_then(|report| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{report}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<Value, String> {
    for (name, value) in [
        ("rate", args.rate),
        ("duration", args.duration),
        ("warmup", args.warmup),
    ] {
        if !value.is_finite() || value < 0.0 || (name != "warmup" && value == 0.0) {
            return Err(format!("--{name} must be a positive number"));
        }
    }
    let target = Arc::new(build_target(&args).await?);
    let total = ((args.warmup + args.duration) * args.rate).floor() as u64;
    let warmup_n = (args.warmup * args.rate).ceil() as u64;
    let measured_n = total.saturating_sub(warmup_n);

    // Open the pool before the clock starts so the first requests do not pay for connects.
    let mut conns = Vec::with_capacity(usize::from(args.connections));
    for _ in 0..args.connections {
        conns.push(
            connect(target.addr)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?,
        );
    }

    let (job_tx, job_rx) = mpsc::unbounded_channel::<Job>();
    let (result_tx, mut result_rx) = mpsc::unbounded_channel::<Sample>();
    let jobs = Arc::new(Mutex::new(job_rx));
    for conn in conns {
        // Ends when the job channel closes or when the runtime is dropped after the drain.
        tokio::spawn(worker(
            Some(conn),
            Arc::clone(&target),
            Arc::clone(&jobs),
            result_tx.clone(),
        ));
    }
    drop(result_tx);

    let start = Instant::now() + Duration::from_millis(10);
    let rate = args.rate;
    let spin = Duration::from_micros(args.spin_us);
    std::thread::Builder::new()
        .name("loadgen-timer".into())
        .spawn(move || schedule(start, rate, total, spin, job_tx))
        .map_err(|e| format!("cannot start timer thread: {e}"))?;

    let end = start + Duration::from_secs_f64(args.warmup + args.duration);
    let deadline = tokio::time::Instant::from_std(end + DRAIN);
    let mut samples = Vec::with_capacity(usize::try_from(measured_n).unwrap_or(0));
    let mut received = 0u64;
    while received < total {
        match tokio::time::timeout_at(deadline, result_rx.recv()).await {
            Ok(Some(sample)) => {
                received += 1;
                if sample.job.seq >= warmup_n {
                    samples.push(sample);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(report(&args, measured_n, &samples))
}

/// Sends one job per period at `start + seq / rate`, sleeping on the OS timer in between.
fn schedule(
    start: Instant,
    rate: f64,
    total: u64,
    spin: Duration,
    jobs: mpsc::UnboundedSender<Job>,
) {
    for seq in 0..total {
        let scheduled = start + Duration::from_secs_f64(seq as f64 / rate);
        // Sleep to just before the slot (the OS timer overshoots by its slack, ~50 us),
        // then spin the rest so requests leave on time.
        let wake = scheduled.checked_sub(spin).unwrap_or(scheduled);
        let now = Instant::now();
        if wake > now {
            std::thread::sleep(wake - now);
        }
        while Instant::now() < scheduled {
            std::hint::spin_loop();
        }
        if jobs.send(Job { seq, scheduled }).is_err() {
            return;
        }
    }
}

async fn worker(
    mut conn: Option<Conn<TcpStream>>,
    target: Arc<Target>,
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    results: mpsc::UnboundedSender<Sample>,
) {
    loop {
        // One idle worker waits on the queue at a time; the others queue on the lock.
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else { return };
        let sent = Instant::now();
        let outcome = match exchange(&mut conn, &target).await {
            Ok(outcome) => outcome,
            Err(_) => {
                conn = None;
                Outcome::Error
            }
        };
        if results.send(Sample { job, sent, outcome }).is_err() {
            return;
        }
    }
}

async fn exchange(conn: &mut Option<Conn<TcpStream>>, target: &Target) -> Result<Outcome, String> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(connect(target.addr).await.map_err(|e| e.to_string())?),
    };
    c.write_all(&target.request)
        .await
        .map_err(|e| e.to_string())?;
    let res = c
        .read_response(&target.method)
        .await
        .map_err(|e| e.to_string())?;
    if !res.head.keep_alive() {
        *conn = None;
    }
    Ok(Outcome::Response {
        status: res.status(),
        first_byte: res.first_body_at.unwrap_or(res.head_at),
        done: res.done_at,
    })
}

async fn connect(addr: SocketAddr) -> std::io::Result<Conn<TcpStream>> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(Conn::new(stream))
}

/// Parses the URL (loopback `http://` only) and pre-renders the request bytes.
async fn build_target(args: &Args) -> Result<Target, String> {
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or("--url must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| format!("cannot resolve {authority:?} (host:port required): {e}"))?
        .collect();
    let addr = match addrs.first() {
        Some(addr) if addrs.iter().all(|a| a.ip().is_loopback()) => *addr,
        _ => return Err(format!("{authority} is not a loopback address")),
    };

    let method = args.method.to_ascii_uppercase();
    let has_body = !matches!(method.as_str(), "GET" | "HEAD");
    let body = if has_body {
        let raw = match (&args.body_file, &args.body) {
            (Some(file), _) => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
            (None, Some(body)) => body.clone(),
            (None, None) => json!({
                "model": "test-model",
                "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
                "max_tokens": 16,
            })
            .to_string(),
        };
        if args.stream {
            let mut value: Value = serde_json::from_str(&raw)
                .map_err(|e| format!("--stream needs a JSON body: {e}"))?;
            let object = value
                .as_object_mut()
                .ok_or("--stream needs a JSON object body")?;
            object.insert("stream".into(), Value::Bool(true));
            value.to_string()
        } else {
            raw
        }
    } else {
        String::new()
    };

    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: warden-loadgen\r\n");
    let mut has_content_type = false;
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header {header:?} is not \"Name: value\""))?;
        has_content_type |= name.trim().eq_ignore_ascii_case("content-type");
        head.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
    }
    if has_body {
        if !has_content_type {
            head.push_str("content-type: application/json\r\n");
        }
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.as_bytes());
    Ok(Target {
        addr,
        method,
        request,
    })
}

fn report(args: &Args, sent: u64, samples: &[Sample]) -> Value {
    let mut ok = 0u64;
    let mut non_2xx = 0u64;
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut latency = Vec::with_capacity(samples.len());
    let mut ttfb = Vec::with_capacity(samples.len());
    let mut send_delay = Vec::with_capacity(samples.len());
    for sample in samples {
        send_delay.push(micros(sample.sent, sample.job.scheduled));
        if let Outcome::Response {
            status,
            first_byte,
            done,
        } = sample.outcome
        {
            *statuses.entry(status.to_string()).or_default() += 1;
            if (200..300).contains(&status) {
                ok += 1;
                latency.push(micros(done, sample.job.scheduled));
                ttfb.push(micros(first_byte, sample.job.scheduled));
            } else {
                non_2xx += 1;
            }
        }
    }
    let errors = sent.saturating_sub(ok + non_2xx);
    latency.sort_unstable();
    ttfb.sort_unstable();
    send_delay.sort_unstable();
    json!({
        "url": args.url,
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "stream": args.stream,
        "spin_us": args.spin_us,
        "sent": sent,
        "ok": ok,
        "non_2xx": non_2xx,
        "errors": errors,
        "achieved_rps": (ok + non_2xx) as f64 / args.duration,
        "latency_us": {
            "p50": percentile(&latency, 0.50),
            "p90": percentile(&latency, 0.90),
            "p99": percentile(&latency, 0.99),
            "p999": percentile(&latency, 0.999),
            "max": latency.last(),
        },
        "ttfb_us": {
            "p50": percentile(&ttfb, 0.50),
            "p90": percentile(&ttfb, 0.90),
            "p99": percentile(&ttfb, 0.99),
        },
        "send_delay_us": {
            "p50": percentile(&send_delay, 0.50),
            "p99": percentile(&send_delay, 0.99),
            "max": send_delay.last(),
        },
        "statuses": statuses,
    })
}

/// Microseconds from `from` to `to` (0 if `to` is earlier).
fn micros(to: Instant, from: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&[7], 0.999), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
