//! End-to-end: the output guard in the real `warden` binary, over replies the fake upstream is
//! scripted to say (`x-fake-reply`). A key the model streams split over three chunks reaches the
//! client in no byte, masked; a non-streamed reply is masked the same; a `block` output rule ends
//! a stream with `content_filter`, an `output_blocked` error event and `[DONE]`, and empties a
//! non-streamed reply; `monitor` records without changing a byte; nothing of a reply is logged.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::{json, Value};
use warden_tests::harness::{self, post, send, UpstreamSpec, Warden, KEY};
use warden_tests::http1::Response;
use warden_tests::upstream::{sse_events, FakeUpstream};

const MODEL: &str = "test-model";

/// A GitHub token (SEC-5003 of the shipped secrets pack), made up.
const TOKEN: &str = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";

/// An output rule that blocks, beside the shipped packs.
const BLOCK_PACK: &str = r#"
[pack]
name = "test-output"
title = "Test output rules"
description = "A protected code name the model must never say."

[[rule]]
id = "TST-9001"
title = "Protected code name"
description = "The code name of a project."
severity = "critical"
paranoia = 1
targets = ["output"]
action = "block"
views = ["folded"]
literals = ["operation nightjar"]
must_match = ["the plan is Operation Nightjar"]
must_not_match = ["a nightjar is a bird"]
"#;

/// A rules directory with the shipped packs and `extra`.
fn rules_dir(name: &str, extra: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "warden-output-{name}-{}-{}",
        std::process::id(),
        harness::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(harness::repo_root().join("rules")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    if let Some(pack) = extra {
        std::fs::write(dir.join("zz-test-output.toml"), pack).unwrap();
    }
    dir
}

async fn warden(up: &FakeUpstream, rules: Option<&PathBuf>, tenant_toml: &str) -> Warden {
    let guard = rules.map_or(String::new(), |d| {
        format!("\n[guard]\nrules_dir = {:?}\n", d.display().to_string())
    });
    let tenants = format!(
        "[[tenants]]\nname = \"t\"\napi_keys = [\"{}\"]\n{tenant_toml}\n",
        harness::key_hash(KEY)
    );
    let w = Warden::start(
        &[UpstreamSpec::new("fake", up.addr(), &[MODEL])],
        &guard,
        &tenants,
    );
    w.wait_ready().await;
    w
}

/// A chat request whose reply is `pieces`, streamed or not.
async fn chat(w: &Warden, pieces: &[&str], stream: bool) -> Response {
    let body = json!({
        "model": MODEL,
        "stream": stream,
        "messages": [{"role": "user", "content": "What is my token?"}],
    })
    .to_string();
    let script = serde_json::to_string(pieces).unwrap();
    send(
        w.proxy,
        &post(
            "/v1/chat/completions",
            &body,
            &format!("x-fake-reply: {script}\r\n"),
        ),
    )
    .await
    .expect("response")
}

/// The stream ended with the `output_blocked` error event (before `[DONE]`) naming `rule`.
fn assert_stopped_by(events: &[String], rule: &str) {
    let error: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "output_blocked", "{error}");
    assert!(
        error["error"]["rule_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == rule),
        "{error}"
    );
}

/// The text a client assembles from a stream's chunks, and the parsed events.
fn assembled(r: &Response) -> (String, Vec<String>) {
    let events = sse_events(&r.body);
    let text = events
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    (text, events)
}

#[tokio::test]
async fn a_key_split_over_three_chunks_reaches_the_client_in_no_byte() {
    let up = harness::recording_upstream(MODEL).await;
    let w = warden(&up, None, "").await;
    let pieces = [
        "Your token is ",
        &TOKEN[..10],
        &TOKEN[10..27],
        &TOKEN[27..],
        " — keep it safe.",
    ];
    let r = chat(&w, &pieces, true).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let body = r.text();
    // Not the key, nor any piece of it, nor its prefix.
    for needle in ["ghp_", &TOKEN[4..10], &TOKEN[10..27], &TOKEN[27..]] {
        assert!(
            !body.contains(needle),
            "{needle:?} reached the client: {body}"
        );
    }
    let (text, events) = assembled(&r);
    assert_eq!(text, "Your token is [REDACTED:SEC-5003] — keep it safe.");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events
        .iter()
        .any(|e| e.contains("\"finish_reason\":\"stop\"")));

    w.metrics_with(&[
        "warden_output_decisions_total{decision=\"mask\",mode=\"enforce\",tenant=\"t\"} 1",
        "warden_output_rule_hits_total{rule=\"SEC-5003\"} 1",
        "warden_output_masks_total{tenant=\"t\"} 1",
        "warden_output_hold_bytes ",
    ])
    .await;
    assert!(
        w.wait_log("output_rules=\"SEC-5003\"").await || w.wait_log("output_rules=SEC-5003").await,
        "{}",
        w.logs()
    );
    assert!(!w.logs().contains(&TOKEN[10..27]), "reply text in the log");
}

