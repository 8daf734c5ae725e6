//! End-to-end: a refusal spike against the real binary. The scripted upstream refuses 5% of a
//! tenant's requests while the refusal detector learns that baseline, then 15% (3×); the
//! detector fires, the shipped refusal-spike runbook (auto mode) throttles the tenant (a shed
//! request's `429 throttled` links the runbook's page), an Alertmanager-style webhook gets the
//! alert, `/admin/alerts` and `warden ctl alerts` show it, and the automatic revert lifts the
//! throttle; the admin audit trail has the alert, the action and the revert.
//!
//! The runbooks are the shipped files, copied, with the refusal-spike runbook's revert and
//! cooldown shortened to seconds and a `notify` action added (a test cannot wait ten minutes).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_tests::harness::{self, post, send, warden_bin, UpstreamSpec, Warden, KEY};
use warden_tests::http1::Response;

const MODEL: &str = "test-model";
const ADMIN_KEY: &str = "sk-admin-oncall-0123456789abcdef";
const AUDITOR_KEY: &str = "sk-admin-auditor-0123456789abcdef";

/// The shipped runbooks in a scratch directory, the refusal-spike one made quick and noisy.
fn runbooks(webhook: &str) -> PathBuf {
    runbooks_with(webhook, "auto")
}

/// The same, with the refusal-spike runbook in `mode`.
fn runbooks_with(webhook: &str, mode: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "warden-runbooks-{}-{}",
        std::process::id(),
        harness::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = harness::repo_root().join("runbooks");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        let is_book = p.extension().is_some_and(|e| e == "toml" || e == "md");
        if is_book && name != "Cargo.toml" {
            std::fs::copy(&p, dir.join(&name)).unwrap();
        }
    }
    let path = dir.join("refusal_spike.toml");
    let book = std::fs::read_to_string(&path)
        .unwrap()
        .replace("revert_after_s = 600", "revert_after_s = 3")
        .replace("cooldown_s = 900", "cooldown_s = 3600")
        .replace("mode = \"auto\"", &format!("mode = \"{mode}\""));
    assert!(book.contains("revert_after_s = 3"), "{book}");
    std::fs::write(
        &path,
        format!("{book}\n[[action]]\nkind = \"notify\"\nwebhook = \"{webhook}\"\n"),
    )
    .unwrap();
    dir
}

/// A webhook receiver: every body it gets, in order.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            let _ =
                                tx.send(serde_json::from_str(&body[..len]).unwrap_or(Value::Null));
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                .await;
                            break;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}/api/v2/alerts"), rx)
}

async fn admin(w: &Warden, method: &str, path: &str) -> Response {
    admin_as(w, ADMIN_KEY, method, path).await
}

