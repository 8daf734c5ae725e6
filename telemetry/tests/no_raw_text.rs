//! No raw prompt text reaches the lake unless the tenant opted in: random secrets sent through
//! the Hasher path never appear in any byte of any file (spool or Parquet), and neither does
//! the key.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use arrow::array::{Array, StringArray};
use common::{all_files, event, hasher, parquet_files, read_parquet, t, TempDir, KEY_HEX};
use rand::distr::{Alphanumeric, SampleString};
use warden_telemetry::{Config, Telemetry};

/// Window length for leak detection: any 16 consecutive bytes of a secret count as a leak.
const W: usize = 16;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every `W`-byte window of every secret and of the key, as hex and as its raw bytes (hash
/// columns hold raw bytes, so a key written there by mistake would be bytes, not text).
fn windows(secrets: &[String]) -> HashSet<Vec<u8>> {
    let raw_key = hex::decode(KEY_HEX).unwrap();
    secrets
        .iter()
        .map(|s| s.as_bytes())
        .chain([KEY_HEX.as_bytes(), raw_key.as_slice()])
        .flat_map(|s| s.windows(W).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .collect()
}

fn scan(lake: &std::path::Path, leaks: &HashSet<Vec<u8>>, what: &str) -> usize {
    let files = all_files(lake);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if let Some(w) = bytes.windows(W).find(|w| leaks.contains(*w)) {
            panic!(
                "{what}: secret bytes {:?} found in {}",
                String::from_utf8_lossy(w),
                f.display()
            );
        }
    }
    files.len()
}

#[test]
fn secrets_in_prompts_never_reach_disk_unless_opted_in() {
    let dir = TempDir::new("noraw");
    let h = hasher();
    let mut rng = rand::rng();
    let mut cfg = Config::new(dir.path());
    cfg.zstd_level = 1;
    let tel = Telemetry::open(cfg).unwrap();
    let mut secrets = Vec::new();
    let mut opted_in = Vec::new();
    for i in 0..2000u64 {
        let secret = format!("SECRET{}", Alphanumeric.sample_string(&mut rng, 26));
        let system = format!(
            "system prompt with {}",
            Alphanumeric.sample_string(&mut rng, 24)
        );
        let user = format!("my password is {secret}, ignore previous instructions");
        let mut e = event(i, t(i), &h);
        e.prompt_hash = Some(h.prompt(&format!("{system}\n{user}")));
        e.system_prompt_hash = Some(h.system_prompt(&system));
        e.message_hashes = vec![h.message("system", &system), h.message("user", &user)];
        e.client_addr_hash = Some(h.client_addr(&format!("198.51.100.{}", i % 256)));
        if i % 100 == 0 {
            // An opted-in tenant: the caller masked the secret before handing the text over.
            let masked = format!(
                "OPTIN{} my password is [MASKED]",
                Alphanumeric.sample_string(&mut rng, 20)
            );
            e.tenant = "opted-in".into();
            e.raw_prompt = Some(masked.clone());
            opted_in.push(masked);
        }
        secrets.push(secret);
        secrets.push(system);
        tel.record(e).unwrap();
    }
    tel.sync().unwrap();
    // The spool is uncompressed Arrow: text would appear verbatim there.
    let spool_bytes: Vec<u8> = all_files(&dir.path().join("spool"))
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    assert!(
        contains(&spool_bytes, opted_in[0].as_bytes()),
        "positive control: opted-in text is spooled"
    );
    let mut leaks = windows(&secrets);
    assert!(scan(dir.path(), &leaks, "spool") > 0);
    // Positive control of the scanner itself.
    leaks.insert(opted_in[0].as_bytes()[..W].to_vec());
    assert!(std::panic::catch_unwind(|| scan(dir.path(), &leaks, "control")).is_err());
    leaks.remove(&opted_in[0].as_bytes()[..W]);
    tel.close();
    drop(tel);
    scan(dir.path(), &leaks, "parquet");

    // The opted-in text is exactly what the caller passed, and only on opted-in rows.
    let mut found = Vec::new();
    for f in parquet_files(&dir.path().join("events")) {
        for b in read_parquet(&f) {
            let raw = b
                .column_by_name("raw_prompt")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let tenant = b
                .column_by_name("tenant")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for i in 0..b.num_rows() {
                assert_eq!(raw.is_null(i), tenant.value(i) != "opted-in");
                if !raw.is_null(i) {
                    found.push(raw.value(i).to_owned());
                }
            }
        }
    }
    assert_eq!(found, opted_in);
}
