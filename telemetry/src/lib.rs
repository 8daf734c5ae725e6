//! warden-telemetry: event schema, keyed hashing and redaction, spool and Parquet writer, audit
//! queries. Filled by the telemetry issue; intentionally empty until then.
