//! Test doubles and load tools for Warden.
//!
//! - [`upstream`]: a fake OpenAI-compatible upstream with per-request fault injection
//!   (`x-fault` header), used by integration tests and as the benchmark baseline.
//! - [`http1`]: the small HTTP/1.1 framing layer shared by the fake upstream, the load
//!   generator and tests that talk raw HTTP.
//! - [`otlp`]: a fake OpenTelemetry collector (OTLP/gRPC traces) that keeps what it receives.
//!
//! Binaries: `fake-upstream` (serve the fake from the command line), `loadgen` (an
//! open-loop HTTP/1.1 load generator that reports latency percentiles as JSON) and `otlp-sink`
//! (a trace collector that only counts, for benchmarks).

pub mod harness;
pub mod http1;
pub mod otlp;
pub mod upstream;

/// The tokio runtime the binaries use: current-thread for 1, multi-thread otherwise.
pub fn runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(threads))
            .enable_all()
            .build()
    }
}
