//! The lake on disk: layout, durable file operations, and the single-writer lock.
//!
//! Layout (all under the lake root):
//! ```text
//! _warden_schema.json                          schema marker (see schema.rs)
//! events/dt=YYYY-MM-DD/hour=HH/<stem>.parquet  request events, one file per spool and hour
//! audit/dt=YYYY-MM-DD/audit-<seq:020>.parquet  admin actions, one row per file, hash-chained
//! spool/<stem>.arrows                          Arrow IPC stream spools not yet converted
//! spool/LOCK                                   `pid host instance` of the live writer
//! ```
//! Readers (DuckDB, DataFusion, Spark, Trino) glob `events/**/*.parquet` with Hive partitioning;
//! files being written end in `.parquet.tmp` and directories being deleted start with `.`, both
//! ignored by those readers.
//!
//! Durability helpers: a file becomes visible only complete and durable: written under a
//! `.tmp` name, fsynced, renamed, and its directory fsynced.
//!
//! Single writer: one process writes a lake. The lock file records the holder; a holder that is
//! no longer alive (its `/proc/<pid>` is gone, or it is an instance of this process that was
//! dropped) is taken over, which is how a restart after a crash proceeds. Non-goal: several
//! hosts writing one directory (ship each host's lake to shared storage instead; file names
//! never collide, so merging is a copy).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{io_at, Error};

/// Events table directory, relative to the lake root.
pub const EVENTS_DIR: &str = "events";
/// Audit table directory, relative to the lake root.
pub const AUDIT_DIR: &str = "audit";
/// Spool directory, relative to the lake root.
pub const SPOOL_DIR: &str = "spool";
/// Lock file name inside the spool directory.
pub const LOCK_FILE: &str = "LOCK";

/// The held lake lock; dropping it releases the lake.
#[derive(Debug)]
pub(crate) struct LakeLock {
    path: PathBuf,
    key: PathBuf,
    content: String,
}

// === durable file operations ===

/// fsyncs a directory so the entries created or renamed in it survive a power loss.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at("fsync directory", dir))
}

/// Creates `dir` and any missing parents, fsyncing each parent whose entry was created.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.is_dir() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    fs::create_dir_all(dir).map_err(io_at("create directory", dir))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably (tmp, fsync, rename, fsync dir).
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).map_err(io_at("create", &tmp))?;
    f.write_all(bytes).map_err(io_at("write", &tmp))?;
    f.sync_all().map_err(io_at("fsync", &tmp))?;
    drop(f);
    publish(&tmp, path)
}

/// `path` + `.tmp`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// fsyncs the finished `tmp`, renames it to `path` (replacing any file there), fsyncs the dir.
pub(crate) fn publish(tmp: &Path, path: &Path) -> Result<(), Error> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_at("fsync", tmp))?;
    fs::rename(tmp, path).map_err(io_at("rename into place", path))?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fsync_dir(dir),
        _ => Ok(()),
    }
}

/// Appends every regular file under `dir` (recursively) to `out`; a missing `dir` is empty.
pub(crate) fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at("list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_at("list", dir))?;
        let ty = entry.file_type().map_err(io_at("stat", &entry.path()))?;
        if ty.is_dir() {
            walk_files(&entry.path(), out)?;
        } else if ty.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// `dt=YYYY-MM-DD/hour=HH` for a partition key.
pub(crate) fn partition_path(days: i64, hour: u8) -> PathBuf {
    PathBuf::from(format!("dt={}", crate::time::format_date(days))).join(format!("hour={hour:02}"))
}

/// Host name for file names: `[A-Za-z0-9-]`, at most 32 characters.
pub(crate) fn host_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    if clean.is_empty() {
        "host".to_owned()
    } else {
        clean
    }
}

// === impl LakeLock ===

/// Lakes locked by this process (so a second open in-process is refused, and the lock of a
/// dropped instance, whose pid is ours, can be told apart from a live one).
fn held_in_process() -> &'static Mutex<HashSet<PathBuf>> {
    static HELD: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    HELD.get_or_init(|| Mutex::new(HashSet::new()))
}

impl LakeLock {
    /// Takes the lake's lock or reports who holds it.
    pub(crate) fn acquire(spool_dir: &Path, instance: &str) -> Result<Self, Error> {
        let path = spool_dir.join(LOCK_FILE);
        let key = fs::canonicalize(spool_dir).map_err(io_at("resolve", spool_dir))?;
        let mut held = held_in_process().lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(&key) {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::LakeBusy {
                path,
                holder: holder.trim().to_owned(),
            });
        }
        let content = format!("{} {} {}\n", std::process::id(), host_name(), instance);
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(content.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(io_at("write", &path))?;
                    fsync_dir(spool_dir)?;
                    held.insert(key.clone());
                    return Ok(LakeLock { path, key, content });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    if holder_alive(&holder) {
                        return Err(Error::LakeBusy {
                            path,
                            holder: holder.trim().to_owned(),
                        });
                    }
                    // Stale: its process is gone (or was this process, and that instance was
                    // dropped without releasing it).
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_at("remove stale lock", &path)(e)),
                    }
                }
                Err(e) => return Err(io_at("create", &path)(e)),
            }
        }
        let holder = fs::read_to_string(&path).unwrap_or_default();
        Err(Error::LakeBusy {
            path,
            holder: holder.trim().to_owned(),
        })
    }
}

fn holder_alive(holder: &str) -> bool {
    let mut parts = holder.split_whitespace();
    let (Some(pid), Some(host)) = (parts.next(), parts.next()) else {
        return false; // empty or torn lock file: its writer died while creating it
    };
    if host != host_name() {
        return true; // another host: cannot tell, so refuse
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        return false; // ours, and not in the in-process set: a dropped instance
    }
    if !Path::new("/proc/self").exists() {
        return false; // no procfs: assume stale (development machines)
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

impl Drop for LakeLock {
    fn drop(&mut self) {
        // Remove the file only if it is still ours.
        if fs::read_to_string(&self.path).is_ok_and(|c| c == self.content) {
            let _ = fs::remove_file(&self.path);
        }
        held_in_process()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}
