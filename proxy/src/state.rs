//! The shared, read-mostly state every request sees: config, tenants and their quotas, upstreams
//! and their health, metrics, and the drain flag.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, TenantConfig, UpstreamConfig};
use crate::keys::KeyHash;
use crate::metrics::Metrics;
use crate::outlier::{Admit, Exchange, Outlier};
use crate::quota::TenantQuota;
use crate::validate::Endpoint;

pub struct Tenant {
    pub config: TenantConfig,
    /// `config.name`, shared by the audit events of this tenant.
    pub name: Arc<str>,
    pub quota: TenantQuota,
    /// `None` = every model.
    allowed: Option<HashSet<String>>,
}

impl Tenant {
    pub fn may_use(&self, model: &str) -> bool {
        self.allowed.as_ref().is_none_or(|set| set.contains(model))
    }
}

pub struct Upstream {
    pub config: UpstreamConfig,
    /// `config.name`, shared by the audit events it serves.
    pub name: Arc<str>,
    /// The last active health check passed.
    healthy: AtomicBool,
    /// Passive outlier detection over the exchanges it was sent.
    pub outlier: Outlier,
}

impl Upstream {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Healthy and not ejected: requests may be routed to it.
    pub fn in_service(&self, now: Instant) -> bool {
        self.is_healthy() && !self.outlier.is_ejected(now)
    }
}

/// Where a request goes: the upstream and whether it is that upstream's one probe after an
/// ejection (its result decides whether the upstream returns to service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub upstream: usize,
    pub probe: bool,
}

/// No upstream serving the model can take a request now; try again in `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoUpstream {
    pub retry_after: Duration,
}

/// Admin actions kept in memory for `GET /admin/audit`.
const RECENT_ACTIONS: usize = 200;

pub struct App {
    pub config: Config,
    pub tenants: Vec<Tenant>,
    tenant_by_key: HashMap<KeyHash, usize>,
    pub upstreams: Vec<Upstream>,
    /// Every model any upstream serves, in config order, without duplicates.
    pub models: Vec<String>,
    pub metrics: Metrics,
    /// The input guard's packs; `None` when `guard.enabled = false`.
    pub guards: Option<crate::guard::Guards>,
    /// The audit lake and the key for prompt hashes; `None` when telemetry is off.
    pub telemetry: Option<(warden_telemetry::Telemetry, warden_telemetry::Hasher)>,
    /// OTLP traces; `None` unless `[tracing] otlp_endpoint` is set.
    pub traces: Option<crate::traces::Traces>,
    /// Strings every audit event repeats, kept once.
    pub labels: EventLabels,
    /// The caps on open client connections.
    pub connections: crate::connections::Limits,
    /// What is kept of requests refused before a tenant was known.
    pub unauthenticated: crate::unauthenticated::Unauthenticated,
    /// Kill switches (read lock-free on every request).
    pub switchboard: crate::switchboard::Switchboard,
    /// Detectors and runbooks.
    pub incidents: crate::incidents::Incidents,
    /// The tenants' buckets in the fleet's Redis (`[switchboard] shared_quotas`).
    pub fleet_quotas: Option<crate::fleet_quota::FleetQuotas>,
    /// The last admin actions, newest last, for `GET /admin/audit` (the lake keeps them all).
    recent: std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>,
    inflight: AtomicUsize,
    draining: AtomicBool,
}

/// The strings an audit event repeats from request to request, held once so that building an
/// event clones pointers instead of allocating copies (which the telemetry writer would then
/// have to free).
pub struct EventLabels {
    pub config_hash: Arc<str>,
    pub region: Option<Arc<str>>,
    /// Tenant of a request that never resolved one.
    pub no_tenant: Arc<str>,
    /// `Endpoint::label` of each of `Endpoint::ALL`, in that order.
    routes: Vec<Arc<str>>,
    other_route: Arc<str>,
}

impl EventLabels {
    fn new(config: &Config) -> Self {
        EventLabels {
            config_hash: config.hash.as_str().into(),
            region: config.telemetry.region.as_deref().map(Arc::from),
            no_tenant: "-".into(),
            routes: Endpoint::ALL.iter().map(|e| Arc::from(e.label())).collect(),
            other_route: Endpoint::OTHER_LABEL.into(),
        }
    }