#[tokio::test]
async fn a_non_streamed_reply_is_masked_the_same() {
    let up = harness::recording_upstream(MODEL).await;
    let w = warden(&up, None, "").await;
    let r = chat(&w, &["Your token is ", TOKEN, "."], false).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(
        v.pointer("/choices/0/message/content").unwrap(),
        "Your token is [REDACTED:SEC-5003]."
    );
    assert_eq!(v.pointer("/choices/0/finish_reason").unwrap(), "stop");
    assert!(!r.text().contains("ghp_"));
    // Usage still counted from the rewritten body.
    assert_eq!(v.pointer("/usage/completion_tokens").unwrap(), 3);
}

#[tokio::test]
async fn a_block_rule_ends_the_stream_with_content_filter() {
    let up = harness::recording_upstream(MODEL).await;
    let dir = rules_dir("block", Some(BLOCK_PACK));
    let w = warden(&up, Some(&dir), "").await;
    let r = chat(
        &w,
        &[
            "The plan is Operation ",
            "Night",
            "jar, and it starts Monday.",
        ],
        true,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let (text, events) = assembled(&r);
    assert!(
        !r.text().to_lowercase().contains("nightjar") && !text.contains("Monday"),
        "{}",
        r.text()
    );
    let n = events.len();
    assert!(n >= 3, "{events:?}");
    let filter: Value = serde_json::from_str(&events[n - 3]).unwrap();
    assert_eq!(filter["choices"][0]["finish_reason"], "content_filter");
    let error: Value = serde_json::from_str(&events[n - 2]).unwrap();
    assert_eq!(error["error"]["code"], "output_blocked", "{error}");
    assert_eq!(error["error"]["rule_ids"], json!(["TST-9001"]));
    assert!(error["error"]["request_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(events[n - 1], "[DONE]");

    let r = chat(&w, &["It is operation nightjar."], false).await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let v = r.json().unwrap();
    assert_eq!(
        v.pointer("/choices/0/finish_reason").unwrap(),
        "content_filter"
    );
    assert!(v.pointer("/choices/0/message/content").unwrap().is_null());
    assert!(!r.text().to_lowercase().contains("nightjar"));

    w.metrics_with(&[
        "warden_output_decisions_total{decision=\"block\",mode=\"enforce\",tenant=\"t\"} 2",
        "warden_stream_errors_total{kind=\"output_blocked\"} 1",
    ])
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn monitor_records_and_off_skips_without_changing_a_byte() {
    let up = harness::recording_upstream(MODEL).await;
    for (mode, recorded) in [("monitor", true), ("off", false)] {
        let w = warden(
            &up,
            None,
            &format!("[tenants.guard]\noutput = \"{mode}\"\n"),
        )
        .await;
        let r = chat(&w, &["Your token is ", TOKEN], true).await;
        let (text, _) = assembled(&r);
        assert_eq!(text, format!("Your token is {TOKEN}"), "{mode}");
        // The decision is counted when the stream ends, which may be after the client has the
        // last byte: wait for it where it is expected.
        let decision =
            "warden_output_decisions_total{decision=\"mask\",mode=\"monitor\",tenant=\"t\"} 1";
        let needles: &[&str] = if recorded {
            &["warden_requests_total", decision]
        } else {
            &["warden_requests_total"]
        };
        let m = w.metrics_with(needles).await;
        assert_eq!(m.contains(decision), recorded, "{mode}: {m}");
    }
}

/// A tenant with a pinned system prompt and a protected string: Warden plants a canary in the
/// prompt; a model that repeats its prompt is cut off (the canary gives it away), the event row
/// says `canary_leak`, and a reply that gives away the protected string spelled out is cut too.
#[tokio::test]
async fn a_model_that_repeats_its_system_prompt_is_cut_off() {
    let up = harness::recording_upstream(MODEL).await;
    // A short prompt: what gives the copy away is the canary Warden adds to it.
    let tenant = "[tenants.guard]\nsystem_prompt = \"Be brief.\"\nprotected = [\"TRAM-32\"]\n";
    let w = warden(&up, None, tenant).await;
    let body = json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "Hello there."}]}).to_string();
    let r = send(
        w.proxy,
        &post("/v1/chat/completions", &body, "x-fake-echo-system: 1\r\n"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
    // The upstream got the pinned prompt with the canary line.
    let sent: Value = serde_json::from_slice(&up.last_post().body).unwrap();
    let system = sent["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(system.starts_with("Be brief."), "{system}");
    let canary = system
        .split_whitespace()
        .find(|w| w.starts_with("wdn-"))
        .expect("a canary in the pinned prompt")
        .trim_end_matches('.')
        .to_string();
    // Not the canary, nor its beginning.
    assert!(!r.text().contains(&canary[..7]), "{}", r.text());
    assert_stopped_by(&assembled(&r).1, "leak:canary");

    let r = chat(&w, &["The code is T R A M", " - 3 2, don't tell."], false).await;
    let v = r.json().unwrap();
    assert_eq!(
        v.pointer("/choices/0/finish_reason").unwrap(),
        "content_filter"
    );
    // Streamed, the spelled-out code is held from its first letter: none of it is sent.
    let r = chat(
        &w,
        &["The code is T R", " A M", " - 3 2, don't tell."],
        true,
    )
    .await;
    let (text, _) = assembled(&r);
    assert_eq!(text, "The code is ", "{}", r.text());

    let r = chat(&w, &["I'm sorry, but I can't help with that."], true).await;
    assert_eq!(assembled(&r).0, "I'm sorry, but I can't help with that.");
    w.metrics_with(&[
        "warden_output_leaks_total{kind=\"canary\",tenant=\"t\"} 1",
        "warden_output_leaks_total{kind=\"verbatim\",tenant=\"t\"} 2",
        "warden_refusals_total{model=\"test-model\",tenant=\"t\"} 1",
    ])
    .await;
    assert!(!w.logs().contains(&canary), "the canary in the log");
}

/// The output guard's paraphrase check on the real sentence encoder: a model that restates its
/// pinned system prompt in other words (no identifier, no word run of the prompt) is stopped two
/// clauses in; a reply that follows the prompt without reciting it passes; with the check off in
/// the tenant, the restatement passes too.
#[tokio::test]
async fn a_model_that_restates_its_system_prompt_in_other_words_is_cut_off() {
    let up = harness::recording_upstream(MODEL).await;
    let encoder = harness::repo_root().join("guards/models/minilm");
    let guard = format!(
        "\n[guard]\nparaphrase = \"on\"\nencoder_dir = {:?}\n",
        encoder.display().to_string()
    );
    let prompt = "You are Max, the support assistant of Contoso Travel. Do not reveal internal \
        pricing tiers. Keep replies under 120 words. Never discuss interest rates before the \
        customer is verified. Answer in a friendly tone.";
    let tenants = format!(
        "[[tenants]]\nname = \"t\"\napi_keys = [\"{}\"]\n[tenants.guard]\nsystem_prompt = {prompt:?}\n\n\
         [[tenants]]\nname = \"u\"\napi_keys = [\"{}\"]\n[tenants.guard]\nsystem_prompt = {prompt:?}\nleak_paraphrase = false\n",
        harness::key_hash(KEY),
        harness::key_hash("sk-other-tenant-key-0123456789"),
    );
    let w = Warden::start(
        &[UpstreamSpec::new("fake", up.addr(), &[MODEL])],
        &guard,
        &tenants,
    );
    w.wait_ready().await;
    w.metrics_with(&["warden_guard_encoder_loaded 1"]).await;
    let restated = [
        "Basically I play Max for Contoso Travel: ",
        "I'm meant to keep our internal price levels to myself, ",
        "my answers should stay fairly short, ",
        "and I'm supposed to avoid talking about rates until a customer has proven who they are.",
    ];
    let r = chat(&w, &restated, true).await;
    let (text, events) = assembled(&r);
    assert!(!text.contains("avoid talking about rates"), "{text}");
    assert_stopped_by(&events, "leak:paraphrase");
    // Not streamed: the whole reply is judged before any of it is sent.
    let v = chat(&w, &restated, false).await.json().unwrap();
    assert_eq!(
        v.pointer("/choices/0/finish_reason").unwrap(),
        "content_filter"
    );
    // Following the prompt is not reciting it.
    let follows = [
        "Hi, I'm Max from Contoso Travel. ",
        "Before we talk about rates, could you confirm your identity with the code we texted you?",
    ];
    assert_eq!(
        assembled(&chat(&w, &follows, true).await).0,
        follows.concat()
    );
    // The other tenant turned the check off.
    let body =
        json!({"model": MODEL, "stream": false, "messages": [{"role": "user", "content": "Hi"}]})
            .to_string();
    let header = format!(
        "x-fake-reply: {}\r\n",
        serde_json::to_string(&restated).unwrap()
    );
    let request = String::from_utf8(post("/v1/chat/completions", &body, &header))
        .unwrap()
        .replace(KEY, "sk-other-tenant-key-0123456789");
    let r = send(w.proxy, request.as_bytes()).await.unwrap();
    assert_eq!(
        r.json()
            .unwrap()
            .pointer("/choices/0/message/content")
            .unwrap(),
        &json!(restated.concat())
    );
    w.metrics_with(&["warden_output_leaks_total{kind=\"paraphrase\",tenant=\"t\"} 2"])
        .await;
}

/// A chat request with `tools` and a scripted tool call as the reply.
async fn tool_call(w: &Warden, tools: Value, name: &str, args: &[&str], stream: bool) -> Response {
    let mut body = json!({
        "model": MODEL,
        "stream": stream,
        "messages": [{"role": "user", "content": "Find something."}],
    });
    if !tools.is_null() {
        body["tools"] = tools;
    }
    let call = json!({"name": name, "arguments": args}).to_string();
    send(
        w.proxy,
        &post(
            "/v1/chat/completions",
            &body.to_string(),
            &format!("x-fake-tool-call: {call}\r\n"),
        ),
    )
    .await
    .expect("response")
}

fn search_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "search",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": false},
    }}])
}

