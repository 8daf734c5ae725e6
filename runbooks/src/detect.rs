//! Change detectors over the stream of request outcomes.
//!
//! **Rates** (refusals, input blocks, output blocks, leaks, errors; one Bernoulli trial per
//! request) use a bank of Bernoulli CUSUMs against a baseline rate `p0` learned online:
//!
//! - Warm-up: the first [`RateParams::warmup`] trials only estimate `p0` (with a Laplace prior,
//!   so a rate never seen is not taken as zero). After it, `p0` keeps learning slowly (an
//!   exponential window of [`RateParams::baseline_window`] trials) while every CUSUM is below a
//!   quarter of its threshold, so a spike does not teach the baseline.
//! - For each shift `k` in [`RateParams::shifts`] (default 2× and 3×), the CUSUM of the
//!   log-likelihood ratio of "rate `k·p0`" against "rate `p0`":
//!   `S ← max(0, S + x·ln k + (1−x)·ln((1−k·p0)/(1−p0)))`, alarm when `S ≥ h`.
//! - False alarms: for one CUSUM the mean run length before a false alarm is at least `e^h`
//!   (Lorden 1971), so `m` CUSUMs side by side give at most `m·e^(−h)` false alarms per trial.
//!   The default `h` = 14.5 bounds two of them at 1 per 10⁶ (`m·e^(−h)` = 1.0·10⁻⁶); the
//!   simulated rate is lower (`warden detect simulate`).
//! - Delay: after a shift to rate `p1` the CUSUM tuned to `p1` needs about `h / D(p1‖p0)`
//!   trials, `D` the Kullback-Leibler divergence of the two Bernoulli laws
//!   (`D = p1·ln(p1/p0) + (1−p1)·ln((1−p1)/(1−p0))`): for `p0` = 2%, `D` = 0.0267 at 3× and
//!   0.0079 at 2×, so about 540 and 1,830 trials. That is within 5% of the best any detector can
//!   do at this false-alarm rate (`ln(10⁶)/D` = 520 and 1,740), because the bank holds a CUSUM
//!   tuned to each of those shifts; a shift between two of them is caught by the nearer one.
//!
//! **Latencies** (TTFT, time per output token) are checked against an SLO: the SLO says at most
//! `1 − q` of requests (5% for a p95 SLO) may be slower, so "slower than the SLO" is a Bernoulli
//! trial with a *known* `p0 = 1 − q`, watched by the same CUSUMs (no warm-up); an EWMA of the
//! latency is kept for the alert's text.
//!
//! **Token burn** is tokens per second per scope against a learned baseline: an EWMA over
//! [`BURN_WINDOW`] of the scope's tokens per second; an alarm when, after the warm-up, it stays
//! above [`RateParams::burn_factor`] times the baseline for a whole window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use warden_telemetry::Outcome;

/// Parameters of the rate detectors.
#[derive(Debug, Clone, PartialEq)]
pub struct RateParams {
    /// Trials that only learn the baseline.
    pub warmup: u64,
    /// The CUSUM threshold `h` (nats).
    pub threshold: f64,
    /// Shifts the bank is tuned to (multiples of `p0`, each > 1).
    pub shifts: Vec<f64>,
    /// Trials the baseline keeps learning over after the warm-up.
    pub baseline_window: f64,
    /// Token burn: tokens per second above this multiple of the baseline alarm.
    pub burn_factor: f64,
}

impl Default for RateParams {
    fn default() -> Self {
        RateParams {
            warmup: 50_000,
            threshold: 14.5,
            shifts: vec![2.0, 3.0],
            baseline_window: 1_000_000.0,
            burn_factor: 3.0,
        }
    }
}

/// One CUSUM of the bank.
#[derive(Debug, Clone)]
struct Arm {
    shift: f64,
    /// Increments for a success and a failure, for the current `p0`.
    up: f64,
    down: f64,
    s: f64,
}

impl Arm {
    fn new(shift: f64) -> Arm {
        Arm {
            shift,
            up: 0.0,
            down: 0.0,
            s: 0.0,
        }
    }

