//! Any bytes as one HTTP/1 request (head and body), read as Warden's edge reads it: every error
//! must be malformed input or the client going away, never a third kind (which would reach the
//! client as a 500). See proxy/src/http1.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/http1.rs"]
mod http1;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = http1::check_request_bytes(data) {
        panic!("{finding}");
    }
});
