//! Connection admission: caps on the proxy's open client connections, in total and per client
//! address.
//!
//! Role: [`Capped`] wraps the Pingora proxy app. Pingora hands each accepted connection to the
//! app once, for its whole life (HTTP/1 keep-alive included), so the wrapper counts a
//! connection from that call to its return. Over a cap, the connection is closed at once,
//! before anything is read from it, and counted in `warden_connections_rejected_total{reason}`;
//! `warden_connections_open` is the current count. Together with `server.header_timeout_ms`
//! (a deadline for each request head, in the vendored Pingora patch) this bounds what idle or
//! trickling clients can hold: memory and file descriptors.
//!
//! Defaults: `server.max_connections` = 4096 in total; no per-address cap
//! (`server.max_connections_per_ip`), because a sidecar's one client is its own pod.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::state::App;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerAddress,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerAddress => "max_connections_per_ip",
        }
    }
}

/// The counts behind the caps.
#[derive(Debug)]
pub struct Limits {
    max_total: usize,
    max_per_ip: Option<usize>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Slot<'a> {
    limits: &'a Limits,
    ip: Option<IpAddr>,
}

// === impl Limits ===

impl Limits {
    pub fn new(max_total: usize, max_per_ip: Option<usize>) -> Self {
        Limits {
            max_total,
            max_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admit a connection from `ip` (unknown for a Unix socket), or say which cap it hits.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<Slot<'_>, Refused> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        if let (Some(max), Some(ip)) = (self.max_per_ip, ip) {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= max {
                drop(per_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        Ok(Slot {
            limits: self,
            ip: ip.filter(|_| self.max_per_ip.is_some()),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_ip = self
                .limits
                .per_ip
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The proxy app behind the connection caps.
pub struct Capped<A> {
    inner: Arc<A>,
    app: Arc<App>,
}

impl<A> Capped<A> {
    pub fn new(inner: A, app: Arc<App>) -> Self {
        Capped {
            inner: Arc::new(inner),
            app,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let limits = &self.app.connections;
        let m = &self.app.metrics;
        let slot = match limits.admit(ip) {
            Ok(slot) => slot,
            Err(why) => {
                m.connections_rejected
                    .with_label_values(&[why.label()])
                    .inc();
                return None;
            }
        };
        m.connections_open.set(limits.open() as i64);
        let reuse = self.inner.process_new(stream, shutdown).await;
        drop(slot);
        m.connections_open.set(limits.open() as i64);
        reuse
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn the_total_cap_refuses_and_a_closed_connection_frees_its_place() {
        let l = Limits::new(2, None);
        let a = l.admit(ip(1)).unwrap();
        let _b = l.admit(ip(2)).unwrap();
        assert_eq!(l.admit(ip(3)).unwrap_err(), Refused::Total);
        assert_eq!(l.open(), 2);
        drop(a);
        assert!(l.admit(ip(3)).is_ok());
    }

    #[test]
    fn the_per_address_cap_counts_each_address_alone() {
        let l = Limits::new(100, Some(2));
        let a1 = l.admit(ip(1)).unwrap();
        let _a2 = l.admit(ip(1)).unwrap();
        assert_eq!(l.admit(ip(1)).unwrap_err(), Refused::PerAddress);
        assert_eq!(l.open(), 2, "a refused connection is not counted");
        let _b = l.admit(ip(2)).unwrap();
        drop(a1);
        assert!(l.admit(ip(1)).is_ok());
        // No address (a Unix socket): only the total applies.
        let _u: Vec<_> = (0..5).map(|_| l.admit(None).unwrap()).collect();
    }
}
