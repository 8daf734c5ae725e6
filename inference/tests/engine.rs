//! The engine against the bundled model, through the crate API (no HTTP): determinism,
//! batching and prefix-cache equivalence, KV bounds, queueing and cancellation.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use warden_inference::engine::{Event, GenRequest, SubmitError};
use warden_inference::sampler::SamplingParams;
use warden_inference::{load, Loaded, WorkerOptions};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("model")
}

fn loaded(kv_mib: usize, prefix_mib: usize, max_waiting: usize, max_batch: usize) -> Loaded {
    // ONNX Runtime writes a cache under $HOME; keep it out of the real one.
    let ort = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ort/libonnxruntime.so.1.31.1");
    load(&WorkerOptions {
        model_dir: model_dir(),
        listen: "127.0.0.1:0".parse().unwrap(),
        served_model_name: Some("warden-tiny".into()),
        ort_lib: Some(ort),
        threads: 2,
        kv_cache_bytes: Some(kv_mib << 20),
        prefix_cache_bytes: prefix_mib << 20,
        max_waiting,
        max_batch,
    })
    .unwrap_or_else(|e| panic!("loading the bundled model (run tests/scripts/setup.sh first): {e}"))
}

fn greedy() -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        seed: None,
    }
}

fn request(
    prompt: Vec<u32>,
    max_tokens: usize,
    sampling: SamplingParams,
) -> (GenRequest, UnboundedReceiver<Event>) {
    let (tx, rx) = unbounded_channel();
    (
        GenRequest {
            prompt,
            max_tokens,
            sampling,
            stop: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
            ignore_eos: false,
            events: tx,
        },
        rx,
    )
}

/// Token ids until the request finishes.
async fn collect(mut rx: UnboundedReceiver<Event>) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token { token, .. } => out.push(token),
            Event::Done { .. } => break,
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    out
}

fn encode(l: &Loaded, text: &str) -> Vec<u32> {
    l.state
        .tokenizer
        .encode(text, false)
        .unwrap()
        .get_ids()
        .to_vec()
}

async fn run_one(l: &Loaded, prompt: Vec<u32>, n: usize, s: SamplingParams) -> Vec<u32> {
    let (req, rx) = request(prompt, n, s);
    l.state.engine.submit(req).unwrap();
    collect(rx).await
}

#[tokio::test]
async fn matches_the_onnxruntime_python_fixtures() {
    let l = loaded(256, 0, 64, 64);
    let fixtures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir().join("fixtures.json")).unwrap())
            .unwrap();
    let cases = fixtures["cases"]
        .as_array()
        .expect("fixtures.json has cases");
    assert!(!cases.is_empty());
    for case in cases {
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let got = run_one(&l, prompt, want.len(), greedy()).await;
        // The model may emit end-of-text before the fixture length; compare what was produced.
        assert_eq!(got, want[..got.len()], "prompt {}", case["prompt"]);
    }
}

#[tokio::test]
async fn greedy_and_seeded_sampling_are_deterministic() {
    let l = loaded(256, 0, 64, 64);
    let p = encode(&l, "The king said unto the people");
    let a = run_one(&l, p.clone(), 24, greedy()).await;
    let b = run_one(&l, p.clone(), 24, greedy()).await;
    assert_eq!(a, b);
    assert!(!a.is_empty());
    let seeded = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        seed: Some(7),
    };
    let c = run_one(&l, p.clone(), 24, seeded).await;
    let d = run_one(&l, p.clone(), 24, seeded).await;
    assert_eq!(c, d);
}

#[tokio::test]
async fn batched_and_unbatched_generation_agree() {
    let l = loaded(256, 0, 64, 64);
    let prompts: Vec<Vec<u32>> = [
        "And it came to pass",
        "In the beginning",
        "The Lord is my shepherd; I shall not",
        "Blessed are the",
    ]
    .iter()
    .map(|t| encode(&l, t))
    .collect();
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(run_one(&l, p.clone(), 20, greedy()).await);
    }
    // All submitted at once: they are decoded together, with different past lengths (padded).
    let rxs: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (req, rx) = request(p.clone(), 20, greedy());
            l.state.engine.submit(req).unwrap();
            rx
        })
        .collect();
    let mut together = Vec::new();
    for rx in rxs {
        together.push(collect(rx).await);
    }
    assert_eq!(together, alone);
}

/// Requests joining (and leaving) a running batch between decode steps get exactly the tokens
/// they get alone: the batch's caches are carried across the change.
#[tokio::test]
async fn requests_joining_a_running_batch_get_the_same_tokens() {
    let l = loaded(256, 0, 64, 64);
    let prompts: Vec<Vec<u32>> = [
        "And God said",
        "Now the serpent was more subtil",
        "Behold, a virgin",
    ]
    .iter()
    .map(|t| encode(&l, t))
    .collect();
    let lengths = [40, 12, 25];
    let mut alone = Vec::new();
    for (p, n) in prompts.iter().zip(lengths) {
        alone.push(run_one(&l, p.clone(), n, greedy()).await);
    }
    // Stagger: each request arrives while the earlier ones are mid-generation, and the short
    // one leaves while the others continue.
    let mut rxs = Vec::new();
    for (p, n) in prompts.iter().zip(lengths) {
        let (req, mut rx) = request(p.clone(), n, greedy());
        l.state.engine.submit(req).unwrap();
        let mut first = Vec::new();
        for _ in 0..3 {
            match rx.recv().await {
                Some(Event::Token { token, .. }) => first.push(token),
                other => panic!("{other:?}"),
            }
        }
        rxs.push((first, rx));
    }
    let mut together = Vec::new();
    for (mut first, rx) in rxs {
        first.extend(collect(rx).await);
        together.push(first);
    }
    assert_eq!(together, alone);
}

