//! `warden detect simulate`: the real detector code on simulated request streams, for its
//! detection delay and its false-alarm rate.
//!
//! - Delay: `runs` times, a fresh detector learns the baseline rate over its warm-up, sees a
//!   stationary stretch of random length (0–999 trials, so the shift does not fall at a fixed
//!   phase), then the rate is multiplied by `shift`; the delay is the number of trials from the
//!   shift to the alarm (a run that raises a false alarm before the shift starts over).
//! - False alarms: one detector, after its warm-up, on `stationary` trials at the baseline rate
//!   (CUSUMs restart after each alarm): alarms per million trials.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::detect::{Kind, RateDetector, RateParams};

/// A simulation's inputs.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub detector: Kind,
    /// The baseline rate (for `ttft_slo` / `tpot_slo`: the SLO's allowance, e.g. 0.05).
    pub baseline: f64,
    pub shift: f64,
    pub runs: usize,
    /// Trials of the stationary run (at least 10⁷ for a figure per million).
    pub stationary: u64,
    pub seed: u64,
    pub params: RateParams,
}

/// Delays and false alarms.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    pub median_delay_requests: f64,
    pub p90_delay_requests: f64,
    pub false_alarms_per_million: f64,
    /// Runs that never alarmed within [`MAX_DELAY`] (counted at that delay).
    pub missed: usize,
    pub false_alarms: u64,
}

/// Trials after the shift before a run counts as missed.
pub const MAX_DELAY: u64 = 1_000_000;

impl SimReport {
    pub fn to_json(&self, spec: &SimSpec) -> Value {
        json!({
            "detector": spec.detector.name(),
            "baseline": spec.baseline,
            "shift": spec.shift,
            "runs": spec.runs,
            "stationary_requests": spec.stationary,
            "threshold": spec.params.threshold,
            "warmup": spec.params.warmup,
            "median_delay_requests": self.median_delay_requests,
            "p90_delay_requests": self.p90_delay_requests,
            "false_alarms_per_million": self.false_alarms_per_million,
            "false_alarms": self.false_alarms,
            "missed": self.missed,
        })
    }
}

fn detector(spec: &SimSpec) -> Result<RateDetector, String> {
    let params = Arc::new(spec.params.clone());
    match spec.detector {
        Kind::TtftSlo | Kind::TpotSlo => Ok(RateDetector::fixed(params, spec.baseline)),
        Kind::TokenBurn => {
            Err("token_burn is not a rate detector; it cannot be simulated here".into())
        }
        _ => Ok(RateDetector::learned(params)),
    }
}

/// Runs the simulation.
pub fn simulate(spec: &SimSpec) -> Result<SimReport, String> {
    if !(spec.params.threshold > 0.0 && spec.params.threshold.is_finite()) {
        return Err(format!(
            "--threshold {}: must be above 0",
            spec.params.threshold
        ));
    }
    if !(spec.baseline > 0.0 && spec.baseline < 0.5) {
        return Err(format!("--baseline {}: must be in (0, 0.5)", spec.baseline));
    }
    if !(spec.shift > 1.0 && spec.shift * spec.baseline < 1.0) {
        return Err(format!(
            "--shift {}: must be above 1, and the shifted rate below 1",
            spec.shift
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let p0 = spec.baseline;
    let p1 = spec.baseline * spec.shift;
    let warm = |d: &mut RateDetector, rng: &mut rand::rngs::StdRng| {
        while d.baseline().is_none() {
            d.observe(rng.random::<f64>() < p0);
        }
    };
    let mut delays: Vec<u64> = Vec::with_capacity(spec.runs);
    let mut missed = 0;
    while delays.len() < spec.runs {
        let mut d = detector(spec)?;
        warm(&mut d, &mut rng);
        let lead = rng.random_range(0..1000u64);
        if (0..lead).any(|_| d.observe(rng.random::<f64>() < p0).is_some()) {
            continue;
        }
        let mut n = 0;
        loop {
            n += 1;
            if d.observe(rng.random::<f64>() < p1).is_some() {
                break;
            }
            if n >= MAX_DELAY {
                missed += 1;
                break;
            }
        }
        delays.push(n);
    }
    delays.sort_unstable();
    let q = |f: f64| -> f64 {
        if delays.is_empty() {
            return 0.0;
        }
        delays[((delays.len() - 1) as f64 * f).round() as usize] as f64
    };
    let mut d = detector(spec)?;
    warm(&mut d, &mut rng);
    let mut false_alarms = 0u64;
    for _ in 0..spec.stationary {
        if d.observe(rng.random::<f64>() < p0).is_some() {
            false_alarms += 1;
        }
    }
    Ok(SimReport {
        median_delay_requests: q(0.5),
        p90_delay_requests: q(0.9),
        false_alarms_per_million: if spec.stationary == 0 {
            0.0
        } else {
            false_alarms as f64 * 1e6 / spec.stationary as f64
        },
        missed,
        false_alarms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_simulation_reports_delays_and_rejects_bad_input() {
        let spec = SimSpec {
            detector: Kind::Refusal,
            baseline: 0.02,
            shift: 3.0,
            runs: 20,
            stationary: 200_000,
            seed: 1,
            params: RateParams {
                warmup: 5_000,
                ..RateParams::default()
            },
        };
        let r = simulate(&spec).unwrap();
        assert!(
            r.median_delay_requests > 100.0 && r.median_delay_requests < 2_000.0,
            "{r:?}"
        );
        assert!(r.p90_delay_requests >= r.median_delay_requests);
        assert_eq!(r.missed, 0);
        let v = r.to_json(&spec);
        assert!(v["false_alarms_per_million"].is_number());
        assert!(simulate(&SimSpec {
            shift: 0.5,
            ..spec.clone()
        })
        .is_err());
        assert!(simulate(&SimSpec {
            baseline: 0.0,
            ..spec.clone()
        })
        .is_err());
        assert!(simulate(&SimSpec {
            detector: Kind::TokenBurn,
            ..spec
        })
        .is_err());
    }
}
