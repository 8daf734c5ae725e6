//! Arrow schemas of the lake's tables, the event batch builder, Parquet writer settings, and the
//! lake's schema-version marker.
//!
//! Role: `telemetry/SCHEMA.md` is the spec; this module is its one implementation. Every Parquet
//! file carries `warden.schema_version` and `warden.table` in its key-value metadata (and in the
//! embedded Arrow schema), and each event row carries `schema_version`.
//!
//! Compatibility rule: a writer opens a lake only if the lake's marker
//! (`_warden_schema.json`) names exactly the versions this build writes; a lake without a marker
//! is accepted only if it holds no event Parquet file, or its files carry the same version. A
//! future schema version MUST come with a migration note in SCHEMA.md; it never silently shares a
//! lake with an older one.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BooleanBuilder, FixedSizeBinaryArray, Float32Builder, ListArray, ListBuilder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt32Builder,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::{io_at, Error};
use crate::event::Event;
use crate::hash::{KeyedHash, HASH_LEN};
use crate::time::unix_micros;

/// Version of the `events` table schema written by this build (the `schema_version` column).
pub const EVENTS_SCHEMA_VERSION: u16 = 4;
/// Version of the `audit` table schema written by this build.
pub const AUDIT_SCHEMA_VERSION: u16 = 1;
/// File name of the lake's schema marker, in the lake root.
pub const MARKER_FILE: &str = "_warden_schema.json";
/// Parquet / Arrow metadata key holding the schema version.
pub const META_SCHEMA_VERSION: &str = "warden.schema_version";
/// Parquet / Arrow metadata key holding the table name (`events` or `audit`).
pub const META_TABLE: &str = "warden.table";

/// Builds Arrow record batches of events, column by column.
pub struct EventBatchBuilder {
    time: TimestampMicrosecondBuilder,
    request_id: StringBuilder,
    tenant: StringBuilder,
    route: StringBuilder,
    requested_model: StringBuilder,
    served_model: StringBuilder,
    model_version: StringBuilder,
    upstream: StringBuilder,
    region: StringBuilder,
    stream: BooleanBuilder,
    status: UInt16Builder,
    error_code: StringBuilder,
    input_tokens: UInt32Builder,
    output_tokens: UInt32Builder,
    ttft_ms: Float32Builder,
    duration_ms: Float32Builder,
    tpot_ms: Float32Builder,
    guard_decision: StringBuilder,
    guard_score: UInt32Builder,
    rule_ids: ListBuilder<StringBuilder>,
    rule_pack_version: StringBuilder,
    config_hash: StringBuilder,
    classifier_score: Float32Builder,
    refusal: BooleanBuilder,
    canary_leak: BooleanBuilder,
    degraded: BooleanBuilder,
    throttled: BooleanBuilder,
    switch_state: StringBuilder,
    overhead_us: UInt32Builder,
    prompt_hash: HashColumn,
    system_prompt_hash: HashColumn,
    message_hashes: HashListColumn,
    client_addr_hash: HashColumn,
    hash_key_id: StringBuilder,
    raw_prompt: StringBuilder,
    guard_truncated: BooleanBuilder,
    guard_scanned_bytes: UInt32Builder,
    guard_us: UInt32Builder,
    hallucination_score: Float32Builder,
    logprob_mean: Float32Builder,
    logprob_min: Float32Builder,
    token_entropy: Float32Builder,
    schema_version: UInt16Builder,
    len: usize,
    /// Rows the builder is sized for; `finish` leaves a builder of the same size behind.
    capacity: usize,
}

/// Content of `_warden_schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    format: String,
    events_schema_version: u16,
    audit_schema_version: u16,
}

const MARKER_FORMAT: &str = "warden-lake";

// === schemas ===

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn string_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Utf8, false))
}

fn hash_type() -> DataType {
    DataType::FixedSizeBinary(HASH_LEN as i32)
}

