//! Active upstream health checks: a plain HTTP/1.1 `GET health_path` per upstream on an interval.
//! A 2xx answer within the timeout is healthy; anything else is not. `/readyz` and upstream
//! selection read the result.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::state::App;

pub struct HealthChecker {
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = Vec::new();
        for i in 0..self.app.upstreams.len() {
            let app = self.app.clone();
            tasks.push(async move {
                let cfg = &app.upstreams[i].config;
                let mut tick = tokio::time::interval(cfg.health_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let ok = probe(
                        cfg.address,
                        &cfg.health_path,
                        cfg.connect_timeout.max(Duration::from_secs(1)),
                    )
                    .await;
                    app.set_health(i, ok);
                }
            });
        }
        let all = futures_join_all(tasks);
        tokio::select! {
            _ = all => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Run futures concurrently on this task (no spawn: they end when the service does).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut set = Vec::with_capacity(futs.len());
    for f in futs {
        set.push(Box::pin(f));
    }
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// One health probe.
pub async fn probe(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: warden-health\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 32];
        let mut n = 0;
        while n < 12 {
            let r = s.read(&mut buf[n..]).await.ok()?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let status = std::str::from_utf8(&buf[..n]).ok()?;
        Some(status.starts_with("HTTP/1.") && status.get(9..10) == Some("2"))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
