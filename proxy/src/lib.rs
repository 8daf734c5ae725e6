//! Warden's proxy: a Pingora-based sidecar in front of an OpenAI-compatible inference worker.
//!
//! Layout, one concern per module:
//! - [`config`]: the TOML config, strict decoding, every error with its key path and line.
//! - [`keys`]: hashed API keys.
//! - [`validate`]: request routing, body validation, `max_tokens` clamp, token estimate.
//! - [`quota`]: per-tenant token buckets.
//! - [`sse`]: incremental SSE parsing for streamed responses.
//! - [`error`]: every client-visible error and the one mapping to status + OpenAI-style body.
//! - [`proxy`]: the Pingora `ProxyHttp` phases, thin, calling the modules above.
//! - [`traces`]: OpenTelemetry spans over OTLP, one per request (off unless configured).
//! - [`admin`], [`health`], [`metrics`], [`state`], [`server`], [`logging`]: the rest of the
//!   process; [`up`]: `warden up`, the worker and the proxy together on loopback.
//!
//! Everything but `proxy`, `admin`, `health` and `server` is sans-IO and tested with plain calls.

pub mod admin;
pub mod config;
pub mod connections;
pub mod ctl;
pub mod error;
pub mod events;
pub mod fleet_quota;
pub mod guard;
pub mod guard_pool;
pub mod health;
pub mod http1;
pub mod incidents;
pub mod keys;
pub mod logging;
pub mod logprobs;
pub mod metrics;
pub mod notify;
pub mod outlier;
pub mod proxy;
pub mod quota;
pub mod response;
pub mod rules_cmd;
pub mod server;
pub mod sse;
pub mod state;
pub mod switchboard;
pub mod traces;
pub mod unauthenticated;
pub mod up;
pub mod validate;
