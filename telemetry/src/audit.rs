//! Admin audit trail: every admin action as a hash-chained row of the `audit` table.
//!
//! Role: switch flips, throttles, rule reloads, runbook actions and retention deletions are
//! recorded with who did what to which target, the state before and after, and why. Actions
//! are rare, so each one is its own single-row Parquet file
//! `audit/dt=YYYY-MM-DD/audit-<seq:020>.parquet`, written as `.tmp`, fsynced, renamed and its
//! directory fsynced before [`AuditLog::append`] returns: an acknowledged action survives a
//! power loss.
//!
//! Chain: rows are numbered by `seq` from 0 without gaps. Each row stores `prev_hash` (the
//! previous row's `row_hash`; [`GENESIS_HASH`] for seq 0) and
//! `row_hash = "b3:" + hex(BLAKE3(canonical encoding of the row))`, the canonical encoding being
//! `"warden-audit-v1\0"`, `seq` (u64 LE), `time` (i64 µs LE), then `actor`, `role`, `action`,
//! `target` as `0x01 len(u64 LE) bytes`, then `before`, `after`, `reason` the same way or `0x00`
//! when null, then `prev_hash` as a string, then `schema_version` (u16 LE). [`verify`] recomputes
//! every link and reports the first broken one: an edited row fails its own hash (or, if the
//! editor recomputed it, the next row's `prev_hash`); a deleted or inserted row breaks `seq` and
//! `prev_hash`.
//!
//! Non-goals: secrecy (the chain is unkeyed, anyone can verify it), and detecting the removal
//! of the *newest* rows: a truncated chain is still a valid chain. Anchor the head elsewhere
//! (ship [`VerifyReport::head`] or [`AuditLog::head`] to a log or metric) and compare.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt16Array, UInt64Array,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use crate::error::{io_at, Error};
use crate::lake::{create_dir_durable, publish, tmp_path, walk_files, AUDIT_DIR};
use crate::schema::{audit_schema, audit_writer_properties, AUDIT_SCHEMA_VERSION};
use crate::time::unix_micros;

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str =
    "b3:0000000000000000000000000000000000000000000000000000000000000000";

/// An admin action, as the caller describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminAction {
    /// Who: token name, user, or `warden-telemetry` / a runbook id for automatic actions.
    pub actor: String,
    /// The actor's role (`oncall`, `security`, `auditor`, `admin`, `system`).
    pub role: String,
    /// What, as a dotted verb (`switch.set`, `rules.reload`, `telemetry.retention.delete_partition`).
    pub action: String,
    /// On what (`switch:model/gpt-x`, `events/dt=2025-01-01`).
    pub target: String,
    /// State before, when meaningful (JSON text recommended).
    pub before: Option<String>,
    /// State after, when meaningful.
    pub after: Option<String>,
    /// Why (ticket, alert, free text).
    pub reason: Option<String>,
}

/// A stored row of the audit table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// When it was recorded, µs since the Unix epoch (UTC).
    pub time_us: i64,
    /// The action.
    pub action: AdminAction,
    /// `row_hash` of the previous row ([`GENESIS_HASH`] for seq 0).
    pub prev_hash: String,
    /// Hash of this row's canonical encoding.
    pub row_hash: String,
}

/// The newest link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Its seq.
    pub seq: u64,
    /// Its row hash.
    pub row_hash: String,
}

/// Appends admin actions to a lake's audit table. Clones share one chain; appends are
/// serialised. Blocking (fsyncs): call it from a blocking context, not an async executor thread.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<AuditState>>,
}

struct AuditState {
    dir: PathBuf,
    next_seq: u64,
    head_hash: String,
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Audit files read.
    pub files: usize,
    /// Rows read.
    pub rows: u64,
    /// The newest link, if any row exists (compare with an externally kept copy).
    pub head: Option<ChainHead>,
    /// The first broken link, in seq order; `None` when the chain is intact.
    pub first_break: Option<ChainBreak>,
}

/// A broken link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The file holding the offending row.
    pub file: PathBuf,
    /// Row index inside that file.
    pub row: usize,
    /// The row's seq, when readable.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: BreakKind,
    /// What the chain requires there.
    pub expected: String,
    /// What the row holds.
    pub found: String,
}

/// The kinds of broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// The row's content does not hash to its `row_hash` (edited).
    RowHash,
    /// `prev_hash` is not the previous row's `row_hash` (a row before it was edited, removed or
    /// inserted).
    PrevHash,
    /// `seq` is not the previous seq + 1 (a row removed, duplicated or inserted).
    Seq,
    /// The file could not be read as an audit table file.
    Unreadable,
}

// === impl AuditRecord ===

