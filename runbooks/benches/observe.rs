//! What the detectors cost each request: one `Detectors::observe` (its tenant, model and route
//! scopes: six rate CUSUM banks, two SLO banks and the token burn each), with 1,000 tenants
//! watched, against building the outcome alone.
//!
//! Run: `cargo bench -p warden-runbooks --bench observe`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use warden_runbooks::detect::{Detectors, RateParams, Slos};
use warden_telemetry::{GuardDecision, Outcome, OutputDecision};

fn outcome(tenant: &Arc<str>, model: &Arc<str>, route: &Arc<str>, i: u64) -> Outcome {
    let mut o = Outcome::new(tenant.clone(), Some(model.clone()), route.clone());
    o.status = 200;
    o.guard = Some(GuardDecision::Allow);
    o.output = Some(OutputDecision::Allow);
    o.refusal = Some(i.is_multiple_of(50));
    o.ttft = Some(Duration::from_millis(80 + i % 40));
    o.tpot = Some(Duration::from_millis(20));
    o.input_tokens = Some(200);
    o.output_tokens = Some(150);
    o
}

fn main() {
    let tenants: Vec<Arc<str>> = (0..1000)
        .map(|i| Arc::from(format!("tenant-{i}")))
        .collect();
    let model: Arc<str> = Arc::from("llama");
    let route: Arc<str> = Arc::from("chat_completions");
    let mut d = Detectors::new(
        RateParams::default(),
        Slos {
            ttft: Some(Duration::from_millis(500)),
            tpot: Some(Duration::from_millis(100)),
            quantile: 0.95,
        },
        4096,
    );
    let now = SystemTime::now();
    // Every tenant seen, past a short warm-up.
    for i in 0..200_000u64 {
        let t = &tenants[(i % 1000) as usize];
        d.observe(&outcome(t, &model, &route, i), now);
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut i = 0u64;
    c.bench_function("detectors/outcome_only", |b| {
        b.iter(|| {
            i += 1;
            black_box(outcome(&tenants[(i % 1000) as usize], &model, &route, i))
        })
    });
    c.bench_function("detectors/observe_1000_tenants", |b| {
        b.iter(|| {
            i += 1;
            let o = outcome(&tenants[(i % 1000) as usize], &model, &route, i);
            black_box(d.observe(&o, now))
        })
    });
    c.final_summary();
}
