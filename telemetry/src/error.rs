//! The crate's one error type.
//!
//! Messages name paths and reasons; they never contain key material, prompt text or event
//! contents, so they are safe to log and to expose through [`crate::Health`].

use std::fmt;
use std::path::PathBuf;

use crate::hash::KeyError;

/// Everything that can go wrong in this crate.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed; `context` says which one and on which path.
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Arrow encoding or decoding failed (spool files).
    Arrow(arrow::error::ArrowError),
    /// Parquet encoding or decoding failed.
    Parquet(parquet::errors::ParquetError),
    /// The lake holds data of another schema version; the writer refuses to mix them.
    IncompatibleSchema {
        /// The marker or data file that was inspected.
        path: PathBuf,
        /// What was found there.
        found: String,
        /// What this build writes.
        expected: String,
    },
    /// Another live writer (this process or another) holds the lake.
    LakeBusy {
        /// The lock file.
        path: PathBuf,
        /// Its content: `pid host instance`.
        holder: String,
    },
    /// A file of the lake could not be understood.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Invalid configuration; every problem found, each with its key.
    Config(Vec<String>),
    /// A prompt-hash key could not be loaded.
    Key(KeyError),
    /// The telemetry pipeline is closed (or its writer thread is gone).
    Closed,
    /// Events are buffered in memory but cannot be made durable right now (see [`crate::Health`]).
    NotDurable {
        /// Events recorded but not yet fsynced.
        pending_events: u64,
        /// The last write error.
        last_error: String,
    },
}

// === impl Error ===

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `map_err` helper: `.map_err(io_at("create", &path))`.
pub(crate) fn io_at<'a>(
    what: &'a str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(format!("{what} {}", path.display()), e)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Arrow(e) => write!(f, "arrow: {e}"),
            Error::Parquet(e) => write!(f, "parquet: {e}"),
            Error::IncompatibleSchema { path, found, expected } => write!(
                f,
                "incompatible telemetry schema at {}: found {found}, this build writes {expected}; \
                 point telemetry at a new lake directory (SCHEMA.md §7 has the migration steps)",
                path.display()
            ),
            Error::LakeBusy { path, holder } => {
                write!(f, "telemetry lake is held by another writer ({}: {holder})", path.display())
            }
            Error::Corrupt { path, detail } => write!(f, "corrupt file {}: {detail}", path.display()),
            Error::Config(errors) => write!(f, "invalid telemetry config: {}", errors.join("; ")),
            Error::Key(e) => write!(f, "{e}"),
            Error::Closed => f.write_str("telemetry is closed"),
            Error::NotDurable { pending_events, last_error } => write!(
                f,
                "{pending_events} telemetry events are buffered in memory but not durable: {last_error}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Arrow(e) => Some(e),
            Error::Parquet(e) => Some(e),
            Error::Key(e) => Some(e),
            _ => None,
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Arrow(e)
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Parquet(e)
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        Error::Key(e)
    }
}