    fn tune(&mut self, p0: f64) {
        // k·p0 must stay a probability.
        let p1 = (self.shift * p0).min(0.999);
        self.up = (p1 / p0).ln();
        self.down = ((1.0 - p1) / (1.0 - p0)).ln();
    }
}

/// What a detector says when it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// The baseline it compared against (a rate, or a latency / tokens-per-second figure).
    pub baseline: f64,
    /// The shift of the CUSUM that fired (or the burn ratio).
    pub shift: f64,
    /// The observed value over the recent window (rate, EWMA latency in seconds, tokens/s).
    pub observed: f64,
}

/// A Bernoulli CUSUM bank with a learned (or fixed) baseline.
#[derive(Debug, Clone)]
pub struct RateDetector {
    params: Arc<RateParams>,
    arms: Vec<Arm>,
    /// Trials and successes seen (during the warm-up: all of them).
    n: u64,
    k: f64,
    p0: f64,
    /// The baseline is fixed (an SLO's allowance) and needs no warm-up.
    fixed: bool,
    /// An EWMA of the recent rate (for the alarm's text), window ~ 1 / (2·p0·...) trials.
    recent: f64,
    /// Trials since the last alarm, and alarms that came soon after the one before: a level
    /// that stays changed is learned as the new baseline after [`RELEARN_AFTER`] of them.
    since_alarm: u64,
    alarms_in_row: u32,
}

/// Alarms in a row (each within `500 / p0` trials of the one before) after which a learned
/// baseline is learned again: the change has lasted, and is the new normal.
pub const RELEARN_AFTER: u32 = 3;

impl RateDetector {
    /// A detector that learns its baseline.
    pub fn learned(params: Arc<RateParams>) -> RateDetector {
        let arms = params.shifts.iter().map(|&s| Arm::new(s)).collect();
        RateDetector {
            params,
            arms,
            n: 0,
            k: 0.0,
            p0: 0.0,
            fixed: false,
            recent: 0.0,
            since_alarm: 0,
            alarms_in_row: 0,
        }
    }

    /// A detector against a known baseline rate `p0` (0 < p0 < 1).
    pub fn fixed(params: Arc<RateParams>, p0: f64) -> RateDetector {
        let mut d = RateDetector::learned(params);
        d.fixed = true;
        d.set_p0(p0);
        d
    }

    fn set_p0(&mut self, p0: f64) {
        self.p0 = p0.clamp(1e-6, 0.5);
        for a in &mut self.arms {
            a.tune(self.p0);
        }
    }

    /// The baseline, once learned.
    pub fn baseline(&self) -> Option<f64> {
        (self.fixed || self.n >= self.params.warmup).then_some(self.p0)
    }

    /// Trials seen.
    pub fn trials(&self) -> u64 {
        self.n
    }

    /// Restart the CUSUMs (after an alarm has been handled), keeping the baseline.
    pub fn reset(&mut self) {
        for a in &mut self.arms {
            a.s = 0.0;
        }
    }

    /// One trial; an alarm when a CUSUM crosses the threshold (the CUSUMs then restart).
    pub fn observe(&mut self, x: bool) -> Option<Alarm> {
        self.n += 1;
        let xf = if x { 1.0 } else { 0.0 };
        if !self.fixed && self.n <= self.params.warmup {
            self.k += xf;
            if self.n == self.params.warmup {
                // Laplace's rule: a rate never seen in the warm-up is not zero.
                self.set_p0((self.k + 1.0) / (self.n as f64 + 2.0));
                self.recent = self.p0;
            }
            return None;
        }
        let window = (4.0 / self.p0).max(200.0);
        self.recent += (xf - self.recent) / window;
        let h = self.params.threshold;
        let mut fired: Option<f64> = None;
        let mut quiet = true;
        for a in &mut self.arms {
            a.s = (a.s + if x { a.up } else { a.down }).max(0.0);
            if a.s >= h {
                fired = Some(fired.map_or(a.shift, |f: f64| f.max(a.shift)));
            }
            quiet &= a.s < h / 4.0;
        }
        if !self.fixed && quiet {
            let w = self.params.baseline_window;
            self.set_p0(self.p0 + (xf - self.p0) / w);
        }
        self.since_alarm = self.since_alarm.saturating_add(1);
        let shift = fired?;
        let alarm = Alarm {
            baseline: self.p0,
            shift,
            observed: self.recent,
        };
        self.reset();
        self.alarms_in_row = if (self.since_alarm as f64) < 500.0 / self.p0 {
            self.alarms_in_row + 1
        } else {
            1
        };
        self.since_alarm = 0;
        if !self.fixed && self.alarms_in_row >= RELEARN_AFTER {
            // Learn the lasting level from scratch (a new warm-up).
            self.n = 0;
            self.k = 0.0;
            self.alarms_in_row = 0;
        }
        Some(alarm)
    }
}

