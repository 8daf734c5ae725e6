//! warden-audit: SQL over the audit lake for auditors, on DataFusion. A separate crate and
//! binary so the sidecar proxy never builds DataFusion.
//!
//! Tables: `events` (one row per request; `telemetry/SCHEMA.md`) and `audit` (admin actions,
//! hash-chained), both read from the lake's Parquet files as they are, with the Hive partition
//! columns `dt` (and `hour` for events) as strings. The questions auditors ask, each with its SQL,
//! are in [`QUESTIONS`] and `telemetry/audit/README.md`; a test runs every one.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

/// The ten questions, each `(question, SQL)`. `$PROMPT_HASH` and `$REQUEST_ID` are placeholders
/// the auditor replaces.
pub const QUESTIONS: &[(&str, &str)] = &[
    (
        "Blocks by rule, per tenant, per day",
        "SELECT dt, tenant, rule_id, count(*) AS blocks FROM \
         (SELECT dt, tenant, unnest(rule_ids) AS rule_id FROM events WHERE guard_decision = 'block') \
         GROUP BY dt, tenant, rule_id ORDER BY dt, blocks DESC",
    ),
    (
        "Every request carrying a given prompt hash",
        "SELECT time, request_id, tenant, route, status, guard_decision FROM events \
         WHERE prompt_hash = decode('$PROMPT_HASH', 'hex') ORDER BY time",
    ),
    (
        "Who changed what, and when (admin actions)",
        "SELECT time, actor, role, action, target, before, after, reason FROM audit ORDER BY seq",
    ),
    (
        "Requests per tenant and status per day",
        "SELECT dt, tenant, status, count(*) AS requests FROM events GROUP BY dt, tenant, status ORDER BY dt, tenant, status",
    ),
    (
        "Which rule-pack version decided each day, and how often it blocked",
        "SELECT dt, rule_pack_version, count(*) AS decisions, \
         sum(CASE WHEN guard_decision = 'block' THEN 1 ELSE 0 END) AS blocks \
         FROM events WHERE rule_pack_version IS NOT NULL GROUP BY dt, rule_pack_version ORDER BY dt",
    ),
    (
        "Tokens used per tenant and model per day",
        "SELECT dt, tenant, served_model, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens \
         FROM events WHERE served_model IS NOT NULL GROUP BY dt, tenant, served_model ORDER BY dt, tenant",
    ),
    (
        "Errors by code and upstream",
        "SELECT error_code, upstream, count(*) AS n FROM events WHERE error_code IS NOT NULL \
         GROUP BY error_code, upstream ORDER BY n DESC",
    ),
    (
        "Latency per model: p50 / p99 time to first token",
        "SELECT served_model, approx_percentile_cont(ttft_ms, 0.5) AS ttft_p50_ms, \
         approx_percentile_cont(ttft_ms, 0.99) AS ttft_p99_ms, count(*) AS n \
         FROM events WHERE ttft_ms IS NOT NULL GROUP BY served_model",
    ),
    (
        "Everything about one request",
        "SELECT * FROM events WHERE request_id = '$REQUEST_ID'",
    ),
    (
        "Which config and hash key were in force over time",
        "SELECT config_hash, hash_key_id, min(time) AS first_seen, max(time) AS last_seen, count(*) AS requests \
         FROM events GROUP BY config_hash, hash_key_id ORDER BY first_seen",
    ),
];

/// A session with `events` and `audit` registered from `lake` (a table is missing while the
/// lake has no files of it yet).
pub async fn session(lake: &Path) -> Result<SessionContext, DataFusionError> {
    let ctx = SessionContext::new();
    for (table, parts) in [("events", vec!["dt", "hour"]), ("audit", vec!["dt"])] {
        let dir = lake.join(table);
        if !dir.is_dir() {
            continue;
        }
        let opts = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(
                parts
                    .into_iter()
                    .map(|p| (p.to_string(), DataType::Utf8))
                    .collect(),
            );
        let url = format!("{}/", dir.display());
        ctx.register_listing_table(table, &url, opts, None, None)
            .await?;
    }
    Ok(ctx)
}

/// Run one SQL statement against the lake.
pub async fn query(lake: &Path, sql: &str) -> Result<Vec<RecordBatch>, DataFusionError> {
    let ctx = session(lake).await?;
    ctx.sql(sql).await?.collect().await
}

/// Output formats of `warden-audit sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Render batches as text.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String, DataFusionError> {
    use datafusion::arrow::{csv, json, util::pretty};
    match format {
        Format::Table => Ok(pretty::pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = csv::WriterBuilder::new().with_header(true).build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8(buf).map_err(|e| DataFusionError::External(Box::new(e)))
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = json::ArrayWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8(buf).map_err(|e| DataFusionError::External(Box::new(e)))
        }
    }
}
