//! Crash safety: every event acknowledged by an fsync reaches Parquet exactly once, whether the
//! process is killed, dropped without close, interrupted mid-conversion, or its disk fails for a
//! while.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{event, hasher, parquet_files, request_id_counts, t, TempDir};
use warden_telemetry::schema::events_to_batch;
use warden_telemetry::spool::{convert_spool, list_spools, SpoolWriter};
use warden_telemetry::{Config, Health, Telemetry};

const CHILD_ENV: &str = "WARDEN_TELEMETRY_CRASH_CHILD";

/// This test binary run again as a child process that runs only the test `name`, with `env` set
/// to `lake` (the child tests do nothing without it).
fn child_test(name: &str, env: &str, lake: &std::path::Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, lake);
    cmd
}

/// Waits until `ready(tel)`; fails the test with the pipeline's health after `within`.
fn recover_within(tel: &Telemetry, within: Duration, ready: impl Fn(&Telemetry) -> bool) {
    let deadline = Instant::now() + within;
    while !ready(tel) {
        assert!(
            Instant::now() < deadline,
            "did not recover: {:?}",
            tel.health()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Not a test on its own: the body of the child process of `kill_9_loses_nothing_acknowledged`.
/// It records events forever and prints `ACK n` after each successful `sync()` covering the
/// first `n` events.
#[test]
fn crash_child() {
    let Ok(lake) = std::env::var(CHILD_ENV) else {
        return;
    };
    let h = hasher();
    let mut cfg = Config::new(lake);
    cfg.sync_interval = Duration::from_millis(20);
    cfg.batch_rows = 64;
    cfg.rotate_bytes = 256 * 1024; // several spools: some converted, some not, at the kill
    let tel = Telemetry::open(cfg).unwrap();
    let mut out = std::io::stdout().lock();
    let mut i = 0u64;
    loop {
        for _ in 0..250 {
            tel.record(event(i, t(i / 100), &h)).unwrap();
            i += 1;
        }
        tel.sync().unwrap();
        writeln!(out, "ACK {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let dir = TempDir::new("kill9");
    let mut child = child_test("crash_child", CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = n.parse().unwrap();
            if acked >= 20_000 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "child too slow");
    }
    child.kill().unwrap(); // SIGKILL, mid-flight
    child.wait().unwrap();
    assert!(acked >= 20_000, "child died early (acked {acked})");

    // The dead child's lock is stale; its spools are recovered at open.
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    let stats = tel.close();
    assert_eq!(stats.spools_pending, 0);
    drop(tel);
    assert!(list_spools(&dir.path().join("spool")).unwrap().is_empty());
    let counts = request_id_counts(dir.path());
    for i in 0..acked {
        assert_eq!(
            counts.get(&format!("req-{i:08}")),
            Some(&1),
            "acknowledged event {i}"
        );
    }
    // Events after the last acknowledgement may or may not be there, but never twice.
    assert!(counts.values().all(|&c| c == 1));
    assert!(counts.len() as u64 >= acked);
}

#[test]
fn drop_without_close_leaves_a_spool_that_the_next_start_converts() {
    let dir = TempDir::new("drop");
    let h = hasher();
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    for i in 0..1000 {
        tel.record(event(i, t(i), &h)).unwrap();
    }
    assert_eq!(tel.sync().unwrap(), 1000);
    drop(tel);
    // The sealed spool may or may not have been converted before the threads stopped.
    let spools = list_spools(&dir.path().join("spool")).unwrap().len();
    let files = parquet_files(&dir.path().join("events")).len();
    assert!(
        (spools, files) == (1, 0) || (spools, files) == (0, 1),
        "{spools} spools, {files} files"
    );

    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    for i in 1000..1500 {
        tel.record(event(i, t(i), &h)).unwrap();
    }
    let stats = tel.close();
    assert_eq!(stats.events_written, if spools == 1 { 1500 } else { 500 });
    let counts = request_id_counts(dir.path());
    assert_eq!(counts.len(), 1500);
    assert!(counts.values().all(|&c| c == 1));
}

#[test]
fn conversion_interrupted_after_rename_does_not_duplicate_rows() {
    let dir = TempDir::new("reconvert");
    let h = hasher();
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    for i in 0..2000 {
        tel.record(event(i, t(i * 4), &h)).unwrap(); // spans 3 hours: 3 output files
    }
    tel.sync().unwrap();
    let spools = list_spools(&dir.path().join("spool")).unwrap();
    assert_eq!(spools.len(), 1);
    let saved = std::fs::read(&spools[0]).unwrap();
    tel.close();
    drop(tel);
    let first = parquet_files(&dir.path().join("events"));
    assert_eq!(first.len(), 3);

    // As if the process died after renaming the Parquet files but before deleting the spool,
    // with a half-written temporary file of a later attempt lying around too.
    std::fs::write(&spools[0], &saved).unwrap();
    let mut stray = first[0].as_os_str().to_owned();
    stray.push(".tmp");
    std::fs::write(&stray, b"PAR1 half written").unwrap();

    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    let stats = tel.close();
    assert_eq!(stats.events_written, 2000);
    drop(tel);
    assert_eq!(
        parquet_files(&dir.path().join("events")),
        first,
        "same names, replaced in place"
    );
    let counts = request_id_counts(dir.path());
    assert_eq!(counts.len(), 2000);
    assert!(counts.values().all(|&c| c == 1));
    assert!(!std::path::Path::new(&stray).exists());
}

#[test]
fn torn_or_zeroed_spool_tails_keep_the_rows_before_them() {
    let h = hasher();
    let props = parquet::file::properties::WriterProperties::builder().build();
    for tail in [
        &b"\xff\xff\xff\xff\x10\x00\x00\x00garbage"[..],
        &[0u8; 4096][..],
    ] {
        let dir = TempDir::new("torn");
        let spool_dir = dir.path().join("spool");
        std::fs::create_dir_all(&spool_dir).unwrap();
        let mut w = SpoolWriter::create(&spool_dir, "ev-test-000001").unwrap();
        let a: Vec<_> = (0..10).map(|i| event(i, t(i), &h)).collect();
        let b: Vec<_> = (10..30).map(|i| event(i, t(i), &h)).collect();
        w.append(&events_to_batch(&a).unwrap()).unwrap();
        w.append(&events_to_batch(&b).unwrap()).unwrap();
        w.sync().unwrap();
        let path = w.path().to_owned();
        drop(w);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(tail).unwrap();
        drop(f);
        let out = convert_spool(&path, &dir.path().join("events"), &props).unwrap();
        assert_eq!(out.rows, 30);
        assert_eq!(
            out.torn_tail,
            tail[0] != 0,
            "zeros read as a clean end of stream"
        );
        assert!(!path.exists());
        assert_eq!(request_id_counts(dir.path()).len(), 30);
    }
}

#[test]
fn unwritable_spool_directory_fails_visibly_then_recovers_without_loss() {
    let dir = TempDir::new("diskfail");
    let h = hasher();
    let mut cfg = Config::new(dir.path());
    cfg.sync_interval = Duration::from_millis(10);
    cfg.retry_interval = Duration::from_millis(50);
    cfg.rotate_interval = Duration::from_millis(30);
    let tel = Telemetry::open(cfg).unwrap();
    for i in 0..100 {
        tel.record(event(i, t(i), &h)).unwrap();
    }
    tel.sync().unwrap();

    // Swap the spool directory for a plain file: new spools cannot be created, the sealed one
    // cannot be found by the converter.
    let spool = dir.path().join("spool");
    let moved = dir.path().join("spool.moved");
    std::fs::rename(&spool, &moved).unwrap();
    std::fs::write(&spool, b"not a directory").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for i in 100..300 {
        tel.record(event(i, t(i), &h)).unwrap();
    }
    let err = tel.sync().unwrap_err();
    assert!(
        matches!(err, warden_telemetry::Error::NotDurable { .. }),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = tel.stats();
        if matches!(tel.health(), Health::Failing { .. })
            && s.write_errors > 0
            && s.events_buffered >= 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failure not visible: {s:?} {:?}",
            tel.health()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Health::Failing { last_error, .. } = tel.health() {
        assert!(last_error.contains("spool"), "{last_error}");
    }
    // The pressure is visible (issue 16: 14,336 events were held while every figure said 0):
    // what is held, its memory, and how old the oldest held event is (event 100's time).
    tel.sync().unwrap_err();
    let s = tel.stats();
    assert!(s.events_buffered >= 200, "{s:?}");
    assert!(s.events_buffered_bytes > 0, "{s:?}");
    let oldest = SystemTime::now().duration_since(t(100)).unwrap();
    assert!(
        s.oldest_buffered_age.abs_diff(oldest) < Duration::from_secs(5),
        "{s:?}, expected about {oldest:?}"
    );

    // The disk comes back.
    std::fs::remove_file(&spool).unwrap();
    std::fs::rename(&moved, &spool).unwrap();
    recover_within(&tel, Duration::from_secs(10), |t| {
        t.health() == Health::Ok && t.sync().is_ok()
    });
    let stats = tel.close();
    assert_eq!(stats.events_buffered, 0);
    assert_eq!(stats.events_buffered_bytes, 0);
    assert_eq!(stats.oldest_buffered_age, Duration::ZERO);
    assert_eq!(stats.spools_pending, 0);
    drop(tel);
    let counts = request_id_counts(dir.path());
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|&c| c == 1));
}

/// Live conversion (rows encoded as they are fsynced) that fails part-way is given up, and the
/// sealed spool is converted from its file once the lake is writable again: nothing lost,
/// nothing twice, and no temporary file left behind.
#[test]
fn a_failed_live_conversion_falls_back_to_the_spool_file() {
    let dir = TempDir::new("livefail");
    let h = hasher();
    let mut cfg = Config::new(dir.path());
    cfg.sync_interval = Duration::from_millis(10);
    cfg.retry_interval = Duration::from_millis(50);
    cfg.rotate_interval = Duration::from_millis(300);
    let tel = Telemetry::open(cfg).unwrap();

    // The events directory becomes a plain file: the live conversion cannot create its
    // partition, while the spool keeps taking rows.
    let events = dir.path().join("events");
    let moved = dir.path().join("events.moved");
    std::fs::rename(&events, &moved).unwrap();
    std::fs::write(&events, b"not a directory").unwrap();
    for i in 0..500 {
        tel.record(event(i, t(i), &h)).unwrap();
    }
    tel.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(tel.health(), Health::Failing { .. }) {
        assert!(
            Instant::now() < deadline,
            "conversion failure not visible: {:?}",
            tel.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(tel.stats().events_written, 0);

    std::fs::remove_file(&events).unwrap();
    std::fs::rename(&moved, &events).unwrap();
    for i in 500..1000 {
        tel.record(event(i, t(i), &h)).unwrap();
    }
    let stats = tel.close();
    drop(tel);
    assert_eq!(stats.events_written, 1000, "{stats:?}");
    assert_eq!(stats.spools_pending, 0);
    let counts = request_id_counts(dir.path());
    assert_eq!(counts.len(), 1000);
    assert!(counts.values().all(|&c| c == 1));
    let tmp: Vec<_> = common::all_files(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

const EFBIG_CHILD_ENV: &str = "WARDEN_TELEMETRY_EFBIG_CHILD";

/// Not a test on its own: the body of the child process of
/// `a_spool_failing_after_rows_went_live_loses_and_doubles_nothing`, which needs a process of
/// its own for the file size limit.
#[test]
fn efbig_child() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let Ok(lake) = std::env::var(EFBIG_CHILD_ENV) else {
        return;
    };
    // Writing past the limit fails with EFBIG instead of killing the process (the threads the
    // pipeline starts inherit the mask).
    let mut xfsz = SigSet::empty();
    xfsz.add(Signal::SIGXFSZ);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&xfsz), None).unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    setrlimit(Resource::RLIMIT_FSIZE, 128 * 1024, hard).unwrap();

    let h = hasher();
    let mut cfg = Config::new(&lake);
    // No fsync before the failure: every row the converter has is unsynced when the spool
    // outgrows the limit.
    cfg.sync_interval = Duration::from_secs(600);
    cfg.batch_rows = 32;
    cfg.retry_interval = Duration::from_millis(20);
    let tel = Telemetry::open(cfg).unwrap();
    for i in 0..1000 {
        tel.record(event(i, t(i), &h)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while tel.stats().write_errors == 0 {
        assert!(
            Instant::now() < deadline,
            "no write error: {:?}",
            tel.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(tel.health(), Health::Failing { .. }));
    // Nothing was fsynced: every row the converter got was past the spool's synced length.
    assert_eq!(tel.stats().events_synced, 0);

    // The limit goes back to what it was: the backlog is written to a new spool.
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
    recover_within(&tel, Duration::from_secs(20), |t| t.sync().is_ok());
    let stats = tel.close();
    assert_eq!(stats.spools_pending, 0, "{stats:?}");
    drop(tel);
    let counts = request_id_counts(std::path::Path::new(&lake));
    assert_eq!(counts.len(), 1000);
    assert!(
        counts.values().all(|&c| c == 1),
        "doubled: {:?}",
        counts
            .iter()
            .filter(|(_, &c)| c != 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(parquet_files(&std::path::Path::new(&lake).join("events"))
        .iter()
        .all(|f| f.extension().is_some_and(|e| e == "parquet")));
    println!("EFBIG CHILD OK");
}

/// Batches go to the converter as they are appended, before their fsync. A spool that fails
/// after that (here: the file outgrows RLIMIT_FSIZE and the append fails with EFBIG) is cut
/// back to its fsynced length and converted from its file; the converter's live copy, which
/// holds the rows that go back to the backlog, is given up. Every event ends up in Parquet
/// exactly once.
#[test]
fn a_spool_failing_after_rows_went_live_loses_and_doubles_nothing() {
    let dir = TempDir::new("efbig");
    let out = child_test("efbig_child", EFBIG_CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("EFBIG CHILD OK"),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
}
