//! The pipeline: request path → bounded queue → writer thread (spool) → converter thread
//! (Parquet, retention).
//!
//! Role: [`Telemetry::record`] is the only call on the request path. It never blocks and never
//! touches the disk: it `try_send`s onto a bounded channel and, when the channel is full, counts
//! the drop and returns [`Dropped`] so the caller applies its policy (default: keep serving and
//! log; fail-closed deployments refuse the request).
//!
//! Writer thread: builds Arrow batches of [`Config::batch_rows`] events, appends them to the
//! current spool file, fdatasyncs every [`Config::sync_interval`] (default 200 ms) and on
//! rotation, and rotates the spool at [`Config::rotate_bytes`] (Arrow IPC bytes, uncompressed:
//! the Parquet output is several times smaller) or [`Config::rotate_interval`]. Each batch goes
//! on to the converter thread as soon as it is appended, and the converter encodes it into the
//! spool's Parquet files (see [`crate::spool::Conversion`]) while the writer waits on fsync, so
//! Parquet encoding never stalls the queue and a spool is never read back. The files keep
//! temporary names until the spool is sealed (every row fsynced); then the converter renames
//! them and deletes the spool. If live conversion fails, the converter falls more than
//! `LIVE_MAX_ROWS` rows behind, or the spool fails with rows the converter already has, that
//! spool is converted from its file once sealed or cut back instead.
//!
//! Failures (disk full, directory unwritable, I/O errors): the failing spool is cut back to its
//! last fsynced length (so no row can be recovered from it *and* written again), the unsynced
//! batches go back to an in-memory backlog bounded by [`Config::max_buffered_events`] (events
//! beyond it are dropped and counted in [`Stats::events_dropped_backlog`]), [`Stats::write_errors`]
//! counts each error, [`Telemetry::health`] reports the last one, and every
//! [`Config::retry_interval`] the writer tries again with a fresh spool file. When a write and
//! fsync succeed, health returns to [`Health::Ok`]. The converter retries failed conversions
//! the same way; their spools stay on disk meanwhile.
//!
//! Shutdown: [`Telemetry::close`] flushes, fsyncs, seals and converts everything, then stops
//! the threads. Dropping a `Telemetry` without `close` flushes, fsyncs and seals the spool and
//! stops without waiting for conversions: spools not converted yet are recovered at the next
//! start (nothing is lost).
//!
//! Non-goals: Prometheus registration and OTLP export (the proxy reads [`Stats`]), multi-process
//! writers (one process per lake, enforced by a lock file).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arrow::array::RecordBatch;
use parquet::file::properties::WriterProperties;

use crate::audit::{self, AuditLog};
use crate::error::{io_at, Error};
use crate::event::Event;
use crate::lake::{create_dir_durable, walk_files, LakeLock, AUDIT_DIR, EVENTS_DIR, SPOOL_DIR};
use crate::retention::{apply_retention, RetentionReport};
use crate::schema::{check_lake_schema, event_writer_properties, EventBatchBuilder};
use crate::spool::{convert_spool, list_spools, Conversion, Converted, SpoolWriter, StemGen};

/// Pipeline settings. [`Config::new`] gives the defaults; [`Config::validate`] lists every
/// problem at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Root of the lake (see [`crate::lake`] for the layout).
    pub lake_dir: PathBuf,
    /// Events the queue holds before [`Telemetry::record`] drops (default 16384).
    pub queue_capacity: usize,
    /// Events per Arrow batch appended to the spool (default 4096).
    pub batch_rows: usize,
    /// Longest time an event waits before it is written and fsynced (default 200 ms).
    pub sync_interval: Duration,
    /// Spool size (Arrow IPC bytes) that triggers rotation into Parquet (default 128 MiB).
    pub rotate_bytes: u64,
    /// Spool age that triggers rotation into Parquet (default 5 min).
    pub rotate_interval: Duration,
    /// Events kept in memory while the spool cannot be written (default 262144).
    pub max_buffered_events: usize,
    /// Delay between attempts after a write or conversion error (default 1 s).
    pub retry_interval: Duration,
    /// Keep this many days of event partitions before today; `None` keeps everything.
    pub retention_days: Option<u32>,
    /// How often retention runs when enabled (default 1 h; first run soon after start).
    pub retention_interval: Duration,
    /// zstd level of the Parquet files (default 1: on event rows it is both faster and, measured,
    /// no larger than 3; see benches/writer.rs).
    pub zstd_level: i32,
    /// Rows per Parquet row group (default 131072).
    pub row_group_rows: usize,
}

