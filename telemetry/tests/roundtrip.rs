//! Events in, Parquet out: every field survives, partitions are where they should be, rotation
//! splits files without losing or duplicating rows, and a full queue is counted.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use arrow::array::AsArray;
use arrow::compute::concat_batches;
use arrow::datatypes::UInt32Type;
use common::{
    event, hasher, parquet_files, partitions, read_parquet, request_id_counts, t, TempDir,
};
use warden_telemetry::schema::{
    event_schema, events_to_batch, EVENTS_SCHEMA_VERSION, META_SCHEMA_VERSION,
};
use warden_telemetry::{Config, Dropped, Event, Health, Telemetry};

#[test]
fn round_trip_preserves_every_field_and_partitions_by_hour() {
    let dir = TempDir::new("roundtrip");
    let h = hasher();
    // 3000 events over three hours that straddle midnight UTC: two days, three partitions.
    let base = t(14 * 3600); // 2024-03-10T23:00:00Z
    let events: Vec<_> = (0..3000u64)
        .map(|i| event(i, base + Duration::from_secs(i * 3), &h))
        .collect();
    let mut cfg = Config::new(dir.path());
    cfg.batch_rows = 500;
    let tel = Telemetry::open(cfg).unwrap();
    for e in &events {
        tel.record(e.clone()).unwrap();
    }
    let stats = tel.close();
    assert_eq!(stats.events_recorded, 3000);
    assert_eq!(stats.events_written, 3000);
    assert_eq!(stats.events_dropped(), 0);
    assert_eq!(stats.spools_pending, 0);
    assert_eq!(stats.events_buffered, 0);
    assert_eq!(tel.health(), Health::Ok);
    drop(tel);

    assert_eq!(
        partitions(dir.path()),
        [
            "dt=2024-03-10/hour=23",
            "dt=2024-03-11/hour=00",
            "dt=2024-03-11/hour=01"
        ]
    );
    let files = parquet_files(&dir.path().join("events"));
    assert_eq!(
        files.len(),
        3,
        "one file per hour of the one spool: {files:?}"
    );
    assert_eq!(stats.files_written, 3);
    let on_disk: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(stats.bytes_written, on_disk);

    // Files in partition order hold the rows in recording order.
    let mut batches = Vec::new();
    for f in &files {
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(
            std::fs::File::open(f).unwrap(),
        )
        .unwrap();
        use parquet::file::reader::FileReader;
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        assert!(kv.iter().any(|kv| kv.key == META_SCHEMA_VERSION
            && kv.value.as_deref() == Some(EVENTS_SCHEMA_VERSION.to_string().as_str())));
        batches.extend(read_parquet(f));
    }
    let got = concat_batches(&event_schema(), &batches).unwrap();
    let want = events_to_batch(&events).unwrap();
    assert_eq!(got.num_rows(), 3000);
    assert_eq!(got.schema().fields(), want.schema().fields());
    for (i, field) in want.schema().fields().iter().enumerate() {
        assert_eq!(
            got.column(i).as_ref(),
            want.column(i).as_ref(),
            "column {}",
            field.name()
        );
    }
    // The guard columns against the events themselves, not only against the batch builder:
    // null (the guard did not run), false and true kept apart.
    let truncated: Vec<Option<bool>> = got
        .column_by_name("guard_truncated")
        .unwrap()
        .as_boolean()
        .iter()
        .collect();
    for kind in [None, Some(false), Some(true)] {
        assert!(truncated.contains(&kind), "no guard_truncated {kind:?}");
    }
    same_rows("guard_truncated", &truncated, &events, |e| {
        e.guard_truncated
    });
    let u32s = |name: &str| -> Vec<Option<u32>> {
        let col = got.column_by_name(name).unwrap();
        col.as_primitive::<UInt32Type>().iter().collect()
    };
    let scanned = u32s("guard_scanned_bytes");
    same_rows("guard_scanned_bytes", &scanned, &events, |e| {
        e.guard_scanned_bytes
    });
    same_rows("guard_us", &u32s("guard_us"), &events, |e| e.guard_us);
    // No spool, lock or temporary file left behind.
    let leftovers: Vec<_> = common::all_files(dir.path())
        .into_iter()
        .filter(|p| !p.extension().is_some_and(|x| x == "parquet" || x == "json"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `got[i]` is `want(events[i])` for every row; a mismatch names the first row that differs.
fn same_rows<T: PartialEq + std::fmt::Debug>(
    name: &str,
    got: &[T],
    events: &[Event],
    want: impl Fn(&Event) -> T,
) {
    assert_eq!(got.len(), events.len(), "{name}: row count");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want(&events[i])) {
        panic!(
            "{name}, row {i}: got {:?}, expected {:?}",
            got[i],
            want(&events[i])
        );
    }
}

#[test]
fn rotation_by_size_splits_files_exactly_once() {
    let dir = TempDir::new("rotate-size");
    let h = hasher();
    let mut cfg = Config::new(dir.path());
    cfg.batch_rows = 100;
    cfg.rotate_bytes = 64 * 1024;
    let tel = Telemetry::open(cfg).unwrap();
    for i in 0..5000u64 {
        tel.record(event(i, t(i / 10), &h)).unwrap();
    }
    let stats = tel.close();
    drop(tel);
    let files = parquet_files(&dir.path().join("events"));
    assert!(
        files.len() >= 5,
        "expected several files, got {}",
        files.len()
    );
    assert_eq!(stats.files_written as usize, files.len());
    let counts = request_id_counts(dir.path());
    assert_eq!(counts.len(), 5000);
    assert!(counts.values().all(|&c| c == 1));
    // Names never collide and carry host, pid and sequence.
    let pid = format!("-p{}-", std::process::id());
    assert!(files
        .iter()
        .all(|f| f.file_name().unwrap().to_str().unwrap().contains(&pid)));
}

#[test]
fn rotation_by_time() {
    let dir = TempDir::new("rotate-time");
    let h = hasher();
    let mut cfg = Config::new(dir.path());
    cfg.rotate_interval = Duration::from_millis(150);
    cfg.sync_interval = Duration::from_millis(20);
    let tel = Telemetry::open(cfg).unwrap();
    tel.record(event(1, t(0), &h)).unwrap();
    tel.sync().unwrap();
    // The first spool rotates into Parquet without close().
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tel.stats().files_written == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no time-based rotation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tel.record(event(2, t(1), &h)).unwrap();
    let stats = tel.close();
    assert_eq!(stats.files_written, 2);
    assert_eq!(request_id_counts(dir.path()).len(), 2);
}

#[test]
fn full_queue_drops_are_counted_and_reported() {
    let dir = TempDir::new("drops");
    let h = hasher();
    let mut cfg = Config::new(dir.path());
    cfg.queue_capacity = 2;
    cfg.batch_rows = 1; // the writer does a spool write per event: slower than the producer
    let tel = Telemetry::open(cfg).unwrap();
    let template = event(0, t(0), &h);
    let (mut ok, mut full) = (0u64, 0u64);
    for i in 0..20_000u64 {
        let mut e = template.clone();
        e.request_id = format!("req-{i:08}");
        match tel.record(e) {
            Ok(()) => ok += 1,
            Err(Dropped::QueueFull) => full += 1,
            Err(Dropped::Closed) => panic!("not closed"),
        }
    }
    let s = tel.stats();
    assert!(full > 0, "a 2-slot queue never filled");
    assert_eq!(s.events_recorded, ok);
    assert_eq!(s.events_dropped_queue_full, full);
    let s = tel.close();
    assert_eq!(s.events_written, ok);
    assert_eq!(tel.record(template), Err(Dropped::Closed));
    assert_eq!(tel.stats().events_dropped_closed, 1);
    assert_eq!(request_id_counts(dir.path()).len() as u64, ok);
}

#[test]
fn a_lake_has_one_writer() {
    let dir = TempDir::new("lock");
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    match Telemetry::open(Config::new(dir.path())) {
        Err(warden_telemetry::Error::LakeBusy { .. }) => {}
        other => panic!("second writer: {other:?}"),
    }
    drop(tel);
    Telemetry::open(Config::new(dir.path())).unwrap().close();
}

#[test]
fn a_lock_file_naming_a_live_process_does_not_block_when_nobody_holds_the_lock() {
    // What a writer killed with -9 leaves behind, with its pid since reused (pid 1 is always
    // alive): the lock is the kernel's, not the file's content, so the lake opens.
    let dir = TempDir::new("stale-lock");
    std::fs::create_dir_all(dir.path().join("spool")).unwrap();
    std::fs::write(
        dir.path().join("spool").join("LOCK"),
        "1 this-host old-instance\n",
    )
    .unwrap();
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    // And while it is held, a second writer is told who holds it.
    match Telemetry::open(Config::new(dir.path())) {
        Err(warden_telemetry::Error::LakeBusy { holder, .. }) => {
            assert!(
                holder.starts_with(&format!("{} ", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("second writer: {other:?}"),
    }
    tel.close();
}

#[test]
fn config_validation_lists_every_problem() {
    let mut cfg = Config::new("");
    cfg.queue_capacity = 0;
    cfg.zstd_level = 99;
    cfg.retention_days = Some(0);
    let errors = cfg.validate().unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        matches!(Telemetry::open(cfg), Err(warden_telemetry::Error::Config(e)) if e.len() == 4)
    );
}
