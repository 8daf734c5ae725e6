//! End-to-end: the admin API's roles, kill switches and `warden ctl` against the real binary.
//! The role matrix is checked endpoint by endpoint for every role, without a key and with a
//! wrong one; switches refuse (`503 switched_off`, `Retry-After`, the runbook), degrade
//! (`max_tokens` clamped, `x-warden-degraded`), survive a restart through the state file, and
//! every change is an audit action with its actor, role and reason.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use warden_tests::harness::{self, post, send, UpstreamSpec, Warden};
use warden_tests::http1::Response;
use warden_tests::upstream::FakeUpstream;

const MODEL: &str = "test-model";
const ROLES: [&str; 4] = ["oncall", "security", "auditor", "admin"];

fn key_of(role: &str) -> String {
    format!("sk-admin-{role}-0123456789abcdef")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "warden-admin-{name}-{}-{}",
        std::process::id(),
        harness::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn warden(up: &FakeUpstream, state_file: &std::path::Path) -> Warden {
    let mut server = format!(
        "\n[switchboard]\nstate_file = {:?}\nrunbook_url = \"https://runbooks.example/switched-off\"\n",
        state_file.display().to_string()
    );
    for role in ROLES {
        server.push_str(&format!(
            "\n[[admin.keys]]\nname = \"{role}-key\"\nkey_hash = \"{}\"\nrole = \"{role}\"\n",
            harness::key_hash(&key_of(role))
        ));
    }
    let w = Warden::start(
        &[UpstreamSpec::new("fake", up.addr(), &[MODEL])],
        &server,
        "",
    );
    w.wait_ready().await;
    w
}

async fn admin(w: &Warden, method: &str, path: &str, key: Option<&str>, body: &Value) -> Response {
    let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    send(
        w.admin,
        format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("admin response")
}

async fn chat(w: &Warden, stream: bool, max_tokens: u64) -> Response {
    let body = json!({"model": MODEL, "stream": stream, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello"}]});
    send(
        w.proxy,
        &post("/v1/chat/completions", &body.to_string(), ""),
    )
    .await
    .expect("response")
}

/// Every endpoint that needs a key, for every role, without a key and with a wrong one: the
/// documented matrix.
#[tokio::test]
async fn every_endpoint_answers_each_role_as_the_matrix_says() {
    let up = harness::recording_upstream(MODEL).await;
    let dir = scratch("matrix");
    let w = warden(&up, &dir.join("switches.json")).await;
    let set = json!({"scope": "tenant:nobody", "state": "off", "reason": "matrix test"});
    let clear = json!({"scope": "tenant:nobody", "reason": "matrix test"});
    // (method, path, body, roles allowed)
    let throttle =
        json!({"scope": "tenant:nobody", "rpm": 5, "ttl": "1m", "reason": "matrix test"});
    let unthrottle = json!({"scope": "tenant:nobody"});
    let endpoints: [(&str, &str, Value, &[&str]); 9] = [
        ("GET", "/admin/status", Value::Null, &ROLES),
        ("GET", "/admin/switches", Value::Null, &ROLES),
        ("GET", "/admin/throttles", Value::Null, &ROLES),
        ("POST", "/admin/switches", set, &["oncall", "admin"]),
        ("POST", "/admin/switches/clear", clear, &["oncall", "admin"]),
        ("POST", "/admin/throttles", throttle, &["oncall", "admin"]),
        (
            "POST",
            "/admin/throttles/clear",
            unthrottle,
            &["oncall", "admin"],
        ),
        ("GET", "/admin/audit", Value::Null, &["auditor", "admin"]),
        (
            "POST",
            "/admin/rules/reload",
            Value::Null,
            &["security", "admin"],
        ),
    ];
    for (method, path, body, allowed) in &endpoints {
        for role in ROLES {
            let r = admin(&w, method, path, Some(&key_of(role)), body).await;
            let want = if allowed.contains(&role) { 200 } else { 403 };
            assert_eq!(r.status(), want, "{role} {method} {path}: {}", r.text());
            if want == 403 {
                let e = r.json().unwrap();
                assert_eq!(e["error"]["code"], "forbidden", "{e}");
                assert_eq!(e["error"]["type"], "permission_error", "{e}");
            }
        }
        for key in [None, Some("sk-not-a-key")] {
            let r = admin(&w, method, path, key, body).await;
            assert_eq!(r.status(), 401, "{key:?} {method} {path}: {}", r.text());
            assert_eq!(r.json().unwrap()["error"]["code"], "invalid_admin_key");
        }
    }
    // Open endpoints stay open; unknown ones and wrong methods are named.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            admin(&w, "GET", path, None, &Value::Null).await.status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        admin(&w, "GET", "/admin/nope", None, &Value::Null)
            .await
            .status(),
        404
    );
    assert_eq!(
        admin(&w, "DELETE", "/admin/switches", None, &Value::Null)
            .await
            .status(),
        405
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn switches_refuse_degrade_survive_a_restart_and_are_audited() {
    let up = harness::recording_upstream(MODEL).await;
    let dir = scratch("switches");
    let state = dir.join("switches.json");
    let mut w = warden(&up, &state).await;
    let oncall = key_of("oncall");
    assert_eq!(chat(&w, false, 8).await.status(), 200);

    // Bad requests name the field.
    let r = admin(
        &w,
        "POST",
        "/admin/switches",
        Some(&oncall),
        &json!({"scope": "team:x", "state": "off", "reason": "r"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json().unwrap()["error"]["param"], "scope");
    let r = admin(
        &w,
        "POST",
        "/admin/switches",
        Some(&oncall),
        &json!({"scope": "global", "state": "off"}),
    )
    .await;
    assert_eq!(r.json().unwrap()["error"]["param"], "reason");

    // Off for the model, for ten minutes.
    let r = admin(&w, "POST", "/admin/switches", Some(&oncall),
        &json!({"scope": format!("model:{MODEL}"), "state": "off", "reason": "INC-7 bad weights", "ttl": "10m"})).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let before = up.request_count();
    let r = chat(&w, false, 8).await;
    assert_eq!(r.status(), 503, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((590..=600).contains(&retry), "{retry}");
    let e = r.json().unwrap();
    assert_eq!(e["error"]["code"], "switched_off");
    assert_eq!(e["error"]["scope"], format!("model:{MODEL}"));
    assert_eq!(
        e["error"]["runbook"],
        "https://runbooks.example/switched-off"
    );
    assert_eq!(
        up.request_count(),
        before,
        "a switched-off request reached the upstream"
    );

    // Cleared: served again.
    let r = admin(
        &w,
        "POST",
        "/admin/switches/clear",
        Some(&oncall),
        &json!({"scope": format!("model:{MODEL}"), "reason": "INC-7 fixed"}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(chat(&w, false, 8).await.status(), 200);

    // Degraded: max_tokens clamped, the response marked.
    admin(&w, "POST", "/admin/switches", Some(&oncall),
        &json!({"scope": "route:chat_completions", "state": "degraded", "params": {"max_tokens": 3}, "reason": "GPU pressure"})).await;
    let r = chat(&w, false, 50).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("x-warden-degraded"),
        Some("route:chat_completions")
    );
    let sent: Value = serde_json::from_slice(&up.last_post().body).unwrap();
    assert_eq!(sent["max_tokens"], 3);
    // Counted once for the request, though switches are checked before and after routing.
    w.metrics_with(&["warden_switched_off_total{effect=\"degraded\",kind=\"route\"} 1\n"])
        .await;

    // Degraded to no streaming: streams are refused, other requests go on, marked.
    let model_scope = format!("model:{MODEL}");
    let r = admin(&w, "POST", "/admin/switches", Some(&oncall),
        &json!({"scope": model_scope, "state": "degraded", "params": {"stream": false}, "reason": "SSE backlog"})).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(chat(&w, true, 8).await.status(), 503);
    let r = chat(&w, false, 8).await;
    assert_eq!(r.status(), 200);
    assert!(r
        .header("x-warden-degraded")
        .unwrap()
        .contains(&model_scope));
    admin(
        &w,
        "POST",
        "/admin/switches/clear",
        Some(&oncall),
        &json!({"scope": model_scope, "reason": "done"}),
    )
    .await;

    // A feature: streaming off refuses streams only.
    admin(
        &w,
        "POST",
        "/admin/switches",
        Some(&oncall),
        &json!({"scope": "feature:streaming", "state": "off", "reason": "SSE bug"}),
    )
    .await;
    assert_eq!(chat(&w, true, 8).await.status(), 503);
    assert_eq!(chat(&w, false, 8).await.status(), 200);

    // The audit trail: who, which role, what, why.
    let r = admin(
        &w,
        "GET",
        "/admin/audit",
        Some(&key_of("auditor")),
        &Value::Null,
    )
    .await;
    let actions = r.json().unwrap()["actions"].as_array().unwrap().clone();
    let sets: Vec<&Value> = actions
        .iter()
        .filter(|a| a["action"] == "switch.set")
        .collect();
    assert_eq!(sets.len(), 4, "{actions:?}");
    assert_eq!(sets[0]["actor"], "oncall-key");
    assert_eq!(sets[0]["role"], "oncall");
    assert_eq!(sets[0]["reason"], "INC-7 bad weights");
    assert!(actions.iter().any(|a| a["action"] == "switch.clear"));
    w.metrics_with(&[
        "warden_switches{state=\"degraded\"} 1",
        "warden_switches{state=\"off\"} 1",
    ])
    .await;

    // A restart keeps the switches.
    w.signal("TERM");
    assert!(w.wait_exit(std::time::Duration::from_secs(20)).is_some());
    let w = warden(&up, &state).await;
    assert_eq!(chat(&w, true, 8).await.status(), 503);
    let r = admin(
        &w,
        "GET",
        "/admin/switches",
        Some(&key_of("auditor")),
        &Value::Null,
    )
    .await;
    assert_eq!(r.json().unwrap()["switches"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

fn ctl(w: &Warden, token: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(harness::warden_bin())
        .arg("ctl")
        .args(["--admin", &format!("http://{}", w.admin)])
        .arg("--token-file")
        .arg(token)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn warden_ctl_sets_lists_and_clears_switches() {
    let up = harness::recording_upstream(MODEL).await;
    let dir = scratch("ctl");
    let w = warden(&up, &dir.join("switches.json")).await;
    let token = dir.join("token");
    std::fs::write(&token, format!("{}\n", key_of("oncall"))).unwrap();

    let (code, out, err) = ctl(&w, &token, &["switch", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("everything is on"), "{out}");
    let (code, out, err) = ctl(
        &w,
        &token,
        &[
            "switch", "set", "tenant:t", "off", "--reason", "abuse", "--ttl", "15m",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tenant:t off") && out.contains("abuse"),
        "{out}"
    );
    assert_eq!(chat(&w, false, 8).await.status(), 503);
    let (code, out, _) = ctl(&w, &token, &["--json", "switch", "list"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["switches"][0]["scope"], "tenant:t");
    assert!(v["switches"][0]["expires_at"].as_u64().is_some());
    // The server's error, and a non-zero exit.
    let (code, _, err) = ctl(
        &w,
        &token,
        &["switch", "set", "tenant:t", "degraded", "--reason", "x"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("max_tokens"), "{err}");
    let (code, _, err) = ctl(&w, &token, &["audit", "tail"]);
    assert_eq!(code, 1, "oncall may not read the audit trail");
    assert!(err.contains("403"), "{err}");
    let (code, out, err) = ctl(
        &w,
        &token,
        &["switch", "clear", "tenant:t", "--reason", "done"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cleared tenant:t"), "{out}");
    assert_eq!(chat(&w, false, 8).await.status(), 200);
    let (code, out, err) = ctl(
        &w,
        &token,
        &[
            "throttle",
            "set",
            "tenant:t",
            "--rpm",
            "100",
            "--ttl",
            "5m",
            "--reason",
            "batch job",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tenant:t 100 requests/min"), "{out}");
    let (code, out, _) = ctl(&w, &token, &["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("ready: true") && out.contains("batch job"),
        "{out}"
    );
    let (code, out, err) = ctl(&w, &token, &["throttle", "clear", "tenant:t"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cleared tenant:t"), "{out}");
    let (code, out, _) = ctl(&w, &token, &["throttle", "list"]);
    assert!(code == 0 && out.contains("no throttles"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn throttles_shed_past_their_limit_and_a_global_kill_cuts_streams() {
    let up = harness::recording_upstream(MODEL).await;
    let dir = scratch("throttle");
    let w = warden(&up, &dir.join("switches.json")).await;
    let oncall = key_of("oncall");

    // Two requests a minute for tenant t, for five minutes.
    let r = admin(
        &w,
        "POST",
        "/admin/throttles",
        Some(&oncall),
        &json!({"scope": "tenant:t", "rpm": 2, "ttl": "5m", "reason": "runaway client"}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(chat(&w, false, 8).await.status(), 200);
    assert_eq!(chat(&w, false, 8).await.status(), 200);
    let r = chat(&w, false, 8).await;
    assert_eq!(r.status(), 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    let e = r.json().unwrap();
    assert_eq!(e["error"]["code"], "throttled");
    assert_eq!(e["error"]["scope"], "tenant:t");
    // A throttle needs an expiry and a limit.
    let r = admin(
        &w,
        "POST",
        "/admin/throttles",
        Some(&oncall),
        &json!({"scope": "tenant:t", "rpm": 2, "reason": "x"}),
    )
    .await;
    assert_eq!(r.json().unwrap()["error"]["param"], "ttl");
    let r = admin(
        &w,
        "POST",
        "/admin/throttles/clear",
        Some(&oncall),
        &json!({"scope": "tenant:t"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(chat(&w, false, 8).await.status(), 200);

    // A stream in flight: the upstream sends its first event, pauses, then the rest. A global
    // kill that cuts streams, set during the pause, ends it with a switched_off event.
    let body = json!({"model": MODEL, "stream": true, "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello"}]})
    .to_string();
    let raw = post(
        "/v1/chat/completions",
        &body,
        "x-fault: pause-after-first=1500\r\n",
    );
    let proxy = w.proxy;
    let reader = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
        s.write_all(&raw).await.unwrap();
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let r = admin(&w, "POST", "/admin/switches", Some(&oncall),
        &json!({"scope": "global", "state": "off", "cut_streams": true, "reason": "INC-9 stop everything"})).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let got = reader.await.unwrap();
    assert!(
        got.contains("\"content\":\"tok"),
        "the first event arrived: {got}"
    );
    assert!(got.contains("\"code\":\"switched_off\""), "{got}");
    assert!(!got.contains("[DONE]"), "{got}");
    assert_eq!(chat(&w, false, 8).await.status(), 503);
    w.metrics_with(&["warden_stream_errors_total{kind=\"switched_off\"} 1"])
        .await;
    let _ = std::fs::remove_dir_all(dir);
}