/// Counters of the pipeline, for export as metrics. All are totals since [`Telemetry::open`]
/// except `queue_depth`, `events_buffered` and `spools_pending` (current values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events accepted by [`Telemetry::record`].
    pub events_recorded: u64,
    /// Events refused because the queue was full.
    pub events_dropped_queue_full: u64,
    /// Events refused because telemetry was closed.
    pub events_dropped_closed: u64,
    /// Events discarded by the writer because its failure backlog was full.
    pub events_dropped_backlog: u64,
    /// Events fsynced to the spool (durable).
    pub events_synced: u64,
    /// Rows written to Parquet files now in place (includes rows recovered from earlier runs).
    pub events_written: u64,
    /// Write, fsync and conversion errors.
    pub write_errors: u64,
    /// Bytes of Parquet files put in place.
    pub bytes_written: u64,
    /// Parquet files put in place.
    pub files_written: u64,
    /// Bytes appended to spool files.
    pub spool_bytes_written: u64,
    /// Events in the queue now.
    pub queue_depth: u64,
    /// Events in the writer's memory, not yet durable.
    pub events_buffered: u64,
    /// Memory of the Arrow batches behind `events_buffered` (the rows not cut into a batch yet
    /// are not counted: at most [`Config::batch_rows`] of them).
    pub events_buffered_bytes: u64,
    /// Age of the oldest event accepted and not yet durable (its request time to now), or
    /// zero when every accepted event is durable or still in the queue.
    pub oldest_buffered_age: Duration,
    /// Sealed spools waiting for conversion.
    pub spools_pending: u64,
}

/// Whether the pipeline is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Writes and conversions succeed.
    Ok,
    /// Writing or converting fails; events are held in memory (bounded) or in spools.
    Failing {
        /// First failure of the current episode.
        since: SystemTime,
        /// The most recent error.
        last_error: String,
    },
}

/// Why [`Telemetry::record`] did not take an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The queue is full (the writer is behind or stuck).
    QueueFull,
    /// Telemetry was closed.
    Closed,
}

/// The telemetry pipeline of one lake. `Send + Sync`: share it behind an `Arc`.
pub struct Telemetry {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    audit: AuditLog,
    lake_dir: PathBuf,
    threads: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
    _lock: LakeLock,
}

enum Msg {
    Event(Box<Event>),
    Sync(SyncSender<Result<u64, Error>>),
    Shutdown { convert: bool },
}

enum ConvMsg {
    /// A batch just appended to `spool`, in order, for its live conversion (named only once the
    /// spool is sealed, so only when every row is fsynced).
    Rows {
        spool: PathBuf,
        batch: RecordBatch,
        rows: u64,
        /// The spool's first batch: only it may start the spool's live conversion.
        first: bool,
    },
    /// The live conversion of this spool is given up (the converter fell too far behind, or
    /// the spool failed with rows the converter already has); it is converted from the file
    /// once sealed or cut back.
    Unlive(PathBuf),
    /// A sealed (or retired) spool: finish its live conversion, or convert it from the file.
    Spool(PathBuf),
    Stop {
        convert_all: bool,
    },
}

/// Most rows handed to the converter and not yet encoded; beyond it the writer stops feeding
/// the current spool's live conversion (it is converted from the file instead), so a converter
/// that falls behind costs disk reads, never unbounded memory.
const LIVE_MAX_ROWS: u64 = 131_072;

#[derive(Default)]
struct Counters {
    recorded: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_closed: AtomicU64,
    dropped_backlog: AtomicU64,
    synced: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
    bytes_written: AtomicU64,
    files_written: AtomicU64,
    spool_bytes: AtomicU64,
    enqueued: AtomicU64,
    dequeued: AtomicU64,
    buffered: AtomicU64,
    buffered_bytes: AtomicU64,
    /// Request time of the oldest buffered event, in Unix microseconds; 0 = none.
    oldest_buffered_us: AtomicU64,
    spools_pending: AtomicU64,
    /// Rows sent to the converter's live conversion and not yet encoded.
    live_in_flight: AtomicU64,
}

struct Failure {
    since: SystemTime,
    last_error: String,
}

struct Shared {
    c: Counters,
    writer_failure: Mutex<Option<Failure>>,
    converter_failure: Mutex<Option<Failure>>,
    closed: AtomicBool,
    /// Serialises conversions and retention (both write or delete partitions).
    lake_mutex: Mutex<()>,
}

// === impl Config ===

impl Config {
    /// Defaults for a lake at `lake_dir`.
    pub fn new(lake_dir: impl Into<PathBuf>) -> Self {
        Config {
            lake_dir: lake_dir.into(),
            queue_capacity: 16_384,
            batch_rows: 4096,
            sync_interval: Duration::from_millis(200),
            rotate_bytes: 128 << 20,
            rotate_interval: Duration::from_secs(300),
            max_buffered_events: 262_144,
            retry_interval: Duration::from_secs(1),
            retention_days: None,
            retention_interval: Duration::from_secs(3600),
            zstd_level: 1,
            row_group_rows: 131_072,
        }
    }

