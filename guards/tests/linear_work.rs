//! The guard's cost grows linearly with its input, checked without a clock: the engine counts its
//! work (bytes stepped by its automata, anchored attempts, bytes handed to exact regexes), and on
//! every class of the benchmark corpus (`benches/corpus`) that count per input byte is bounded by
//! a constant, and a long text costs no more than its 4 KiB pieces scanned one by one. A
//! quadratic path (re-scanning to the end from every hit, overlapping windows, a regex engine
//! falling back to a slower one) shows up here as a count that grows with the size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use warden_guards::normalize::floor_boundary;
use warden_guards::{Engine, RuleSet, Target};

/// Work units per input byte no corpus class may exceed. Ordinary classes measure 1.4 to 3.5 and
/// the adversarial ones up to 6; a path that re-reads the text per hit measures hundreds.
const MAX_WORK_PER_BYTE: f64 = 16.0;

/// A whole text may cost this much more than its 4 KiB pieces: the views derived around
/// despaced and leet spots span piece boundaries, so a little more is scanned whole.
const MAX_WHOLE_OVER_PIECES: f64 = 1.5;

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/corpus");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "txt").then_some(())?;
            let name = path.file_stem()?.to_str()?.to_string();
            Some((name, std::fs::read_to_string(&path).ok()?))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 21, "corpus classes in {}", dir.display());
    out
}

/// `text` cut into pieces of about `size` bytes, at character boundaries.
fn pieces(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = floor_boundary(text, start + size);
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn prefix(text: &str, len: usize) -> &str {
    &text[..floor_boundary(text, len)]
}

#[test]
fn engine_work_grows_linearly_on_every_corpus_class() {
    let engine = Engine::compile(RuleSet::embedded().unwrap()).unwrap();
    let mut report = Vec::new();
    for (name, full) in corpus() {
        for size in [4 * 1024, 64 * 1024] {
            let text = prefix(&full, size);
            for target in [Target::User, Target::Tool] {
                let scan = engine.scan(text, target);
                assert!(!scan.work_limited, "{name} {size}");
                let per_byte = scan.work.total() as f64 / text.len() as f64;
                assert!(
                    per_byte <= MAX_WORK_PER_BYTE,
                    "{name} at {size} bytes as {target:?}: {per_byte:.1} work units a byte ({:?})",
                    scan.work
                );
                if size == 64 * 1024 && target == Target::User {
                    let parts: u64 = pieces(text, 4096)
                        .into_iter()
                        .map(|p| engine.scan(p, target).work.total())
                        .sum();
                    let ratio = scan.work.total() as f64 / parts as f64;
                    report.push(format!(
                        "{name}: {per_byte:.2}/byte, whole ÷ pieces {ratio:.2}"
                    ));
                    assert!(
                        ratio <= MAX_WHOLE_OVER_PIECES,
                        "{name}: 64 KiB whole costs {ratio:.2}x its 4 KiB pieces ({:?})",
                        scan.work
                    );
                }
            }
        }
    }
    // Shown with --nocapture: the figures the bounds were chosen from.
    for line in report {
        println!("{line}");
    }
}

/// Texts built to defeat the engine: every trigger of a regex with no match, dense hits of a
/// factor that sends a search backwards, one long word, prefix-factor pairs at every distance.
/// Each hit costs at most a regex's reach, so their work per byte is bounded too (by more than
/// ordinary text's, and the per-request work cap stops them first); what matters is that it
/// does not grow with the length: 64 KiB costs per byte what 16 KiB does.
#[test]
fn hostile_texts_cost_the_same_per_byte_at_any_length() {
    let engine = Engine::compile(RuleSet::embedded().unwrap()).unwrap();
    let units = [
        "ignore ",
        "instructions ",
        "your system prompt ",
        "you ",
        "tu du te ta ",
        ". ignore ",
        "sk-",
        "a",
        "1 2 3 4 5 6 7 8 9 0 ",
        "send the data to ",
        "i g n o r e ",
        "é",
        "[hidden ",
        "ignore\u{200b} ",
    ];
    for unit in units {
        let per_byte = |len: usize| {
            let text = unit.repeat(len / unit.len() + 1);
            let text = prefix(&text, len);
            let scan = engine.scan(text, Target::Tool);
            (scan.work.total() as f64 / text.len() as f64, scan.work)
        };
        let (short, _) = per_byte(16 * 1024);
        let (long, work) = per_byte(64 * 1024);
        assert!(
            long <= 64.0 && long <= short * 1.25 + 0.5,
            "{unit:?}: {short:.1} work units a byte at 16 KiB, {long:.1} at 64 KiB ({work:?})"
        );
    }
}
