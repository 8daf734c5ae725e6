//! Writer throughput: events per second sustained into Parquet, and bytes per event on disk.
//!
//! `one_thread`: the whole durable path on the calling thread, no queue: build Arrow batches,
//! append them to a spool, encode them into zstd Parquet (hour partitions) as the converter
//! thread does live, fsync and seal the spool, close and rename the Parquet files.
//! `pipeline`: `Telemetry::record` from one producer thread plus `close()` (writer and
//! converter threads): first record to last row in Parquet.
//!
//! `sustained_one_core`: the same pipeline, every thread of it (and the producer) pinned to one
//! CPU, over enough events that spools rotate and convert while the next one fills: the rate
//! one core sustains into Parquet, with the disk waits of one thread overlapping the work of
//! another as they do in the proxy.
//!
//! Run: `cargo bench -p warden-telemetry --bench writer`. Sizes are printed once per run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use warden_telemetry::schema::{event_writer_properties, EventBatchBuilder};
use warden_telemetry::spool::{Conversion, SpoolWriter};
use warden_telemetry::{Config, Event, GuardDecision, Hasher, Telemetry};

const N: u64 = 50_000;

/// What the proxy holds once and every event shares: tenant and upstream names from the config,
/// the route label, region, pack version, config hash and key id.
struct Labels {
    tenants: Vec<Arc<str>>,
    upstreams: Vec<Arc<str>>,
    route: Arc<str>,
    region: Arc<str>,
    pack: Arc<str>,
    config: Arc<str>,
    key_id: Arc<str>,
}

impl Labels {
    fn new(h: &Hasher) -> Self {
        Labels {
            tenants: (0..50).map(|t| format!("tenant-{t}").into()).collect(),
            upstreams: (0..4).map(|u| format!("10.0.0.{u}:8000").into()).collect(),
            route: "/v1/chat/completions".into(),
            region: "eu-west-1".into(),
            pack: "packs-2024.03.1".into(),
            config: "b3:5f1c0e9a".into(),
            key_id: h.key_id_shared(),
        }
    }
}