impl AuditRecord {
    /// `time_us` as a `SystemTime`.
    pub fn time(&self) -> SystemTime {
        if self.time_us >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.time_us.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_micros(self.time_us.unsigned_abs())
        }
    }

    /// The canonical encoding hashed into `row_hash` (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let a = &self.action;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"warden-audit-v1\0");
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.time_us.to_le_bytes());
        for s in [&a.actor, &a.role, &a.action, &a.target] {
            push_str(&mut out, Some(s));
        }
        for o in [&a.before, &a.after, &a.reason] {
            push_str(&mut out, o.as_ref());
        }
        push_str(&mut out, Some(&self.prev_hash));
        out.extend_from_slice(&AUDIT_SCHEMA_VERSION.to_le_bytes());
        out
    }

    /// The hash this row must carry.
    pub fn compute_hash(&self) -> String {
        format!("b3:{}", blake3::hash(&self.canonical_bytes()).to_hex())
    }
}

fn push_str(out: &mut Vec<u8>, s: Option<&String>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens the audit table of `lake_dir`, continuing the chain from its newest row. Callers
    /// normally get it from [`crate::Telemetry::audit`], which holds the lake lock.
    pub(crate) fn open(lake_dir: &Path) -> Result<Self, Error> {
        let dir = lake_dir.join(AUDIT_DIR);
        create_dir_durable(&dir)?;
        let files = audit_files(&dir)?;
        let (next_seq, head_hash) = match files.last() {
            None => (0, GENESIS_HASH.to_owned()),
            Some((_, path)) => {
                let rows = read_audit_file(path)?;
                let last = rows.last().ok_or_else(|| Error::Corrupt {
                    path: path.clone(),
                    detail: "audit file holds no row".into(),
                })?;
                (last.seq + 1, last.row_hash.clone())
            }
        };
        Ok(AuditLog {
            inner: Arc::new(Mutex::new(AuditState {
                dir,
                next_seq,
                head_hash,
            })),
        })
    }

    /// Records `action` now. Returns the stored row once it is durable.
    pub fn append(&self, action: AdminAction) -> Result<AuditRecord, Error> {
        self.append_at(SystemTime::now(), action)
    }

    /// Records `action` with an explicit time.
    pub fn append_at(&self, time: SystemTime, action: AdminAction) -> Result<AuditRecord, Error> {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let time_us = unix_micros(time);
        let mut rec = AuditRecord {
            seq: st.next_seq,
            time_us,
            action,
            prev_hash: st.head_hash.clone(),
            row_hash: String::new(),
        };
        rec.row_hash = rec.compute_hash();
        let day = crate::time::partition_of(time_us).0;
        let dir = st.dir.join(format!("dt={}", crate::time::format_date(day)));
        create_dir_durable(&dir)?;
        let path = dir.join(format!("audit-{:020}.parquet", rec.seq));
        if path.exists() {
            return Err(Error::Corrupt {
                path,
                detail: "audit row file already exists".into(),
            });
        }
        let tmp = tmp_path(&path);
        let f = File::create(&tmp).map_err(io_at("create", &tmp))?;
        let mut w = ArrowWriter::try_new(f, audit_schema(), Some(audit_writer_properties()))?;
        w.write(&records_to_batch(std::slice::from_ref(&rec))?)?;
        w.close()?;
        publish(&tmp, &path)?;
        st.next_seq += 1;
        st.head_hash = rec.row_hash.clone();
        Ok(rec)
    }

    /// The newest link written by this log (or found at open); `None` for an empty table.
    pub fn head(&self) -> Option<ChainHead> {
        let st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (st.next_seq > 0).then(|| ChainHead {
            seq: st.next_seq - 1,
            row_hash: st.head_hash.clone(),
        })
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("AuditLog")
            .field("dir", &st.dir)
            .field("next_seq", &st.next_seq)
            .finish()
    }
}

/// Converts audit records to a batch of [`audit_schema`].
pub fn records_to_batch(records: &[AuditRecord]) -> Result<RecordBatch, Error> {
    let strs = |f: &dyn Fn(&AuditRecord) -> Option<&str>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| r.time_us))
                .with_timezone("UTC"),
        ),
        Arc::new(UInt64Array::from_iter_values(records.iter().map(|r| r.seq))),
        strs(&|r| Some(&r.action.actor)),
        strs(&|r| Some(&r.action.role)),
        strs(&|r| Some(&r.action.action)),
        strs(&|r| Some(&r.action.target)),
        strs(&|r| r.action.before.as_deref()),
        strs(&|r| r.action.after.as_deref()),
        strs(&|r| r.action.reason.as_deref()),
        strs(&|r| Some(&r.prev_hash)),
        strs(&|r| Some(&r.row_hash)),
        Arc::new(UInt16Array::from_iter_values(
            records.iter().map(|_| AUDIT_SCHEMA_VERSION),
        )),
    ];
    Ok(RecordBatch::try_new(audit_schema(), columns)?)
}

// === reading and verification ===