fn hash_item() -> FieldRef {
    Arc::new(Field::new("item", hash_type(), false))
}

fn table_metadata(table: &str, version: u16) -> std::collections::HashMap<String, String> {
    [
        (META_SCHEMA_VERSION.to_owned(), version.to_string()),
        (META_TABLE.to_owned(), table.to_owned()),
    ]
    .into_iter()
    .collect()
}

/// Arrow schema of the `events` table (order and types as in SCHEMA.md).
pub fn event_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use DataType::{Boolean, Float32, UInt16, UInt32, Utf8};
            let list = DataType::List(string_item());
            let f = Field::new;
            let fields = vec![
                f("time", utc(), false),
                f("request_id", Utf8, false),
                f("tenant", Utf8, false),
                f("route", Utf8, false),
                f("requested_model", Utf8, false),
                f("served_model", Utf8, true),
                f("model_version", Utf8, true),
                f("upstream", Utf8, true),
                f("region", Utf8, true),
                f("stream", Boolean, false),
                f("status", UInt16, false),
                f("error_code", Utf8, true),
                f("input_tokens", UInt32, true),
                f("output_tokens", UInt32, true),
                f("ttft_ms", Float32, true),
                f("duration_ms", Float32, false),
                f("tpot_ms", Float32, true),
                f("guard_decision", Utf8, true),
                f("guard_score", UInt32, true),
                f("rule_ids", list, false),
                f("rule_pack_version", Utf8, true),
                f("config_hash", Utf8, false),
                f("classifier_score", Float32, true),
                f("refusal", Boolean, true),
                f("canary_leak", Boolean, true),
                f("degraded", Boolean, true),
                f("throttled", Boolean, true),
                f("switch_state", Utf8, true),
                f("overhead_us", UInt32, false),
                f("prompt_hash", hash_type(), true),
                f("system_prompt_hash", hash_type(), true),
                f("message_hashes", DataType::List(hash_item()), false),
                f("client_addr_hash", hash_type(), true),
                f("hash_key_id", Utf8, false),
                f("raw_prompt", Utf8, true),
                f("guard_truncated", Boolean, true),
                f("guard_scanned_bytes", UInt32, true),
                f("guard_us", UInt32, true),
                f("hallucination_score", Float32, true),
                f("logprob_mean", Float32, true),
                f("logprob_min", Float32, true),
                f("token_entropy", Float32, true),
                f("schema_version", UInt16, false),
            ];
            Arc::new(Schema::new_with_metadata(
                fields,
                table_metadata("events", EVENTS_SCHEMA_VERSION),
            ))
        })
        .clone()
}

/// Arrow schema of the `audit` table (admin actions, hash-chained).
pub fn audit_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use DataType::{UInt16, UInt64, Utf8};
            let f = Field::new;
            let fields = vec![
                f("time", utc(), false),
                f("seq", UInt64, false),
                f("actor", Utf8, false),
                f("role", Utf8, false),
                f("action", Utf8, false),
                f("target", Utf8, false),
                f("before", Utf8, true),
                f("after", Utf8, true),
                f("reason", Utf8, true),
                f("prev_hash", Utf8, false),
                f("row_hash", Utf8, false),
                f("schema_version", UInt16, false),
            ];
            Arc::new(Schema::new_with_metadata(
                fields,
                table_metadata("audit", AUDIT_SCHEMA_VERSION),
            ))
        })
        .clone()
}