/// Streamed text deltas add up to the whole text, and a stop string cuts it exactly before the
/// stop with `finish_reason: stop`.
#[tokio::test]
async fn stop_strings_cut_the_text_exactly() {
    let l = loaded(256, 0, 64, 64);
    let p = encode(&l, "And the LORD said unto Moses");
    let text_of = |mut rx: UnboundedReceiver<Event>| async move {
        let mut text = String::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token { text: t, .. } => text.push_str(&t),
                Event::Done {
                    text: t,
                    finish_reason,
                    ..
                } => {
                    text.push_str(&t);
                    return (text, finish_reason);
                }
                Event::Error(e) => panic!("{e}"),
            }
        }
        panic!("no Done event");
    };
    let (req, rx) = request(p.clone(), 40, greedy());
    l.state.engine.submit(req).unwrap();
    let (full, _) = text_of(rx).await;
    assert!(full.len() > 20, "{full:?}");
    // A stop string taken from the middle of the greedy text.
    let at = full
        .char_indices()
        .map(|(i, _)| i)
        .find(|i| *i >= full.len() / 2)
        .unwrap();
    let stop: String = full[at..].chars().take(4).collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let (mut req, rx) = request(p, 40, greedy());
    req.stop = vec![stop.clone()];
    l.state.engine.submit(req).unwrap();
    let (cut, reason) = text_of(rx).await;
    assert_eq!(cut, expected, "stop {stop:?}");
    assert_eq!(reason, warden_inference::engine::FinishReason::Stop);
}

#[tokio::test]
async fn prefix_cache_hits_produce_the_same_tokens_as_misses() {
    let system =
        "You are a helpful assistant who answers in the manner of an old book, with care. "
            .repeat(3);
    let with_cache = loaded(256, 64, 64, 64);
    let without = loaded(256, 0, 64, 64);
    for question in ["What is wisdom?", "Who was the first king?"] {
        let p = encode(&with_cache, &format!("{system}{question}"));
        let miss = run_one(&without, p.clone(), 16, greedy()).await;
        let first = run_one(&with_cache, p.clone(), 16, greedy()).await;
        let hit = run_one(&with_cache, p.clone(), 16, greedy()).await;
        assert_eq!(first, miss);
        assert_eq!(hit, miss);
    }
    let s = &with_cache.state.engine.stats;
    assert!(
        s.prefix_hits.load(Ordering::Relaxed) >= 2,
        "expected hits, got {:?}",
        s
    );
}

#[tokio::test]
async fn kv_cache_never_exceeds_its_bound_under_64_concurrent_requests() {
    // Room for only a few sequences at a time: the rest must wait, not overflow.
    let l = loaded(4, 0, 128, 64);
    let limit = 4usize << 20;
    let p = encode(&l, "And the earth was without form");
    let rxs: Vec<_> = (0..64)
        .map(|_| {
            let (req, rx) = request(p.clone(), 24, greedy());
            l.state.engine.submit(req).unwrap();
            rx
        })
        .collect();
    let mut outputs = Vec::new();
    for rx in rxs {
        outputs.push(collect(rx).await);
    }
    assert!(outputs.iter().all(|o| o == &outputs[0] && !o.is_empty()));
    let s = &l.state.engine.stats;
    let peak = s.kv_peak.load(Ordering::Relaxed);
    assert!(peak > 0 && peak <= limit, "peak {peak} > limit {limit}");
    // Stats are published at the end of the engine iteration that sent the last tokens.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.kv_reserved.load(Ordering::Relaxed) != 0 {
        assert!(
            Instant::now() < deadline,
            "KV still reserved after every request finished"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_full_queue_is_refused_and_too_long_requests_are_rejected() {
    let l = loaded(1, 0, 2, 1);
    let p = encode(&l, "Let there be light");
    let mut rxs = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let (req, rx) = request(p.clone(), 100, greedy());
        match l.state.engine.submit(req) {
            Ok(()) => rxs.push(rx),
            Err(SubmitError::QueueFull) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        refused > 0,
        "a queue of 2 must refuse some of 20 instant submissions"
    );
    let (req, _rx) = request(p.clone(), 1_000_000, greedy());
    assert!(matches!(
        l.state.engine.submit(req),
        Err(SubmitError::TooLong { .. })
    ));
    drop(rxs);
}

#[tokio::test]
async fn cancelled_sequences_free_their_kv() {
    let l = loaded(64, 0, 16, 16);
    let p = encode(&l, "Hear, O Israel");
    let (req, mut rx) = request(p, 200, greedy());
    l.state.engine.submit(req).unwrap();
    // Wait for the first token, then hang up.
    assert!(matches!(rx.recv().await, Some(Event::Token { .. })));
    drop(rx);
    let s = &l.state.engine.stats;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.kv_reserved.load(Ordering::Relaxed) != 0 || s.running.load(Ordering::Relaxed) != 0 {
        assert!(Instant::now() < deadline, "KV not freed after cancellation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
