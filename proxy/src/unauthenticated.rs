//! What Warden keeps of requests refused before a tenant was known (no key, a wrong key, an
//! unknown path, garbage), so that a flood of them cannot flood the log or the audit lake.
//!
//! Role: the logging phase asks [`Unauthenticated::on_refused`] about every such request.
//! - Log: with `[logging] unauthenticated = "summary"` (the default) there is no line per
//!   request; [`Unauthenticated::take_summary`] gives one line per `summary_interval_s` with the
//!   counts by error code, and nothing when there were none. `"each"` logs every request.
//! - Lake: `[telemetry] unauthenticated` decides which of them become rows: `"all"`,
//!   `"sampled"` (the default: at most `unauthenticated_rows_per_s` rows a second, a token
//!   bucket with a one-second burst) or `"counted"` (no rows).
//!
//! Every request is counted whatever the policy: `warden_requests_total{tenant="-"}` as before,
//! and the ones that got no row in `warden_telemetry_unrecorded_total{reason="unauthenticated"}`,
//! so nothing is dropped silently. The probe that found this sent 5,000 requests/s without a key
//! for 10 s: 11.6 MiB of log and 14.6 MiB of spool.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Which refused requests become audit-lake rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowPolicy {
    All,
    /// At most this many rows a second.
    Sampled(f64),
    Counted,
}

/// How refused requests are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPolicy {
    Each,
    /// One line per interval.
    Summary(Duration),
}

/// What to do with one refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub log_line: bool,
    pub lake_row: bool,
}

/// The counts of one summary interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub interval: Duration,
    /// Requests by error code.
    pub by_code: BTreeMap<&'static str, u64>,
}

#[derive(Debug)]
pub struct Unauthenticated {
    log: LogPolicy,
    rows: RowPolicy,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Row tokens left and when they were last refilled.
    tokens: f64,
    refilled: Instant,
    by_code: BTreeMap<&'static str, u64>,
    since: Instant,
}

// === impl Unauthenticated ===

impl Unauthenticated {
    pub fn new(log: LogPolicy, rows: RowPolicy, now: Instant) -> Self {
        let burst = match rows {
            RowPolicy::Sampled(per_s) => per_s,
            _ => 0.0,
        };
        Unauthenticated {
            log,
            rows,
            state: Mutex::new(State {
                tokens: burst,
                refilled: now,
                by_code: BTreeMap::new(),
                since: now,
            }),
        }
    }

    /// A request refused with `code` before a tenant was known.
    pub fn on_refused(&self, code: &'static str, now: Instant) -> Decision {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let log_line = match self.log {
            LogPolicy::Each => true,
            LogPolicy::Summary(_) => {
                *s.by_code.entry(code).or_insert(0) += 1;
                false
            }
        };
        let lake_row = match self.rows {
            RowPolicy::All => true,
            RowPolicy::Counted => false,
            RowPolicy::Sampled(per_s) => {
                let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
                s.tokens = (s.tokens + elapsed * per_s).min(per_s.max(1.0));
                s.refilled = now;
                if s.tokens >= 1.0 {
                    s.tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
        };
        Decision { log_line, lake_row }
    }

    /// The counts since the last summary, once its interval is over (or at once with `final_`,
    /// at shutdown) and if there were any.
    pub fn take_summary(&self, now: Instant, final_: bool) -> Option<Summary> {
        let LogPolicy::Summary(every) = self.log else {
            return None;
        };
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let interval = now.saturating_duration_since(s.since);
        if interval < every && !final_ {
            return None;
        }
        s.since = now;
        if s.by_code.is_empty() {
            return None;
        }
        Some(Summary {
            interval,
            by_code: std::mem::take(&mut s.by_code),
        })
    }

    /// How often [`Self::take_summary`] should be asked.
    pub fn summary_interval(&self) -> Option<Duration> {
        match self.log {
            LogPolicy::Summary(every) => Some(every),
            LogPolicy::Each => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_flood_gives_one_summary_line_per_interval() {
        let t0 = Instant::now();
        let u = Unauthenticated::new(LogPolicy::Summary(10 * S), RowPolicy::All, t0);
        for i in 0..50_000u32 {
            let code = if i % 5 == 0 {
                "invalid_api_key"
            } else {
                "missing_api_key"
            };
            let d = u.on_refused(code, t0 + Duration::from_micros(u64::from(i) * 200));
            assert!(!d.log_line && d.lake_row);
        }
        assert_eq!(
            u.take_summary(t0 + 9 * S, false),
            None,
            "not before the interval"
        );
        let s = u.take_summary(t0 + 10 * S, false).unwrap();
        assert_eq!(s.by_code["missing_api_key"], 40_000);
        assert_eq!(s.by_code["invalid_api_key"], 10_000);
        assert_eq!(
            u.take_summary(t0 + 30 * S, false),
            None,
            "nothing new, no line"
        );
        u.on_refused("missing_api_key", t0 + 31 * S);
        assert!(
            u.take_summary(t0 + 32 * S, true).is_some(),
            "the last one at shutdown"
        );
    }

    #[test]
    fn sampled_rows_are_capped_per_second_and_counted_gives_none() {
        let t0 = Instant::now();
        let u = Unauthenticated::new(LogPolicy::Each, RowPolicy::Sampled(10.0), t0);
        // 5,000/s for 10 s.
        let rows = (0..50_000u64)
            .filter(|i| {
                u.on_refused("missing_api_key", t0 + Duration::from_micros(i * 200))
                    .lake_row
            })
            .count();
        assert!((100..=111).contains(&rows), "{rows} rows");
        assert!(u.on_refused("missing_api_key", t0).log_line);

        let u = Unauthenticated::new(LogPolicy::Each, RowPolicy::Counted, t0);
        assert!(!u.on_refused("missing_api_key", t0 + S).lake_row);
    }
}