/// Parquet settings for event files: zstd, page statistics, no dictionary for unique or
/// continuous columns, a bloom filter on `prompt_hash` and `request_id` for point lookups.
pub fn event_writer_properties(
    zstd_level: i32,
    row_group_rows: usize,
) -> Result<WriterProperties, Error> {
    let level = ZstdLevel::try_new(zstd_level)?;
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_created_by(format!("warden-telemetry {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(
                META_SCHEMA_VERSION.to_owned(),
                EVENTS_SCHEMA_VERSION.to_string(),
            ),
            KeyValue::new(META_TABLE.to_owned(), "events".to_owned()),
        ]));
    // Ids, hashes and raw text are unique per row, and timestamps, durations and scores (nearly)
    // all distinct in real traffic: a dictionary only costs an interning lookup per value before
    // the writer falls back to plain anyway.
    for col in [
        "request_id",
        "prompt_hash",
        "raw_prompt",
        "time",
        "duration_ms",
        "ttft_ms",
        "tpot_ms",
        "overhead_us",
        "guard_us",
        "classifier_score",
        "hallucination_score",
        "logprob_mean",
        "logprob_min",
        "token_entropy",
    ] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(col), false);
    }
    // Min/max of random hashes and minted request ids prune nothing (the bloom filter serves
    // lookups instead), and computing them is a measurable share of the encoding time.
    let message_hash =
        || ColumnPath::new(vec!["message_hashes".into(), "list".into(), "item".into()]);
    for col in [
        "request_id",
        "prompt_hash",
        "system_prompt_hash",
        "client_addr_hash",
        "raw_prompt",
    ] {
        b = b.set_column_statistics_enabled(ColumnPath::from(col), EnabledStatistics::None);
    }
    b = b
        .set_column_statistics_enabled(message_hash(), EnabledStatistics::None)
        .set_column_dictionary_enabled(message_hash(), false);
    // Sized for a full row group from the start (the default assumes 1M distinct values): a
    // filter that fits in cache makes every insert cheaper; it is folded to its target
    // false-positive rate when the row group closes either way.
    for col in ["request_id", "prompt_hash"] {
        b = b
            .set_column_bloom_filter_enabled(ColumnPath::from(col), true)
            .set_column_bloom_filter_max_ndv(ColumnPath::from(col), row_group_rows.max(1) as u64);
    }
    Ok(b.build())
}

/// Parquet settings for audit files.
pub(crate) fn audit_writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by(format!("warden-telemetry {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(
                META_SCHEMA_VERSION.to_owned(),
                AUDIT_SCHEMA_VERSION.to_string(),
            ),
            KeyValue::new(META_TABLE.to_owned(), "audit".to_owned()),
        ]))
        .build()
}

// === impl EventBatchBuilder ===

impl EventBatchBuilder {
    /// A builder with room for `rows` events before reallocating.
    pub fn with_capacity(rows: usize) -> Self {
        let s = || StringBuilder::with_capacity(rows, rows * 16);
        let list = |values: StringBuilder| {
            ListBuilder::with_capacity(values, rows).with_field(string_item())
        };
        EventBatchBuilder {
            time: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            request_id: StringBuilder::with_capacity(rows, rows * 36),
            tenant: s(),
            route: s(),
            requested_model: s(),
            served_model: s(),
            model_version: s(),
            upstream: s(),
            region: s(),
            stream: BooleanBuilder::with_capacity(rows),
            status: UInt16Builder::with_capacity(rows),
            error_code: s(),
            input_tokens: UInt32Builder::with_capacity(rows),
            output_tokens: UInt32Builder::with_capacity(rows),
            ttft_ms: Float32Builder::with_capacity(rows),
            duration_ms: Float32Builder::with_capacity(rows),
            tpot_ms: Float32Builder::with_capacity(rows),
            guard_decision: s(),
            guard_score: UInt32Builder::with_capacity(rows),
            rule_ids: list(s()),
            rule_pack_version: s(),
            config_hash: s(),
            classifier_score: Float32Builder::with_capacity(rows),
            refusal: BooleanBuilder::with_capacity(rows),
            canary_leak: BooleanBuilder::with_capacity(rows),
            degraded: BooleanBuilder::with_capacity(rows),
            throttled: BooleanBuilder::with_capacity(rows),
            switch_state: s(),
            overhead_us: UInt32Builder::with_capacity(rows),
            prompt_hash: HashColumn::with_capacity(rows),
            system_prompt_hash: HashColumn::with_capacity(rows),
            message_hashes: HashListColumn::with_capacity(rows, rows * 4),
            client_addr_hash: HashColumn::with_capacity(rows),
            hash_key_id: s(),
            raw_prompt: StringBuilder::new(),
            guard_truncated: BooleanBuilder::with_capacity(rows),
            guard_scanned_bytes: UInt32Builder::with_capacity(rows),
            guard_us: UInt32Builder::with_capacity(rows),
            hallucination_score: Float32Builder::with_capacity(rows),
            logprob_mean: Float32Builder::with_capacity(rows),
            logprob_min: Float32Builder::with_capacity(rows),
            token_entropy: Float32Builder::with_capacity(rows),
            schema_version: UInt16Builder::with_capacity(rows),
            len: 0,
            capacity: rows,
        }
    }

