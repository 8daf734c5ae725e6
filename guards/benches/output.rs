//! The streaming output guard ([`warden_guards::OutputScanner`]) per piece of a reply, as a
//! model streams it: texts from the benchmark corpus (model answers with code and markdown,
//! English prose, Russian, Chinese, digit runs) cut into pieces of 4 bytes (about a token) and 16
//! bytes, each piece pushed and its released text taken, then the end of the reply. Criterion
//! reports the time per piece (`guard_output/<class>/<piece bytes>`); the target (issue 17) is
//! ≤ 20 µs p50 per piece. A fixed-work baseline is not needed here: the figure is absolute.
//!
//! Run: `cargo bench -p warden-guards --bench output`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, Throughput};
use warden_guards::normalize::floor_boundary;
use warden_guards::{Engine, OutputScanner, RuleSet, Step, Target};

/// Bytes of each class streamed per iteration.
const REPLY_BYTES: usize = 2048;

fn pieces(text: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + n).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[at..end]);
        at = end;
    }
    out
}

fn main() {
    let engine = Arc::new(Engine::compile(RuleSet::embedded().unwrap()).unwrap());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/corpus");
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    let mut group = c.benchmark_group("guard_output");
    for class in ["answers_md", "prose_en", "lang_ru", "lang_zh", "adv_digits"] {
        let full = std::fs::read_to_string(dir.join(format!("{class}.txt"))).unwrap();
        let text = &full[..floor_boundary(&full, REPLY_BYTES)];
        for n in [4, 16] {
            let ps = pieces(text, n);
            group.throughput(Throughput::Elements(ps.len() as u64));
            group.bench_function(format!("{class}/{n}"), |b| {
                b.iter(|| {
                    let mut s = OutputScanner::new(engine.clone(), Target::Output);
                    let mut sent = 0;
                    for p in &ps {
                        if let Step::Text(t) = s.push(black_box(p)) {
                            sent += t.len();
                        }
                    }
                    if let Step::Text(t) = s.finish() {
                        sent += t.len();
                    }
                    sent
                })
            });
        }
    }
    group.finish();
    c.final_summary();
}