/// Window of the token-burn EWMA.
pub const BURN_WINDOW: Duration = Duration::from_secs(60);
/// Tokens per second below which no burn alarm is raised, whatever the baseline.
pub const BURN_MIN_RATE: f64 = 20.0;

/// Tokens per second of a scope against its learned baseline.
#[derive(Debug, Clone)]
pub struct BurnDetector {
    params: Arc<RateParams>,
    /// EWMA of tokens per second (short window) and the baseline (long window).
    rate: f64,
    baseline: f64,
    last: Option<SystemTime>,
    started: Option<SystemTime>,
    /// Since when the rate has been above the factor.
    above_since: Option<SystemTime>,
}

impl BurnDetector {
    pub fn new(params: Arc<RateParams>) -> BurnDetector {
        BurnDetector {
            params,
            rate: 0.0,
            baseline: 0.0,
            last: None,
            started: None,
            above_since: None,
        }
    }

    /// `tokens` spent at `now`.
    pub fn observe(&mut self, tokens: u64, now: SystemTime) -> Option<Alarm> {
        // After a long quiet spell the averages have decayed to nothing: start over, so a
        // tenant's first requests of the morning are not a spike against a zero baseline.
        if self
            .last
            .is_some_and(|l| now.duration_since(l).unwrap_or_default() > BURN_WINDOW * 10)
        {
            *self = BurnDetector::new(self.params.clone());
        }
        let started = *self.started.get_or_insert(now);
        let last = self.last.replace(now).unwrap_or(now);
        let dt = now.duration_since(last).unwrap_or_default().as_secs_f64();
        // Exponential decay of both averages over the time since the last request, then the
        // tokens as an impulse spread over the short window.
        let short = BURN_WINDOW.as_secs_f64();
        let long = short * 60.0;
        self.rate = self.rate * (-dt / short).exp() + tokens as f64 / short;
        self.baseline = self.baseline * (-dt / long).exp() + tokens as f64 / long;
        // Both averages start at zero: corrected for the time they have been running.
        let elapsed = now.duration_since(started).unwrap_or_default();
        let t = elapsed.as_secs_f64().max(1.0);
        let baseline = self.baseline / (1.0 - (-t / long).exp());
        let warmed = elapsed >= BURN_WINDOW * 10;
        if !warmed
            || baseline <= 0.0
            || self.rate < BURN_MIN_RATE
            || self.rate < self.params.burn_factor * baseline
        {
            self.above_since = None;
            return None;
        }
        let since = *self.above_since.get_or_insert(now);
        if now.duration_since(since).unwrap_or_default() < BURN_WINDOW {
            return None;
        }
        self.above_since = None;
        Some(Alarm {
            baseline,
            shift: self.rate / baseline,
            observed: self.rate,
        })
    }
}