    /// Every problem with the settings, each prefixed with its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, msg: &str| {
            if !ok {
                errors.push(msg.to_owned());
            }
        };
        check(
            !self.lake_dir.as_os_str().is_empty(),
            "lake_dir: must not be empty",
        );
        check(self.queue_capacity > 0, "queue_capacity: must be > 0");
        check(self.batch_rows > 0, "batch_rows: must be > 0");
        check(!self.sync_interval.is_zero(), "sync_interval: must be > 0");
        check(self.rotate_bytes >= 1024, "rotate_bytes: must be >= 1024");
        check(
            !self.rotate_interval.is_zero(),
            "rotate_interval: must be > 0",
        );
        check(
            self.max_buffered_events >= self.batch_rows,
            "max_buffered_events: must be >= batch_rows",
        );
        check(
            !self.retry_interval.is_zero(),
            "retry_interval: must be > 0",
        );
        check(
            self.retention_days != Some(0),
            "retention_days: must be >= 1 (or unset to keep all)",
        );
        check(
            !self.retention_interval.is_zero(),
            "retention_interval: must be > 0",
        );
        check(
            (1..=22).contains(&self.zstd_level),
            "zstd_level: must be in 1..=22",
        );
        check(self.row_group_rows > 0, "row_group_rows: must be > 0");
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

// === impl Stats ===

impl Stats {
    /// All dropped events, whatever the reason.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped_queue_full + self.events_dropped_closed + self.events_dropped_backlog
    }
}

// === impl Dropped ===

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::QueueFull => f.write_str("telemetry queue full: event dropped"),
            Dropped::Closed => f.write_str("telemetry closed: event dropped"),
        }
    }
}

impl std::error::Error for Dropped {}

// === impl Shared ===

impl Shared {
    fn fail(&self, slot: &Mutex<Option<Failure>>, err: &Error) {
        self.c.write_errors.fetch_add(1, Relaxed);
        let mut f = slot.lock().unwrap_or_else(|e| e.into_inner());
        match f.as_mut() {
            Some(f) => f.last_error = err.to_string(),
            None => {
                tracing::error!(error = %err, "telemetry write failing; events are held in memory or spools");
                *f = Some(Failure {
                    since: SystemTime::now(),
                    last_error: err.to_string(),
                });
            }
        }
    }

    /// Runs `f` holding the lake mutex (conversions and retention both write or delete
    /// partitions).
    fn with_lake<T>(&self, f: impl FnOnce() -> T) -> T {
        let _g = self.lake_mutex.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    fn recovered(&self, slot: &Mutex<Option<Failure>>) {
        let mut f = slot.lock().unwrap_or_else(|e| e.into_inner());
        if f.take().is_some() {
            tracing::info!("telemetry writing again");
        }
    }
}

// === impl Telemetry ===

impl Telemetry {
    /// Opens (or creates) the lake, takes its lock, checks its schema version, queues leftover
    /// spools for conversion and starts the writer and converter threads.
    pub fn open(config: Config) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        let lake = config.lake_dir.clone();
        let spool_dir = lake.join(SPOOL_DIR);
        create_dir_durable(&spool_dir)?;
        let instance = hex::encode(rand::random::<[u8; 8]>());
        let lock = LakeLock::acquire(&spool_dir, &instance)?;
        check_lake_schema(&lake)?;
        let events_dir = lake.join(EVENTS_DIR);
        create_dir_durable(&events_dir)?;
        create_dir_durable(&lake.join(AUDIT_DIR))?;
        remove_event_tmp_files(&events_dir)?;
        audit::clean_tmp(&lake)?;
        let audit = AuditLog::open(&lake)?;
        let props = event_writer_properties(config.zstd_level, config.row_group_rows)?;
        let leftovers = list_spools(&spool_dir)?;

        let shared = Arc::new(Shared {
            c: Counters::default(),
            writer_failure: Mutex::new(None),
            converter_failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            lake_mutex: Mutex::new(()),
        });
        shared
            .c
            .spools_pending
            .store(leftovers.len() as u64, Relaxed);
        if !leftovers.is_empty() {
            tracing::info!(
                spools = leftovers.len(),
                "telemetry: recovering leftover spools"
            );
        }
        let (conv_tx, conv_rx) = mpsc::channel();
        let now = Instant::now();
        let converter = Converter {
            lake_dir: lake.clone(),
            spool_dir: spool_dir.clone(),
            events_dir,
            props,
            queue: leftovers.into(),
            live: None,
            unlived: None,
            shared: shared.clone(),
            audit: audit.clone(),
            retention_days: config.retention_days,
            retention_interval: config.retention_interval,
            retry_interval: config.retry_interval,
            next_retention: now + Duration::from_secs(1),
            next_retry: now,
        };
        let conv_handle = std::thread::Builder::new()
            .name("warden-telemetry-convert".into())
            .spawn(move || converter.run(conv_rx))
            .map_err(|e| Error::io("spawn telemetry converter thread", e))?;

