//! Retention deletes old day partitions and records each deletion in the hash-chained audit
//! table; verify() detects edited, re-hashed, deleted and inserted rows.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{event, hasher, request_id_counts, TempDir};
use warden_telemetry::audit::{read_audit, read_audit_file, records_to_batch, BreakKind};
use warden_telemetry::retention::RETENTION_ACTION;
use warden_telemetry::{verify, AdminAction, Config, Telemetry};

const DAY: Duration = Duration::from_secs(86_400);

fn action(i: u32) -> AdminAction {
    AdminAction {
        actor: "alice".into(),
        role: "oncall".into(),
        action: "switch.set".into(),
        target: format!("switch:model/m{i}"),
        before: Some(r#"{"state":"on"}"#.into()),
        after: Some(r#"{"state":"off"}"#.into()),
        reason: if i.is_multiple_of(2) {
            Some(format!("INC-{i}"))
        } else {
            None
        },
    }
}

fn rewrite(path: &std::path::Path, rec: &warden_telemetry::AuditRecord) {
    let f = std::fs::File::create(path).unwrap();
    let schema = warden_telemetry::schema::audit_schema();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&records_to_batch(std::slice::from_ref(rec)).unwrap())
        .unwrap();
    w.close().unwrap();
}

#[test]
fn retention_deletes_old_partitions_and_audits_each_deletion() {
    let dir = TempDir::new("retention");
    let h = hasher();
    let now = SystemTime::now();
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    for (i, age) in [40u32, 40, 9, 8, 1, 0].iter().enumerate() {
        tel.record(event(i as u64, now - DAY * *age, &h)).unwrap();
    }
    tel.sync().unwrap();
    let stats = tel.close();
    assert_eq!(stats.events_written, 6);
    drop(tel);

    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    let report = tel.run_retention(now, 7).unwrap();
    assert_eq!(report.deleted.len(), 3, "{report:?}"); // ages 40 (one day), 9 and 8
    assert_eq!(report.files, 3);
    assert!(report.bytes > 0);
    let left = request_id_counts(dir.path());
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        ["req-00000004", "req-00000005"]
    );
    // Idempotent.
    assert!(tel.run_retention(now, 7).unwrap().deleted.is_empty());
    tel.close();
    drop(tel);

    let rows = read_audit(dir.path()).unwrap();
    assert_eq!(rows.len(), 3);
    for ((_, _, r), dt) in rows.iter().zip(&report.deleted) {
        assert_eq!(r.action.action, RETENTION_ACTION);
        assert_eq!(r.action.target, format!("events/{dt}"));
        assert_eq!(r.action.role, "system");
        assert!(r.action.before.as_deref().unwrap().contains("\"files\":1"));
    }
    assert!(verify(dir.path()).unwrap().is_intact());
}

#[test]
fn retention_runs_in_the_background_when_configured() {
    let dir = TempDir::new("retention-bg");
    let h = hasher();
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    tel.record(event(0, SystemTime::now() - DAY * 30, &h))
        .unwrap();
    tel.record(event(1, SystemTime::now(), &h)).unwrap();
    tel.close();
    drop(tel);
    let mut cfg = Config::new(dir.path());
    cfg.retention_days = Some(3);
    let tel = Telemetry::open(cfg).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while request_id_counts(dir.path()).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "background retention did not run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tel.audit().head().unwrap().seq, 0);
}

#[test]
fn hash_chain_detects_edits_deletions_and_insertions() {
    let dir = TempDir::new("chain");
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    let mut recs = Vec::new();
    for i in 0..6 {
        recs.push(tel.audit().append(action(i)).unwrap());
    }
    assert_eq!(recs[0].prev_hash, warden_telemetry::audit::GENESIS_HASH);
    assert_eq!(recs[3].prev_hash, recs[2].row_hash);
    tel.close();
    drop(tel);

    // The chain continues across restarts.
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    let r6 = tel.audit().append(action(6)).unwrap();
    assert_eq!((r6.seq, &r6.prev_hash), (6, &recs[5].row_hash));
    drop(tel);
    let report = verify(dir.path()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.rows, report.files), (7, 7));
    assert_eq!(report.head.as_ref().unwrap().row_hash, r6.row_hash);

    let rows = read_audit(dir.path()).unwrap();
    let (file2, _, orig2) = rows[2].clone();
    let original_bytes = std::fs::read(&file2).unwrap();

    // 1. Edit a field, keep the stored hash: the row's own hash breaks.
    let mut edited = orig2.clone();
    edited.action.reason = Some("nothing to see".into());
    rewrite(&file2, &edited);
    let b = verify(dir.path()).unwrap().first_break.unwrap();
    assert_eq!((b.kind, b.seq, b.row), (BreakKind::RowHash, Some(2), 0));
    assert_eq!(b.file, file2);
    assert_eq!(b.found, orig2.row_hash);

    // 2. Edit and recompute the row hash: the next row's link breaks.
    edited.row_hash = edited.compute_hash();
    rewrite(&file2, &edited);
    let b = verify(dir.path()).unwrap().first_break.unwrap();
    assert_eq!((b.kind, b.seq), (BreakKind::PrevHash, Some(3)));
    assert_eq!(
        (b.expected, b.found),
        (edited.row_hash.clone(), orig2.row_hash.clone())
    );
    std::fs::write(&file2, &original_bytes).unwrap();
    assert!(verify(dir.path()).unwrap().is_intact());

    // 3. Delete a row (its file).
    std::fs::remove_file(&file2).unwrap();
    let b = verify(dir.path()).unwrap().first_break.unwrap();
    assert_eq!((b.kind, b.seq), (BreakKind::PrevHash, Some(3)));
    std::fs::write(&file2, &original_bytes).unwrap();

    // 4. Insert a forged row with a valid own hash after seq 4.
    let (file4, _, r4) = rows[4].clone();
    let mut forged = r4.clone();
    forged.seq = 5;
    forged.prev_hash = r4.row_hash.clone();
    forged.action.target = "switch:global".into();
    forged.row_hash = forged.compute_hash();
    rewrite(
        &file4.with_file_name("audit-00000000000000000005x.parquet"),
        &forged,
    );
    let b = verify(dir.path()).unwrap().first_break.unwrap();
    assert_eq!(b.seq, Some(5));
    assert!(
        matches!(b.kind, BreakKind::PrevHash | BreakKind::Seq),
        "{b:?}"
    );

    // 5. A file that is not Parquet at all.
    std::fs::remove_file(file4.with_file_name("audit-00000000000000000005x.parquet")).unwrap();
    assert!(verify(dir.path()).unwrap().is_intact());
    std::fs::write(&file2, b"garbage").unwrap();
    let b = verify(dir.path()).unwrap().first_break.unwrap();
    assert_eq!(b.kind, BreakKind::Unreadable);
    assert!(read_audit_file(&file2).is_err());
}
