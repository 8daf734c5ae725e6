//! Per-tenant quotas: token buckets for requests per minute and tokens per minute.
//!
//! Tokens are charged before forwarding with an estimate (prompt size + `max_tokens`), then
//! reconciled with the upstream's `usage` when the response ends: the difference is refunded (or
//! charged, in which case the bucket may go into debt and later requests wait for it to refill).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// A classic token bucket refilling continuously at `capacity` per minute.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn per_minute(capacity: u64, now: Instant) -> Self {
        let capacity = capacity as f64;
        Self {
            capacity,
            per_sec: capacity / 60.0,
            level: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Take `n` or say how long until `n` will be available.
    pub fn try_take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level >= n {
            self.level -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - self.level) / self.per_sec))
        }
    }

    /// Return (positive) or charge (negative) tokens after the fact. Debt is bounded by one
    /// bucket's worth, so a wildly wrong usage report cannot lock a tenant out for long.
    pub fn adjust(&mut self, delta: f64, now: Instant) {
        self.refill(now);
        self.level = (self.level + delta).clamp(-self.capacity, self.capacity);
    }

    pub fn capacity(&self) -> f64 {
        self.capacity
    }
}

/// The quota state of one tenant.
#[derive(Debug)]
pub struct TenantQuota {
    requests: Option<Mutex<TokenBucket>>,
    tokens: Option<Mutex<TokenBucket>>,
}

impl TenantQuota {
    pub fn new(requests_per_minute: Option<u32>, tokens_per_minute: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            requests: requests_per_minute
                .map(|n| Mutex::new(TokenBucket::per_minute(n.into(), now))),
            tokens: tokens_per_minute.map(|n| Mutex::new(TokenBucket::per_minute(n, now))),
        }
    }

    /// Admit one request that is estimated to use `tokens`.
    pub fn admit(&self, tokens: u64, now: Instant) -> Result<(), ApiError> {
        if let Some(bucket) = &self.requests {
            lock(bucket)
                .try_take(1.0, now)
                .map_err(|retry_after| ApiError::RequestRateLimited { retry_after })?;
        }
        if let Some(bucket) = &self.tokens {
            let mut b = lock(bucket);
            if tokens as f64 > b.capacity() {
                let budget = b.capacity() as u64;
                drop(b);
                self.refund_request(now);
                return Err(ApiError::RequestExceedsTokenBudget {
                    needed: tokens,
                    budget,
                });
            }
            if let Err(retry_after) = b.try_take(tokens as f64, now) {
                drop(b);
                self.refund_request(now);
                return Err(ApiError::TokenRateLimited { retry_after });
            }
        }
        Ok(())
    }

    /// After the response: replace the estimate with what was actually used.
    pub fn reconcile(&self, estimated: u64, actual: u64, now: Instant) {
        if let Some(bucket) = &self.tokens {
            lock(bucket).adjust(estimated as f64 - actual as f64, now);
        }
    }

    fn refund_request(&self, now: Instant) {
        if let Some(bucket) = &self.requests {
            lock(bucket).adjust(1.0, now);
        }
    }
}

/// A poisoned quota lock only means another request panicked mid-update; the bucket is still a
/// valid number, so keep serving.
fn lock(m: &Mutex<TokenBucket>) -> std::sync::MutexGuard<'_, TokenBucket> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute() {
        let t0 = Instant::now();
        let q = TenantQuota::new(Some(2), None);
        assert!(q.admit(0, t0).is_ok());
        assert!(q.admit(0, t0).is_ok());
        match q.admit(0, t0) {
            Err(ApiError::RequestRateLimited { retry_after }) => {
                assert!(
                    retry_after > Duration::from_secs(29) && retry_after <= Duration::from_secs(30)
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(q.admit(0, t0 + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn tokens_reconcile_refunds_and_rejects_oversized() {
        let t0 = Instant::now();
        let q = TenantQuota::new(Some(100), Some(1000));
        assert!(q.admit(900, t0).is_ok());
        assert!(matches!(
            q.admit(200, t0),
            Err(ApiError::TokenRateLimited { .. })
        ));
        q.reconcile(900, 100, t0); // only 100 used: 800 back
        assert!(q.admit(800, t0).is_ok());
        assert!(matches!(
            q.admit(5000, t0),
            Err(ApiError::RequestExceedsTokenBudget {
                needed: 5000,
                budget: 1000
            })
        ));
    }
}
