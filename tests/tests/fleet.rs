//! End-to-end: a fleet of three `warden serve` sharing one real `redis-server`. A switch set on
//! one sidecar applies on all of them; with Redis down every sidecar keeps the last board it
//! saw (never fails open), says so in `/readyz` and `warden_switchboard_redis_connected`, and
//! refuses changes; a board set while they were cut off applies when they reconnect.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::harness::{self, get, post, send, Redis, UpstreamSpec, Warden};
use warden_tests::upstream::FakeUpstream;

const MODEL: &str = "test-model";
const KEY: &str = "sk-fleet-oncall-0123456789abcdef";

async fn sidecar(up: &FakeUpstream, redis: &Redis, n: usize) -> Warden {
    let dir = std::env::temp_dir().join(format!(
        "warden-fleet-{}-{n}-{}",
        std::process::id(),
        harness::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let server = format!(
        "\n[switchboard]\nredis_url = \"{}\"\nstate_file = {:?}\n\n[[admin.keys]]\nname = \"oncall\"\nkey_hash = \"{}\"\nrole = \"oncall\"\n",
        redis.url(),
        dir.join("switches.json").display().to_string(),
        harness::key_hash(KEY)
    );
    let w = Warden::start(
        &[UpstreamSpec::new("fake", up.addr(), &[MODEL])],
        &server,
        "",
    );
    w.wait_ready().await;
    w
}

async fn set(w: &Warden, body: &Value) -> warden_tests::http1::Response {
    let body = body.to_string();
    send(
        w.admin,
        format!(
            "POST /admin/switches HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap()
}

async fn status_of(w: &Warden) -> u16 {
    let body =
        json!({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    send(
        w.proxy,
        &post("/v1/chat/completions", &body.to_string(), ""),
    )
    .await
    .unwrap()
    .status()
}

/// Waits until every sidecar answers `want`, within `limit`.
async fn all_answer(fleet: &[Warden], want: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    for w in fleet {
        loop {
            let got = status_of(w).await;
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar {} answers {got}, not {want}",
                w.proxy
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn readyz(w: &Warden) -> Value {
    get(w.admin, "/readyz").await.unwrap().json().unwrap()
}

#[tokio::test]
async fn a_fleet_shares_its_switches_and_keeps_them_when_redis_is_gone() {
    let mut redis = Redis::start();
    let up = harness::recording_upstream(MODEL).await;
    let fleet = vec![
        sidecar(&up, &redis, 1).await,
        sidecar(&up, &redis, 2).await,
        sidecar(&up, &redis, 3).await,
    ];
    all_answer(&fleet, 200, Duration::from_secs(5)).await;

    // Set on one, applied on all.
    let r = set(
        &fleet[0],
        &json!({"scope": format!("model:{MODEL}"), "state": "off", "reason": "INC-11"}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    all_answer(&fleet, 503, Duration::from_secs(2)).await;
    for w in &fleet {
        assert_eq!(readyz(w).await["switchboard"]["redis"], "connected");
    }
    assert!(redis.cli(&["GET", "warden:switchboard"]).contains("INC-11"));

    // Redis gone: the kill stays (never fail open), it shows, and changes are refused.
    redis.stop();
    for w in &fleet {
        w.metrics_with(&["warden_switchboard_redis_connected 0"])
            .await;
    }
    assert_eq!(
        readyz(&fleet[1]).await["switchboard"]["redis"],
        "disconnected: keeping the last board"
    );
    all_answer(&fleet, 503, Duration::from_secs(1)).await;
    let r = set(
        &fleet[2],
        &json!({"scope": format!("model:{MODEL}"), "state": "on", "reason": "try"}),
    )
    .await;
    assert_eq!(r.status(), 503, "{}", r.text());
    assert_eq!(r.json().unwrap()["error"]["code"], "state_not_saved");

    // Redis back with a newer board set while they were cut off: adopted on reconnect.
    redis.restart();
    let board = json!({"version": 100, "switches": [
        {"scope": "tenant:t", "state": "off", "reason": "set during the outage", "actor": "oncall", "set_at": 1, "expires_at": null, "cut_streams": false}
    ], "throttles": []});
    assert!(redis
        .cli(&["SET", "warden:switchboard", &board.to_string()])
        .contains("OK"));
    for w in &fleet {
        w.metrics_with(&[
            "warden_switchboard_version 100",
            "warden_switchboard_redis_connected 1",
        ])
        .await;
    }
    // The model switch is gone (the fleet's board replaced it), the tenant one applies.
    let body =
        json!({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    let r = send(
        fleet[1].proxy,
        &post("/v1/chat/completions", &body.to_string(), ""),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json().unwrap()["error"]["scope"], "tenant:t");
}

/// With `shared_quotas`, two sidecars enforce one budget: a tenant allowed 4 requests a minute
/// gets 4 across the fleet, not 4 per sidecar. With Redis gone each sidecar falls back to its
/// own buckets (and counts it).
#[tokio::test]
async fn shared_quotas_hold_one_budget_across_the_fleet() {
    let redis = Redis::start();
    let up = harness::recording_upstream(MODEL).await;
    let start = |n: usize| {
        let dir = std::env::temp_dir().join(format!(
            "warden-fleetq-{}-{n}-{}",
            std::process::id(),
            harness::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let server = format!(
            "\n[switchboard]\nredis_url = \"{}\"\nshared_quotas = true\nstate_file = {:?}\n",
            redis.url(),
            dir.join("switches.json").display().to_string()
        );
        let tenants = format!(
            "[[tenants]]\nname = \"t\"\napi_keys = [\"{}\"]\nrequests_per_minute = 4\n",
            harness::key_hash(harness::KEY)
        );
        Warden::start(
            &[UpstreamSpec::new("fake", up.addr(), &[MODEL])],
            &server,
            &tenants,
        )
    };
    let a = start(1);
    let b = start(2);
    a.wait_ready().await;
    b.wait_ready().await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let w = if i % 2 == 0 { &a } else { &b };
        statuses.push(status_of(w).await);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429],
        "one budget for the fleet"
    );
    let mut redis = redis;
    redis.stop();
    // Redis gone: the sidecar's own buckets (not charged while the fleet's answered) decide.
    assert_eq!(status_of(&a).await, 200);
    a.metrics_with(&["warden_fleet_quota_fallbacks_total 1"])
        .await;
}