    /// Appends one event as a row.
    pub fn push(&mut self, e: &Event) {
        self.time.append_value(unix_micros(e.time));
        self.request_id.append_value(&e.request_id);
        self.tenant.append_value(&e.tenant);
        self.route.append_value(&e.route);
        self.requested_model.append_value(&e.requested_model);
        self.served_model.append_option(e.served_model.as_deref());
        self.model_version.append_option(e.model_version.as_deref());
        self.upstream.append_option(e.upstream.as_deref());
        self.region.append_option(e.region.as_deref());
        self.stream.append_value(e.stream);
        self.status.append_value(e.status);
        self.error_code.append_option(e.error_code.as_deref());
        self.input_tokens.append_option(e.input_tokens);
        self.output_tokens.append_option(e.output_tokens);
        self.ttft_ms.append_option(e.ttft_ms);
        self.duration_ms.append_value(e.duration_ms);
        self.tpot_ms.append_option(e.tpot_ms);
        self.guard_decision
            .append_option(e.guard_decision.map(|d| d.as_str()));
        self.guard_score.append_option(e.guard_score);
        for id in &e.rule_ids {
            self.rule_ids.values().append_value(id);
        }
        self.rule_ids.append(true);
        self.rule_pack_version
            .append_option(e.rule_pack_version.as_deref());
        self.config_hash.append_value(&e.config_hash);
        self.classifier_score.append_option(e.classifier_score);
        self.refusal.append_option(e.refusal);
        self.canary_leak.append_option(e.canary_leak);
        self.degraded.append_option(e.degraded);
        self.throttled.append_option(e.throttled);
        self.switch_state.append_option(e.switch_state.as_deref());
        self.overhead_us.append_value(e.overhead_us);
        self.prompt_hash.push(e.prompt_hash.as_ref());
        self.system_prompt_hash.push(e.system_prompt_hash.as_ref());
        self.message_hashes.push(&e.message_hashes);
        self.client_addr_hash.push(e.client_addr_hash.as_ref());
        self.hash_key_id.append_value(&e.hash_key_id);
        self.raw_prompt.append_option(e.raw_prompt.as_deref());
        self.guard_truncated.append_option(e.guard_truncated);
        self.guard_scanned_bytes
            .append_option(e.guard_scanned_bytes);
        self.guard_us.append_option(e.guard_us);
        self.hallucination_score
            .append_option(e.hallucination_score);
        self.logprob_mean.append_option(e.logprob_mean);
        self.logprob_min.append_option(e.logprob_min);
        self.token_entropy.append_option(e.token_entropy);
        self.schema_version.append_value(EVENTS_SCHEMA_VERSION);
        self.len += 1;
    }

    /// Rows appended since the last [`Self::finish`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// No rows pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the pending rows as a batch of [`event_schema`]; the builder is empty afterwards,
    /// with its buffers sized again for `capacity` rows (Arrow's own `finish` leaves them at
    /// zero, so every batch after the first would grow them by doubling and copying).
    pub fn finish(&mut self) -> Result<RecordBatch, Error> {
        let mut full = std::mem::replace(self, Self::with_capacity(self.capacity));
        full.build()
    }