/// The detectors, by name (the `detector` of a runbook's trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Refusal,
    InputBlock,
    OutputBlock,
    Leak,
    Hallucination,
    Error,
    TtftSlo,
    TpotSlo,
    TokenBurn,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Refusal,
        Kind::InputBlock,
        Kind::OutputBlock,
        Kind::Leak,
        Kind::Hallucination,
        Kind::Error,
        Kind::TtftSlo,
        Kind::TpotSlo,
        Kind::TokenBurn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Refusal => "refusal",
            Kind::InputBlock => "input_block",
            Kind::OutputBlock => "output_block",
            Kind::Leak => "leak",
            Kind::Hallucination => "hallucination",
            Kind::Error => "error",
            Kind::TtftSlo => "ttft_slo",
            Kind::TpotSlo => "tpot_slo",
            Kind::TokenBurn => "token_burn",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// What a scope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKind {
    Tenant,
    Model,
    Route,
}

impl ScopeKind {
    pub fn name(self) -> &'static str {
        match self {
            ScopeKind::Tenant => "tenant",
            ScopeKind::Model => "model",
            ScopeKind::Route => "route",
        }
    }

    pub fn parse(s: &str) -> Option<ScopeKind> {
        match s {
            "tenant" => Some(ScopeKind::Tenant),
            "model" => Some(ScopeKind::Model),
            "route" => Some(ScopeKind::Route),
            _ => None,
        }
    }
}

/// `tenant:acme`, `model:llama`, `route:chat_completions`: the same names as the switchboard's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub kind: ScopeKind,
    pub name: Arc<str>,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.name)
    }
}

/// Latency SLOs the latency detectors check.
#[derive(Debug, Clone, PartialEq)]
pub struct Slos {
    pub ttft: Option<Duration>,
    pub tpot: Option<Duration>,
    /// The SLO's quantile: at most `1 − quantile` of requests may be slower.
    pub quantile: f64,
}

impl Default for Slos {
    fn default() -> Self {
        Slos {
            ttft: None,
            tpot: None,
            quantile: 0.95,
        }
    }
}

/// Every detector of one scope.
#[derive(Debug, Clone)]
struct ScopeDetectors {
    rates: [RateDetector; 6],
    ttft: Option<(RateDetector, f64)>,
    tpot: Option<(RateDetector, f64)>,
    burn: BurnDetector,
}

/// A detector fired on a scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub detector: Kind,
    pub scope: Scope,
    pub alarm: Alarm,
    pub at: SystemTime,
}

/// The detectors of every scope, fed one [`Outcome`] per request.
#[derive(Debug)]
pub struct Detectors {
    params: Arc<RateParams>,
    slos: Slos,
    max_scopes: usize,
    scopes: HashMap<Scope, ScopeDetectors>,
    /// Outcomes of scopes past `max_scopes`, not watched.
    pub overflow: u64,
}

impl Detectors {
    pub fn new(params: RateParams, slos: Slos, max_scopes: usize) -> Detectors {
        Detectors {
            params: Arc::new(params),
            slos,
            max_scopes,
            scopes: HashMap::new(),
            overflow: 0,
        }
    }

    /// Scopes watched.
    pub fn scopes(&self) -> usize {
        self.scopes.len()
    }

    /// One request's outcome, into the detectors of its tenant, model and route. Outcomes of
    /// requests refused before a tenant was known are not watched (they say nothing of one).
    pub fn observe(&mut self, o: &Outcome, now: SystemTime) -> Vec<Detection> {
        let mut out = Vec::new();
        if &*o.tenant == "-" {
            return out;
        }
        let mut scopes = vec![
            Scope {
                kind: ScopeKind::Tenant,
                name: o.tenant.clone(),
            },
            Scope {
                kind: ScopeKind::Route,
                name: o.route.clone(),
            },
        ];
        if let Some(m) = &o.model {
            scopes.push(Scope {
                kind: ScopeKind::Model,
                name: m.clone(),
            });
        }
        for scope in scopes {
            if !self.scopes.contains_key(&scope) && self.scopes.len() >= self.max_scopes {
                self.overflow += 1;
                continue;
            }
            let (params, slos) = (self.params.clone(), &self.slos);
            let d = self
                .scopes
                .entry(scope.clone())
                .or_insert_with(|| ScopeDetectors::new(params, slos));
            for (detector, alarm) in d.observe(o, slos, now) {
                out.push(Detection {
                    detector,
                    scope: scope.clone(),
                    alarm,
                    at: now,
                });
            }
        }
        out
    }

