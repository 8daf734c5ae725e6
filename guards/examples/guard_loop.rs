//! Inspects one corpus class in a loop, for profilers (`perf record`) and quick timings:
//! `cargo run --release -p warden-guards --example guard_loop -- jailbreak 64 [seconds]`.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use warden_guards::normalize::floor_boundary;
use warden_guards::{Engine, Message, Policy, RuleSet, Target};

fn main() {
    let mut args = std::env::args().skip(1);
    let class = args.next().expect("usage: guard_loop CLASS KIB [SECONDS]");
    let kib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let path = format!("{}/benches/corpus/{class}.txt", env!("CARGO_MANIFEST_DIR"));
    let full = std::fs::read_to_string(&path).expect("corpus class");
    let text = &full[..floor_boundary(&full, kib * 1024)];
    let engine = Engine::compile(RuleSet::embedded().unwrap()).unwrap();
    let policy = Policy::default();
    let msgs = [Message {
        target: Target::User,
        text,
    }];
    let views = engine.normalizer().views(text);
    for v in &views.views {
        println!("view {:?}: {} bytes", v.kind, v.text.len());
    }
    let scan = engine.scan_limited(text, Target::User, u64::MAX);
    println!(
        "input {} bytes, {:?}, hits {}",
        text.len(),
        scan.work,
        scan.hits.len()
    );
    let mut times = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let t = Instant::now();
        let v = policy.inspect(&engine, &msgs, None);
        std::hint::black_box(v.matches.len());
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{class} {kib} KiB: {} runs, p50 {:?}, p99 {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}
