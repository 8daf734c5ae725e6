//! The spool: where events become durable before they become Parquet.
//!
//! Format: each spool file `spool/<stem>.arrows` is an Arrow IPC *stream* (schema message, then
//! one record-batch message per batch of events, then, if it was sealed cleanly, the
//! end-of-stream marker). Batches are appended with one `write` each and made durable with
//! `fdatasync` (see [`crate::Config::sync_interval`]); the file's directory entry is fsynced
//! when the file is created.
//!
//! Stem: `ev-<UTC start YYYYMMDDTHHMMSSZ>-<host>-p<pid>-<64-bit random instance id>-<seq:06>`:
//! unique across hosts, processes and restarts without coordination.
//!
//! Conversion ([`Conversion`]): split rows by hour of `time` and write one Parquet file per hour
//! partition named `events/dt=.../hour=.../<stem>.parquet`: written as `.parquet.tmp`, fsynced,
//! renamed, directory fsynced. Only then is the spool deleted. Live, the converter thread is fed
//! the batches the writer has just appended to the spool (the files keep their temporary names
//! until the spool is sealed, every row fsynced), so a spool is never read back; at
//! start-up (and for a spool whose live conversion was given up) [`convert_spool`] reads the
//! batches from the file in order, stopping at the first message that does not decode (a torn
//! tail: bytes after the last fsync). The output name is a function of
//! the spool name and the rows read are a function of the spool bytes, so a conversion
//! interrupted at any point and run again replaces its own files instead of adding rows:
//! every row reaches the lake exactly once.
//!
//! A spool whose header (schema message) cannot be read holds no decodable rows; it is renamed
//! to `*.arrows.corrupt` and left for an operator rather than deleted.
//!
//! What a failure can lose (the same list is in SCHEMA.md):
//! - process kill: events still in the in-memory queue or in the batch being built (at most
//!   [`crate::Config::sync_interval`] of traffic plus the queue), nothing that was written to
//!   the spool, fsynced or not (the page cache survives the process);
//! - power loss / kernel crash: additionally, spool bytes written after the last fsync; nothing
//!   that [`crate::Telemetry::sync`] (or the periodic fsync, counted in
//!   [`crate::Stats::events_synced`]) acknowledged;
//! - disk failure or manual deletion of the lake: anything, obviously.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::error::{io_at, Error};
use crate::lake::{create_dir_durable, fsync_dir, partition_path, publish, tmp_path};
use crate::schema::event_schema;
use crate::time::partition_of;

/// Extension of spool files.
pub const SPOOL_EXT: &str = "arrows";

/// An open spool file being appended to.
pub struct SpoolWriter {
    path: PathBuf,
    file: File,
    encoder: StreamWriter<Vec<u8>>,
    written_len: u64,
    synced_len: u64,
    rows_written: u64,
    rows_synced: u64,
    created: Instant,
}

/// What [`convert_spool`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converted {
    /// Rows written to Parquet.
    pub rows: u64,
    /// Parquet files renamed into place.
    pub files: Vec<PathBuf>,
    /// Their total size.
    pub bytes: u64,
    /// The spool ended in a message that did not decode (bytes written but never fsynced, or
    /// damaged); rows before it were kept.
    pub torn_tail: bool,
    /// The spool's header was unreadable; it was renamed to `*.arrows.corrupt`.
    pub quarantined: bool,
}

/// Generates spool stems for one writer instance.
#[derive(Debug, Clone)]
pub(crate) struct StemGen {
    prefix: String,
    seq: u64,
}

// === impl StemGen ===

impl StemGen {
    pub(crate) fn new(instance: &str) -> Self {
        let prefix = format!(
            "ev-{}-{}-p{}-{}",
            crate::time::format_compact(SystemTime::now()),
            crate::lake::host_name(),
            std::process::id(),
            instance
        );
        StemGen { prefix, seq: 0 }
    }

    pub(crate) fn next_stem(&mut self) -> String {
        self.seq += 1;
        format!("{}-{:06}", self.prefix, self.seq)
    }
}

// === impl SpoolWriter ===

