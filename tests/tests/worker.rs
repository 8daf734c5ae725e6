//! End-to-end against the real worker (`warden worker` on the bundled model), directly and
//! behind Warden: the proxy's core paths with a real model, cancellation on client disconnect,
//! queue overflow, and the worker's own request errors.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use warden_tests::harness::{self, error_of, post, send, UpstreamSpec, Warden, Worker, KEY};
use warden_tests::http1::Conn;
use warden_tests::upstream::sse_events;

const MODEL: &str = "warden-tiny";

async fn proxied(worker: &Worker, tenant_toml: &str) -> Warden {
    let tenants = format!(
        "[[tenants]]\nname = \"t\"\napi_keys = [\"{}\"]\n{tenant_toml}\n",
        harness::key_hash(KEY)
    );
    let w = Warden::start(
        &[UpstreamSpec::new("worker", worker.addr, &[MODEL]).extra("health_path = \"/health\"")],
        "",
        &tenants,
    );
    w.wait_ready().await;
    w
}

fn chat(content: &str, extra: &str) -> String {
    format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"{content}"}}],"temperature":0{extra}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_works_in_front_of_the_real_worker() {
    let worker = Worker::start(&[]);
    let w = proxied(&worker, "max_tokens = 12").await;

    // Non-streaming: a real completion, max_tokens clamped to the tenant cap.
    let r = send(
        w.proxy,
        &post(
            "/v1/chat/completions",
            &chat("Tell me a story", r#","max_tokens":500"#),
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
    let v = r.json().unwrap();
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 12);

    // Streaming: events as they are generated, [DONE] last, Warden's injected usage hidden.
    let r = send(
        w.proxy,
        &post(
            "/v1/chat/completions",
            &chat("Tell me a story", r#","stream":true"#),
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.len() >= 3, "{events:?}");
    assert!(
        events.iter().all(|e| !e.contains("\"usage\"")),
        "{events:?}"
    );
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    // Greedy: the stream carries the same text as the non-streaming answer.
    let plain = send(
        w.proxy,
        &post("/v1/chat/completions", &chat("Tell me a story", ""), ""),
    )
    .await
    .unwrap();
    assert_eq!(
        text,
        plain.json().unwrap()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );

    // The client asking for usage gets it from the worker.
    let r = send(
        w.proxy,
        &post(
            "/v1/chat/completions",
            &chat(
                "Hi",
                r#","stream":true,"stream_options":{"include_usage":true}"#,
            ),
            "",
        ),
    )
    .await
    .unwrap();
    assert!(sse_events(&r.body).iter().any(|e| e.contains("\"usage\"")));

    // Tokens reported by the worker are counted for the tenant.
    w.metrics_with(&["warden_tokens_total{tenant=\"t\",type=\"output\"}"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_cancels_the_sequence_and_frees_its_kv() {
    let worker = Worker::start(&[]);
    let w = proxied(&worker, "max_tokens = 400").await;
    let body = chat(
        "Tell me a long story",
        r#","stream":true,"max_tokens":400,"ignore_eos":true"#,
    );
    let mut conn = Conn::new(tokio::net::TcpStream::connect(w.proxy).await.unwrap());
    conn.write_all(&post("/v1/chat/completions", &body, ""))
        .await
        .unwrap();
    let (head, _) = conn.read_response_head().await.unwrap();
    assert_eq!(head.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = worker.metric("warden_worker_requests_running").await;
    assert_eq!(running, 1.0, "the sequence should be generating");
    conn.get_mut().shutdown().await.ok();
    drop(conn);
    worker.wait_cancelled("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_queue_answers_503_with_retry_after() {
    let worker = Worker::start(&["--max-waiting", "1", "--max-batch", "1"]);
    let body = format!(
        r#"{{"model":"{MODEL}","prompt":"And it came to pass","max_tokens":300,"temperature":0,"ignore_eos":true}}"#
    );
    let raw = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let raw = raw.clone();
            let addr = worker.addr;
            tokio::spawn(async move { send(addr, raw.as_bytes()).await.unwrap() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status() == 503 {
            assert_eq!(r.header("retry-after"), Some("1"));
            assert_eq!(error_of(&r)["code"], "queue_full");
        }
        statuses.push(r.status());
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.contains(&503), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_rejects_bad_requests_with_openai_errors() {
    let worker = Worker::start(&[]);
    let cases = [
        ("/v1/chat/completions", "{".to_string(), 400, "invalid_json"),
        (
            "/v1/chat/completions",
            format!(r#"{{"model":"{MODEL}","messages":"x"}}"#),
            400,
            "invalid_type",
        ),
        (
            "/v1/completions",
            r#"{"model":"gpt-9","prompt":"x"}"#.to_string(),
            404,
            "model_not_found",
        ),
        (
            "/v1/completions",
            format!(r#"{{"model":"{MODEL}","prompt":"x","max_tokens":100000}}"#),
            400,
            "context_length_exceeded",
        ),
        (
            "/v1/completions",
            format!(r#"{{"model":"{MODEL}","prompt":"x","n":3}}"#),
            400,
            "unsupported_value",
        ),
    ];
    for (path, body, status, code) in cases {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let r = send(worker.addr, raw.as_bytes()).await.unwrap();
        assert_eq!(r.status(), status, "{body}: {}", r.text());
        assert_eq!(error_of(&r)["code"], code, "{body}");
    }
}

/// `[detectors] logprobs`: Warden asks the real worker for log-probabilities the client did not
/// ask for, records their summary, and the client gets none (streamed or not); a client that
/// asked gets them untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_asks_for_logprobs_and_keeps_them_from_clients_that_did_not() {
    let worker = Worker::start(&[]);
    let tenants = format!(
        "[[tenants]]\nname = \"t\"\napi_keys = [\"{}\"]\nmax_tokens = 8\n",
        harness::key_hash(KEY)
    );
    let w = Warden::start(
        &[UpstreamSpec::new("worker", worker.addr, &[MODEL]).extra("health_path = \"/health\"")],
        "\n[detectors]\nlogprobs = true\n",
        &tenants,
    );
    w.wait_ready().await;
    let r = send(
        w.proxy,
        &post(
            "/v1/chat/completions",
            &chat("Hello there", ""),
            "x-request-id: lp-plain\r\n",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
    let v = r.json().unwrap();
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
    let r = send(
        w.proxy,
        &post(
            "/v1/chat/completions",
            &chat("Hello there", r#","stream":true"#),
            "x-request-id: lp-stream\r\n",
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let events = sse_events(&r.body);
    assert!(events.len() > 2, "{}", r.text());
    assert!(
        !r.text().contains("top_logprobs"),
        "log-probabilities reached a client that did not ask: {}",
        r.text()
    );
    let r = send(
        w.proxy,
        &post(
            "/v1/chat/completions",
            &chat("Hello there", r#","logprobs":true,"top_logprobs":2"#),
            "x-request-id: lp-asked\r\n",
        ),
    )
    .await
    .unwrap();
    let v = r.json().unwrap();
    assert!(v["choices"][0]["logprobs"]["content"].is_array(), "{v}");
    for id in ["lp-plain", "lp-stream", "lp-asked"] {
        assert!(
            w.wait_log(&format!("request_id={id}")).await,
            "{id} not logged"
        );
        let logs = w.logs();
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("request_id={id}")) && l.contains("logprob_mean"))
            .unwrap_or_else(|| panic!("no logprob summary for {id}:\n{logs}"));
        assert!(
            line.contains("logprob_mean=-") || line.contains("logprob_mean=0"),
            "{line}"
        );
        assert!(line.contains("token_entropy="), "{line}");
    }
}