    /// The route label of a request: `Endpoint::label`, or `Endpoint::OTHER_LABEL`.
    pub fn route(&self, endpoint: Option<Endpoint>) -> Arc<str> {
        endpoint
            .and_then(|e| Endpoint::ALL.iter().position(|&x| x == e))
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.other_route)
            .clone()
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    pub fn new(
        config: Config,
        guards: Option<crate::guard::Guards>,
        telemetry: Option<(warden_telemetry::Telemetry, warden_telemetry::Hasher)>,
        traces: Option<crate::traces::Traces>,
        switchboard: crate::switchboard::Switchboard,
        incidents: crate::incidents::Incidents,
    ) -> Result<Arc<App>, prometheus::Error> {
        let metrics = Metrics::new()?;
        let epoch = Instant::now();
        let mut tenant_by_key = HashMap::new();
        let tenants = config
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                for k in &t.api_keys {
                    tenant_by_key.insert(k.clone(), i);
                }
                Tenant {
                    config: t.clone(),
                    name: t.name.as_str().into(),
                    quota: TenantQuota::new(t.requests_per_minute, t.tokens_per_minute),
                    allowed: (!t.models.iter().any(|m| m == "*"))
                        .then(|| t.models.iter().cloned().collect()),
                }
            })
            .collect();
        let upstreams: Vec<Upstream> = config
            .upstreams
            .iter()
            .map(|u| {
                metrics
                    .upstream_healthy
                    .with_label_values(&[&u.name])
                    .set(0);
                Upstream {
                    config: u.clone(),
                    name: u.name.as_str().into(),
                    healthy: AtomicBool::new(false),
                    outlier: Outlier::new(u.outlier, epoch),
                }
            })
            .collect();
        let mut models = Vec::new();
        for u in &config.upstreams {
            for m in &u.models {
                if !models.contains(m) {
                    models.push(m.clone());
                }
            }
        }
        let labels = EventLabels::new(&config);
        let connections = crate::connections::Limits::new(
            config.server.max_connections,
            config.server.max_connections_per_ip,
        );
        let unauthenticated = crate::unauthenticated::Unauthenticated::new(
            config.logging.unauthenticated,
            config.telemetry.unauthenticated,
            epoch,
        );
        Ok(Arc::new(App {
            connections,
            unauthenticated,
            fleet_quotas: match (
                &config.switchboard.redis_url,
                config.switchboard.shared_quotas,
            ) {
                (Some(url), true) => {
                    crate::fleet_quota::FleetQuotas::new(url, &config.switchboard.redis_key).ok()
                }
                _ => None,
            },
            switchboard,
            incidents,
            recent: std::sync::Mutex::new(std::collections::VecDeque::new()),
            config,
            labels,
            tenants,
            tenant_by_key,
            upstreams,
            models,
            metrics,
            guards,
            telemetry,
            traces,
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        }))
    }

    pub fn tenant_for_key(&self, raw_key: &str) -> Option<usize> {
        self.tenant_by_key.get(&KeyHash::of(raw_key)).copied()
    }

    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }

    /// Route a request for `model`, skipping upstreams already tried: the first in config order
    /// that passes its health checks and is not ejected (or whose ejection is over and whose
    /// probe this request becomes). `Err` when none can take it: the request is answered at
    /// once (503 `upstream_unavailable`) instead of waiting on an upstream known to be down.
    pub fn route(&self, model: &str, tried: &[usize], now: Instant) -> Result<Route, NoUpstream> {
        self.find_route(model, tried, now, true)
    }

    /// Whether [`Self::route`] would find an upstream now, without claiming a probe: checked
    /// before quotas and the guard, so a request that cannot be served costs nothing.
    pub fn can_route(&self, model: &str, now: Instant) -> Result<(), NoUpstream> {
        self.find_route(model, &[], now, false).map(|_| ())
    }

    fn find_route(
        &self,
        model: &str,
        tried: &[usize],
        now: Instant,
        claim: bool,
    ) -> Result<Route, NoUpstream> {
        let mut retry_after: Option<Duration> = None;
        let mut soonest = |d: Duration| {
            retry_after = Some(retry_after.map_or(d, |r| r.min(d)));
        };
        for (i, u) in self.upstreams.iter().enumerate() {
            if tried.contains(&i) || !u.config.models.iter().any(|m| m == model) {
                continue;
            }
            if !u.is_healthy() {
                soonest(u.config.health_interval);
                continue;
            }
            let admit = if claim {
                u.outlier.admit(now)
            } else {
                u.outlier.peek(now)
            };
            match admit {
                Admit::Yes => {
                    return Ok(Route {
                        upstream: i,
                        probe: false,
                    })
                }
                Admit::Probe => {
                    return Ok(Route {
                        upstream: i,
                        probe: true,
                    })
                }
                Admit::No { retry_in } => soonest(retry_in),
            }
        }
        Err(NoUpstream {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        })
    }

    /// Record how an exchange with `upstream` went (passive outlier detection); an ejection is
    /// logged and counted.
    pub fn report_exchange(&self, upstream: usize, outcome: Exchange, now: Instant) {
        let Some(u) = self.upstreams.get(upstream) else {
            return;
        };
        if let Some(d) = u.outlier.report(outcome, now) {
            tracing::warn!(
                upstream = %u.config.name,
                eject_ms = d.as_millis() as u64,
                "upstream ejected after repeated failures; requests go elsewhere or get 503 until it is probed back in"
            );
            self.metrics
                .upstream_ejections
                .with_label_values(&[&u.config.name])
                .inc();
        }
    }

    pub fn set_health(&self, upstream: usize, healthy: bool) {
        if let Some(u) = self.upstreams.get(upstream) {
            let was = u.healthy.swap(healthy, Ordering::Relaxed);
            self.metrics
                .upstream_healthy
                .with_label_values(&[&u.config.name])
                .set(i64::from(healthy));
            if was != healthy {
                if healthy {
                    tracing::info!(upstream = %u.config.name, "upstream is healthy");
                } else {
                    tracing::warn!(upstream = %u.config.name, "upstream is unhealthy");
                }
            }
        }
    }

    /// What the runbooks act on, for [`crate::incidents::Incidents`].
    pub fn effects<'a>(
        &'a self,
        audit: &'a dyn Fn(warden_telemetry::AdminAction),
    ) -> crate::incidents::Effects<'a> {
        crate::incidents::Effects {
            switchboard: &self.switchboard,
            metrics: &self.metrics,
            audit,
        }
    }

    /// Record an admin action in the audit table (when telemetry is on); failures are logged.
    pub fn audit(&self, action: warden_telemetry::AdminAction) {
        {
            let mut recent = self
                .recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if recent.len() == RECENT_ACTIONS {
                recent.pop_front();
            }
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            recent.push_back(serde_json::json!({
                "at": at, "actor": action.actor, "role": action.role, "action": action.action,
                "target": action.target, "before": action.before, "after": action.after,
                "reason": action.reason,
            }));
        }
        if let Some((t, _)) = &self.telemetry {
            match t.audit().append(action) {
                // The chain head, outside the lake: truncating the newest rows leaves a valid
                // shorter chain, which `warden audit verify --expect-head` then catches.
                Ok(rec) => tracing::info!(
                    seq = rec.seq,
                    row_hash = %rec.row_hash,
                    action = %rec.action.action,
                    actor = %rec.action.actor,
                    "admin action recorded"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "could not record an admin action in the audit table")
                }
            }
        }
    }

    /// The last admin actions this process took, oldest first.
    pub fn recent_actions(&self) -> Vec<serde_json::Value> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Ready when every configured model has at least one upstream in service (healthy, not
    /// ejected) and we are not draining.
    pub fn is_ready(&self) -> bool {
        let now = Instant::now();
        !self.is_draining()
            && self.models.iter().all(|m| {
                self.upstreams
                    .iter()
                    .any(|u| u.in_service(now) && u.config.models.contains(m))
            })
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Count a request in flight until the guard drops (whatever path the request takes).
    pub fn track(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        self.metrics.inflight.inc();
        InflightGuard(self.clone())
    }
}

pub struct InflightGuard(Arc<App>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.inflight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_labels_are_the_endpoint_labels() {
        let config = Config::parse(&crate::config::tests::minimal()).unwrap();
        let labels = EventLabels::new(&config);
        for e in Endpoint::ALL {
            assert_eq!(&*labels.route(Some(e)), e.label());
        }
        assert_eq!(&*labels.route(None), Endpoint::OTHER_LABEL);
        assert_eq!(&*labels.config_hash, config.hash);
    }
}