impl SpoolWriter {
    /// Creates `dir/<stem>.arrows`, writes the schema message and makes the file and its
    /// directory entry durable.
    pub fn create(dir: &Path, stem: &str) -> Result<Self, Error> {
        let path = dir.join(format!("{stem}.{SPOOL_EXT}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_at("create", &path))?;
        let mut encoder = StreamWriter::try_new(Vec::with_capacity(1 << 16), &event_schema())?;
        let header = std::mem::take(encoder.get_mut());
        let written = file
            .write_all(&header)
            .and_then(|()| file.sync_all())
            .map_err(io_at("write spool header", &path))
            .and_then(|()| fsync_dir(dir));
        if let Err(e) = written {
            // Do not leave a headerless file behind for every retry on a full disk.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let len = header.len() as u64;
        Ok(SpoolWriter {
            path,
            file,
            encoder,
            written_len: len,
            synced_len: len,
            rows_written: 0,
            rows_synced: 0,
            created: Instant::now(),
        })
    }

    /// Appends a batch with a single `write`; not durable until [`Self::sync`]. After an error
    /// the file's tail is unknown: call [`Self::truncate_to_synced`] before using it again.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.encoder.write(batch)?;
        let mut bytes = std::mem::take(self.encoder.get_mut());
        let res = self
            .file
            .write_all(&bytes)
            .map_err(io_at("write", &self.path));
        let n = bytes.len() as u64;
        // Keep the allocation for the next batch.
        bytes.clear();
        *self.encoder.get_mut() = bytes;
        res?;
        start_writeback(&self.file, self.written_len, n);
        self.written_len += n;
        self.rows_written += batch.num_rows() as u64;
        Ok(())
    }

    /// Makes everything appended so far durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.synced_len == self.written_len {
            return Ok(());
        }
        self.file.sync_data().map_err(io_at("fsync", &self.path))?;
        self.synced_len = self.written_len;
        self.rows_synced = self.rows_written;
        Ok(())
    }

    /// Cuts the file back to its last durable length (after a failed write or fsync, so rows
    /// that will be written again elsewhere cannot also be recovered from here).
    pub fn truncate_to_synced(&mut self) -> Result<(), Error> {
        self.file
            .set_len(self.synced_len)
            .map_err(io_at("truncate", &self.path))?;
        self.file.sync_all().map_err(io_at("fsync", &self.path))?;
        self.written_len = self.synced_len;
        self.rows_written = self.rows_synced;
        Ok(())
    }

    /// Writes the end-of-stream marker, fsyncs and closes; returns the path.
    pub fn seal(mut self) -> Result<PathBuf, Error> {
        self.encoder.finish()?;
        let eos = std::mem::take(self.encoder.get_mut());
        self.file
            .write_all(&eos)
            .map_err(io_at("write", &self.path))?;
        self.file.sync_all().map_err(io_at("fsync", &self.path))?;
        Ok(self.path)
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes handed to the kernel so far.
    pub fn written_len(&self) -> u64 {
        self.written_len
    }

    /// Rows appended so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Rows known durable.
    pub fn rows_synced(&self) -> u64 {
        self.rows_synced
    }

    /// When the file was created.
    pub fn created(&self) -> Instant {
        self.created
    }
}

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("path", &self.path)
            .field("written_len", &self.written_len)
            .field("synced_len", &self.synced_len)
            .field("rows_written", &self.rows_written)
            .finish_non_exhaustive()
    }
}

// === conversion ===

/// Spool files in `dir` (oldest stem first), excluding quarantined ones.
pub fn list_spools(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_at("list", dir)(e)),
    };
    for entry in entries {
        let p = entry.map_err(io_at("list", dir))?.path();
        if p.extension().is_some_and(|x| x == SPOOL_EXT) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

struct PartFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
}

/// The Parquet output of one spool, written as its batches arrive: one file per hour partition
/// under a temporary name, put in place by [`Conversion::finish`]. The writer thread feeds it the
/// batches it has appended to the spool (finished only once the spool is sealed, so only with
/// fsynced rows), so live rotation never reads the spool back; recovery
/// ([`convert_spool`]) feeds it the batches it reads. Either way the output names are a function
/// of the spool name, and finishing deletes the spool, so a conversion that is interrupted (or
/// abandoned and redone from the file) replaces its own files instead of adding rows.
pub struct Conversion {
    spool: PathBuf,
    stem: String,
    events_dir: PathBuf,
    props: WriterProperties,
    parts: BTreeMap<HourKey, PartFile>,
}