        let (tx, rx) = mpsc::sync_channel(config.queue_capacity);
        let writer = Writer {
            builder: EventBatchBuilder::with_capacity(config.batch_rows),
            stems: StemGen::new(&instance),
            spool_dir,
            segment: None,
            unsynced: Vec::new(),
            unsynced_rows: 0,
            sent_unsynced: false,
            sent_batches: 0,
            pending: VecDeque::new(),
            buffered_rows: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            builder_first: None,
            broken: None,
            live: true,
            failing: false,
            next_retry: now,
            next_sync: now + config.sync_interval,
            conv: conv_tx.clone(),
            shared: shared.clone(),
            cfg: config,
        };
        let writer_handle = match std::thread::Builder::new()
            .name("warden-telemetry-writer".into())
            .spawn(move || writer.run(rx))
        {
            Ok(h) => h,
            Err(e) => {
                let _ = conv_tx.send(ConvMsg::Stop { convert_all: false });
                let _ = conv_handle.join();
                return Err(Error::io("spawn telemetry writer thread", e));
            }
        };
        Ok(Telemetry {
            tx,
            shared,
            audit,
            lake_dir: lake,
            threads: Mutex::new(Some((writer_handle, conv_handle))),
            _lock: lock,
        })
    }

    /// Queues one event; never blocks, never touches the disk. On `Err` the event is gone and
    /// counted; the caller decides whether to keep serving (default) or fail closed.
    pub fn record(&self, event: Event) -> Result<(), Dropped> {
        let c = &self.shared.c;
        if self.shared.closed.load(Relaxed) {
            c.dropped_closed.fetch_add(1, Relaxed);
            return Err(Dropped::Closed);
        }
        c.enqueued.fetch_add(1, Relaxed);
        match self.tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {
                c.recorded.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                c.enqueued.fetch_sub(1, Relaxed);
                let n = c.dropped_queue_full.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(
                        dropped_total = n,
                        "telemetry queue full: audit events dropped"
                    );
                }
                Err(Dropped::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => {
                c.enqueued.fetch_sub(1, Relaxed);
                c.dropped_closed.fetch_add(1, Relaxed);
                Err(Dropped::Closed)
            }
        }
    }

    /// Blocks until every event recorded before this call is fsynced to the spool; returns the
    /// total of durable events ([`Stats::events_synced`]). Not for the request path.
    pub fn sync(&self) -> Result<u64, Error> {
        if self.shared.closed.load(Relaxed) {
            return Err(Error::Closed);
        }
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx.send(Msg::Sync(rtx)).map_err(|_| Error::Closed)?;
        rrx.recv().map_err(|_| Error::Closed)?
    }