    /// The baseline of a detector on a scope, once learned (for status pages and tests).
    pub fn baseline(&self, scope: &Scope, kind: Kind) -> Option<f64> {
        let d = self.scopes.get(scope)?;
        match kind {
            Kind::TtftSlo => d.ttft.as_ref().and_then(|(r, _)| r.baseline()),
            Kind::TpotSlo => d.tpot.as_ref().and_then(|(r, _)| r.baseline()),
            Kind::TokenBurn => Some(d.burn.baseline),
            k => d.rates.get(rate_index(k)?).and_then(RateDetector::baseline),
        }
    }
}

/// Position of a rate detector in [`ScopeDetectors::rates`].
fn rate_index(k: Kind) -> Option<usize> {
    match k {
        Kind::Refusal => Some(0),
        Kind::InputBlock => Some(1),
        Kind::OutputBlock => Some(2),
        Kind::Leak => Some(3),
        Kind::Hallucination => Some(4),
        Kind::Error => Some(5),
        _ => None,
    }
}

impl ScopeDetectors {
    fn new(params: Arc<RateParams>, slos: &Slos) -> ScopeDetectors {
        let allowance = 1.0 - slos.quantile;
        ScopeDetectors {
            rates: std::array::from_fn(|_| RateDetector::learned(params.clone())),
            ttft: slos
                .ttft
                .map(|_| (RateDetector::fixed(params.clone(), allowance), 0.0)),
            tpot: slos
                .tpot
                .map(|_| (RateDetector::fixed(params.clone(), allowance), 0.0)),
            burn: BurnDetector::new(params),
        }
    }

