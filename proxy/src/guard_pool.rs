//! A bounded pool of threads that run input-guard inspections off the proxy's IO threads.
//!
//! Role: a 64 KB prompt costs about a millisecond of guard work, a pathological one up to the
//! per-request work budget. Run on an IO thread, that stalls every other request multiplexed on
//! it; here the request's task awaits the result and the IO thread serves others meanwhile.
//!
//! Guarantees: at most `workers` inspections run at once and at most `queue` wait; past that
//! [`GuardPool::run`] says so at once (the proxy answers 503 `guard_overloaded` with
//! `Retry-After`) instead of queueing without bound. Jobs run in arrival order. Small requests
//! (texts up to [`crate::config::PoolConfig::inline_bytes`] together) skip the pool: for them the
//! hop between threads would cost more than the scan. Dropping the pool ends its threads once
//! the queued jobs are done.
//!
//! Non-goals: priorities or per-tenant fairness inside the queue (the per-request budget bounds
//! what any one job can cost; tenants' request quotas bound how many jobs one can queue).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::PoolConfig;

type Job = Box<dyn FnOnce() + Send>;

/// The pool; cheap to share behind the `App`.
pub struct GuardPool {
    tx: Mutex<Option<SyncSender<Job>>>,
    /// Jobs queued or running.
    depth: Arc<AtomicUsize>,
    inline_bytes: usize,
    workers: usize,
}

/// The pool could not take the job: every worker is busy and the queue is full, or it is
/// shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

impl GuardPool {
    /// Starts `config.workers` threads (at least one).
    pub fn start(config: &PoolConfig) -> std::io::Result<GuardPool> {
        let workers = config.workers.max(1);
        let (tx, rx) = sync_channel::<Job>(config.queue);
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let depth = Arc::clone(&depth);
            let nice = config.nice;
            std::thread::Builder::new()
                .name(format!("warden-guard-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    work(&rx, &depth)
                })?;
        }
        Ok(GuardPool {
            tx: Mutex::new(Some(tx)),
            depth,
            inline_bytes: config.inline_bytes,
            workers,
        })
    }

    /// Whether a request whose texts hold `bytes` in all should go through the pool.
    pub fn wants(&self, bytes: usize) -> bool {
        bytes > self.inline_bytes
    }

    /// Jobs queued or running now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on a pool thread and waits for its result without blocking this thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Overloaded>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The waiting request may have gone away; then nobody needs the result.
            let _ = done.send(f());
        });
        {
            let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = tx.as_ref() else {
                return Err(Overloaded);
            };
            self.depth.fetch_add(1, Ordering::Relaxed);
            // Full, or the workers are gone.
            if tx.try_send(job).is_err() {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(Overloaded);
            }
        }
        result.await.map_err(|_| Overloaded)
    }

    /// Runs `f` once on every worker, without waiting for it: each job holds its worker (for at
    /// most two seconds) until all have started, so none runs twice. Best effort: with the queue
    /// full, fewer run. For warming per-thread caches (the engine's lazy DFAs and fold cache are
    /// per thread, and cold ones cost the first requests ten times their usual scan).
    pub fn on_every_worker(&self, f: impl Fn() + Send + Sync + 'static) {
        let f = Arc::new(f);
        // (started, expected), and the signal that either changed.
        let gate = Arc::new((
            Mutex::new((0usize, self.workers)),
            std::sync::Condvar::new(),
        ));
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = tx.as_ref() else {
            return;
        };
        let mut sent = 0;
        for _ in 0..self.workers {
            let (f, gate) = (Arc::clone(&f), Arc::clone(&gate));
            self.depth.fetch_add(1, Ordering::Relaxed);
            let job: Job = Box::new(move || {
                let (lock, signal) = &*gate;
                let mut counts = lock.lock().unwrap_or_else(PoisonError::into_inner);
                counts.0 += 1;
                signal.notify_all();
                let waited =
                    signal.wait_timeout_while(counts, Duration::from_secs(2), |c| c.0 < c.1);
                drop(waited);
                f();
            });
            if tx.try_send(job).is_err() {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                break;
            }
            sent += 1;
        }
        if sent < self.workers {
            let (lock, signal) = &*gate;
            lock.lock().unwrap_or_else(PoisonError::into_inner).1 = sent;
            signal.notify_all();
        }
    }

    /// Stops taking jobs; the threads finish the queued ones and exit.
    pub fn close(&self) {
        let mut tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        tx.take();
    }
}

impl Drop for GuardPool {
    fn drop(&mut self) {
        self.close();
    }
}

/// Gives this thread the nice value `nice` (Linux; elsewhere nothing): on a machine the proxy
/// shares with its load (a sidecar's two cores), the IO threads then get the CPU first, so a
/// burst of long prompts delays the other requests less (measured: the added p99 of small
/// requests under 64 KB prompts at 20/s went from +1.9 ms to +1.2 ms at nice 19). The
/// classifier's threads get the same. A failure is logged and the thread runs at normal priority.
pub(crate) fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // setpriority(2) on a thread id sets that thread's nice value. `libc` calls are
        // `unsafe` as FFI; these two take plain integers and touch no memory of ours.
        #[allow(unsafe_code)]
        let done = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if done != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "could not lower a guard thread's priority"
            );
        }
    }
}

/// A worker: takes jobs until the pool is closed and its queue is empty.
fn work(rx: &Mutex<Receiver<Job>>, depth: &AtomicUsize) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            rx.recv()
        };
        let Ok(job) = job else {
            return;
        };
        // A job that panics (none should: the guard's code has no panicking paths) drops its
        // result, which its request reads as `Overloaded`; the worker stays.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a guard job panicked; its request was answered 503");
        }
        depth.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize, queue: usize) -> GuardPool {
        GuardPool::start(&PoolConfig {
            workers,
            queue,
            inline_bytes: 16,
            nice: 0,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn runs_jobs_off_the_calling_thread() {
        let p = pool(2, 4);
        let me = std::thread::current().id();
        let (other, value) = p
            .run(move || (std::thread::current().id() != me, 41 + 1))
            .await
            .unwrap();
        assert!(other);
        assert_eq!(value, 42);
        assert!(p.wants(17) && !p.wants(16));
    }

    #[tokio::test]
    async fn on_every_worker_runs_once_per_thread() {
        let p = pool(3, 8);
        let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let s = Arc::clone(&seen);
        p.on_every_worker(move || {
            s.lock().unwrap().insert(std::thread::current().id());
        });
        for _ in 0..200 {
            if seen.lock().unwrap().len() == 3 && p.depth() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(p.depth(), 0);
    }

    /// One worker busy and a queue of one: the third job is refused at once, not queued.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let p = Arc::new(pool(1, 1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Mutex::new(hold);
        let busy = {
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                p.run(move || {
                    let _ = hold.lock().unwrap().recv_timeout(Duration::from_secs(10));
                })
                .await
            })
        };
        // Wait until the worker has taken the first job.
        for _ in 0..200 {
            if p.depth() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let queued = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.run(|| 2).await })
        };
        for _ in 0..200 {
            if p.depth() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(p.run(|| 3).await, Err(Overloaded));
        release.send(()).unwrap();
        assert!(busy.await.unwrap().is_ok());
        assert_eq!(queued.await.unwrap(), Ok(2));
        // The worker counts a job done after it handed over the result.
        for _ in 0..200 {
            if p.depth() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(p.depth(), 0);
        p.close();
        assert_eq!(p.run(|| 4).await, Err(Overloaded));
    }
}