    fn build(&mut self) -> Result<RecordBatch, Error> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.tenant.finish()),
            Arc::new(self.route.finish()),
            Arc::new(self.requested_model.finish()),
            Arc::new(self.served_model.finish()),
            Arc::new(self.model_version.finish()),
            Arc::new(self.upstream.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.stream.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_code.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.ttft_ms.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.tpot_ms.finish()),
            Arc::new(self.guard_decision.finish()),
            Arc::new(self.guard_score.finish()),
            Arc::new(self.rule_ids.finish()),
            Arc::new(self.rule_pack_version.finish()),
            Arc::new(self.config_hash.finish()),
            Arc::new(self.classifier_score.finish()),
            Arc::new(self.refusal.finish()),
            Arc::new(self.canary_leak.finish()),
            Arc::new(self.degraded.finish()),
            Arc::new(self.throttled.finish()),
            Arc::new(self.switch_state.finish()),
            Arc::new(self.overhead_us.finish()),
            Arc::new(self.prompt_hash.finish()?),
            Arc::new(self.system_prompt_hash.finish()?),
            Arc::new(self.message_hashes.finish()?),
            Arc::new(self.client_addr_hash.finish()?),
            Arc::new(self.hash_key_id.finish()),
            Arc::new(self.raw_prompt.finish()),
            Arc::new(self.guard_truncated.finish()),
            Arc::new(self.guard_scanned_bytes.finish()),
            Arc::new(self.guard_us.finish()),
            Arc::new(self.hallucination_score.finish()),
            Arc::new(self.logprob_mean.finish()),
            Arc::new(self.logprob_min.finish()),
            Arc::new(self.token_entropy.finish()),
            Arc::new(self.schema_version.finish()),
        ];
        Ok(RecordBatch::try_new(event_schema(), columns)?)
    }
}

