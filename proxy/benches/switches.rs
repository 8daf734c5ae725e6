//! The kill-switch check on the request path: one [`Snapshot::check`] per request, with 10,000
//! switches defined (tenants, models, upstreams, rules), for a request no switch touches, one a
//! tenant switch turns off, and one two scopes degrade. Target (issue 18): ≤ 1 µs.
//!
//! Run: `cargo bench -p warden-proxy --bench switches`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::SystemTime;

use criterion::Criterion;
use warden_proxy::switchboard::{Degrade, Request, Scope, Snapshot, State, Switch};

fn switch(scope: String, state: State) -> Switch {
    Switch {
        scope: Scope::parse(&scope).unwrap(),
        state,
        reason: "bench".into(),
        actor: "bench".into(),
        set_at: 0,
        expires_at: None,
        cut_streams: false,
        runbook: None,
    }
}

fn main() {
    let degraded = || {
        State::Degraded(Degrade {
            max_tokens: Some(64),
            no_stream: false,
        })
    };
    let mut all: Vec<Switch> = Vec::new();
    for i in 0..5000 {
        all.push(switch(format!("tenant:tenant-{i}"), State::Off));
    }
    for i in 0..3000 {
        all.push(switch(format!("model:model-{i}"), degraded()));
    }
    for i in 0..1000 {
        all.push(switch(format!("upstream:gpu-{i}"), State::Off));
    }
    for i in 0..1000 {
        all.push(switch(format!("rule:R-{i}"), State::Off));
    }
    all.push(switch("route:embeddings".into(), degraded()));
    let snap = Snapshot::from_switches(1, all);
    assert_eq!(snap.all().len(), 10_001);
    let now = SystemTime::now();
    let base = Request {
        tenant: "acme",
        model: "llama",
        route: "chat_completions",
        upstream: Some("gpu-local"),
        stream: true,
        tools: false,
        logprobs: false,
        n: 1,
    };
    let off = Request {
        tenant: "tenant-4242",
        ..base
    };
    let degraded_req = Request {
        model: "model-17",
        route: "embeddings",
        ..base
    };
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    for (name, r) in [("pass", base), ("off", off), ("degraded", degraded_req)] {
        c.bench_function(&format!("switch_check/10k/{name}"), |b| {
            b.iter(|| black_box(snap.check(black_box(&r), now)).clone())
        });
    }
    c.final_summary();
}
