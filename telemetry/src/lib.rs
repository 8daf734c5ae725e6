//! warden-telemetry: the audit lake of Warden. One typed event per request, keyed prompt
//! hashes instead of prompt text, a crash-safe spool, Parquet files in Hive partitions, and a
//! hash-chained admin audit table. Sans-proxy: plain function calls and two background threads,
//! no Pingora, no async runtime.
//!
//! ```no_run
//! use std::time::SystemTime;
//! use warden_telemetry::{Config, Event, Hasher, Telemetry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hasher = Hasher::from_env().unwrap_or_else(|_| Hasher::ephemeral());
//! let telemetry = Telemetry::open(Config::new("/var/lib/warden/lake"))?;
//! let event = Event {
//!     time: SystemTime::now(),
//!     request_id: "req-1".into(),
//!     tenant: "acme".into(),
//!     route: "/v1/chat/completions".into(),
//!     prompt_hash: Some(hasher.prompt("normalised prompt text")),
//!     message_hashes: vec![hasher.message("user", "normalised prompt text")],
//!     hash_key_id: hasher.key_id_shared(),
//!     ..Event::default()
//! };
//! if let Err(dropped) = telemetry.record(event) {
//!     // Counted in stats(); the proxy's policy decides (default: keep serving).
//!     eprintln!("{dropped}");
//! }
//! telemetry.close();
//! # Ok(()) }
//! ```
//!
//! Modules, in the order data flows:
//! - [`hash`]: keyed BLAKE3 identities (32 bytes, shown as hex), key file / env formats, rotation.
//! - [`event`]: the [`Event`] row. `telemetry/SCHEMA.md` is its spec (MUST rules).
//! - [`schema`]: Arrow schemas, the batch builder, the lake's schema-version marker.
//! - [`pipeline`]: [`Telemetry`]: bounded queue, writer and converter threads, [`Stats`],
//!   [`Health`].
//! - [`spool`]: the Arrow IPC spool, its conversion to Parquet, what a crash can lose.
//! - [`lake`]: directory layout, durable renames, the single-writer lock.
//! - [`retention`]: deletion of old day partitions, each recorded as an admin action.
//! - [`audit`]: the hash-chained admin audit table and [`audit::verify`].
//! - [`outcome`]: the typed [`Outcome`] of one request, which every sink reads (the proxy's
//!   metrics, log, span and audit event, and the detectors of `warden-runbooks`).

pub mod audit;
pub mod error;
pub mod event;
pub mod hash;
pub mod lake;
pub mod outcome;
pub mod pipeline;
pub mod retention;
pub mod schema;
pub mod spool;
mod time;

pub use audit::{verify, AdminAction, AuditLog, AuditRecord, VerifyReport};
pub use error::Error;
pub use event::{Event, GuardDecision};
pub use hash::{Hasher, KeyError, KeyedHash};
pub use outcome::{ErrorClass, ErrorCode, Outcome, OutputDecision};
pub use pipeline::{Config, Dropped, Health, Stats, Telemetry};
pub use retention::RetentionReport;
