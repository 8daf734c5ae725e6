//! warden-runbooks: what Warden does when traffic changes. Sans-IO, fed one
//! [`warden_telemetry::Outcome`] per request by the proxy:
//!
//! - [`detect`]: change detectors per scope (tenant, model, route): Bernoulli CUSUMs on rates
//!   (refusals, blocks, leaks, errors), SLO checks on latencies, token burn;
//! - [`simulate`]: `warden detect simulate`, the detectors' delay and false-alarm rate on
//!   simulated streams;
//! - [`book`]: the runbook format (`runbooks/*.toml`) and the engine that turns detections into
//!   alerts and actions (throttle, switch off, degrade, notify, annotate), with approval,
//!   cooldown, blast radius and automatic revert.

pub mod book;
pub mod detect;
pub mod simulate;
