//! Helpers shared by the integration tests: temporary lakes, realistic events, and readers of
//! what landed on disk.
#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use warden_telemetry::{Event, GuardDecision, Hasher};

pub const KEY_HEX: &str = "8f2d1c4b5a6978e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8";

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "warden-tel-{tag}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn hasher() -> Hasher {
    Hasher::parse_env_value(&format!("test-key-1:{KEY_HEX}"), "test").unwrap()
}

/// 2024-03-10T09:00:00Z plus `secs`.
pub fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_710_061_200 + secs)
}

/// A realistic event: a streamed chat completion with a few messages and a rule hit. Every 11th
/// was rejected before the input guard ran (its guard columns are null); of the others, every
/// 13th was not scanned whole (`guard_truncated` true), the rest false.
pub fn event(i: u64, time: SystemTime, h: &Hasher) -> Event {
    let user = format!("please summarise document number {i} for me");
    let system = "You are a helpful assistant for Acme Corp.";
    let guard_ran = !i.is_multiple_of(11);
    Event {
        time,
        request_id: format!("req-{i:08}"),
        tenant: format!("tenant-{}", i % 7).into(),
        route: "/v1/chat/completions".into(),
        requested_model: "llama-3-8b".into(),
        served_model: Some("llama-3-8b-instruct".into()),
        model_version: if i.is_multiple_of(3) {
            None
        } else {
            Some("2024-02".into())
        },
        upstream: Some("127.0.0.1:8000".into()),
        region: None,
        stream: i.is_multiple_of(2),
        status: if i.is_multiple_of(50) { 429 } else { 200 },
        error_code: if i.is_multiple_of(50) {
            Some("rate_limited".into())
        } else {
            None
        },
        input_tokens: Some(120 + (i % 40) as u32),
        output_tokens: if i.is_multiple_of(50) {
            None
        } else {
            Some(200 + (i % 100) as u32)
        },
        ttft_ms: Some(35.5 + (i % 10) as f32),
        duration_ms: 1500.25 + (i % 300) as f32,
        tpot_ms: Some(7.25),
        guard_decision: guard_ran.then_some(if i.is_multiple_of(20) {
            GuardDecision::Flag
        } else {
            GuardDecision::Allow
        }),
        guard_score: guard_ran.then_some((i % 5) as u32),
        rule_ids: if i.is_multiple_of(20) {
            vec!["INJ-001".into(), "EXF-003".into()]
        } else {
            vec![]
        },
        rule_pack_version: Some("packs-2024.03.1".into()),
        config_hash: "cfg-1b2c3d".into(),
        classifier_score: None,
        refusal: None,
        canary_leak: None,
        degraded: Some(false),
        throttled: None,
        switch_state: None,
        overhead_us: 850 + (i % 100) as u32,
        prompt_hash: Some(h.prompt(&format!("{system}\n{user}"))),
        system_prompt_hash: Some(h.system_prompt(system)),
        message_hashes: vec![h.message("system", system), h.message("user", &user)],
        client_addr_hash: Some(h.client_addr(&format!("10.0.{}.{}", i % 3, i % 250))),
        hash_key_id: h.key_id_shared(),
        raw_prompt: None,
        guard_truncated: guard_ran.then_some(i.is_multiple_of(13)),
        guard_scanned_bytes: guard_ran.then_some((system.len() + user.len()) as u32),
        guard_us: guard_ran.then_some(40 + (i % 200) as u32),
        hallucination_score: i.is_multiple_of(3).then_some((i % 10) as f32 / 10.0),
        logprob_mean: None,
        logprob_min: None,
        token_entropy: None,
    }
}

/// Every `*.parquet` file under `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.retain(|p| p.extension().is_some_and(|x| x == "parquet"));
    out.sort();
    out
}

pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let f = File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// request_id → number of rows carrying it, over every event Parquet file of the lake.
pub fn request_id_counts(lake: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for f in parquet_files(&lake.join("events")) {
        for b in read_parquet(&f) {
            let ids = b
                .column_by_name("request_id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for i in 0..ids.len() {
                *counts.entry(ids.value(i).to_owned()).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Partition directories (`dt=.../hour=...`) holding event files, relative to `events/`.
pub fn partitions(lake: &Path) -> Vec<String> {
    let events = lake.join("events");
    let mut out: Vec<String> = parquet_files(&events)
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .strip_prefix(&events)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    out.dedup();
    out
}