impl Conversion {
    /// Starts the conversion of `spool` into `events_dir`; creates nothing until the first row.
    pub fn new(spool: &Path, events_dir: &Path, props: &WriterProperties) -> Result<Self, Error> {
        let stem = spool
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| Error::Corrupt {
                path: spool.to_owned(),
                detail: "spool name is not UTF-8".into(),
            })?
            .to_owned();
        Ok(Conversion {
            spool: spool.to_owned(),
            stem,
            events_dir: events_dir.to_owned(),
            props: props.clone(),
            parts: BTreeMap::new(),
        })
    }

    /// The spool this converts.
    pub fn spool(&self) -> &Path {
        &self.spool
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.parts.values().map(|p| p.rows).sum()
    }

    /// Encodes `batch` into the files of its hour partitions. After an error, [`Self::abandon`].
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        for (key, slice) in split_by_hour(batch)? {
            let part = match self.parts.entry(key) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let dir = self.events_dir.join(partition_path(key.0, key.1));
                    create_dir_durable(&dir)?;
                    let path = dir.join(format!("{}.parquet", self.stem));
                    let tmp = tmp_path(&path);
                    let f = File::create(&tmp).map_err(io_at("create", &tmp))?;
                    let writer = ArrowWriter::try_new(f, event_schema(), Some(self.props.clone()))?;
                    v.insert(PartFile {
                        tmp,
                        path,
                        writer,
                        rows: 0,
                    })
                }
            };
            part.writer.write(&slice)?;
            part.rows += slice.num_rows() as u64;
        }
        Ok(())
    }

    /// Closes the files (fsynced), renames them into place, then deletes the spool. On error the
    /// spool stays, and converting it from the file ([`convert_spool`]) redoes the work.
    pub fn finish(self) -> Result<Converted, Error> {
        let mut out = Converted::default();
        for part in self.parts.into_values() {
            part.writer.close()?;
            publish(&part.tmp, &part.path)?;
            out.bytes += fs::metadata(&part.path)
                .map_err(io_at("stat", &part.path))?
                .len();
            out.rows += part.rows;
            out.files.push(part.path);
        }
        fs::remove_file(&self.spool).map_err(io_at("remove", &self.spool))?;
        if let Some(dir) = self.spool.parent() {
            fsync_dir(dir)?;
        }
        Ok(out)
    }

    /// Gives up: drops the encoders and removes the temporary files (best effort; start-up
    /// removes any left over). The spool is untouched.
    pub fn abandon(self) {
        for part in self.parts.into_values() {
            drop(part.writer);
            let _ = fs::remove_file(&part.tmp);
        }
    }
}

impl std::fmt::Debug for Conversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversion")
            .field("spool", &self.spool)
            .field("rows", &self.rows())
            .field("files", &self.parts.len())
            .finish_non_exhaustive()
    }
}

/// Converts one spool file into Parquet files under `events_dir`, then deletes it (start-up
/// recovery, and spools whose live conversion was given up). Idempotent: see the module docs.
/// On error the spool is left in place (and any `.tmp` output is harmless: the next attempt
/// overwrites it).
pub fn convert_spool(
    spool: &Path,
    events_dir: &Path,
    props: &WriterProperties,
) -> Result<Converted, Error> {
    let mut conversion = Conversion::new(spool, events_dir, props)?;
    let file = File::open(spool).map_err(io_at("open", spool))?;
    let reader = match StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None) {
        Ok(r) => r,
        Err(_) => return quarantine(spool),
    };
    if reader.schema().fields() != event_schema().fields() {
        return Err(Error::Corrupt {
            path: spool.to_owned(),
            detail: "spool schema differs from this build's event schema".into(),
        });
    }
    let mut torn_tail = false;
    for item in reader {
        let batch = match item {
            Ok(b) => b,
            Err(_) => {
                torn_tail = true;
                break;
            }
        };
        if let Err(e) = conversion.write(&batch) {
            conversion.abandon();
            return Err(e);
        }
    }
    let mut out = conversion.finish()?;
    out.torn_tail = torn_tail;
    Ok(out)
}

fn quarantine(spool: &Path) -> Result<Converted, Error> {
    let mut out = Converted::default();
    let len = fs::metadata(spool).map_err(io_at("stat", spool))?.len();
    if len == 0 {
        // Created but never written: the crash came before the header; nothing to keep.
        fs::remove_file(spool).map_err(io_at("remove", spool))?;
    } else {
        let mut target = spool.as_os_str().to_owned();
        target.push(".corrupt");
        fs::rename(spool, &target).map_err(io_at("quarantine", spool))?;
        out.quarantined = true;
    }
    if let Some(dir) = spool.parent() {
        fsync_dir(dir)?;
    }
    Ok(out)
}

/// An hour partition: (days since the epoch, hour of day).
type HourKey = (i64, u8);

/// Splits a batch into runs of consecutive rows in the same hour partition (zero-copy slices).
fn split_by_hour(batch: &RecordBatch) -> Result<Vec<(HourKey, RecordBatch)>, Error> {
    let times = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| Error::Corrupt {
            path: PathBuf::new(),
            detail: "time column has the wrong type".into(),
        })?;
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut current: Option<HourKey> = None;
    for (i, us) in times.values().iter().enumerate() {
        let key = partition_of(*us);
        match current {
            Some(k) if k == key => {}
            Some(k) => {
                out.push((k, batch.slice(start, i - start)));
                start = i;
                current = Some(key);
            }
            None => current = Some(key),
        }
    }
    if let Some(k) = current {
        out.push((k, batch.slice(start, times.len() - start)));
    }
    Ok(out)
}

/// Asks the kernel to start writing `len` bytes at `offset` back to disk now, without waiting
/// (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`, as RocksDB's `bytes_per_sync` does). The
/// periodic `fdatasync` then finds little left to write, so the writer blocks for less time. A
/// hint only: errors are ignored here; `fdatasync` reports them.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on a file descriptor `file` keeps open for the call; no memory is
    // passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}
