//! A fake OpenTelemetry collector: OTLP/gRPC traces on loopback, every export request kept.
//!
//! Used by `tests/tests/otel.rs` to read the spans Warden exports, and by the `otlp-sink` binary
//! (the collector for `tests/bench/overhead.py --compare-tracing`), which keeps counts only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// A running collector; it serves until the runtime it was started on ends.
#[derive(Clone, Debug)]
pub struct Collector {
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every export request, unless started with `keep = false`.
    received: Mutex<Vec<ExportTraceServiceRequest>>,
    keep: bool,
    spans: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Clone, Debug)]
struct Service(Arc<State>);

// === impl Collector ===

impl Collector {
    /// Bind `addr` (port 0 picks one) and serve on the current Tokio runtime. With `keep` off
    /// only the counts are kept, so memory stays flat under load.
    pub fn start(addr: SocketAddr, keep: bool) -> std::io::Result<Collector> {
        let incoming = tonic::transport::server::TcpIncoming::bind(addr)?;
        let addr = incoming.local_addr()?;
        let state = Arc::new(State {
            keep,
            ..State::default()
        });
        let svc = TraceServiceServer::new(Service(state.clone()));
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(svc, incoming)
                .await;
        });
        Ok(Collector { addr, state })
    }

    /// The endpoint URL for `[tracing] otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every export request received so far.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.state
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every span received so far, across requests, resources and scopes.
    pub fn spans(&self) -> Vec<Span> {
        self.requests()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    }

    /// Every export request, protobuf-encoded as it travelled, concatenated.
    pub fn bytes(&self) -> Vec<u8> {
        self.requests()
            .iter()
            .flat_map(|r| r.encode_to_vec())
            .collect()
    }

    /// Spans and encoded bytes received (counted even when requests are not kept).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.state.spans.load(Ordering::Relaxed),
            self.state.bytes.load(Ordering::Relaxed),
        )
    }

    /// Wait until at least `n` spans arrived or `timeout` passed; returns what arrived.
    pub async fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// === impl Service ===

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.0.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.0
            .bytes
            .fetch_add(request.encoded_len() as u64, Ordering::Relaxed);
        if self.0.keep {
            self.0
                .received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(request);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
