//! Retention: deletes whole day partitions of the events table once they are old enough.
//!
//! Rule: with `keep_days = N`, a partition `events/dt=D` is deleted when `D < today - N` (UTC):
//! today and the N days before it are kept. Each deletion is first recorded in the audit table
//! (action `telemetry.retention.delete_partition`, target `events/dt=D`, `before` = file and
//! byte counts), then the partition directory is renamed to a hidden `events/.deleting-dt=D`
//! (so readers stop seeing it at once) and removed. A crash in between at worst repeats the
//! audit row on the next run; it never deletes unrecorded.
//!
//! Non-goals: the audit table is never deleted by retention (that would cut the chain), and
//! directories that are not `dt=YYYY-MM-DD` are left alone.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use crate::audit::{AdminAction, AuditLog};
use crate::error::{io_at, Error};
use crate::lake::{fsync_dir, walk_files, EVENTS_DIR};
use crate::time::{day_of, format_date, parse_date};

/// Action name recorded for each deleted partition.
pub const RETENTION_ACTION: &str = "telemetry.retention.delete_partition";

/// What one retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Deleted partitions, as `dt=YYYY-MM-DD`, oldest first.
    pub deleted: Vec<String>,
    /// Parquet files they held.
    pub files: u64,
    /// Bytes they held.
    pub bytes: u64,
}

/// Deletes event partitions older than `keep_days` days before `now`'s UTC date, recording each
/// deletion in `audit`.
pub fn apply_retention(
    lake_dir: &Path,
    now: SystemTime,
    keep_days: u32,
    audit: &AuditLog,
) -> Result<RetentionReport, Error> {
    let events = lake_dir.join(EVENTS_DIR);
    let cutoff = day_of(now) - i64::from(keep_days);
    let mut report = RetentionReport::default();
    let entries = match fs::read_dir(&events) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io_at("list", &events)(e)),
    };
    let mut victims = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_at("list", &events))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".deleting-") {
            // An earlier pass recorded it and was interrupted: finish the job.
            fs::remove_dir_all(entry.path()).map_err(io_at("remove", &entry.path()))?;
            continue;
        }
        let Some(day) = name.strip_prefix("dt=").and_then(parse_date) else {
            continue;
        };
        if day < cutoff {
            victims.push((day, name));
        }
    }
    victims.sort();
    for (_, name) in victims {
        let dir = events.join(&name);
        let mut files = Vec::new();
        walk_files(&dir, &mut files)?;
        let parquet: Vec<_> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        let bytes: u64 = parquet
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        audit.append(AdminAction {
            actor: "warden-telemetry".into(),
            role: "system".into(),
            action: RETENTION_ACTION.into(),
            target: format!("{EVENTS_DIR}/{name}"),
            before: Some(format!("{{\"files\":{},\"bytes\":{bytes}}}", parquet.len())),
            after: None,
            reason: Some(format!(
                "retention: keep {keep_days} days before today ({}); partition is older",
                format_date(day_of(now))
            )),
        })?;
        let hidden = events.join(format!(".deleting-{name}"));
        fs::rename(&dir, &hidden).map_err(io_at("hide", &dir))?;
        fsync_dir(&events)?;
        fs::remove_dir_all(&hidden).map_err(io_at("remove", &hidden))?;
        report.files += parquet.len() as u64;
        report.bytes += bytes;
        report.deleted.push(name);
    }
    if !report.deleted.is_empty() {
        fsync_dir(&events)?;
    }
    Ok(report)
}
