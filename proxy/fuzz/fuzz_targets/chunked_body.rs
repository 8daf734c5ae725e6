//! Any bytes as the chunked body of a well-formed POST head: the chunk-size, extension,
//! terminator and trailer parser, where issue 16 found malformed sizes answered 500. Same check
//! as `http1_request` (proxy/src/http1.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/http1.rs"]
mod http1;

const HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let mut request = HEAD.to_vec();
    request.extend_from_slice(data);
    if let Err(finding) = http1::check_request_bytes(&request) {
        panic!("{finding}");
    }
});