/// An admin request without a body, with `key`.
async fn admin_as(w: &Warden, key: &str, method: &str, path: &str) -> Response {
    send(
        w.admin,
        format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("admin response")
}

/// One chat request whose reply is a refusal or not.
async fn chat(w: &Warden, refuse: bool) -> Response {
    let reply = if refuse {
        "I'm sorry, but I can't help with that."
    } else {
        "Sure. The capital of France is Paris."
    };
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hello"}]});
    let header = format!("x-fake-reply: {}\r\n", json!([reply]));
    send(
        w.proxy,
        &post("/v1/chat/completions", &body.to_string(), &header),
    )
    .await
    .expect("response")
}

/// Warden with the runbooks of `dir` and these admin keys `(name, key, role)`, after 400
/// requests of which every 20th was refused (5%): the refusal detector has learned its baseline.
async fn learned(
    up: &warden_tests::upstream::FakeUpstream,
    dir: &std::path::Path,
    keys: &[(&str, &str, &str)],
) -> Warden {
    let mut server = format!(
        "\n[detectors]\nwarmup = 400\n\n[runbooks]\ndir = {:?}\n",
        dir.display().to_string()
    );
    for (name, key, role) in keys {
        server.push_str(&format!(
            "\n[[admin.keys]]\nname = \"{name}\"\nkey_hash = \"{}\"\nrole = \"{role}\"\n",
            harness::key_hash(key)
        ));
    }
    let w = Warden::start(
        &[UpstreamSpec::new("fake", up.addr(), &[MODEL])],
        &server,
        "",
    );
    w.wait_ready().await;
    for i in 0..400u32 {
        let r = chat(&w, i % 20 == 7).await;
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    w
}

#[tokio::test]
async fn a_refusal_spike_throttles_the_tenant_until_the_runbook_reverts_it() {
    let up = harness::recording_upstream(MODEL).await;
    let (webhook, mut notes) = receiver().await;
    let dir = runbooks(&webhook);
    let w = learned(&up, &dir, &[("oncall-key", ADMIN_KEY, "admin")]).await;
    // Then three in twenty (15%) until Warden sheds the tenant.
    let started = Instant::now();
    let mut shed: Option<Response> = None;
    for i in 0..4000u32 {
        let r = chat(&w, matches!(i % 20, 3 | 9 | 15)).await;
        if r.status() == 429 {
            shed = Some(r);
            break;
        }
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    let shed = shed.expect("the refusal spike was never acted on");
    let err = shed.json().unwrap();
    assert_eq!(err["error"]["code"], "throttled", "{err}");
    assert_eq!(err["error"]["scope"], "tenant:t", "{err}");
    assert!(
        err["error"]["runbook"]
            .as_str()
            .is_some_and(|r| r.ends_with("refusal_spike.md")),
        "{err}"
    );
    eprintln!("acted {:?} into the spike", started.elapsed());

    // The alert, as the admin API and `warden ctl` show it.
    let alerts = admin(&w, "GET", "/admin/alerts").await.json().unwrap();
    let alert = &alerts["alerts"][0];
    assert_eq!(alert["runbook"], "refusal-spike", "{alerts}");
    assert_eq!(alert["detector"], "refusal");
    assert_eq!(alert["scope"], "tenant:t");
    assert_eq!(alert["status"], "acting");
    assert!(alert["shift"].as_f64().unwrap() >= 2.0, "{alert}");
    let ctl = Command::new(warden_bin())
        .args(["ctl", "--admin", &format!("http://{}", w.admin), "alerts"])
        .env("WARDEN_ADMIN_TOKEN", ADMIN_KEY)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&ctl.stdout);
    assert!(
        ctl.status.success() && listed.contains("refusal-spike") && listed.contains("tenant:t"),
        "{listed}{}",
        String::from_utf8_lossy(&ctl.stderr)
    );

    // The webhook got an Alertmanager-style body.
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(note[0]["labels"]["alertname"], "refusal-spike", "{note}");
    assert_eq!(note[0]["labels"]["scope"], "tenant:t");
    assert!(note[0]["startsAt"].is_string() && note[0].get("endsAt").is_none());

    // The revert, three seconds later: the throttle is gone, the tenant is served again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alerts = admin(&w, "GET", "/admin/alerts").await.json().unwrap();
        if alerts["alerts"][0]["status"] == "reverted" {
            break;
        }
        assert!(Instant::now() < deadline, "never reverted: {alerts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let throttles = admin(&w, "GET", "/admin/throttles").await.json().unwrap();
    assert_eq!(throttles["throttles"], json!([]), "{throttles}");
    assert_eq!(chat(&w, false).await.status(), 200);
    let resolved = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("a resolved notification")
        .unwrap();
    assert!(resolved[0]["endsAt"].is_string(), "{resolved}");

    // The audit trail: alert, action, revert, each naming the alert.
    let audit = admin(&w, "GET", "/admin/audit").await.json().unwrap();
    let actions: Vec<(&str, &str)> = audit["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["actor"].as_str().unwrap()))
        .collect();
    for (want, actor) in [
        ("runbook.alert", "detector:refusal"),
        ("runbook.act", "runbook:refusal-spike"),
        ("runbook.revert", "runbook:refusal-spike"),
    ] {
        assert!(
            actions.contains(&(want, actor)),
            "{want} by {actor} missing: {actions:?}"
        );
    }
    w.metrics_with(&[
        "warden_detections_total{detector=\"refusal\",scope=\"tenant\"} 1",
        "warden_runbook_notifications_total{result=\"sent\"} 2",
    ])
    .await;
    // Nothing of a reply in the log.
    assert!(!w.logs().contains("capital of France"));
    let _ = std::fs::remove_dir_all(dir);
    let _ = KEY;
}

/// The same spike with the runbook in `approve` mode: the alert waits, nothing is throttled,
/// until `warden ctl approve` applies it; the approval is an audit row with the approver.
#[tokio::test]
async fn an_approve_mode_runbook_waits_for_warden_ctl_approve() {
    let up = harness::recording_upstream(MODEL).await;
    let (webhook, _notes) = receiver().await;
    let dir = runbooks_with(&webhook, "approve");
    let w = learned(
        &up,
        &dir,
        &[
            ("oncall-key", ADMIN_KEY, "oncall"),
            ("auditor-key", AUDITOR_KEY, "auditor"),
        ],
    )
    .await;
    let mut pending: Option<Value> = None;
    for i in 0..4000u32 {
        let r = chat(&w, matches!(i % 20, 3 | 9 | 15)).await;
        assert_eq!(r.status(), 200, "approve mode acted alone: {}", r.text());
        if i % 50 == 0 {
            let alerts = admin(&w, "GET", "/admin/alerts").await.json().unwrap();
            if alerts["alerts"][0]["status"] == "pending_approval" {
                pending = Some(alerts["alerts"][0].clone());
                break;
            }
        }
    }
    let alert = pending.expect("no alert pending approval");
    let id = alert["id"].as_u64().unwrap().to_string();
    let ctl = |args: &[&str]| {
        Command::new(warden_bin())
            .args(["ctl", "--admin", &format!("http://{}", w.admin)])
            .args(args)
            .env("WARDEN_ADMIN_TOKEN", ADMIN_KEY)
            .output()
            .unwrap()
    };
    let out = ctl(&["approve", &id, "--reason", "confirmed by on-call"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Approving twice is refused (the bare form the issue names: `warden ctl approve ID`).
    let again = ctl(&["approve", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not_pending"));
    // The throttle (60 a minute, a full bucket to start with) sheds the tenant soon.
    let mut shed = false;
    for _ in 0..200 {
        if chat(&w, false).await.status() == 429 {
            shed = true;
            break;
        }
    }
    assert!(shed, "the approved throttle never shed a request");
    let audit = admin_as(&w, AUDITOR_KEY, "GET", "/admin/audit")
        .await
        .json()
        .unwrap();
    assert!(
        audit["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "runbook.approve"
                && a["actor"] == "oncall-key"
                && a["reason"] == "confirmed by on-call"),
        "{audit}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The shipped Prometheus alerting rules parse, name only metrics Warden exports, and link
/// runbook pages that exist.
#[test]
fn the_prometheus_rules_use_real_metrics_and_pages() {
    let root = harness::repo_root();
    let text = std::fs::read_to_string(root.join("runbooks/prometheus-rules.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let metrics_src = std::fs::read_to_string(root.join("proxy/src/metrics.rs")).unwrap();
    let mut alerts = 0;
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            alerts += 1;
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            let mut names: Vec<String> = Vec::new();
            let mut cur = String::new();
            for c in expr.chars().chain(std::iter::once(' ')) {
                if c.is_ascii_alphanumeric() || c == '_' {
                    cur.push(c);
                } else {
                    if cur.starts_with("warden_") || cur.starts_with("gen_ai_") {
                        names.push(cur.trim_end_matches("_bucket").to_string());
                    }
                    cur.clear();
                }
            }
            assert!(!names.is_empty(), "{name}: no metric");
            for m in names {
                assert!(
                    metrics_src.contains(&format!("\"{m}\"")),
                    "{name}: {m} is not a metric Warden exports"
                );
            }
            let page = rule["annotations"]["runbook_url"].as_str().unwrap();
            assert!(root.join(page).is_file(), "{name}: {page} missing");
        }
    }
    assert!(alerts >= 7, "{alerts}");
}
