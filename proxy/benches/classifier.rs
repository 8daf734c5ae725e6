//! The input guard's classifier layer on the model the repository ships, one ONNX session of one
//! thread unless said:
//!
//! 1. one text of 64, 128, 256 and 512 tokens (English prose from the benchmark corpus), p50 and
//!    p99 of single calls, with the rules alone on the same text as the baseline; then 512 tokens
//!    read as retrieved content (the manifest's shorter windows for tool text);
//! 2. the whole guard as the proxy runs it (rules, then the classifier on the folded text, at
//!    most `[guard] classifier_max_windows` = 8 windows) on 1 and 4 KiB of several corpus
//!    classes, against the rules alone on the same text;
//! 3. throughput on 256-token texts: one thread, and two threads each with its own session
//!    (what `classifier_threads = 2` gives), texts per second;
//! 4. micro-batching across requests, as the proxy runs it (`warden_inference::batching`, two
//!    model threads): 16 closed-loop clients each sending one text at a time (short prompts of
//!    about 40 tokens, and full 256-token windows), with `classifier_batch` 1 (no batching) and
//!    8 interleaved over three rounds: texts per second, p50 and p99 per text, and how far a
//!    text's score moves with the company it is batched in (the int8 model quantises each run's
//!    activations with one scale).
//!
//! Needs `tests/scripts/setup.sh` (ONNX Runtime). Run:
//! `cargo bench -p warden-proxy --bench classifier` (`-- batching`: section 4 alone; `-- texts`:
//! section 1 alone).

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
    if std::env::args().any(|a| a == "batching") {
        batching(&dir);
        return;
    }
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
    let text = cut_to_tokens(&raw, &prose, 512);
    let w = raw.windows(text, true, 8).unwrap().0.len();
    let (p50, p99) = times(3.0, || {
        black_box(raw.score(text, true, 8, None).unwrap());
    });
    println!(
        "  512 tokens as retrieved content ({w} windows of at most {} tokens): classifier p50 {}, p99 {}",
        raw.max_tokens_for(true),
        ms(p50),
        ms(p99)
    );
    if std::env::args().any(|a| a == "texts") {
        return;
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

/// Section 4: see the module documentation.
fn batching(dir: &std::path::Path) {
    use std::sync::Arc;
    use warden_inference::batching::Batcher;
    use warden_inference::classifier::Classifier;

    let alone = Classifier::load(dir, None, 1).unwrap();
    let prose = corpus("prose_en", 256 * 1024);
    // Distinct texts, as distinct clients send: consecutive pieces of the corpus.
    let pieces = |tokens: usize, bytes: usize| -> Vec<String> {
        (0..64)
            .map(|i| {
                let at = floor_boundary(&prose, i * bytes);
                let end = floor_boundary(&prose, (at + bytes * 2).min(prose.len()));
                cut_to_tokens(&alone, &prose[at..end], tokens).to_string()
            })
            .collect()
    };
    println!("4. micro-batching across requests: 2 model threads, 16 closed-loop clients");
    for (label, texts) in [
        ("short prompts (~40 tokens)", pieces(40, 200)),
        ("full windows (256 tokens)", pieces(256, 1400)),
    ] {
        let want: Vec<f32> = texts
            .iter()
            .map(|t| alone.score(t, false, 1, None).unwrap().score)
            .collect();
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..3 {
            for (k, rows) in [1usize, 8].into_iter().enumerate() {
                let b = Arc::new(
                    Batcher::start(
                        Classifier::load(dir, None, 2).unwrap(),
                        2,
                        rows,
                        8,
                        Arc::new(|| {}),
                    )
                    .unwrap(),
                );
                let end = Instant::now() + Duration::from_secs(4);
                let results: Vec<(Vec<Duration>, f64)> = std::thread::scope(|s| {
                    let hs: Vec<_> = (0..16)
                        .map(|client| {
                            let (b, texts, want) = (Arc::clone(&b), &texts, &want);
                            s.spawn(move || {
                                let (mut lat, mut drift) = (Vec::new(), 0f64);
                                let mut i = client;
                                while Instant::now() < end {
                                    let t = Instant::now();
                                    let got = b.submit(&[(texts[i].as_str(), false)], None).wait();
                                    lat.push(t.elapsed());
                                    let p = got[0].as_ref().unwrap().score;
                                    let logit = |p: f32| (p / (1.0 - p)).ln() as f64;
                                    drift = drift.max((logit(p) - logit(want[i])).abs());
                                    i = (i + 16) % texts.len();
                                }
                                (lat, drift)
                            })
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let drift = results.iter().map(|r| r.1).fold(0.0, f64::max);
                let mut lat: Vec<Duration> = results.into_iter().flat_map(|r| r.0).collect();
                lat.sort();
                let rate = lat.len() as f64 / 4.0;
                rates[k].push(rate);
                println!(
                    "  {label}, round {}, classifier_batch {rows}: {rate:.1} texts/s, p50 {}, p99 {}, largest score change {drift:.2} in log-odds",
                    round + 1,
                    ms(lat[lat.len() / 2]),
                    ms(lat[(lat.len() * 99 / 100).min(lat.len() - 1)])
                );
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (one, eight) = (median(&mut rates[0]), median(&mut rates[1]));
        println!(
            "  {label}: median {one:.1} vs {eight:.1} texts/s, batching x{:.2}",
            eight / one
        );
    }
}