/// Audit files under `audit_dir` as `(seq from the file name, path)`, sorted by that seq; files
/// whose name carries no seq sort last.
fn audit_files(audit_dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut files = Vec::new();
    walk_files(audit_dir, &mut files)?;
    let mut out: Vec<(u64, PathBuf)> = files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| {
            let seq = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("audit-"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            (seq, p)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Reads every row of one audit file.
pub fn read_audit_file(path: &Path) -> Result<Vec<AuditRecord>, Error> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let f = File::open(path).map_err(io_at("open", path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| corrupt(format!("missing column {name}")))
        };
        let s = |name: &str| -> Result<&StringArray, Error> {
            col(name)?
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| corrupt(format!("column {name} is not utf8")))
        };
        let time = col("time")?
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| corrupt("column time has the wrong type".into()))?;
        let seq = col("seq")?
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| corrupt("column seq has the wrong type".into()))?;
        let (actor, role, action, target) = (s("actor")?, s("role")?, s("action")?, s("target")?);
        let (before, after, reason) = (s("before")?, s("after")?, s("reason")?);
        let (prev, hash) = (s("prev_hash")?, s("row_hash")?);
        let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
        for i in 0..batch.num_rows() {
            out.push(AuditRecord {
                seq: seq.value(i),
                time_us: time.value(i),
                action: AdminAction {
                    actor: actor.value(i).to_owned(),
                    role: role.value(i).to_owned(),
                    action: action.value(i).to_owned(),
                    target: target.value(i).to_owned(),
                    before: opt(before, i),
                    after: opt(after, i),
                    reason: opt(reason, i),
                },
                prev_hash: prev.value(i).to_owned(),
                row_hash: hash.value(i).to_owned(),
            });
        }
    }
    Ok(out)
}

/// Reads all audit rows of the lake at `lake_dir`, in seq order, with their file and row index.
pub fn read_audit(lake_dir: &Path) -> Result<Vec<(PathBuf, usize, AuditRecord)>, Error> {
    let mut rows = Vec::new();
    for (_, path) in audit_files(&lake_dir.join(AUDIT_DIR))? {
        for (i, r) in read_audit_file(&path)?.into_iter().enumerate() {
            rows.push((path.clone(), i, r));
        }
    }
    rows.sort_by_key(|(_, _, r)| r.seq);
    Ok(rows)
}

/// Checks the whole audit chain of the lake at `lake_dir` and reports the first broken link.
/// Errors only when the audit directory cannot be listed; unreadable files are broken links.
pub fn verify(lake_dir: &Path) -> Result<VerifyReport, Error> {
    let files = audit_files(&lake_dir.join(AUDIT_DIR))?;
    let mut report = VerifyReport {
        files: files.len(),
        rows: 0,
        head: None,
        first_break: None,
    };
    let mut rows = Vec::new();
    for (_, path) in &files {
        match read_audit_file(path) {
            Ok(rs) => rows.extend(
                rs.into_iter()
                    .enumerate()
                    .map(|(i, r)| (path.clone(), i, r)),
            ),
            Err(e) => {
                report.first_break.get_or_insert(ChainBreak {
                    file: path.clone(),
                    row: 0,
                    seq: None,
                    kind: BreakKind::Unreadable,
                    expected: "a readable audit file".into(),
                    found: e.to_string(),
                });
            }
        }
    }
    // Stable: rows sharing a seq stay in file order, so a duplicate is reported at the second.
    rows.sort_by_key(|(_, _, r)| r.seq);
    report.rows = rows.len() as u64;
    let mut expected_prev = GENESIS_HASH.to_owned();
    let mut expected_seq = 0u64;
    for (file, row, r) in &rows {
        let brk = |kind, expected: String, found: String| ChainBreak {
            file: file.clone(),
            row: *row,
            seq: Some(r.seq),
            kind,
            expected,
            found,
        };
        let computed = r.compute_hash();
        let found_break = if computed != r.row_hash {
            Some(brk(BreakKind::RowHash, computed, r.row_hash.clone()))
        } else if r.prev_hash != expected_prev {
            Some(brk(
                BreakKind::PrevHash,
                expected_prev.clone(),
                r.prev_hash.clone(),
            ))
        } else if r.seq != expected_seq {
            Some(brk(
                BreakKind::Seq,
                expected_seq.to_string(),
                r.seq.to_string(),
            ))
        } else {
            None
        };
        if let Some(b) = found_break {
            // An unreadable file found above stays the reported break.
            report.first_break.get_or_insert(b);
            break;
        }
        expected_prev = r.row_hash.clone();
        expected_seq = r.seq + 1;
    }
    report.head = rows.last().map(|(_, _, r)| ChainHead {
        seq: r.seq,
        row_hash: r.row_hash.clone(),
    });
    Ok(report)
}

// === impl VerifyReport ===

impl VerifyReport {
    /// No broken link.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Removes `*.tmp` leftovers of interrupted audit appends (never acknowledged).
pub(crate) fn clean_tmp(lake_dir: &Path) -> Result<(), Error> {
    let mut files = Vec::new();
    walk_files(&lake_dir.join(AUDIT_DIR), &mut files)?;
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
    {
        fs::remove_file(f).map_err(io_at("remove", f))?;
    }
    Ok(())
}