fn event(i: u64, h: &Hasher, l: &Labels) -> Event {
    let system = "You are a helpful assistant for Acme Corp. Answer briefly.";
    let user =
        format!("please summarise the attached quarterly report number {i} in three bullet points");
    Event {
        time: UNIX_EPOCH + Duration::from_secs(1_710_061_200) + Duration::from_millis(i * 5),
        request_id: format!("req-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        tenant: l.tenants[(i % 50) as usize].clone(),
        route: l.route.clone(),
        requested_model: "llama-3-8b".into(),
        served_model: Some("llama-3-8b-instruct".into()),
        model_version: Some("2024-02".into()),
        upstream: Some(l.upstreams[(i % 4) as usize].clone()),
        region: Some(l.region.clone()),
        stream: !i.is_multiple_of(3),
        status: if i.is_multiple_of(97) { 429 } else { 200 },
        error_code: i.is_multiple_of(97).then(|| "rate_limited".into()),
        input_tokens: Some(200 + (i % 300) as u32),
        output_tokens: Some(100 + (i * 7 % 500) as u32),
        ttft_ms: Some(30.0 + (i % 170) as f32 * 0.37),
        duration_ms: 900.0 + (i % 2000) as f32 * 1.3,
        tpot_ms: Some(7.0 + (i % 30) as f32 * 0.11),
        guard_decision: Some(if i.is_multiple_of(41) {
            GuardDecision::Flag
        } else {
            GuardDecision::Allow
        }),
        guard_score: Some((i % 7) as u32),
        rule_ids: if i.is_multiple_of(41) {
            vec!["INJ-001".into(), "INJ-017".into()]
        } else {
            Vec::new()
        },
        rule_pack_version: Some(l.pack.clone()),
        config_hash: l.config.clone(),
        classifier_score: None,
        refusal: None,
        canary_leak: None,
        degraded: Some(false),
        throttled: None,
        switch_state: None,
        overhead_us: 400 + (i % 900) as u32,
        prompt_hash: Some(h.prompt(&format!("{system}\n{user}"))),
        system_prompt_hash: Some(h.system_prompt(system)),
        message_hashes: vec![h.message("system", system), h.message("user", &user)],
        client_addr_hash: Some(h.client_addr(&format!("198.51.100.{}", i % 200))),
        hash_key_id: l.key_id.clone(),
        raw_prompt: None,
        guard_truncated: Some(i.is_multiple_of(500)),
        guard_scanned_bytes: Some((system.len() + user.len()) as u32),
        guard_us: Some(30 + (i % 120) as u32),
        hallucination_score: None,
        logprob_mean: None,
        logprob_min: None,
        token_entropy: None,
    }
}

fn scratch(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "warden-bench-{tag}-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A scratch directory removed when dropped. Benchmark routines return it, so criterion drops
/// it after the clock stops: deleting what was written is not part of writing it.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sizes and phase times of one run of the durable path.
struct Run {
    spool_bytes: u64,
    parquet_bytes: u64,
    spool_secs: f64,
    convert_secs: f64,
    /// CPU time of the calling thread over both phases; the rest of the wall time is waiting
    /// for the disk (fsync of the spool and of the Parquet file).
    cpu_secs: f64,
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (0 where there is none).
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// The durable path on one thread.
fn one_thread(dir: &Path, events: &[Event]) -> Run {
    one_thread_with(dir, events, &warden_telemetry_props())
}

fn one_thread_with(
    dir: &Path,
    events: &[Event],
    props: &parquet::file::properties::WriterProperties,
) -> Run {
    let cpu = thread_cpu_secs();
    let spool_dir = dir.join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    let (mut spool_secs, mut convert_secs) = (0.0, 0.0);
    let start = Instant::now();
    let mut spool = SpoolWriter::create(&spool_dir, "ev-bench-000001").unwrap();
    let mut conversion = Conversion::new(spool.path(), &dir.join("events"), props).unwrap();
    let mut b = EventBatchBuilder::with_capacity(4096);
    spool_secs += start.elapsed().as_secs_f64();
    for chunk in events.chunks(4096) {
        let start = Instant::now();
        for e in chunk {
            b.push(e);
        }
        let batch = b.finish().unwrap();
        spool.append(&batch).unwrap();
        spool_secs += start.elapsed().as_secs_f64();
        let start = Instant::now();
        conversion.write(&batch).unwrap();
        convert_secs += start.elapsed().as_secs_f64();
    }
    let start = Instant::now();
    spool.sync().unwrap();
    let spool_bytes = spool.written_len();
    spool.seal().unwrap();
    spool_secs += start.elapsed().as_secs_f64();
    let start = Instant::now();
    let out = conversion.finish().unwrap();
    convert_secs += start.elapsed().as_secs_f64();
    assert_eq!(out.rows, events.len() as u64);
    Run {
        spool_bytes,
        parquet_bytes: out.bytes,
        spool_secs,
        convert_secs,
        cpu_secs: thread_cpu_secs() - cpu,
    }
}

/// The Parquet settings the pipeline uses with the default config.
fn warden_telemetry_props() -> parquet::file::properties::WriterProperties {
    let c = Config::new("unused");
    event_writer_properties(c.zstd_level, c.row_group_rows).unwrap()
}

fn bench(c: &mut Criterion) {
    let h = Hasher::parse_env_value(
        "bench:8f2d1c4b5a6978e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8",
        "bench",
    )
    .unwrap();
    let labels = Labels::new(&h);
    let events: Vec<Event> = (0..N).map(|i| event(i, &h, &labels)).collect();

    // Sizes (and a single timed run) per zstd level, once.
    let default_level = Config::new("unused").zstd_level;
    for level in [1, 3, 6] {
        let props = event_writer_properties(level, Config::new("unused").row_group_rows).unwrap();
        // Best of three: the machine is shared.
        let run = (0..3)
            .map(|_| {
                let dir = scratch("size");
                let run = one_thread_with(&dir, &events, &props);
                let _ = std::fs::remove_dir_all(&dir);
                run
            })
            .min_by(|a, b| {
                (a.spool_secs + a.convert_secs).total_cmp(&(b.spool_secs + b.convert_secs))
            })
            .unwrap();
        let n = N as f64;
        println!(
            "zstd {level}{}: spool {:.1} B/event, parquet {:.1} B/event; build+spool+fsync {:.0}/s, convert {:.0}/s, both on one thread {:.0} events/s ({:.0} per CPU-second)",
            if level == default_level { " (default)" } else { "" },
            run.spool_bytes as f64 / n,
            run.parquet_bytes as f64 / n,
            n / run.spool_secs,
            n / run.convert_secs,
            n / (run.spool_secs + run.convert_secs),
            n / run.cpu_secs,
        );
    }

    let mut g = c.benchmark_group("writer");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("one_thread", |b| {
        b.iter_batched(
            || Scratch(scratch("one")),
            |dir| {
                one_thread(&dir.0, &events);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("pipeline", |b| {
        b.iter_batched(
            || (Scratch(scratch("pipe")), events.clone()),
            |(dir, evs)| {
                // A queue as large as the run: measures sustained throughput to Parquet, not
                // how many events a small queue drops.
                let mut cfg = Config::new(&dir.0);
                cfg.queue_capacity = N as usize;
                let tel = Telemetry::open(cfg).unwrap();
                for e in evs {
                    tel.record(e).unwrap();
                }
                let stats = tel.close();
                drop(tel);
                assert_eq!(stats.events_written, N);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // Long enough for two rotations at a 32 MiB spool (about 80k events each).
    let long: Vec<Event> = (0..SUSTAINED_N).map(|i| event(i, &h, &labels)).collect();
    let mut g = c.benchmark_group("writer");
    g.throughput(Throughput::Elements(SUSTAINED_N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("sustained_one_core", |b| {
        b.iter_batched(
            || (Scratch(scratch("core")), long.clone()),
            |(dir, evs)| {
                let pinned = OneCpu::pin();
                let mut cfg = Config::new(&dir.0);
                cfg.queue_capacity = evs.len();
                cfg.rotate_bytes = 32 << 20;
                let tel = Telemetry::open(cfg).unwrap();
                for e in evs {
                    tel.record(e).unwrap();
                }
                let stats = tel.close();
                drop(tel);
                drop(pinned);
                assert_eq!(stats.events_written, SUSTAINED_N);
                assert!(stats.files_written >= 3, "{stats:?}");
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

const SUSTAINED_N: u64 = 200_000;

/// Pins the calling thread, and so every thread it spawns while pinned, to the first CPU it may
/// run on; restores the old mask when dropped.
struct OneCpu(nix::sched::CpuSet);

impl OneCpu {
    fn pin() -> Self {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let old = sched_getaffinity(Pid::from_raw(0)).unwrap();
        let first = (0..CpuSet::count())
            .find(|&i| old.is_set(i).unwrap_or(false))
            .unwrap();
        let mut one = CpuSet::new();
        one.set(first).unwrap();
        sched_setaffinity(Pid::from_raw(0), &one).unwrap();
        OneCpu(old)
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.0);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