/// A nullable `FixedSizeBinary(32)` column being built: the hashes' bytes back to back (an
/// append cannot fail, unlike with Arrow's `FixedSizeBinaryBuilder`).
struct HashColumn {
    values: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl HashColumn {
    fn with_capacity(rows: usize) -> Self {
        HashColumn {
            values: Vec::with_capacity(rows * HASH_LEN),
            nulls: NullBufferBuilder::new(rows),
        }
    }

    fn push(&mut self, h: Option<&KeyedHash>) {
        match h {
            Some(h) => {
                self.values.extend_from_slice(h.as_bytes());
                self.nulls.append_non_null();
            }
            None => {
                self.values.extend_from_slice(&[0; HASH_LEN]);
                self.nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> Result<FixedSizeBinaryArray, Error> {
        let values = Buffer::from_vec(std::mem::take(&mut self.values));
        Ok(FixedSizeBinaryArray::try_new(
            HASH_LEN as i32,
            values,
            self.nulls.finish(),
        )?)
    }
}

/// A `List(FixedSizeBinary(32))` column (never null) being built: its items are a
/// [`HashColumn`] without nulls, cut into rows by `offsets`.
struct HashListColumn {
    offsets: Vec<i32>,
    items: HashColumn,
    len: usize,
}

impl HashListColumn {
    fn with_capacity(rows: usize, items: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        HashListColumn {
            offsets,
            items: HashColumn::with_capacity(items),
            len: 0,
        }
    }

    fn push(&mut self, hashes: &[KeyedHash]) {
        for h in hashes {
            self.items.push(Some(h));
        }
        self.len += hashes.len();
        // Saturates past i32::MAX hashes in one batch (64 GiB); `finish` then refuses the batch.
        self.offsets
            .push(i32::try_from(self.len).unwrap_or(i32::MAX));
    }

    fn finish(&mut self) -> Result<ListArray, Error> {
        if self.offsets.last().map(|&o| o as usize) != Some(self.len) {
            return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
                "{} message hashes in one batch: more than a list array holds",
                self.len
            ))
            .into());
        }
        let items = self.items.finish()?;
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        self.len = 0;
        Ok(ListArray::try_new(
            hash_item(),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(items),
            None,
        )?)
    }
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

impl std::fmt::Debug for EventBatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBatchBuilder")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Converts events to one record batch.
pub fn events_to_batch(events: &[Event]) -> Result<RecordBatch, Error> {
    let mut b = EventBatchBuilder::with_capacity(events.len());
    for e in events {
        b.push(e);
    }
    b.finish()
}

// === marker ===

fn expected_marker() -> Marker {
    Marker {
        format: MARKER_FORMAT.to_owned(),
        events_schema_version: EVENTS_SCHEMA_VERSION,
        audit_schema_version: AUDIT_SCHEMA_VERSION,
    }
}

fn expected_text() -> String {
    format!("events v{EVENTS_SCHEMA_VERSION}, audit v{AUDIT_SCHEMA_VERSION}")
}

/// Checks the lake's schema marker, creating it for a new lake. Refuses a lake written with
/// another schema version (see the module docs for the rule).
pub fn check_lake_schema(lake_dir: &Path) -> Result<(), Error> {
    let path = lake_dir.join(MARKER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Marker =
                serde_json::from_slice(&bytes).map_err(|e| Error::IncompatibleSchema {
                    path: path.clone(),
                    found: format!("an unreadable marker ({e})"),
                    expected: expected_text(),
                })?;
            if found != expected_marker() {
                return Err(Error::IncompatibleSchema {
                    path,
                    found: format!(
                        "{} events v{}, audit v{}",
                        found.format, found.events_schema_version, found.audit_schema_version
                    ),
                    expected: expected_text(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            check_unmarked_lake(lake_dir)?;
            let text =
                serde_json::to_vec_pretty(&expected_marker()).map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            crate::lake::write_file_atomic(&path, &text)
        }
        Err(e) => Err(io_at("read", &path)(e)),
    }
}

/// A lake without a marker: acceptable if its event files (if any) carry our version.
fn check_unmarked_lake(lake_dir: &Path) -> Result<(), Error> {
    let mut files = Vec::new();
    crate::lake::walk_files(&lake_dir.join(crate::lake::EVENTS_DIR), &mut files)?;
    let Some(file) = files
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
    else {
        return Ok(());
    };
    let f = std::fs::File::open(file).map_err(io_at("open", file))?;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(f)?;
    use parquet::file::reader::FileReader;
    let version = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == META_SCHEMA_VERSION))
        .and_then(|kv| kv.value.clone());
    if version.as_deref() == Some(EVENTS_SCHEMA_VERSION.to_string().as_str()) {
        Ok(())
    } else {
        Err(Error::IncompatibleSchema {
            path: file.clone(),
            found: format!("events v{}", version.as_deref().unwrap_or("<none>")),
            expected: expected_text(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hasher;
    use parquet::arrow::ArrowWriter;

    #[test]
    fn hash_columns_keep_nulls_empty_lists_and_batch_boundaries() {
        use arrow::array::{Array, FixedSizeBinaryArray, ListArray};
        let h = Hasher::ephemeral();
        let row = |i: usize| Event {
            prompt_hash: i.is_multiple_of(2).then(|| h.prompt(&i.to_string())),
            system_prompt_hash: i.is_multiple_of(3).then(|| h.system_prompt("s")),
            message_hashes: (0..i % 3)
                .map(|k| h.message("user", &k.to_string()))
                .collect(),
            client_addr_hash: None,
            ..Event::default()
        };
        let mut b = EventBatchBuilder::with_capacity(2);
        // Two batches through one builder: the second must not see the first's rows.
        for batch in 0..2 {
            let rows: Vec<Event> = (0..5).map(|i| row(i + batch)).collect();
            rows.iter().for_each(|e| b.push(e));
            let got = b.finish().unwrap();
            let col = |name: &str| got.column_by_name(name).unwrap().clone();
            let prompt = col("prompt_hash");
            let prompt = prompt
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .unwrap();
            let client = col("client_addr_hash");
            let messages = col("message_hashes");
            let messages = messages.as_any().downcast_ref::<ListArray>().unwrap();
            assert_eq!(got.num_rows(), 5);
            assert_eq!(client.null_count(), 5);
            for (i, e) in rows.iter().enumerate() {
                match &e.prompt_hash {
                    Some(p) => assert_eq!(prompt.value(i), p.as_bytes()),
                    None => assert!(prompt.is_null(i)),
                }
                let list = messages.value(i);
                let list = list
                    .as_any()
                    .downcast_ref::<FixedSizeBinaryArray>()
                    .unwrap();
                assert_eq!(list.len(), e.message_hashes.len(), "row {i}");
                for (k, m) in e.message_hashes.iter().enumerate() {
                    assert_eq!(list.value(k), m.as_bytes());
                }
            }
        }
    }

    #[test]
    fn writer_settings_reach_the_intended_columns() {
        let h = Hasher::ephemeral();
        let events: Vec<Event> = (0..100)
            .map(|i| Event {
                request_id: format!("r{i}"),
                prompt_hash: Some(h.prompt(&i.to_string())),
                system_prompt_hash: Some(h.system_prompt("s")),
                message_hashes: vec![h.message("user", &i.to_string())],
                client_addr_hash: Some(h.client_addr("a")),
                ..Event::default()
            })
            .collect();
        let props = event_writer_properties(1, 1000).unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), event_schema(), Some(props)).unwrap();
        w.write(&events_to_batch(&events).unwrap()).unwrap();
        let meta = w.close().unwrap();
        let rg = meta.row_group(0);
        let col = |path: &str| {
            rg.columns()
                .iter()
                .find(|c| c.column_path().string() == path)
                .unwrap_or_else(|| panic!("no column {path}"))
        };
        for path in [
            "request_id",
            "prompt_hash",
            "system_prompt_hash",
            "client_addr_hash",
            "message_hashes.list.item",
        ] {
            assert!(col(path).statistics().is_none(), "{path} has statistics");
        }
        for path in [
            "request_id",
            "prompt_hash",
            "message_hashes.list.item",
            "time",
            "duration_ms",
        ] {
            assert!(
                col(path).dictionary_page_offset().is_none(),
                "{path} is dictionary-encoded"
            );
        }
        for path in ["request_id", "prompt_hash"] {
            assert!(
                col(path).bloom_filter_offset().is_some(),
                "{path} has no bloom filter"
            );
        }
        assert!(col("tenant").statistics().is_some());
        assert!(col("tenant").dictionary_page_offset().is_some());
        assert!(col("time").statistics().is_some());
        assert_eq!(
            col("tenant").compression(),
            Compression::ZSTD(ZstdLevel::try_new(1).unwrap())
        );
    }

    #[test]
    fn event_schema_is_the_documented_one() {
        let schema = event_schema();
        assert_eq!(schema.fields().len(), 43);
        assert_eq!(
            schema.fields().last().map(|f| f.name().as_str()),
            Some("schema_version")
        );
        // SCHEMA.md lists the columns in this order: keep the spec and the code in step.
        let spec = include_str!("../SCHEMA.md");
        let mut at = 0;
        for f in schema.fields() {
            let needle = format!("| `{}` |", f.name());
            let pos = spec[at..]
                .find(&needle)
                .unwrap_or_else(|| panic!("{} missing or out of order in SCHEMA.md", f.name()));
            at += pos + needle.len();
        }
    }
}
