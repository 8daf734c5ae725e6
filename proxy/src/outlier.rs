//! Passive outlier detection: stop sending requests to an upstream that keeps failing them, and
//! probe it back in.
//!
//! Role: each upstream has one [`Outlier`]. Every forwarded exchange reports its result: a
//! refused or timed-out connect, a timeout waiting for the first byte or between events, or a
//! broken response is a failure; any response (whatever its status: a worker answering 503
//! "queue full" is alive and pushing back) is a success. `eject_after` failures in a row eject
//! the upstream for `base` × 2^(ejections − 1), capped at `max`. When that time is over one
//! request is let through as a probe (half-open); its success returns the upstream to service and
//! forgets the ejections, its failure ejects it again for twice as long.
//!
//! Guarantees: sans-IO (time is passed in), lock-free reads on the routing path; at most one
//! probe is in flight per upstream; a probe whose request never reports (the client hung up
//! before the exchange ended) is given up after `max`, so an upstream cannot stay closed forever.
//!
//! Non-goals: active health checks (`health.rs`: an upstream must pass those too to be routed
//! to), load balancing between healthy upstreams (config order decides).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Settings of the detector (`[[upstreams]]` keys `eject_after_failures`, `eject_ms`,
/// `max_eject_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    pub eject_after: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            eject_after: 3,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }
}

/// Whether an upstream may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// In service.
    Yes,
    /// Its ejection is over and this request is the one probe.
    Probe,
    /// Ejected (or a probe is already in flight) for this long still.
    No { retry_in: Duration },
}

/// What became of an exchange with the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The upstream answered (any status).
    Answered,
    /// Connect refused or timed out, no first byte in time, idle too long, broken response.
    Failed,
}

/// One upstream's detector. Times are nanoseconds since `epoch` (0 = not set).
#[derive(Debug)]
pub struct Outlier {
    cfg: OutlierConfig,
    epoch: Instant,
    consecutive: AtomicU32,
    ejections: AtomicU32,
    /// End of the current ejection.
    ejected_until: AtomicU64,
    /// When the probe in flight was let through; 0 = none.
    probe_since: AtomicU64,
}

// === impl Outlier ===

