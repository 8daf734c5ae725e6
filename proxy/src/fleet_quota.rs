//! Tenant quotas shared by a fleet: with `[switchboard] shared_quotas = true`, each tenant's
//! request and token buckets live in the fleet's Redis, so N sidecars enforce one budget instead
//! of N.
//!
//! Each bucket is a GCRA ("generic cell rate algorithm") state: one number per bucket, the
//! theoretical arrival time (TAT, in ms), updated by one Lua script that checks both buckets and
//! charges them together (atomic in Redis, so two sidecars never both take the last token). A
//! limit of `L` per minute has an emission interval of `60000 / L` ms a unit and a burst of
//! 60,000 ms (a full minute's worth, as the local buckets allow). After a response, the token
//! bucket is corrected by `actual − estimated` units, as the local buckets are.
//!
//! Redis unreachable (or slower than [`QUOTA_TIMEOUT`]): the request falls back to the sidecar's
//! own buckets, which enforce the budget per sidecar (so a fleet of N admits up to N times it
//! while Redis is away); `warden_fleet_quota_fallbacks_total` counts those requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::ApiError;

/// How long a request waits for the shared buckets before it uses its sidecar's own.
pub const QUOTA_TIMEOUT: Duration = Duration::from_millis(250);

/// Checks both buckets, then charges both, or neither. Returns `{1, 0}` when admitted, else
/// `{0, wait_ms, which}` with `which` 1 for requests, 2 for tokens.
const ADMIT: &str = r"
local now = tonumber(ARGV[1])
local function check(key, period, cost)
  if period <= 0 then return nil, 0 end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * period
  local wait = new_tat - 60000 - now
  return new_tat, wait
end
local rt, rw = check(KEYS[1], tonumber(ARGV[2]), 1)
if rt and rw > 0 then return {0, math.ceil(rw), 1} end
local tt, tw = check(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if tt and tw > 0 then return {0, math.ceil(tw), 2} end
if rt then redis.call('SET', KEYS[1], rt, 'PX', math.ceil(rt - now) + 1000) end
if tt then redis.call('SET', KEYS[2], tt, 'PX', math.ceil(tt - now) + 1000) end
return {1, 0, 0}
";

/// Moves a bucket's TAT by `units * period` (negative: a refund), never below now.
const ADJUST: &str = r"
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + tonumber(ARGV[2]) * tonumber(ARGV[3])
if tat <= now then redis.call('DEL', KEYS[1]) return 0 end
redis.call('SET', KEYS[1], tat, 'PX', math.ceil(tat - now) + 1000)
return 1
";

/// The fleet's quota buckets.
pub struct FleetQuotas {
    client: redis::Client,
    prefix: String,
    con: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    connected: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Emission interval of a per-minute limit, in ms a unit (0: no limit).
fn period(limit: Option<u64>) -> f64 {
    limit
        .filter(|&l| l > 0)
        .map_or(0.0, |l| 60_000.0 / l as f64)
}

impl FleetQuotas {
    pub fn new(url: &str, key: &str) -> Result<FleetQuotas, String> {
        Ok(FleetQuotas {
            client: redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?,
            prefix: format!("{key}:quota"),
            con: tokio::sync::Mutex::new(None),
            connected: AtomicBool::new(false),
        })
    }

    /// Whether the last call reached Redis.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let mut slot = self.con.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        *self.con.lock().await = None;
        self.connected.store(false, Ordering::Relaxed);
    }

    /// Admit one request of `tenant` estimated at `tokens`: `Ok(Ok(()))` admitted,
    /// `Ok(Err(..))` over the fleet's budget, `Err(..)` when Redis could not say (the caller
    /// falls back to its own buckets).
    pub async fn admit(
        &self,
        tenant: &str,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> Result<Result<(), ApiError>, String> {
        let run = async {
            let mut con = self.connection().await?;
            redis::Script::new(ADMIT)
                .key(format!("{}:{tenant}:requests", self.prefix))
                .key(format!("{}:{tenant}:tokens", self.prefix))
                .arg(now_ms())
                .arg(period(rpm.map(u64::from)))
                .arg(period(tpm))
                .arg(tokens)
                .invoke_async::<(i64, i64, i64)>(&mut con)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(QUOTA_TIMEOUT, run).await {
            Ok(Ok((1, _, _))) => {
                self.connected.store(true, Ordering::Relaxed);
                Ok(Ok(()))
            }
            Ok(Ok((_, wait_ms, which))) => {
                self.connected.store(true, Ordering::Relaxed);
                let retry_after = Duration::from_millis(wait_ms.max(1) as u64);
                Ok(Err(if which == 1 {
                    ApiError::RequestRateLimited { retry_after }
                } else {
                    ApiError::TokenRateLimited { retry_after }
                }))
            }
            Ok(Err(e)) => {
                self.forget().await;
                Err(e)
            }
            Err(_) => {
                self.forget().await;
                Err("the fleet's Redis did not answer in time".into())
            }
        }
    }

    /// After the response: `actual − estimated` tokens onto the tenant's token bucket.
    pub async fn reconcile(&self, tenant: &str, tpm: Option<u64>, estimated: u64, actual: u64) {
        let p = period(tpm);
        if p == 0.0 || estimated == actual {
            return;
        }
        let units = actual as f64 - estimated as f64;
        let run = async {
            let mut con = self.connection().await?;
            redis::Script::new(ADJUST)
                .key(format!("{}:{tenant}:tokens", self.prefix))
                .arg(now_ms())
                .arg(units)
                .arg(p)
                .invoke_async::<i64>(&mut con)
                .await
                .map_err(|e| e.to_string())
        };
        if !matches!(tokio::time::timeout(QUOTA_TIMEOUT, run).await, Ok(Ok(_))) {
            self.forget().await;
        }
    }
}