    fn observe(&mut self, o: &Outcome, slos: &Slos, now: SystemTime) -> Vec<(Kind, Alarm)> {
        let mut out = Vec::new();
        // Each rate counts only requests where it can be decided.
        let trials: [(Kind, Option<bool>); 6] = [
            (Kind::Refusal, o.refusal),
            (Kind::InputBlock, o.guard.map(|_| o.input_blocked())),
            (Kind::OutputBlock, o.output.map(|_| o.output_blocked())),
            (Kind::Leak, o.output.map(|_| o.leak.is_some())),
            (Kind::Hallucination, o.hallucination_flag),
            (Kind::Error, Some(o.failed())),
        ];
        for (i, (kind, x)) in trials.into_iter().enumerate() {
            if let (Some(x), Some(d)) = (x, self.rates.get_mut(i)) {
                if let Some(a) = d.observe(x) {
                    out.push((kind, a));
                }
            }
        }
        for (kind, slot, slo, value) in [
            // Time to first token means something for streams only (a whole body's first byte
            // comes at the end of generation).
            (
                Kind::TtftSlo,
                &mut self.ttft,
                slos.ttft,
                o.ttft.filter(|_| o.stream),
            ),
            (Kind::TpotSlo, &mut self.tpot, slos.tpot, o.tpot),
        ] {
            if let (Some((d, ewma)), Some(slo), Some(v)) = (slot.as_mut(), slo, value) {
                *ewma += (v.as_secs_f64() - *ewma) / 100.0;
                if let Some(mut a) = d.observe(v > slo) {
                    a.observed = *ewma;
                    out.push((kind, a));
                }
            }
        }
        let tokens = o
            .input_tokens
            .unwrap_or(0)
            .saturating_add(o.output_tokens.unwrap_or(0));
        if tokens > 0 {
            if let Some(a) = self.burn.observe(tokens, now) {
                out.push((Kind::TokenBurn, a));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic Bernoulli source.
    struct Lcg(u64);
    impl Lcg {
        fn bern(&mut self, p: f64) -> bool {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) < p
        }
    }

    #[test]
    fn a_tripled_rate_is_caught_and_the_baseline_is_learned() {
        let params = Arc::new(RateParams::default());
        let mut d = RateDetector::learned(params.clone());
        let mut rng = Lcg(7);
        for _ in 0..params.warmup {
            assert!(d.observe(rng.bern(0.02)).is_none());
        }
        let p0 = d.baseline().unwrap();
        assert!((p0 - 0.02).abs() < 0.003, "{p0}");
        // Quiet for 200k trials.
        let quiet = (0..200_000)
            .filter(|_| d.observe(rng.bern(0.02)).is_some())
            .count();
        assert_eq!(quiet, 0);
        let mut n = 0;
        let alarm = loop {
            n += 1;
            if let Some(a) = d.observe(rng.bern(0.06)) {
                break a;
            }
            assert!(n < 5_000, "no alarm");
        };
        assert!(alarm.shift >= 2.0 && n > 100, "{alarm:?} after {n}");
    }

    #[test]
    fn a_lasting_change_becomes_the_new_baseline() {
        let params = Arc::new(RateParams {
            warmup: 5_000,
            ..RateParams::default()
        });
        let mut d = RateDetector::learned(params);
        let mut rng = Lcg(11);
        for _ in 0..5_000 {
            d.observe(rng.bern(0.02));
        }
        // The rate doubles for good: a few alarms, then a relearned baseline and quiet.
        let mut alarms = 0;
        for _ in 0..60_000 {
            if d.observe(rng.bern(0.04)).is_some() {
                alarms += 1;
            }
        }
        assert!(
            (1..=RELEARN_AFTER as usize + 1).contains(&alarms),
            "{alarms}"
        );
        assert!(
            d.baseline().is_some_and(|p| (p - 0.04).abs() < 0.01),
            "{:?}",
            d.baseline()
        );
    }

    #[test]
    fn token_burn_ignores_a_tenant_coming_back_after_a_quiet_night() {
        let mut b = BurnDetector::new(Arc::new(RateParams::default()));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for s in 0..8 * 3600 {
            b.observe(100, t0 + Duration::from_secs(s));
        }
        let back = t0 + Duration::from_secs(20 * 3600);
        for s in 0..600 {
            assert!(
                b.observe(100, back + Duration::from_secs(s)).is_none(),
                "{s}"
            );
        }
    }

    #[test]
    fn a_known_baseline_needs_no_warm_up() {
        let mut d = RateDetector::fixed(Arc::new(RateParams::default()), 0.05);
        assert_eq!(d.baseline(), Some(0.05));
        let mut rng = Lcg(3);
        let n = (1..20_000).find(|_| d.observe(rng.bern(0.5)).is_some());
        assert!(n.is_some_and(|n| n < 100), "{n:?}");
    }

    #[test]
    fn scopes_are_bounded_and_unauthenticated_outcomes_ignored() {
        let mut ds = Detectors::new(RateParams::default(), Slos::default(), 4);
        let now = SystemTime::now();
        for t in 0..10 {
            let o = Outcome::new(format!("t{t}").into(), Some("m".into()), "chat".into());
            ds.observe(&o, now);
        }
        assert_eq!(ds.scopes(), 4);
        assert!(ds.overflow > 0);
        let anon = Outcome::new("-".into(), None, "chat".into());
        let before = ds.overflow;
        ds.observe(&anon, now);
        assert_eq!(ds.overflow, before);
    }

    #[test]
    fn token_burn_fires_on_a_sustained_multiple_of_the_baseline() {
        let mut b = BurnDetector::new(Arc::new(RateParams::default()));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // An hour at 100 tokens a second (one request a second).
        for s in 0..3600 {
            assert!(b.observe(100, t0 + Duration::from_secs(s)).is_none());
        }
        // Then 1,000 a second.
        let fired = (3600..3900).find(|&s| b.observe(1000, t0 + Duration::from_secs(s)).is_some());
        assert!(fired.is_some_and(|s| s < 3600 + 180), "{fired:?}");
    }
}
