//! The classifier's own threads, batching windows across concurrent requests.
//!
//! Role: a request's texts are cut into token windows on the caller's thread
//! ([`Batcher::submit`], which returns at once); a bounded set of model threads, one ONNX
//! session each, runs the windows of every waiting request together: each thread takes one
//! window from each waiting request in turn (round robin, so a short prompt is not queued behind
//! a long document's windows), up to `max_rows` a run and no more than its share of what waits
//! (two threads and eight windows: four each, so one long text still uses both cores). The
//! caller waits on its [`Ticket`], blocking or async, until its windows are scored or its
//! deadline passes; whatever was scored by then is reported with what was not.
//!
//! Guarantees: at most `threads` model runs at once; at most [`MAX_WAITING_PER_THREAD`] windows
//! per thread wait (a request that would queue more behind others is failed at once, and its
//! tenant's `on_error` decides, instead of every request waiting out its deadline; one request
//! alone is always taken); a request's windows
//! are never scored after its deadline or after its ticket was dropped (they are taken off the
//! queue unrun); a model failure, or a panic in a run, fails the texts whose windows were in
//! that run, not the others, and the thread goes on.
//!
//! Non-goals: waiting to fill a batch. A thread runs what is there when it is free, so an idle
//! classifier adds no delay and a busy one batches by itself.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::classifier::{Classifier, ClassifyError, Scored};

/// Windows that may wait per model thread: about two seconds of full windows on a CPU, past any
/// sensible deadline.
pub const MAX_WAITING_PER_THREAD: usize = 64;

/// The classifier behind its model threads.
pub struct Batcher {
    shared: Arc<Shared>,
    max_windows: usize,
    threads: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("classifier", &self.shared.classifier)
            .field("threads", &self.threads)
            .field("max_rows", &self.shared.max_rows)
            .finish()
    }
}

struct Shared {
    classifier: Classifier,
    queue: Mutex<Queue>,
    ready: Condvar,
    max_rows: usize,
    threads: usize,
}

#[derive(Default)]
struct Queue {
    /// Requests with windows waiting, in turn order.
    calls: VecDeque<Arc<Call>>,
    /// Windows waiting, all requests together.
    waiting: usize,
    closed: bool,
}

/// One request's texts.
struct Call {
    deadline: Option<Instant>,
    state: Mutex<CallState>,
    changed: Condvar,
    notify: tokio::sync::Notify,
}

#[derive(Default)]
struct CallState {
    texts: Vec<TextState>,
    /// `(text, window index, token row)` not yet taken by a model thread.
    waiting: VecDeque<(usize, usize, Vec<u32>)>,
    /// Windows in a model run now.
    running: usize,
    /// The caller stopped waiting (deadline or dropped ticket): drop what still waits.
    abandoned: bool,
}

impl CallState {
    fn done(&self) -> bool {
        self.waiting.is_empty() && self.running == 0
    }
}

#[derive(Default)]
struct TextState {
    /// Highest probability so far and its window.
    best: Option<(f32, usize)>,
    scored: usize,
    /// Windows meant to be scored, and windows the text has.
    picked: usize,
    windows: usize,
    failed: Option<String>,
}

/// A request's place in the batcher: wait on it for the scores.
pub struct Ticket {
    call: Arc<Call>,
}

/// Per text, in the order submitted.
pub type Results = Vec<Result<Scored, ClassifyError>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batcher {
    /// Starts `threads` model threads (at least one) over `classifier`, which should hold as
    /// many sessions; each run takes at most `max_rows` windows (at least one), and a text at
    /// most `max_windows` windows. Each thread calls `setup` first (the proxy lowers their
    /// priority there, as it does its guard threads').
    pub fn start(
        classifier: Classifier,
        threads: usize,
        max_rows: usize,
        max_windows: usize,
        setup: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Batcher> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            classifier,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            max_rows: max_rows.max(1),
            threads,
        });
        for i in 0..threads {
            let (s, setup) = (Arc::clone(&shared), Arc::clone(&setup));
            let spawned = std::thread::Builder::new()
                .name(format!("warden-classifier-{i}"))
                .spawn(move || {
                    setup();
                    work(&s)
                });
            if let Err(e) = spawned {
                // The threads already started would wait for work forever.
                lock(&shared.queue).closed = true;
                shared.ready.notify_all();
                return Err(e);
            }
        }
        Ok(Batcher {
            shared,
            max_windows: max_windows.max(1),
            threads,
        })
    }

    pub fn classifier(&self) -> &Classifier {
        &self.shared.classifier
    }

    /// Cuts `texts` (`(text, retrieved)`) into windows here and queues them; returns at once.
    pub fn submit(&self, texts: &[(&str, bool)], deadline: Option<Instant>) -> Ticket {
        let mut state = CallState::default();
        for (i, (text, retrieved)) in texts.iter().enumerate() {
            let mut t = TextState::default();
            match self
                .shared
                .classifier
                .windows(text, *retrieved, self.max_windows)
            {
                Ok((rows, total)) => {
                    t.windows = total;
                    t.picked = rows.len();
                    state
                        .waiting
                        .extend(rows.into_iter().map(|(w, row)| (i, w, row)));
                }
                Err(e) => t.failed = Some(e),
            }
            state.texts.push(t);
        }
        let queued = state.waiting.len();
        let call = Arc::new(Call {
            deadline,
            state: Mutex::new(state),
            changed: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        });
        if queued > 0 {
            let mut q = lock(&self.shared.queue);
            let refused = if q.closed {
                Some("the classifier is shutting down")
            } else if q.waiting > 0
                && q.waiting + queued > MAX_WAITING_PER_THREAD * self.shared.threads
            {
                Some("the classifier is overloaded (its queue is full)")
            } else {
                None
            };
            if let Some(why) = refused {
                let mut s = lock(&call.state);
                for (t, _, _) in std::mem::take(&mut s.waiting) {
                    s.texts[t].failed = Some(why.into());
                }
            } else {
                q.waiting += queued;
                q.calls.push_back(Arc::clone(&call));
                drop(q);
                self.shared.ready.notify_all();
            }
        }
        Ticket { call }
    }

    /// Windows waiting now, all requests together.
    pub fn waiting(&self) -> usize {
        lock(&self.shared.queue).waiting
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Drop for Batcher {
    /// The threads finish the windows queued and exit.
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_all();
    }
}

