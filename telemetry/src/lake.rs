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
//! Single writer: one process writes a lake. It holds an exclusive advisory lock (`flock`) on
//! `spool/LOCK` for as long as it writes; the kernel releases it when the process ends, however it
//! ends, so a restart after `kill -9` proceeds at once, and neither an unreaped zombie nor a pid
//! reused by another program can keep the lake. The file stays behind; its content names the last
//! holder, for the message a second writer gets; a clean close removes it (while still holding
//! the lock, and a taker checks that the file it locked is still the one at the path, so an
//! unlink never lets two writers in). Non-goal: several
//! //! hosts writing one directory (ship each host's lake to shared storage instead; file names
//! never collide, so merging is a copy).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_at, Error};

/// Events table directory, relative to the lake root.
pub const EVENTS_DIR: &str = "events";
/// Audit table directory, relative to the lake root.
pub const AUDIT_DIR: &str = "audit";
/// Spool directory, relative to the lake root.
pub const SPOOL_DIR: &str = "spool";
/// Lock file name inside the spool directory.
pub const LOCK_FILE: &str = "LOCK";

/// The held lake lock; dropping it removes the file and releases the lake.
#[derive(Debug)]
pub(crate) struct LakeLock {
    path: PathBuf,
    _file: File,
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

impl LakeLock {
    /// Takes the lake's lock or reports who holds it.
    pub(crate) fn acquire(spool_dir: &Path, instance: &str) -> Result<Self, Error> {
        use std::os::unix::fs::MetadataExt;
        let path = spool_dir.join(LOCK_FILE);
        // A holder closing cleanly unlinks the file it locked: the file locked here must still
        // be the one at the path, or another taker may have created a new one. Twice at most.
        for _ in 0..3 {
            let created = !path.exists();
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_at("open", &path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    return Err(Error::LakeBusy {
                        path,
                        holder: holder.trim().to_owned(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_at("lock", &path)(e)),
            }
            let ours = file.metadata().map_err(io_at("stat", &path))?;
            let same =
                fs::metadata(&path).is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
            if !same {
                continue;
            }
            let content = format!("{} {} {}\n", std::process::id(), host_name(), instance);
            file.set_len(0)
                .and_then(|()| file.write_all(content.as_bytes()))
                .and_then(|()| file.sync_all())
                .map_err(io_at("write", &path))?;
            if created {
                fsync_dir(spool_dir)?;
            }
            return Ok(LakeLock { path, _file: file });
        }
        let holder = fs::read_to_string(&path).unwrap_or_default();
        Err(Error::LakeBusy {
            path,
            holder: holder.trim().to_owned(),
        })
    }
}

impl Drop for LakeLock {
    fn drop(&mut self) {
        // Unlinked while still locked; the lock goes with the file descriptor right after.
        let _ = fs::remove_file(&self.path);
    }
}