    /// Counters, for metrics.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.c;
        let enq = c.enqueued.load(Relaxed);
        let deq = c.dequeued.load(Relaxed);
        Stats {
            events_recorded: c.recorded.load(Relaxed),
            events_dropped_queue_full: c.dropped_queue_full.load(Relaxed),
            events_dropped_closed: c.dropped_closed.load(Relaxed),
            events_dropped_backlog: c.dropped_backlog.load(Relaxed),
            events_synced: c.synced.load(Relaxed),
            events_written: c.written.load(Relaxed),
            write_errors: c.write_errors.load(Relaxed),
            bytes_written: c.bytes_written.load(Relaxed),
            files_written: c.files_written.load(Relaxed),
            spool_bytes_written: c.spool_bytes.load(Relaxed),
            queue_depth: enq.saturating_sub(deq),
            events_buffered: c.buffered.load(Relaxed),
            events_buffered_bytes: c.buffered_bytes.load(Relaxed),
            oldest_buffered_age: match c.oldest_buffered_us.load(Relaxed) {
                0 => Duration::ZERO,
                us => SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH + Duration::from_micros(us))
                    .unwrap_or_default(),
            },
            spools_pending: c.spools_pending.load(Relaxed),
        }
    }

    /// `Failing` while the writer or the converter cannot write.
    pub fn health(&self) -> Health {
        let w = self
            .shared
            .writer_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let c = self
            .shared
            .converter_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (w.as_ref(), c.as_ref()) {
            (None, None) => Health::Ok,
            (Some(f), None) | (None, Some(f)) => Health::Failing {
                since: f.since,
                last_error: f.last_error.clone(),
            },
            (Some(a), Some(b)) => Health::Failing {
                since: a.since.min(b.since),
                last_error: format!("{}; {}", a.last_error, b.last_error),
            },
        }
    }

    /// The lake's admin audit log (shares this lake's lock).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The lake root.
    pub fn lake_dir(&self) -> &Path {
        &self.lake_dir
    }

    /// Runs retention now with `keep_days` (see [`crate::retention`]), as of `now`.
    pub fn run_retention(&self, now: SystemTime, keep_days: u32) -> Result<RetentionReport, Error> {
        if keep_days == 0 {
            return Err(Error::Config(vec!["keep_days: must be >= 1".into()]));
        }
        self.shared
            .with_lake(|| apply_retention(&self.lake_dir, now, keep_days, &self.audit))
    }

    /// Flushes, fsyncs, seals and converts everything, then stops the threads. Later
    /// [`Self::record`] calls return [`Dropped::Closed`]. Idempotent. `events_buffered > 0` or
    /// `spools_pending > 0` in the returned stats means the disk refused them: buffered events
    /// are lost, pending spools are converted at the next start.
    pub fn close(&self) -> Stats {
        self.stop(true);
        self.stats()
    }

    fn stop(&self, convert: bool) {
        self.shared.closed.store(true, Relaxed);
        let handles = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((writer, converter)) = handles {
            let _ = self.tx.send(Msg::Shutdown { convert });
            if writer.join().is_err() {
                tracing::error!("telemetry writer thread panicked");
            }
            if converter.join().is_err() {
                tracing::error!("telemetry converter thread panicked");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop(false);
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("lake_dir", &self.lake_dir)
            .field("stats", &self.stats())
            .finish()
    }
}

fn remove_event_tmp_files(events_dir: &Path) -> Result<(), Error> {
    // Leftovers of interrupted conversions; their spools are still there and will redo them.
    let mut files = Vec::new();
    walk_files(events_dir, &mut files)?;
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
    {
        std::fs::remove_file(f).map_err(io_at("remove", f))?;
    }
    Ok(())
}

// === writer thread ===

struct HeldBatch {
    first: SystemTime,
    bytes: u64,
}

struct Writer {
    cfg: Config,
    spool_dir: PathBuf,
    stems: StemGen,
    builder: EventBatchBuilder,
    segment: Option<SpoolWriter>,
    /// Batches appended to `segment` since its last fsync.
    unsynced: Vec<RecordBatch>,
    unsynced_rows: u64,
    /// Batches not yet appended anywhere (grows only while failing).
    pending: VecDeque<RecordBatch>,
    /// Rows in `builder`, `unsynced` and `pending`.
    buffered_rows: u64,
    /// One entry per batch of `unsynced` then `pending`, in that order (which is arrival
    /// order): its first event's request time and its memory, for the pressure figures.
    held: VecDeque<HeldBatch>,
    held_bytes: u64,
    /// Request time of the first event in `builder`.
    builder_first: Option<SystemTime>,
    /// A segment that failed and could not be cut back to its fsynced length yet.
    broken: Option<SpoolWriter>,
    /// The current segment's batches go to the converter as they are appended.
    live: bool,
    /// Some of `unsynced` already went to the converter: if the segment fails, its live
    /// conversion holds rows the spool will not, and is given up.
    sent_unsynced: bool,
    /// Batches of the current segment sent to the converter.
    sent_batches: u64,
    failing: bool,
    next_retry: Instant,
    next_sync: Instant,
    conv: Sender<ConvMsg>,
    shared: Arc<Shared>,
}

/// Most messages the writer handles between two looks at its deadlines (sync, rotation,
/// retry): at a few microseconds each, a deadline is met within milliseconds.
const DRAIN_MAX: usize = 1024;

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let now = Instant::now();
            let deadline = if self.failing {
                self.next_retry.min(self.next_sync)
            } else {
                self.next_sync
            };
            let mut next = match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return self.shutdown(false),
            };
            // Take what else is already queued before reading the clock again: under load the
            // deadlines are checked once per burst (at most `DRAIN_MAX` events), not per event.
            let mut taken = 0;
            while let Some(msg) = next {
                match msg {
                    Msg::Event(e) => self.on_event(&e),
                    Msg::Sync(reply) => {
                        let r = self.sync_now(true);
                        let _ = reply.send(r);
                    }
                    Msg::Shutdown { convert } => return self.shutdown(convert),
                }
                taken += 1;
                next = if taken < DRAIN_MAX {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.tick();
        }
    }

    fn set_buffered(&self) {
        let c = &self.shared.c;
        c.buffered.store(self.buffered_rows, Relaxed);
        c.buffered_bytes.store(self.held_bytes, Relaxed);
        let oldest = self.held.front().map(|h| h.first).or(self.builder_first);
        c.oldest_buffered_us.store(
            oldest.map_or(0, |t| crate::time::unix_micros(t).max(1) as u64),
            Relaxed,
        );
    }

    fn on_event(&mut self, e: &Event) {
        self.shared.c.dequeued.fetch_add(1, Relaxed);
        if self.buffered_rows >= self.cfg.max_buffered_events as u64 {
            let n = self.shared.c.dropped_backlog.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(
                    dropped_total = n,
                    "telemetry backlog full while writes fail: events dropped"
                );
            }
            return;
        }
        if self.builder.is_empty() {
            self.builder_first = Some(e.time);
        }
        self.builder.push(e);
        self.buffered_rows += 1;
        if self.builder.len() >= self.cfg.batch_rows {
            self.cut_batch();
            if !self.failing {
                self.write_pending();
            }
        }
        self.set_buffered();
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if self.failing {
            if now >= self.next_retry {
                self.retry();
            }
            if self.failing {
                return;
            }
        }
        if now >= self.next_sync {
            self.next_sync = now + self.cfg.sync_interval;
            let _ = self.sync_now(false);
        }
        let rotate = self.segment.as_ref().is_some_and(|s| {
            s.written_len() >= self.cfg.rotate_bytes
                || s.created().elapsed() >= self.cfg.rotate_interval
        });
        if rotate {
            self.rotate();
        }
    }

    fn cut_batch(&mut self) {
        if self.builder.is_empty() {
            return;
        }
        let rows = self.builder.len() as u64;
        let first = self.builder_first.take().unwrap_or_else(SystemTime::now);
        match self.builder.finish() {
            Ok(b) => {
                let bytes = b.get_array_memory_size() as u64;
                self.held_bytes += bytes;
                self.held.push_back(HeldBatch { first, bytes });
                self.pending.push_back(b);
            }
            Err(e) => {
                // Cannot happen with a correct builder; never silently: count and report.
                self.buffered_rows -= rows;
                self.shared.c.dropped_backlog.fetch_add(rows, Relaxed);
                self.shared.fail(&self.shared.writer_failure, &e);
            }
        }
    }

    /// Appends pending batches to the current segment (creating one if needed).
    fn write_pending(&mut self) {
        while let Some(batch) = self.pending.front() {
            if self.segment.is_none() {
                match SpoolWriter::create(&self.spool_dir, &self.stems.next_stem()) {
                    Ok(s) => {
                        self.shared
                            .c
                            .spool_bytes
                            .fetch_add(s.written_len(), Relaxed);
                        self.segment = Some(s);
                        self.live = true;
                        self.sent_batches = 0;
                    }
                    Err(e) => return self.fail(&e),
                }
            }
            let Some(seg) = self.segment.as_mut() else {
                return;
            };
            let before = seg.written_len();
            match seg.append(batch) {
                Ok(()) => {
                    self.shared
                        .c
                        .spool_bytes
                        .fetch_add(seg.written_len() - before, Relaxed);
                    if let Some(b) = self.pending.pop_front() {
                        let rows = b.num_rows() as u64;
                        // To the converter now, not after the fsync: it encodes while this
                        // thread waits on the disk (on one core, the fsync was idle time).
                        // Its files only take their names once the spool is sealed, when
                        // every row is fsynced; a failure before that gives it up.
                        if self.live && rows > 0 {
                            let in_flight = &self.shared.c.live_in_flight;
                            let spool = seg.path().to_owned();
                            if in_flight.load(Relaxed) + rows <= LIVE_MAX_ROWS {
                                in_flight.fetch_add(rows, Relaxed);
                                self.sent_unsynced = true;
                                let _ = self.conv.send(ConvMsg::Rows {
                                    spool,
                                    batch: b.clone(),
                                    rows,
                                    first: self.sent_batches == 0,
                                });
                                self.sent_batches += 1;
                            } else {
                                self.live = false;
                                let _ = self.conv.send(ConvMsg::Unlive(spool));
                            }
                        }
                        self.unsynced_rows += rows;
                        self.unsynced.push(b);
                    }
                }
                Err(e) => return self.fail(&e),
            }
        }
    }

    /// Writes everything buffered and fsyncs it. `explicit`: a caller waits; retry at once if
    /// failing instead of waiting for the retry timer.
    fn sync_now(&mut self, explicit: bool) -> Result<u64, Error> {
        self.cut_batch();
        if self.failing && explicit {
            self.retry();
        }
        if !self.failing {
            self.write_pending();
        }
        if !self.failing {
            self.sync_segment();
        }
        self.set_buffered();
        if self.failing {
            let last_error = self
                .shared
                .writer_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|f| f.last_error.clone())
                .unwrap_or_default();
            return Err(Error::NotDurable {
                pending_events: self.buffered_rows,
                last_error,
            });
        }
        Ok(self.shared.c.synced.load(Relaxed))
    }

    /// fsyncs the current segment: on success its rows count as synced and their batches are
    /// let go; on failure the writer fails (see [`Self::fail`]). `false` when it failed.
    fn sync_segment(&mut self) -> bool {
        let Some(seg) = self.segment.as_mut() else {
            return true;
        };
        match seg.sync() {
            Ok(()) => {
                let rows = self.unsynced_rows;
                self.shared.c.synced.fetch_add(rows, Relaxed);
                self.buffered_rows -= rows;
                self.unsynced_rows = 0;
                // The unsynced batches are the oldest held ones.
                for h in self.held.drain(..self.unsynced.len()) {
                    self.held_bytes -= h.bytes;
                }
                self.unsynced.clear();
                self.sent_unsynced = false;
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    fn fail(&mut self, err: &Error) {
        self.shared.fail(&self.shared.writer_failure, err);
        self.failing = true;
        self.next_retry = Instant::now() + self.cfg.retry_interval;
        if let Some(mut seg) = self.segment.take() {
            if self.live && self.sent_unsynced {
                // The live conversion has rows the cut-back spool will not: convert the spool
                // from its file instead (the rows go back to `pending` for the next one).
                let _ = self.conv.send(ConvMsg::Unlive(seg.path().to_owned()));
            }
            self.live = false;
            self.sent_unsynced = false;
            for b in self.unsynced.drain(..).rev() {
                self.pending.push_front(b);
            }
            self.unsynced_rows = 0;
            match seg.truncate_to_synced() {
                Ok(()) => self.retire(seg),
                Err(e) => {
                    self.shared.fail(&self.shared.writer_failure, &e);
                    self.broken = Some(seg);
                }
            }
        }
    }

    /// Hands a consistent (fsynced up to its length) segment to the converter.
    fn retire(&mut self, seg: SpoolWriter) {
        let path = seg.path().to_owned();
        drop(seg);
        self.shared.c.spools_pending.fetch_add(1, Relaxed);
        let _ = self.conv.send(ConvMsg::Spool(path));
    }

    fn retry(&mut self) {
        self.next_retry = Instant::now() + self.cfg.retry_interval;
        if let Some(mut seg) = self.broken.take() {
            if let Err(e) = seg.truncate_to_synced() {
                self.shared.fail(&self.shared.writer_failure, &e);
                self.broken = Some(seg);
                return;
            }
            self.retire(seg);
        }
        self.failing = false;
        self.write_pending();
        if self.failing {
            return;
        }
        if !self.sync_segment() {
            return;
        }
        self.set_buffered();
        self.shared.recovered(&self.shared.writer_failure);
    }

    fn rotate(&mut self) {
        if self.sync_now(false).is_err() {
            return;
        }
        if let Some(seg) = self.segment.take() {
            let path = seg.path().to_owned();
            if let Err(e) = seg.seal() {
                // Every row is fsynced; at worst the end marker is torn, which readers treat as
                // the end. Count it and convert anyway.
                self.shared.fail(&self.shared.writer_failure, &e);
                self.shared.recovered(&self.shared.writer_failure);
            }
            self.shared.c.spools_pending.fetch_add(1, Relaxed);
            let _ = self.conv.send(ConvMsg::Spool(path));
        }
    }

    fn shutdown(mut self, convert: bool) {
        self.rotate();
        if let Some(mut seg) = self.broken.take() {
            if seg.truncate_to_synced().is_ok() {
                self.retire(seg);
            }
        }
        if self.buffered_rows > 0 {
            tracing::error!(
                events = self.buffered_rows,
                "telemetry closing with events that could not be written"
            );
        }
        let _ = self.conv.send(ConvMsg::Stop {
            convert_all: convert,
        });
    }
}

// === converter thread ===

/// The spool is not there any more (as opposed to unreadable).
fn is_gone(spool: &Path) -> bool {
    std::fs::metadata(spool).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

struct Converter {
    lake_dir: PathBuf,
    spool_dir: PathBuf,
    events_dir: PathBuf,
    props: WriterProperties,
    queue: VecDeque<PathBuf>,
    /// The live conversion of the spool being written, fed as its batches are appended.
    live: Option<Conversion>,
    /// A spool whose live conversion was given up: converted from the file once sealed.
    unlived: Option<PathBuf>,
    shared: Arc<Shared>,
    audit: AuditLog,
    retention_days: Option<u32>,
    retention_interval: Duration,
    retry_interval: Duration,
    next_retention: Instant,
    next_retry: Instant,
}

impl Converter {
    fn run(mut self, rx: Receiver<ConvMsg>) {
        loop {
            let now = Instant::now();
            let mut deadline = self.next_retention;
            if !self.queue.is_empty() {
                deadline = deadline.min(self.next_retry);
            }
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(ConvMsg::Rows {
                    spool,
                    batch,
                    rows,
                    first,
                }) => {
                    self.feed(spool, &batch, first);
                    drop(batch);
                    self.shared.c.live_in_flight.fetch_sub(rows, Relaxed);
                }
                Ok(ConvMsg::Unlive(spool)) => self.unlive(spool),
                Ok(ConvMsg::Spool(p)) => self.sealed(p),
                Ok(ConvMsg::Stop { convert_all }) => {
                    if let Some(live) = self.live.take() {
                        live.abandon();
                    }
                    if convert_all {
                        // Every spool of the lake is ours (lock): include any skipped earlier.
                        if let Ok(all) = list_spools(&self.spool_dir) {
                            self.queue = all.into();
                            self.shared
                                .c
                                .spools_pending
                                .store(self.queue.len() as u64, Relaxed);
                        }
                        self.drain();
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= self.next_retry {
                self.drain();
            }
            if now >= self.next_retention {
                self.next_retention = now + self.retention_interval;
                self.retention();
            }
        }
    }

    /// Encodes a batch just appended to `spool` into its live conversion, starting one with the
    /// spool's first batch.
    fn feed(&mut self, spool: PathBuf, batch: &RecordBatch, first: bool) {
        if self.unlived.as_ref() == Some(&spool) {
            return;
        }
        let mut live = match self.live.take() {
            Some(l) if l.spool() == spool => l,
            other => {
                // Every spool ends with `Spool` before the next one's rows, so another live
                // conversion here was given up without being told; its file is converted when
                // it is sealed.
                if let Some(old) = other {
                    old.abandon();
                }
                if !first {
                    // A conversion started part-way would put in place a spool's later rows
                    // only, and delete the spool. Never: the file is converted instead.
                    let err = Error::Corrupt {
                        path: spool.clone(),
                        detail: "live conversion missed the spool's first batch; \
                                 converting it from the file instead"
                            .into(),
                    };
                    self.give_up_live(spool, &err);
                    return;
                }
                match Conversion::new(&spool, &self.events_dir, &self.props) {
                    Ok(l) => l,
                    Err(e) => {
                        self.give_up_live(spool, &e);
                        return;
                    }
                }
            }
        };
        let res = self.shared.with_lake(|| live.write(batch));
        match res {
            Ok(()) => self.live = Some(live),
            Err(e) => {
                live.abandon();
                self.give_up_live(spool, &e);
            }
        }
    }

    /// Counted and reported like any conversion error; the spool is converted from its file
    /// once sealed (and retried until that works).
    fn give_up_live(&mut self, spool: PathBuf, err: &Error) {
        self.shared.fail(&self.shared.converter_failure, err);
        self.unlived = Some(spool);
    }

    fn unlive(&mut self, spool: PathBuf) {
        if let Some(live) = self.live.take_if(|l| l.spool() == spool) {
            live.abandon();
        }
        self.unlived = Some(spool);
    }

    /// A spool was sealed: finish its live conversion, or queue it for conversion from the file.
    fn sealed(&mut self, spool: PathBuf) {
        if self.unlived.as_ref() == Some(&spool) {
            self.unlived = None;
        }
        let Some(live) = self.live.take_if(|l| l.spool() == spool) else {
            self.queue.push_back(spool);
            return;
        };
        let rows = live.rows();
        let res = self.shared.with_lake(|| live.finish());
        match res {
            Ok(out) => self.converted(&spool, &out),
            Err(e) => {
                self.shared.fail(&self.shared.converter_failure, &e);
                if is_gone(&spool) {
                    // Only the last step (syncing the spool directory after the delete) failed:
                    // the files are in place. Were the spool to come back after a crash, its
                    // conversion would replace them with the same rows.
                    let c = &self.shared.c;
                    c.written.fetch_add(rows, Relaxed);
                    c.spools_pending.fetch_sub(1, Relaxed);
                } else {
                    // Redone from the file, which replaces whatever was put in place.
                    self.queue.push_back(spool);
                }
            }
        }
    }

    fn converted(&mut self, spool: &Path, out: &Converted) {
        let c = &self.shared.c;
        c.written.fetch_add(out.rows, Relaxed);
        c.bytes_written.fetch_add(out.bytes, Relaxed);
        c.files_written.fetch_add(out.files.len() as u64, Relaxed);
        c.spools_pending.fetch_sub(1, Relaxed);
        if out.quarantined {
            tracing::error!(spool = %spool.display(), "telemetry spool unreadable; renamed to *.corrupt");
        }
        self.shared.recovered(&self.shared.converter_failure);
    }

    fn drain(&mut self) {
        while let Some(path) = self.queue.front() {
            let res = self
                .shared
                .with_lake(|| convert_spool(path, &self.events_dir, &self.props));
            match res {
                Ok(out) => {
                    if let Some(path) = self.queue.pop_front() {
                        self.converted(&path, &out);
                    }
                }
                Err(e) => {
                    if is_gone(path) {
                        // Gone (deleted by hand?): nothing to convert, and retrying cannot help.
                        // Were it to reappear in spool/, the next start or close() would take it.
                        tracing::warn!(spool = %path.display(), "telemetry spool vanished before conversion");
                        self.queue.pop_front();
                        self.shared.c.spools_pending.fetch_sub(1, Relaxed);
                        continue;
                    }
                    self.shared.fail(&self.shared.converter_failure, &e);
                    self.next_retry = Instant::now() + self.retry_interval;
                    return;
                }
            }
        }
    }

    fn retention(&mut self) {
        let Some(days) = self.retention_days else {
            return;
        };
        let res = self
            .shared
            .with_lake(|| apply_retention(&self.lake_dir, SystemTime::now(), days, &self.audit));
        match res {
            Ok(r) if !r.deleted.is_empty() => {
                tracing::info!(partitions = ?r.deleted, files = r.files, bytes = r.bytes, "telemetry retention deleted partitions");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "telemetry retention failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Telemetry>();
        assert_send_sync::<AuditLog>();
        assert_send_sync::<crate::Hasher>();
        assert_send_sync::<Error>();
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new("/tmp/lake").validate(), Ok(()));
    }
}