impl Ticket {
    /// Blocks until every window is scored or the deadline passes.
    pub fn wait(self) -> Results {
        let call = &self.call;
        let mut s = lock(&call.state);
        while !s.done() {
            match call.deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    s = call
                        .changed
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => s = call.changed.wait(s).unwrap_or_else(PoisonError::into_inner),
            }
        }
        results(&mut s)
    }

    /// [`Self::wait`] without blocking the thread.
    pub async fn wait_async(self) -> Results {
        let call = &self.call;
        loop {
            if lock(&call.state).done() {
                break;
            }
            // `notify_one` keeps a permit when nobody waits, so no wake-up is lost between the
            // check above and this wait.
            let woken = call.notify.notified();
            match call.deadline {
                Some(d) => {
                    let at = tokio::time::Instant::from_std(d);
                    if tokio::time::timeout_at(at, woken).await.is_err() {
                        break;
                    }
                }
                None => woken.await,
            }
        }
        results(&mut lock(&call.state))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.call.state).abandoned = true;
    }
}

/// What the windows scored so far say, per text; marks the call abandoned.
fn results(s: &mut CallState) -> Results {
    s.abandoned = true;
    s.texts
        .iter()
        .map(|t| {
            if let Some(e) = &t.failed {
                return Err(ClassifyError::Failed(e.clone()));
            }
            match t.best {
                Some((score, window)) => Ok(Scored {
                    score,
                    window,
                    scored: t.scored,
                    windows: t.windows,
                    deadline: t.scored < t.picked,
                }),
                None if t.picked == 0 => Err(ClassifyError::Failed("no window to score".into())),
                None => Err(ClassifyError::Deadline),
            }
        })
        .collect()
}

type Taken = Vec<(Arc<Call>, usize, usize, Vec<u32>)>;

/// A model thread: takes a batch, runs it, hands each window's score to its request.
fn work(shared: &Shared) {
    loop {
        let batch = {
            let mut q = lock(&shared.queue);
            loop {
                if q.waiting > 0 {
                    break;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            let batch = take(shared, &mut q);
            if q.waiting > 0 {
                shared.ready.notify_one();
            }
            batch
        };
        if batch.is_empty() {
            continue;
        }
        let rows: Vec<&[u32]> = batch.iter().map(|b| b.3.as_slice()).collect();
        // A panic in ONNX Runtime's bindings or the tokenizer fails this run's texts; the
        // thread (and every request after) goes on.
        let scores = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.classifier.score_rows(&rows)
        }))
        .unwrap_or_else(|_| Err("the classifier panicked".to_string()));
        for (i, (call, text, window, _)) in batch.iter().enumerate() {
            let mut s = lock(&call.state);
            s.running -= 1;
            let t = &mut s.texts[*text];
            match &scores {
                Ok(scores) => {
                    let score = scores.get(i).copied().unwrap_or(f32::NAN);
                    t.scored += 1;
                    if t.best.is_none_or(|(b, _)| score > b) {
                        t.best = Some((score, *window));
                    }
                }
                Err(e) => t.failed = Some(e.clone()),
            }
            if s.done() {
                drop(s);
                call.changed.notify_all();
                call.notify.notify_one();
            }
        }
    }
}

/// One window from each waiting request in turn, up to this thread's share of what waits;
/// requests past their deadline or abandoned lose their waiting windows here.
fn take(shared: &Shared, q: &mut Queue) -> Taken {
    let share = q.waiting.div_ceil(shared.threads).clamp(1, shared.max_rows);
    let now = Instant::now();
    let mut batch: Taken = Vec::with_capacity(share);
    while batch.len() < share {
        let Some(call) = q.calls.pop_front() else {
            break;
        };
        let mut s = lock(&call.state);
        if s.abandoned || call.deadline.is_some_and(|d| now >= d) {
            q.waiting -= s.waiting.len();
            s.waiting.clear();
            if s.done() {
                drop(s);
                call.changed.notify_all();
                call.notify.notify_one();
            }
            continue;
        }
        // The next window of a text that has not failed (a failed text's windows need no run).
        while let Some((text, window, row)) = s.waiting.pop_front() {
            q.waiting -= 1;
            if s.texts[text].failed.is_none() {
                s.running += 1;
                batch.push((Arc::clone(&call), text, window, row));
                break;
            }
        }
        if s.done() {
            drop(s);
            call.changed.notify_all();
            call.notify.notify_one();
            continue;
        }
        let more = !s.waiting.is_empty();
        drop(s);
        if more {
            q.calls.push_back(call);
        }
    }
    batch
}