/// Streamed tool calls are held until complete, then checked: an undeclared tool is stopped
/// before any byte of its arguments reaches the client; a declared one arrives whole, its
/// arguments masked; arguments that break the schema stop a non-streamed reply.
#[tokio::test]
async fn streamed_tool_calls_are_checked_before_the_client_sees_them() {
    let up = harness::recording_upstream(MODEL).await;
    let w = warden(&up, None, "").await;

    let r = tool_call(
        &w,
        Value::Null,
        "shell",
        &["{\"cmd\": ", "\"rm -rf /\"}"],
        true,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    assert!(
        !r.text().contains("rm -rf") && !r.text().contains("shell"),
        "{}",
        r.text()
    );
    let (_, events) = assembled(&r);
    let n = events.len();
    let filter: Value = serde_json::from_str(&events[n - 3]).unwrap();
    assert_eq!(filter["choices"][0]["finish_reason"], "content_filter");
    let error: Value = serde_json::from_str(&events[n - 2]).unwrap();
    assert_eq!(error["error"]["code"], "output_blocked");
    assert_eq!(error["error"]["rule_ids"], json!(["tool:undeclared"]));
    assert_eq!(events[n - 1], "[DONE]");

    let args = ["{\"q\": \"", "token ", &TOKEN[..12], &TOKEN[12..], "\"}"];
    let r = tool_call(&w, search_tool(), "search", &args, true).await;
    let (_, events) = assembled(&r);
    let calls: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v.pointer("/choices/0/delta/tool_calls").cloned())
        .collect();
    assert_eq!(calls.len(), 1, "one delta with the whole call: {events:?}");
    assert_eq!(calls[0][0]["function"]["name"], "search");
    assert_eq!(calls[0][0]["id"], "call_fake");
    let sent: Value =
        serde_json::from_str(calls[0][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(sent["q"], "token [REDACTED:SEC-5003]");
    assert!(events
        .iter()
        .any(|e| e.contains("\"finish_reason\":\"tool_calls\"")));

    let r = tool_call(
        &w,
        search_tool(),
        "search",
        &["{\"q\": 1, \"cmd\": \"ls\"}"],
        false,
    )
    .await;
    let v = r.json().unwrap();
    assert_eq!(
        v.pointer("/choices/0/finish_reason").unwrap(),
        "content_filter",
        "{v}"
    );
    assert!(v.pointer("/choices/0/message/tool_calls").is_none(), "{v}");

    w.metrics_with(&[
        "warden_output_rule_hits_total{rule=\"tool:undeclared\"} 1",
        "warden_output_rule_hits_total{rule=\"tool:invalid_arguments\"} 1",
    ])
    .await;
}
