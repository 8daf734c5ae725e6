//! Randomised hostile input for every parser of untrusted bytes in the proxy: the SSE parser,
//! request validation and the config decoder. Deterministic seeds, thousands of cases each:
//! nothing may panic, and the SSE parser's output must not depend on how its input is split.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warden_proxy::config::Config;
use warden_proxy::sse::{SseEvent, SseParser};
use warden_proxy::validate::{validate, Endpoint};

fn parse_in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, Vec<u8>) {
    let mut p = SseParser::new(1 << 20);
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        p.feed(&input[at..cut], &mut out).unwrap();
        at = cut;
    }
    p.feed(&input[at..], &mut out).unwrap();
    p.finish(&mut out);
    (out, p.pending().to_vec())
}

/// Streams built from SSE-ish fragments (so events actually form), cut at random places.
#[test]
fn sse_events_do_not_depend_on_how_the_stream_is_split() {
    let fragments: [&[u8]; 12] = [
        b"data: ",
        b"{\"a\":1}",
        b"\n",
        b"\r\n",
        b"\r",
        b"event: x",
        b": comment",
        b"id: 7",
        b"data:[DONE]",
        b"\n\n",
        b"\xff\xfe",
        b"retry: 10",
    ];
    let mut rng = StdRng::seed_from_u64(0x5EE);
    for _ in 0..3000 {
        let mut input = Vec::new();
        for _ in 0..rng.random_range(0..40) {
            input.extend_from_slice(fragments[rng.random_range(0..fragments.len())]);
        }
        let whole = parse_in_pieces(&input, &[]);
        let mut cuts: Vec<usize> = (0..rng.random_range(0..8))
            .map(|_| rng.random_range(0..=input.len()))
            .collect();
        cuts.sort_unstable();
        let split = parse_in_pieces(&input, &cuts);
        assert_eq!(
            split,
            whole,
            "input {:?} cuts {cuts:?}",
            String::from_utf8_lossy(&input)
        );
        // Nothing is lost or invented: events' raw bytes plus what is held back are the input.
        let mut joined: Vec<u8> = whole.0.iter().flat_map(|e| e.raw.to_vec()).collect();
        joined.extend_from_slice(&whole.1);
        assert_eq!(joined, input);
    }
}

#[test]
fn sse_parser_survives_random_bytes_and_bounds_events() {
    let mut rng = StdRng::seed_from_u64(0xB17E5);
    for _ in 0..2000 {
        let len = rng.random_range(0..2000);
        let input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let mut p = SseParser::new(512);
        let mut out = Vec::new();
        for chunk in input.chunks(rng.random_range(1..64)) {
            if p.feed(chunk, &mut out).is_err() {
                break; // an event over the bound is an error, never unbounded memory
            }
        }
        assert!(p.pending().len() <= 512 + 64);
    }
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..8) {
        match rng.random_range(0..4) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
            }
            1 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v.truncate(i);
            }
            2 => {
                let i = rng.random_range(0..=v.len());
                let junk: &[u8] = [
                    &b"{"[..],
                    b"[",
                    b"\"",
                    b"]]]]",
                    b"}",
                    b",",
                    b"null",
                    b"-1e999",
                    b"\\u0000",
                    b"\xff",
                ][rng.random_range(0..10)];
                v.splice(i..i, junk.iter().copied());
            }
            _ if !v.is_empty() => {
                let (a, b) = (rng.random_range(0..v.len()), rng.random_range(0..v.len()));
                v.swap(a, b);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn request_validation_never_panics_on_mutated_bodies() {
    let seeds: [&[u8]; 3] = [
        br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":false},"stop":["x"],"n":2}"#,
        br#"{"model":"m","prompt":["a",[1,2,3]],"max_completion_tokens":7,"temperature":0.5}"#,
        br#"{"model":"m","input":"text"}"#,
    ];
    let mut rng = StdRng::seed_from_u64(0x7A11D);
    for i in 0..20_000 {
        let body = mutate(&mut rng, seeds[i % seeds.len()]);
        for endpoint in [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
        ] {
            if let Ok(v) = validate(
                endpoint,
                Some(b"application/json"),
                Bytes::from(body.clone()),
                100,
            ) {
                // Whatever passed must still serialise to JSON the upstream can parse.
                let prepared = v.prepare(true).unwrap();
                assert!(serde_json::from_slice::<serde_json::Value>(&prepared.body).is_ok());
            }
        }
    }
    // Deep nesting is refused, not recursed into.
    let deep = format!(
        "{{\"model\":\"m\",\"messages\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(validate(
        Endpoint::ChatCompletions,
        Some(b"application/json"),
        Bytes::from(deep),
        100
    )
    .is_err());
}

#[test]
fn config_decoding_never_panics_on_mutated_files() {
    let example = include_bytes!("../warden.example.toml");
    let mut rng = StdRng::seed_from_u64(0xC0F16);
    let mut rejected = 0;
    for _ in 0..3000 {
        let text = String::from_utf8_lossy(&mutate(&mut rng, example)).into_owned();
        if let Err(errors) = Config::parse(&text) {
            rejected += 1;
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
            }
        }
    }
    assert!(
        rejected > 100,
        "mutations should mostly be rejected ({rejected})"
    );
}
