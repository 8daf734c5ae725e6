//! HTTP/1 at Warden's edge: which of Pingora's errors reading a request are the client's fault,
//! and the check that the fuzz targets (`proxy/fuzz`) and their regression test
//! (`proxy/tests/http1_regressions.rs`) run over raw request bytes.
//!
//! Every error reading a request must be either malformed input (answered 400
//! `malformed_request`, see [`is_malformed`]) or the client going away (nothing to answer). Any
//! other error type would reach the client as `500 internal_error` and count as a server fault:
//! that is the bug class the fuzz targets look for (issue 16 found malformed chunk sizes there).
//!
//! This file uses only pingora-core, pingora-error, bytes and tokio, so the fuzz crate includes it
//! by path without building the rest of the proxy.

use pingora_core::protocols::http::v1::server::HttpSession;
use pingora_error::{Error, ErrorType};

/// A request whose head or body framing Pingora could not parse: a bad header, a chunk size that
/// is not hex or overflows, a bad chunk terminator or trailer.
pub fn is_malformed(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::InvalidHTTPHeader | ErrorType::Custom("InvalidChunk" | "InvalidTrailerEnd")
    )
}

/// The client closed the connection or it failed: nobody is left to answer.
pub fn is_client_gone(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::ReadTimedout
    )
}

/// What reading `bytes` as one request gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// No request at all (empty input).
    Nothing,
    /// Rejected as malformed: 400 `malformed_request`.
    Malformed,
    /// The input ended before the request did (the client went away).
    Incomplete,
    /// A whole request with this many body bytes.
    Complete { body: usize },
}

/// Reads one request from `bytes` the way Warden's edge does (the head, then the whole body)
/// and checks the invariants: every error is [`is_malformed`] or [`is_client_gone`], the body is
/// no longer than the input, and reading ends. `Err` describes a violation.
pub fn check_request_bytes(bytes: &[u8]) -> Result<Read, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(read_one(bytes))
}

async fn read_one(bytes: &[u8]) -> Result<Read, String> {
    let stream = Box::new(std::io::Cursor::new(bytes.to_vec()));
    let mut session = HttpSession::new(stream);
    let classify = |e: &Error, what: &str| {
        if is_malformed(e) {
            Ok(Read::Malformed)
        } else if is_client_gone(e) {
            Ok(Read::Incomplete)
        } else {
            Err(format!(
                "{what}: error type {} is neither malformed input nor the client going away: {e}",
                e.etype().as_str()
            ))
        }
    };
    match session.read_request().await {
        Ok(None) => return Ok(Read::Nothing),
        Ok(Some(_)) => {}
        Err(e) => return classify(&e, "reading the head"),
    }
    let mut body = 0usize;
    // Each read returns at least one byte or ends; more reads than input bytes is a loop.
    for _ in 0..=bytes.len() + 16 {
        match session.read_body_bytes().await {
            Ok(Some(chunk)) => {
                body += chunk.len();
                if body > bytes.len() {
                    return Err(format!(
                        "{body} body bytes from {} input bytes",
                        bytes.len()
                    ));
                }
            }
            Ok(None) => return Ok(Read::Complete { body }),
            Err(e) => return classify(&e, "reading the body"),
        }
    }
    Err("reading the body did not end".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(size: &str) -> Vec<u8> {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_probes_chunk_sizes_are_malformed() {
        for size in ["zz", "ffffffffffffffffff", "-5"] {
            assert_eq!(
                check_request_bytes(&chunked(size)),
                Ok(Read::Malformed),
                "{size}"
            );
        }
        assert_eq!(
            check_request_bytes(&chunked("3")),
            Ok(Read::Complete { body: 3 })
        );
    }

    #[test]
    fn heads_and_cut_inputs() {
        assert_eq!(check_request_bytes(b""), Ok(Read::Nothing));
        assert_eq!(check_request_bytes(b"GARBAGE\r\n\r\n"), Ok(Read::Malformed));
        assert_eq!(
            check_request_bytes(b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc"),
            Ok(Read::Incomplete)
        );
        assert_eq!(
            check_request_bytes(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
            Ok(Read::Complete { body: 0 })
        );
    }
}
