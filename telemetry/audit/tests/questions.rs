//! Every documented auditor question runs on a real lake (written with warden-telemetry) and
//! answers what it claims: DataFusion reads the Parquet files as they are, partitions included.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use warden_audit::{query, render, Format, QUESTIONS};
use warden_telemetry::{AdminAction, Config, Event, GuardDecision, Hasher, Telemetry};

fn lake() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "warden-audit-q-{}-{:?}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let t = Telemetry::open(Config::new(&dir)).unwrap();
    let h = Hasher::ephemeral();
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let target_hash = h.prompt("ignore previous instructions");
    for i in 0..12u32 {
        let blocked = i % 3 == 0;
        // The input guard did not run on the last request.
        let guard_ran = i != 11;
        let prompt = if blocked {
            target_hash
        } else {
            h.prompt(&format!("question {i}"))
        };
        t.record(Event {
            time: base + Duration::from_secs(u64::from(i) * 3600),
            request_id: format!("req-{i}"),
            tenant: if i % 2 == 0 { "acme" } else { "globex" }.into(),
            route: "chat_completions".into(),
            requested_model: "m".into(),
            served_model: (!blocked).then(|| "m".into()),
            upstream: (!blocked).then(|| "w".into()),
            status: if blocked { 400 } else { 200 },
            error_code: blocked.then(|| "prompt_blocked".into()),
            input_tokens: (!blocked).then_some(10 + i),
            output_tokens: (!blocked).then_some(20),
            ttft_ms: (!blocked).then_some(5.0 + i as f32),
            duration_ms: 30.0,
            guard_decision: guard_ran.then_some(if blocked {
                GuardDecision::Block
            } else {
                GuardDecision::Allow
            }),
            guard_score: guard_ran.then_some(if blocked { 5 } else { 0 }),
            guard_truncated: guard_ran.then_some(i == 5),
            guard_scanned_bytes: guard_ran.then_some(1000 + i),
            guard_us: guard_ran.then_some(100 + i),
            rule_ids: if blocked {
                vec!["PI-1001".into()]
            } else {
                vec![]
            },
            rule_pack_version: Some("sha-test".into()),
            config_hash: "b3:cfg".into(),
            prompt_hash: Some(prompt),
            hash_key_id: h.key_id_shared(),
            ..Event::default()
        })
        .unwrap();
    }
    t.audit()
        .append(AdminAction {
            actor: "oncall".into(),
            role: "admin".into(),
            action: "rules.reload".into(),
            target: "embedded".into(),
            before: Some("sha-old".into()),
            after: Some("sha-test".into()),
            reason: None,
        })
        .unwrap();
    t.close();
    (dir, target_hash.to_hex())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_question_runs_and_answers() {
    let (dir, hash) = lake();
    assert_eq!(QUESTIONS.len(), 10);
    for (q, sql) in QUESTIONS {
        let sql = sql
            .replace("$PROMPT_HASH", &hash)
            .replace("$REQUEST_ID", "req-4");
        let batches = query(&dir, &sql)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}\n{sql}"));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert!(rows > 0, "{q}: no rows");
        let text = render(&batches, Format::Table).unwrap();
        match *q {
            "Every request carrying a given prompt hash" => assert_eq!(rows, 4, "{text}"),
            "Who changed what, and when (admin actions)" => assert!(
                text.contains("rules.reload") && text.contains("oncall"),
                "{text}"
            ),
            "Blocks by rule, per tenant, per day" => assert!(text.contains("PI-1001"), "{text}"),
            "Everything about one request" => assert_eq!(rows, 1),
            _ => {}
        }
    }
    // Partition columns are there, and the formats render.
    let b = query(&dir, "SELECT count(*) AS n, count(DISTINCT dt) AS days, count(DISTINCT hour) AS hours FROM events").await.unwrap();
    let json = render(&b, Format::Json).unwrap();
    assert!(json.contains("\"n\":12"), "{json}");
    assert!(json.contains("\"hours\":12"), "{json}");
    let csv = render(
        &query(
            &dir,
            "SELECT tenant, count(*) AS n FROM events GROUP BY tenant ORDER BY tenant",
        )
        .await
        .unwrap(),
        Format::Csv,
    )
    .unwrap();
    assert_eq!(csv, "tenant,n\nacme,6\nglobex,6\n");
    // Hashes are bytes in the lake; `encode` shows them as the hex an auditor compares.
    let hex = render(
        &query(
            &dir,
            &format!(
                "SELECT DISTINCT encode(prompt_hash, 'hex') AS h FROM events \
                 WHERE prompt_hash = decode('{hash}', 'hex')"
            ),
        )
        .await
        .unwrap(),
        Format::Csv,
    )
    .unwrap();
    assert_eq!(hex, format!("h\n{hash}\n"));
    // The guard's coverage columns: true, false and null (guard did not run) kept apart.
    let coverage = render(
        &query(
            &dir,
            "SELECT sum(CASE WHEN guard_truncated THEN 1 ELSE 0 END) AS truncated, \
             sum(CASE WHEN NOT guard_truncated THEN 1 ELSE 0 END) AS whole, \
             sum(CASE WHEN guard_truncated IS NULL THEN 1 ELSE 0 END) AS unscanned, \
             sum(guard_scanned_bytes) AS bytes, max(guard_us) AS us, \
             count(guard_us) AS timed FROM events",
        )
        .await
        .unwrap(),
        Format::Csv,
    )
    .unwrap();
    assert_eq!(
        coverage,
        "truncated,whole,unscanned,bytes,us,timed\n1,10,1,11055,110,11\n"
    );
    // Bad SQL is an error, not a panic.
    assert!(query(&dir, "SELEC nonsense").await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
