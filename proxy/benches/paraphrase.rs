//! The output guard's leak detector on a streamed reply, lexical checks alone and with the
//! paraphrase check on the real sentence encoder (all-MiniLM-L6-v2, int8, one thread), the
//! encoder on one clause, and a system prompt embedded on first sight (then cached).
//!
//! Needs `tests/scripts/setup.sh` (the encoder and ONNX Runtime). Run:
//! `cargo bench -p warden-proxy --bench paraphrase`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::Criterion;
use warden_guards::leak::LeakDetector;
use warden_guards::paraphrase::Paraphraser;
use warden_proxy::config::{GuardConfig, Paraphrase};

const PROMPT: &str =
    "You are Max, the support assistant of Contoso Travel. Do not reveal internal \
    pricing tiers. Keep replies under 120 words. Never discuss interest rates before the customer \
    is verified. Escalate complaints about fraud to a human agent. Answer in a friendly tone.";

/// A 130-word on-topic reply: what most replies are (nothing leaks, every clause is embedded).
const REPLY: &str = "Thanks for getting in touch! I can help you change your booking. Open the \
    app, go to My Trips, and choose the flight you want to move. You can pick any date in the \
    next twelve months, and the fare difference is shown before you confirm. If the new fare is \
    lower, the difference comes back as a travel voucher, which stays valid for a year. Changes \
    made more than two weeks before departure are free; later ones cost a small fee that depends \
    on the route. Travel insurance bought with the booking moves with it automatically, so you \
    do not need to buy it again. If anything goes wrong, reply here and I will look at it with \
    you, or call the number on your confirmation email. Have a great trip!";

fn pieces(text: &str) -> Vec<&str> {
    // About four characters a piece, on character boundaries: a token stream.
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in text.char_indices().skip(1).step_by(4) {
        out.push(&text[start..i]);
        start = i;
    }
    out.push(&text[start..]);
    out
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_var(
        "ORT_DYLIB_PATH",
        root.join("inference/.ort/libonnxruntime.so.1.31.1"),
    );
    let guard = GuardConfig {
        paraphrase: Paraphrase::On,
        encoder_dir: Some(root.join("guards/models/minilm")),
        ..GuardConfig::default()
    };
    let paraphraser = warden_proxy::guard::load_paraphraser(&guard)
        .expect("the encoder (run tests/scripts/setup.sh)")
        .unwrap();
    let stream = pieces(REPLY);
    let normalizer = LeakDetector::normalizer();
    let run = |d: &mut LeakDetector| {
        for p in &stream {
            black_box(d.push(p));
        }
        black_box(d.finish(&normalizer))
    };
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(4))
        .sample_size(30)
        .configure_from_args();
    c.bench_function("leak/reply_130_words/lexical", |b| {
        b.iter(|| run(&mut LeakDetector::new(&[PROMPT], None)))
    });
    c.bench_function("leak/reply_130_words/with_paraphrase", |b| {
        b.iter(|| {
            let check = paraphraser.check(&[PROMPT]).unwrap();
            run(&mut LeakDetector::new(&[PROMPT], None).with_paraphrase(check))
        })
    });
    // Replies that look like traffic: 4 KiB of model answers with code and markdown, Chinese,
    // Russian, and jailbreak templates (the guards' benchmark corpus), against the same prompt.
    for class in ["answers_md", "lang_zh", "lang_ru", "jailbreak"] {
        let path = root.join(format!("guards/benches/corpus/{class}.txt"));
        let full = std::fs::read_to_string(&path).unwrap();
        let text = &full[..warden_guards::normalize::floor_boundary(&full, 4096)];
        let stream = pieces(text);
        let mut embedded = 0;
        c.bench_function(&format!("leak/{class}_4k/lexical"), |b| {
            b.iter(|| {
                let mut d = LeakDetector::new(&[PROMPT], None);
                for p in &stream {
                    black_box(d.push(p));
                }
                black_box(d.finish(&normalizer))
            })
        });
        c.bench_function(&format!("leak/{class}_4k/with_paraphrase"), |b| {
            b.iter(|| {
                let check = paraphraser.check(&[PROMPT]).unwrap();
                let mut d = LeakDetector::new(&[PROMPT], None).with_paraphrase(check);
                for p in &stream {
                    black_box(d.push(p));
                }
                black_box(d.finish(&normalizer));
                embedded = d.paraphrase().map_or(0, |p| p.embedded());
            })
        });
        println!("{class}: {embedded} clauses embedded per reply");
    }
    c.bench_function("encoder/prompt_first_sight", |b| {
        b.iter(|| {
            // A fresh cache each time: the prompt's five sentences embedded.
            let fresh = Paraphraser::new(paraphraser.encoder());
            black_box(fresh.meaning(PROMPT).unwrap())
        })
    });
    c.final_summary();
}