impl Outlier {
    pub fn new(cfg: OutlierConfig, epoch: Instant) -> Self {
        Outlier {
            cfg,
            epoch,
            consecutive: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            probe_since: AtomicU64::new(0),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        // `max(1)`: 0 means "not set".
        (now.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejections.load(Ordering::Acquire) > 0 && !matches!(self.peek(now), Admit::Yes)
    }

    /// Whether a request could be sent now, without claiming the probe.
    pub fn peek(&self, now: Instant) -> Admit {
        if self.ejections.load(Ordering::Acquire) == 0 {
            return Admit::Yes;
        }
        let now = self.nanos(now);
        let until = self.ejected_until.load(Ordering::Acquire);
        if now < until {
            return Admit::No {
                retry_in: Duration::from_nanos(until - now),
            };
        }
        let probe = self.probe_since.load(Ordering::Acquire);
        let stale = self.cfg.max.as_nanos() as u64;
        if probe != 0 && now.saturating_sub(probe) < stale {
            return Admit::No {
                retry_in: Duration::from_nanos(stale - (now - probe)),
            };
        }
        Admit::Probe
    }

    /// Whether a request may be sent now; claims the probe when that is what it would be.
    pub fn admit(&self, now: Instant) -> Admit {
        match self.peek(now) {
            Admit::Probe => {
                let seen = self.probe_since.load(Ordering::Acquire);
                let at = self.nanos(now);
                match self.probe_since.compare_exchange(
                    seen,
                    at,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Admit::Probe,
                    // Another request took the probe a moment ago.
                    Err(_) => Admit::No {
                        retry_in: self.cfg.base,
                    },
                }
            }
            other => other,
        }
    }

    /// The probe this request held ended without a verdict (the client went away before the
    /// upstream answered): let the next request probe.
    pub fn release_probe(&self) {
        self.probe_since.store(0, Ordering::Release);
    }

    /// Record the result of an exchange. Returns `Some(duration)` when this failure ejected the
    /// upstream (for the log and the metric).
    pub fn report(&self, outcome: Exchange, now: Instant) -> Option<Duration> {
        match outcome {
            Exchange::Answered => {
                self.consecutive.store(0, Ordering::Release);
                if self.ejections.swap(0, Ordering::AcqRel) > 0 {
                    self.probe_since.store(0, Ordering::Release);
                    self.ejected_until.store(0, Ordering::Release);
                }
                None
            }
            Exchange::Failed if self.cfg.eject_after == 0 => None,
            Exchange::Failed => {
                let probing = self.probe_since.swap(0, Ordering::AcqRel) != 0;
                let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                if !probing && (n < self.cfg.eject_after || self.is_ejected(now)) {
                    return None;
                }
                let k = self.ejections.fetch_add(1, Ordering::AcqRel);
                let factor = 1u32.checked_shl(k.min(30)).unwrap_or(u32::MAX);
                let d = self.cfg.base.saturating_mul(factor).min(self.cfg.max);
                self.ejected_until
                    .store(self.nanos(now + d), Ordering::Release);
                Some(d)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier() -> (Outlier, Instant) {
        let t0 = Instant::now();
        let cfg = OutlierConfig {
            eject_after: 3,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        };
        (Outlier::new(cfg, t0), t0)
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn three_failures_in_a_row_eject_and_a_success_between_resets() {
        let (o, t0) = outlier();
        assert_eq!(o.report(Exchange::Failed, t0), None);
        assert_eq!(o.report(Exchange::Failed, t0), None);
        assert_eq!(o.report(Exchange::Answered, t0), None);
        assert_eq!(o.report(Exchange::Failed, t0), None);
        assert_eq!(o.report(Exchange::Failed, t0), None);
        assert_eq!(o.admit(t0), Admit::Yes);
        assert_eq!(o.report(Exchange::Failed, t0), Some(s(5)));
        assert!(matches!(o.admit(t0 + s(1)), Admit::No { retry_in } if retry_in == s(4)));
        assert!(o.is_ejected(t0 + s(1)));
    }

    #[test]
    fn one_probe_after_the_ejection_and_its_result_decides() {
        let (o, t0) = outlier();
        for _ in 0..3 {
            o.report(Exchange::Failed, t0);
        }
        let t = t0 + s(5);
        assert_eq!(o.admit(t), Admit::Probe);
        assert!(
            matches!(o.admit(t), Admit::No { .. }),
            "one probe at a time"
        );
        // The probe fails: twice as long.
        assert_eq!(o.report(Exchange::Failed, t), Some(s(10)));
        assert!(matches!(o.admit(t + s(9)), Admit::No { .. }));
        assert_eq!(o.admit(t + s(10)), Admit::Probe);
        // The probe succeeds: back in service, ejections forgotten.
        o.report(Exchange::Answered, t + s(10));
        assert_eq!(o.admit(t + s(10)), Admit::Yes);
        assert!(!o.is_ejected(t + s(10)));
        for _ in 0..3 {
            o.report(Exchange::Failed, t + s(11));
        }
        assert!(matches!(o.admit(t + s(12)), Admit::No { retry_in } if retry_in == s(4)));
    }

    #[test]
    fn ejections_double_up_to_the_cap() {
        let (o, t0) = outlier();
        for _ in 0..3 {
            o.report(Exchange::Failed, t0);
        }
        let mut t = t0;
        let mut seen = Vec::new();
        for _ in 0..6 {
            t += s(60);
            assert_eq!(o.admit(t), Admit::Probe);
            seen.push(o.report(Exchange::Failed, t).unwrap().as_secs());
        }
        assert_eq!(seen, [10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn a_probe_that_never_reports_is_given_up_after_the_cap() {
        let (o, t0) = outlier();
        for _ in 0..3 {
            o.report(Exchange::Failed, t0);
        }
        assert_eq!(o.admit(t0 + s(5)), Admit::Probe);
        assert!(matches!(o.admit(t0 + s(30)), Admit::No { .. }));
        assert_eq!(o.admit(t0 + s(66)), Admit::Probe);
    }

    #[test]
    fn failures_while_ejected_do_not_extend_it() {
        let (o, t0) = outlier();
        for _ in 0..3 {
            o.report(Exchange::Failed, t0);
        }
        // Requests already in flight when it was ejected fail too.
        assert_eq!(o.report(Exchange::Failed, t0 + s(1)), None);
        assert_eq!(o.admit(t0 + s(5)), Admit::Probe);
    }
}
