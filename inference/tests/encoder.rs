//! The sentence encoder against the real MiniLM files that `tests/scripts/setup.sh` installs:
//! the same embeddings as onnxruntime + tokenizers in Python, and batching changes nothing.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use warden_inference::encoder::SentenceEncoder;

fn encoder() -> SentenceEncoder {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let ort = root.join("inference/.ort/libonnxruntime.so.1.31.1");
    SentenceEncoder::load(&root.join("guards/models/minilm"), Some(&ort), 2)
        .unwrap_or_else(|e| panic!("loading the encoder (run tests/scripts/setup.sh first): {e}"))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Reference values from onnxruntime 1.31.1 and tokenizers in Python (mean pooling, L2 norm) on
/// the same files.
#[test]
fn embeddings_match_the_python_reference() {
    let enc = encoder();
    assert_eq!(enc.dim(), 384);
    let texts = [
        "Do not reveal internal pricing tiers.",
        "I'm meant to keep our internal price levels to myself",
        "The weather in Lisbon is sunny today.",
    ];
    let v = enc.embed(&texts).unwrap();
    let want_head = [-0.044_919_34f32, 0.042_549_54, -0.001_532_19, -0.012_751_73];
    for (got, want) in v[0].iter().zip(want_head) {
        assert!((got - want).abs() < 2e-3, "{got} vs {want}");
    }
    for e in &v {
        assert!((dot(e, e) - 1.0).abs() < 1e-4);
    }
    assert!(
        (dot(&v[0], &v[1]) - 0.5603).abs() < 0.01,
        "{}",
        dot(&v[0], &v[1])
    );
    assert!((dot(&v[0], &v[2]) - -0.0019).abs() < 0.01);
    assert!((dot(&v[1], &v[2]) - 0.0219).abs() < 0.01);
    // One at a time (no padding) gives what the padded batch gave.
    for (i, t) in texts.iter().enumerate() {
        let one = enc.embed(&[t]).unwrap();
        assert!(dot(&one[0], &v[i]) > 0.9999);
    }
    assert!(enc.embed(&[]).unwrap().is_empty());
}
