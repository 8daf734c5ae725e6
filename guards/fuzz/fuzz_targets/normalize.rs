//! `normalize`: arbitrary text through the normaliser, with the default bounds and with tight
//! ones (so truncation, blob count, decode depth and decode work limits are all reached).
//!
//! Checks, for every view:
//! - there is at least one view and the first is `Folded`;
//! - `original_span` of the full view maps inside the normalised prefix of the text, start <= end,
//!   on char boundaries of the text;
//! - `original_span` of every single character (views up to 4096 chars), of 64 random sub-ranges
//!   on char boundaries of the view, of empty ranges and of reversed / out-of-range ranges stays in
//!   bounds, on char boundaries, start <= end, inside the full view's span;
//! - `truncated` is set exactly when the text is longer than `max_scan_bytes`.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use warden_guards::normalize::{Limits, Normalizer, ViewKind};

/// A tiny deterministic PRNG (SplitMix64) seeded from the input, for the random sub-ranges.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seed(data: &[u8]) -> u64 {
    // FNV-1a
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn check(
    text: &str,
    cut: usize,
    span: &Range<usize>,
    within: Option<&Range<usize>>,
    what: &dyn Fn() -> String,
) {
    assert!(
        span.start <= span.end && span.end <= cut,
        "{}: span {span:?} out of bounds (text {} bytes, scanned prefix {cut})",
        what(),
        text.len()
    );
    assert!(
        text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
        "{}: span {span:?} not on char boundaries",
        what()
    );
    if let Some(full) = within {
        assert!(
            full.start <= span.start && span.end <= full.end,
            "{}: span {span:?} outside the view's full span {full:?}",
            what()
        );
    }
}

fn run(text: &str, limits: Limits, rng: &mut Rng) {
    let max_scan = limits.max_scan_bytes;
    let views = Normalizer::new(limits).views(text);
    assert_eq!(views.truncated, text.len() > max_scan, "truncated flag");
    let mut cut = text.len().min(max_scan);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    assert!(!views.views.is_empty(), "no views");
    assert_eq!(
        views.views[0].kind,
        ViewKind::Folded,
        "first view is not Folded"
    );
    for v in &views.views {
        let vt = v.text.as_str();
        let full = v.original_span(0..vt.len());
        check(text, cut, &full, None, &|| {
            format!("{:?} full range", v.kind)
        });
        // Empty, reversed and out-of-range ranges are clamped.
        for r in [
            0..0,
            vt.len()..vt.len(),
            vt.len()..vt.len() + 7,
            0..vt.len() + 100,
        ] {
            let s = v.original_span(r.clone());
            check(text, cut, &s, Some(&full), &|| {
                format!("{:?} range {r:?}", v.kind)
            });
        }
        #[allow(clippy::reversed_empty_ranges)]
        let rev = v.original_span(vt.len()..0);
        check(text, cut, &rev, Some(&full), &|| {
            format!("{:?} reversed range", v.kind)
        });

        let bounds: Vec<usize> = vt
            .char_indices()
            .map(|(i, _)| i)
            .chain([vt.len()])
            .collect();
        if bounds.len() <= 4097 {
            for w in bounds.windows(2) {
                let r = w[0]..w[1];
                let s = v.original_span(r.clone());
                check(text, cut, &s, Some(&full), &|| {
                    format!("{:?} char {r:?}", v.kind)
                });
            }
        }
        for _ in 0..64 {
            let a = bounds[rng.below(bounds.len())];
            let b = bounds[rng.below(bounds.len())];
            let r = a.min(b)..a.max(b);
            let s = v.original_span(r.clone());
            check(text, cut, &s, Some(&full), &|| {
                format!("{:?} sub-range {r:?}", v.kind)
            });
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut rng = Rng(seed(data));
    run(&text, Limits::default(), &mut rng);
    let tight = Limits {
        max_scan_bytes: 200,
        max_blobs: 3,
        max_decode_depth: 3,
        max_blob_bytes: 48,
        max_decoded_bytes: 64,
        max_decode_work: 128,
        min_base64_len: 8,
        min_hex_len: 8,
        min_percent_escapes: 1,
    };
    run(&text, tight, &mut rng);
});
