//! The shared, read-mostly state every request sees: config, tenants and their quotas, upstreams
//! and their health, metrics, and the drain flag.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Config, TenantConfig, UpstreamConfig};
use crate::keys::KeyHash;
use crate::metrics::Metrics;
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
    healthy: AtomicBool,
}

impl Upstream {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

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
    ) -> Result<Arc<App>, prometheus::Error> {
        let metrics = Metrics::new()?;
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
        Ok(Arc::new(App {
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

    /// Pick the upstream for a model, skipping those already tried: the first healthy one in
    /// config order, else the first (a stale health check must not turn into a hard outage; the
    /// connect error will tell).
    pub fn pick_upstream(&self, model: &str, tried: &[usize]) -> Option<usize> {
        let mut first = None;
        for (i, u) in self.upstreams.iter().enumerate() {
            if !tried.contains(&i) && u.config.models.iter().any(|m| m == model) {
                if u.is_healthy() {
                    return Some(i);
                }
                first.get_or_insert(i);
            }
        }
        first
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

    /// Ready when every configured model has at least one healthy upstream and we are not
    /// draining.
    /// Record an admin action in the audit table (when telemetry is on); failures are logged.
    pub fn audit(&self, action: warden_telemetry::AdminAction) {
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

    pub fn is_ready(&self) -> bool {
        !self.is_draining()
            && self.models.iter().all(|m| {
                self.upstreams
                    .iter()
                    .any(|u| u.is_healthy() && u.config.models.contains(m))
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
