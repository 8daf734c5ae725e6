//! Every seed and every crash the HTTP/1 fuzz targets (`proxy/fuzz`) have found, replayed
//! through the same check on the stable toolchain: each must read as malformed input, a client
//! gone away, or a complete request (`warden_proxy::http1::check_request_bytes`). The chunked
//! target's inputs are the body of its fixed head, as in the target.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use warden_proxy::http1::{check_request_bytes, Read};

const CHUNKED_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// `(name, request bytes)` of every seed and regression file.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |dir: PathBuf, target_of: &dyn Fn(&str) -> &'static str| {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let bytes = std::fs::read(e.path()).unwrap();
            let request = match target_of(&name) {
                "chunked_body" => [CHUNKED_HEAD, &bytes].concat(),
                _ => bytes,
            };
            out.push((format!("{}/{name}", dir.display()), request));
        }
    };
    for target in ["http1_request", "chunked_body"] {
        let t: &'static str = target;
        add(fuzz_dir().join("seeds").join(target), &move |_| t);
    }
    // Regressions are named `<target>-<short-name>`.
    add(fuzz_dir().join("regressions"), &|name| {
        if name.starts_with("chunked_body-") {
            "chunked_body"
        } else {
            "http1_request"
        }
    });
    out
}

#[test]
fn every_seed_and_regression_reads_as_the_client_sent_it() {
    let inputs = inputs();
    assert!(inputs.len() >= 20, "seeds missing: {}", inputs.len());
    for (name, bytes) in &inputs {
        if let Err(finding) = check_request_bytes(bytes) {
            panic!("{name}: {finding}");
        }
    }
}

#[test]
fn the_probes_malformed_chunk_sizes_are_malformed() {
    let malformed = [
        "chunk-size-zz",
        "chunk-size-18-f",
        "chunk-size-minus-5",
        "zz",
        "eighteen-f",
        "minus-5",
    ];
    let mut seen = 0;
    for (path, bytes) in inputs() {
        let name = path.rsplit('/').next().unwrap_or_default();
        if malformed.contains(&name) {
            seen += 1;
            assert_eq!(check_request_bytes(&bytes), Ok(Read::Malformed), "{path}");
        }
    }
    assert_eq!(seen, malformed.len());
}
