//! The input guard's classifier layer on the model the repository ships, one ONNX session of one
//! thread unless said:
//!
//! 1. one text of 64, 128, 256 and 512 tokens (English prose from the benchmark corpus), p50 and
//!    p99 of single calls, with the rules alone on the same text as the baseline;
//! 2. the whole guard as the proxy runs it (rules, then the classifier on the folded text, at
//!    most `[guard] classifier_max_windows` = 8 windows) on 1 and 4 KiB of several corpus
//!    classes, against the rules alone on the same text;
//! 3. throughput on 256-token texts: one thread, and two threads each with its own session
//!    (what `classifier_threads = 2` gives), texts per second.
//!
//! Needs `tests/scripts/setup.sh` (ONNX Runtime). Run:
//! `cargo bench -p warden-proxy --bench classifier`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use warden_guards::classifier::{classify_request, Classified, ClassifierPolicy};
use warden_guards::normalize::floor_boundary;
use warden_guards::{Engine, Message, Policy, RuleSet, Target};
use warden_proxy::config::{GuardConfig, Paraphrase};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus(class: &str, bytes: usize) -> String {
    let full =
        std::fs::read_to_string(root().join(format!("guards/benches/corpus/{class}.txt"))).unwrap();
    full[..floor_boundary(&full, bytes)].to_string()
}

/// p50 and p99 of `f` over about `secs` seconds (at least 20 calls).
fn times(secs: f64, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut t = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end || t.len() < 20 {
        let s = Instant::now();
        f();
        t.push(s.elapsed());
    }
    t.sort();
    (t[t.len() / 2], t[(t.len() * 99 / 100).min(t.len() - 1)])
}

/// The longest prefix of `text` whose tokens, with `[CLS]` and `[SEP]`, number at most `tokens`.
fn cut_to_tokens<'a>(
    c: &warden_inference::classifier::Classifier,
    text: &'a str,
    tokens: usize,
) -> &'a str {
    let count = |t: &str| c.token_count(t).unwrap() + 2;
    let (mut lo, mut hi) = (0, text.len());
    while lo < hi {
        let mid = floor_boundary(text, (lo + hi).div_ceil(2));
        if mid <= lo {
            break;
        }
        if count(&text[..mid]) > tokens {
            hi = mid - 1;
        } else {
            lo = mid;
        }
    }
    &text[..floor_boundary(text, lo)]
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn main() {
    std::env::set_var(
        "ORT_DYLIB_PATH",
        root().join("inference/.ort/libonnxruntime.so.1.31.1"),
    );
    let dir = root().join("guards/models/classifier");
    let config = |threads| GuardConfig {
        classifier: Paraphrase::On,
        classifier_dir: Some(dir.clone()),
        classifier_threads: threads,
        ..GuardConfig::default()
    };
    let c = warden_proxy::guard::load_classifier(&config(1))
        .unwrap()
        .unwrap();
    let raw = warden_inference::classifier::Classifier::load(&dir, None, 1).unwrap();
    let engine = Engine::compile(RuleSet::embedded().unwrap()).unwrap();
    let policy = Policy::default();
    let cp = ClassifierPolicy {
        deadline: Duration::from_secs(60),
        ..ClassifierPolicy::default()
    };

    println!("1. one text, one thread");
    let prose = corpus("prose_en", 16 * 1024);
    for tokens in [64usize, 128, 256, 512] {
        let text = cut_to_tokens(&raw, &prose, tokens);
        let windows = if tokens > 256 { 8 } else { 1 };
        let (p50, p99) = times(3.0, || {
            black_box(raw.score(text, false, windows, None).unwrap());
        });
        let msgs = [Message {
            target: Target::User,
            text,
        }];
        let (r50, _) = times(1.0, || {
            black_box(policy.inspect(&engine, &msgs, None));
        });
        let w = raw.windows(text, false, windows).unwrap().0.len();
        println!(
            "  {tokens:>3} tokens ({} bytes, {w} window(s)): classifier p50 {}, p99 {}; rules alone p50 {}",
            text.len(),
            ms(p50),
            ms(p99),
            ms(r50)
        );
    }

    println!("2. the whole guard (rules + classifier on the folded text, <= 8 windows)");
    for class in [
        "prose_en",
        "answers_md",
        "jailbreak",
        "lang_ru",
        "lang_zh",
        "tool_json",
    ] {
        for kib in [1usize, 4] {
            let text = corpus(class, kib * 1024);
            let msgs = [Message {
                target: Target::User,
                text: &text,
            }];
            let (r50, _) = times(0.5, || {
                black_box(policy.inspect(&engine, &msgs, None));
            });
            let (g50, g99) = times(2.0, || {
                let mut v = policy.inspect(&engine, &msgs, None);
                if let Classified::Scored(found) = classify_request(
                    c.as_ref(),
                    &cp,
                    engine.normalizer(),
                    &[(Target::User, text.as_str())],
                    Instant::now(),
                ) {
                    policy.fuse(&mut v, found);
                }
                black_box(v);
            });
            println!(
                "  {class:<11} {kib} KiB: guard p50 {}, p99 {} (rules alone p50 {}, {:.0}x)",
                ms(g50),
                ms(g99),
                ms(r50),
                g50.as_secs_f64() / r50.as_secs_f64()
            );
        }
    }

    println!("3. throughput, 256-token texts");
    let text = cut_to_tokens(&raw, &prose, 256);
    for threads in [1usize, 2] {
        let shared = warden_inference::classifier::Classifier::load(&dir, None, threads).unwrap();
        let shared = std::sync::Arc::new(shared);
        let end = Instant::now() + Duration::from_secs(5);
        let counts: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let c = std::sync::Arc::clone(&shared);
                    let text = &text;
                    s.spawn(move || {
                        let mut n = 0;
                        while Instant::now() < end {
                            black_box(c.score(text, false, 1, None).unwrap());
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: usize = counts.iter().sum();
        println!("  {threads} thread(s): {:.1} texts/s", total as f64 / 5.0);
    }
}
